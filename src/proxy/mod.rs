//! The relay's request path: classify → limits → retry/resume → sign → send.
//!
//! (Skeleton: the signatures below are the contract with `app.rs`; bodies land with the
//! relay-core work.)

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::sync::Arc;

/// Body type of every response the relay sends to its clients.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Everything a request needs, shared by all connections.
pub struct Relay {
    pub settings: Arc<crate::config::Settings>,
    pub signer: crate::signing::Signer,
    pub upstream: crate::upstream::Upstream,
    pub metrics: crate::metrics::Metrics,
}

impl Relay {
    pub fn new(
        settings: Arc<crate::config::Settings>,
        signer: crate::signing::Signer,
        upstream: crate::upstream::Upstream,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Relay { settings, signer, upstream, metrics }
    }
}

/// Serve one client request.
pub async fn handle(relay: Arc<Relay>, req: Request<Incoming>) -> Response<Body> {
    let _ = (relay, req);
    todo!("relay-core work")
}
