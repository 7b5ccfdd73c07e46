//! bedrock-relay: a local reverse proxy that makes Amazon Bedrock streaming reliable.
//!
//! The request path is `proxy::handle`; resumption of broken streams is [`resume`]. The
//! Bedrock simulator behind `bedrock-relay sim` and `demo` is the `bedrock_relay_sim` crate;
//! the Bedrock wire facts both share (operations, EventStream framing, SigV4 verification,
//! quota cost) are `bedrock_relay_wire`, re-exported here at the relay's old module paths.
//!
//! Public: what the `bedrock-relay` binary, the benchmarks and the integration tests use,
//! re-exported below (running the subcommands, starting the relay in-process, loading its
//! configuration, its signer); the modules are the crate's own. `resume` stays public for
//! the integration tests' property and end-to-end checks of resumption.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod app;
pub(crate) mod body;
pub(crate) mod certs;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod health;
pub(crate) mod inbound;
pub(crate) mod metrics;
pub(crate) mod otel;
pub(crate) mod proxy;
pub mod resume;
pub(crate) mod retry;
pub(crate) mod server;
pub(crate) mod signing;
pub(crate) mod status;
pub(crate) mod telemetry;
pub(crate) mod upstream;
pub(crate) mod usage;

pub(crate) use bedrock_relay_wire::{eventstream, ops};

// The binary: its command line and each subcommand.
pub use app::{runtime, scrub_endpoint_env, serve_blocking};
pub use cli::{Cli, Command};
pub use demo::{run as run_demo, DemoArgs};
pub use health::{run as run_health, HealthArgs};

// The relay in-process (integration tests, benchmarks): configuration, signer, start.
pub use app::{start_with_signer, RelayHandle};
pub use config::{load as load_config, ConfigErrors, ServeArgs, Settings};
pub use signing::Signer;
