//! bedrock-relay: a local reverse proxy that makes Amazon Bedrock streaming reliable.
#![forbid(unsafe_code)]

pub mod eventstream;
pub mod ops;
pub mod proxy;

pub mod admin;
pub mod app;
pub mod config;
pub mod metrics;
pub mod retry;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod upstream;
