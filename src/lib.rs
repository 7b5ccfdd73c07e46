//! bedrock-relay: a local reverse proxy that makes Amazon Bedrock streaming reliable.
//!
//! The request path is [`proxy::handle`]; resumption of broken streams is [`resume`];
//! the Bedrock simulator used by the tests and the demo is [`sim`].
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod bench;
pub mod body;
pub mod certs;
pub mod cli;
pub mod config;
pub mod demo;
pub mod eventstream;
pub mod health;
pub mod inbound;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod resume;
pub mod retry;
pub mod server;
pub mod signing;
pub mod sim;
pub mod telemetry;
pub mod upstream;
