//! bedrock-relay: a local reverse proxy that makes Amazon Bedrock streaming reliable.
//!
//! The request path is `proxy::handle`; resumption of broken streams is [`resume`]; the
//! Bedrock simulator used by the tests and the demo is [`sim`]. Public: what the binary,
//! the benchmarks and the integration tests use (starting the relay, its configuration,
//! signing, framing, resumption, the simulator); the rest is the crate's own.
#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod admission;
pub mod app;
pub(crate) mod body;
pub(crate) mod certs;
pub mod cli;
pub mod config;
pub mod demo;
pub use bedrock_relay_wire::eventstream;
pub mod health;
pub mod inbound;
pub(crate) mod metrics;
pub(crate) use bedrock_relay_wire::ops;
pub mod otel;
pub(crate) mod proxy;
pub mod resume;
pub(crate) mod retry;
pub(crate) mod server;
pub mod signing;
pub(crate) mod status;
pub(crate) mod telemetry;
pub(crate) mod upstream;
pub(crate) mod usage;
