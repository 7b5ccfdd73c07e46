//! The simulator's SigV4 verifier: the pure verification lives in
//! `bedrock_relay_wire::sigv4` (the relay checks its own clients with the same code) and is
//! re-exported here so the simulator keeps its `sim::sigv4` path.

pub use bedrock_relay_wire::sigv4::*;
