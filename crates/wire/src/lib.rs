//! bedrock-relay-wire: the Bedrock wire facts the relay and the simulator both need, so that
//! neither depends on the other: which operation a request is (`ops`), AWS EventStream
//! framing (`eventstream`), SigV4 verification of requests and of signed event streams
//! (`sigv4`), and what Bedrock charges against a quota and says when it throttles (`cost`).
#![forbid(unsafe_code)]

pub mod cost;
pub mod eventstream;
pub mod ops;
pub mod sigv4;
