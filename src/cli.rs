//! Command line: `bedrock-relay serve | sim | demo | health`.

use clap::{Parser, Subcommand};

/// A local reverse proxy that makes Amazon Bedrock streaming reliable: it re-signs each
/// request with its own AWS credentials, retries failures, and resumes broken
/// EventStream responses so the application sees one unbroken answer.
#[derive(Parser, Debug)]
#[command(name = "bedrock-relay", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (point AWS_ENDPOINT_URL_BEDROCK_RUNTIME at its --listen address).
    Serve(Box<crate::config::ServeArgs>),
    /// Run the Bedrock Runtime simulator with fault injection (no AWS account needed).
    Sim(Box<bedrock_relay_sim::SimArgs>),
    /// Start the simulator with faults and the relay in front of it, stream a few
    /// conversations through it and show each interruption being healed.
    Demo(crate::demo::DemoArgs),
    /// Probe a running relay's admin endpoint (default /readyz on 127.0.0.1:8791); exit 0
    /// when it answers 200. For container health checks in images without curl.
    Health(crate::health::HealthArgs),
}
