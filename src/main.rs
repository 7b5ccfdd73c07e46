//! `bedrock-relay`: parse the command line, run the chosen subcommand, exit with its code.
#![forbid(unsafe_code)]

use bedrock_relay::cli::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        if let Some(n) = bedrock_relay::app::worker_threads(args) {
            builder.worker_threads(n);
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bedrock-relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => bedrock_relay::app::serve_main(*args).await,
            Command::Sim(args) => report(bedrock_relay::sim::run(*args).await),
            Command::Demo(args) => bedrock_relay::demo::run(args).await,
            Command::Health(args) => bedrock_relay::health::run(args).await,
        }
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
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
