//! The request path without sockets, for unit tests in tokio's paused time: a [`Relay`]
//! whose upstream answers from a script ([`Script`]), response bodies scripted step by step
//! ([`Step`]: bytes, a wait, a reset, a premature end, a hang).

use super::attempt::{Attempts, Policy};
use super::outbound::Outbound;
use super::{Record, Relay};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::ops;
use crate::signing::Signer;
use crate::upstream::{BoxError, Fake, Upstream, UpstreamBody, UpstreamError};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One step of a scripted upstream body.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Data(Bytes),
    Wait(Duration),
    /// The connection resets.
    Reset,
    /// The connection closes before the body is complete.
    Eof,
    /// Nothing more, ever (a stall).
    Hang,
}

/// One scripted upstream answer.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A response: status, content type, body steps (a clean end after the last).
    Http(u16, &'static str, Vec<Step>),
    /// No response: the connection was refused.
    Refused,
}

/// What the fake upstream answers, in order, and what it was asked.
#[derive(Default)]
pub(crate) struct Script {
    replies: Mutex<VecDeque<Reply>>,
    pub requests: Mutex<Vec<http::Request<Bytes>>>,
    /// Scripted bodies not yet dropped (an upstream request still open).
    pub open_bodies: Arc<AtomicUsize>,
}

impl Script {
    pub fn push(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    pub fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A relay answered by `script`; `tune` adjusts its settings first.
pub(crate) fn relay(tune: impl FnOnce(&mut Settings)) -> (Arc<Relay>, Arc<Script>) {
    let mut settings = Settings {
        upstream: Some("http://bedrock.test".parse().unwrap()),
        ..Settings::default()
    };
    tune(&mut settings);
    let script = Arc::new(Script::default());
    let mut upstream = Upstream::new(&settings).expect("upstream");
    let answers = script.clone();
    upstream.fake = Some(Fake(Arc::new(move |req| {
        let script = answers.clone();
        async move { answer(&script, req) }.boxed()
    })));
    let signer = Signer::for_tests("AKIDEXAMPLE", "secret", None, &settings.region);
    let relay = Relay::new(Arc::new(settings), signer, upstream, Metrics::new());
    (Arc::new(relay), script)
}

fn answer(
    script: &Script,
    req: http::Request<Bytes>,
) -> Result<http::Response<UpstreamBody>, UpstreamError> {
    script.requests.lock().unwrap().push(req);
    let reply = script.replies.lock().unwrap().pop_front();
    match reply.unwrap_or(Reply::Refused) {
        Reply::Refused => Err(UpstreamError::Connect(
            "connection refused (scripted)".into(),
        )),
        Reply::Http(status, content_type, steps) => Ok(http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body(steps, script.open_bodies.clone()))
            .unwrap()),
    }
}

/// Counts a scripted body as open until it is dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A body that plays `steps` (the waits in tokio's clock).
pub(crate) fn body(steps: Vec<Step>, open: Arc<AtomicUsize>) -> UpstreamBody {
    open.fetch_add(1, Ordering::SeqCst);
    let state = (steps.into_iter(), Open(open));
    let frames = futures_util::stream::unfold(state, |(mut steps, open)| async move {
        loop {
            let item: Result<Frame<Bytes>, BoxError> = match steps.next()? {
                Step::Data(bytes) => Ok(Frame::data(bytes)),
                Step::Wait(d) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
                Step::Reset => {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
                }
                Step::Eof => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Step::Hang => std::future::pending().await,
            };
            return Some((item, (steps, open)));
        }
    });
    UpstreamBody::Scripted(StreamBody::new(frames).boxed_unsync())
}

/// What a client sends: `operation` on `path`, with `body`.
pub(crate) fn outbound(relay: &Relay, path: &str, body: &str) -> Outbound {
    let (parts, ()) = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(())
        .unwrap()
        .into_parts();
    let base = relay.upstream.base(ops::Route::Runtime);
    let uri = crate::upstream::join(base, path).unwrap();
    Outbound::new(&parts, uri, Bytes::from(body.to_owned()))
}

/// The attempts and policy of a fresh request for `operation`.
pub(crate) fn attempts(relay: &Arc<Relay>, operation: ops::Operation) -> (Attempts, Policy) {
    let policy = Policy::configured(&relay.settings, None);
    (Attempts::new(relay.clone(), operation), policy)
}

/// A record for `path` (operation and model as the request path says).
pub(crate) fn record(path: &str) -> Record {
    let c = ops::classify(&http::Method::POST, path);
    Record::new(c.operation, c.model_id)
}
