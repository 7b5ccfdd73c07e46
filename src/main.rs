//! `bedrock-relay`: parse the command line, run the chosen subcommand, exit with its code.
#![forbid(unsafe_code)]

use bedrock_relay::{run_demo, run_health, runtime, scrub_endpoint_env, serve_blocking};
use bedrock_relay::{Cli, Command};
use clap::Parser;
use std::future::Future;
use std::process::ExitCode;

/// jemalloc: thousands of open streams each hold many small allocations; jemalloc's size
/// classes pack them tighter than the system allocator (BENCHMARKS.md, memory per stream).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let code = match Cli::parse().command {
        // Its runtime is sized by its configuration (`worker_threads`). The endpoint
        // variables are removed first, while this is the only thread.
        Command::Serve(args) => serve_blocking(*args, scrub_endpoint_env()),
        Command::Sim(args) => on_runtime(async { report(bedrock_relay_sim::run(*args).await) }),
        Command::Demo(args) => on_runtime(run_demo(args)),
        Command::Health(args) => on_runtime(run_health(args)),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn on_runtime(subcommand: impl Future<Output = i32>) -> i32 {
    runtime(0).map_or(1, |rt| rt.block_on(subcommand))
}

fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bedrock-relay: {e:#}");
            1
        }
    }
}
