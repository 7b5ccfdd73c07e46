//! `bench`: the side-by-side benchmark of the relay against the simulator reached directly,
//! nginx and LiteLLM. Everything is in the `bedrock_relay_bench` library; `scripts/bench` is
//! the documented way to run it (release build, raised `ulimit -n`, nginx and LiteLLM set up).
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = bedrock_relay_bench::BenchArgs::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(bedrock_relay_bench::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
