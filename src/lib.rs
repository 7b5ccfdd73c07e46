//! bedrock-relay: a local reverse proxy that makes Amazon Bedrock streaming reliable.
#![forbid(unsafe_code)]

pub mod eventstream;
pub mod ops;
pub mod proxy;
pub mod resume;
