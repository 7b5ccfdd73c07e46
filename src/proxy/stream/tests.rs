//! Both wires through [`open`] and the pump, without sockets, in tokio's paused time: the
//! upstream is a script (`crate::proxy::testing`), the client reads the response body. The
//! relay may only replay here (prefill and instructed continuation off), so whatever the
//! fault, the client must receive exactly the uninterrupted stream, byte for byte.

use super::{open, Kind, Open};
use crate::config::{Instructed, Settings};
use crate::eventstream::{self, event};
use crate::proxy::testing::{self, Reply, Script, Step};
use crate::proxy::Relay;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const CONVERSE: &str = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream";
const CONVERSE_BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#;
const MESSAGES: &str = "/anthropic/v1/messages";
const MESSAGES_BODY: &str = r#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";
const SSE: &str = "text/event-stream";

/// A ConverseStream answer, frame by frame.
fn converse_frames() -> Vec<Bytes> {
    let mut frames = vec![event("messageStart", r#"{"role":"assistant"}"#)];
    for piece in ["Once", " upon", " a", " time."] {
        let delta = serde_json::json!({"contentBlockIndex": 0, "delta": {"text": piece}});
        frames.push(event("contentBlockDelta", delta.to_string()));
    }
    frames.push(event("contentBlockStop", r#"{"contentBlockIndex":0}"#));
    frames.push(event("messageStop", r#"{"stopReason":"end_turn"}"#));
    frames.push(event(
        "metadata",
        r#"{"usage":{"inputTokens":5,"outputTokens":4,"totalTokens":9},"metrics":{"latencyMs":40}}"#,
    ));
    frames.iter().map(eventstream::encode).collect()
}

/// An Anthropic Messages answer, event by event (as the codec writes an event back).
fn messages_events() -> Vec<Bytes> {
    let mut events = vec![
        serde_json::json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1}}}),
        serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ];
    for piece in ["Once", " upon", " a", " time."] {
        events.push(serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":piece}}));
    }
    events.push(serde_json::json!({"type":"content_block_stop","index":0}));
    events.push(serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}));
    events.push(serde_json::json!({"type":"message_stop"}));
    events
        .iter()
        .map(|e| {
            Bytes::from(format!(
                "event: {}\ndata: {e}\n\n",
                e["type"].as_str().unwrap()
            ))
        })
        .collect()
}

/// Replay only, no CountTokens: a resumed stream must be byte-exact.
fn replay_only(s: &mut Settings) {
    s.resume.prefill_models.clear();
    s.resume.instructed = Instructed::Off;
    s.resume.count_timeout = Duration::ZERO;
}

/// One wire's request: path, body, operation kind, the answer's content type and events.
struct Case {
    path: &'static str,
    body: &'static str,
    kind: Kind,
    content_type: &'static str,
    events: Vec<Bytes>,
}

fn cases() -> [Case; 2] {
    [
        Case {
            path: CONVERSE,
            body: CONVERSE_BODY,
            kind: Kind::EventStream,
            content_type: EVENTSTREAM,
            events: converse_frames(),
        },
        Case {
            path: MESSAGES,
            body: MESSAGES_BODY,
            kind: Kind::Sse,
            content_type: SSE,
            events: messages_events(),
        },
    ]
}

/// Why the client did not read a whole streamed body.
#[derive(Debug, thiserror::Error)]
enum NotRead {
    /// The body ended with an error: the client's connection would be cut.
    #[error("body cut: {0}")]
    Cut(std::io::Error),
    /// The relay answered whole, not as a stream: the status, or the failure.
    #[error("not a stream: {0:?}")]
    Whole(Result<http::StatusCode, crate::proxy::attempt::Failure>),
}

/// What the client reads: the whole body, or why not.
async fn read(relay: &Arc<Relay>, case: &Case) -> Result<Bytes, NotRead> {
    let outbound = testing::outbound(relay, case.path, case.body);
    let mut record = testing::record(case.path);
    if case.kind == Kind::Sse {
        record.model = Some("anthropic.claude-3-haiku-20240307-v1:0".into());
    }
    let (attempts, policy) = testing::attempts(relay, record.operation);
    match open(relay, case.kind, outbound, attempts, policy, &mut record).await {
        Open::Stream(started) => {
            let body = started.respond(relay.clone(), record).into_body();
            body.collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(NotRead::Cut)
        }
        Open::Whole(result, _) => Err(NotRead::Whole(result.map(|r| r.status()))),
    }
}

/// The events a client received, one by one, the event with the final usage as its type
/// only: usage is the sum over attempts (a failed attempt's tokens were spent), everything
/// else must be byte for byte the uninterrupted stream.
fn events_of(kind: Kind, bytes: &[u8]) -> Vec<Bytes> {
    let mut events = Vec::new();
    match kind {
        Kind::EventStream => {
            let mut splitter = crate::eventstream::FrameSplitter::new();
            splitter.push(bytes);
            while let Some(frame) = splitter.next_frame().expect("whole frames") {
                match frame.kind() {
                    eventstream::Kind::Event("metadata") => events.push(Bytes::from("metadata")),
                    _ => events.push(frame.raw),
                }
            }
            assert_eq!(splitter.pending(), 0, "no torn frame");
        }
        Kind::Sse => {
            let text = std::str::from_utf8(bytes).expect("utf-8");
            assert!(text.ends_with("\n\n"), "whole events: {text}");
            for e in text.split_inclusive("\n\n") {
                match e.starts_with("event: message_delta\n") {
                    true => events.push(Bytes::from("message_delta")),
                    false => events.push(Bytes::copy_from_slice(e.as_bytes())),
                }
            }
        }
    }
    events
}

fn steps(events: &[Bytes]) -> Vec<Step> {
    events.iter().cloned().map(Step::Data).collect()
}

/// The ways an upstream stream breaks, after some events.
const FAULTS: [&str; 5] = ["reset", "eof", "stall", "truncated", "half-event"];

fn broken(events: &[Bytes], cut: usize, fault: &str) -> Vec<Step> {
    let mut s = steps(&events[..cut]);
    match fault {
        "reset" => s.push(Step::Reset),
        "eof" => s.push(Step::Eof),
        "stall" => s.push(Step::Hang),
        "truncated" => {}
        "half-event" => {
            let next = &events[cut.min(events.len() - 1)];
            s.push(Step::Data(next.slice(..next.len() / 2)));
        }
        other => unreachable!("{other}"),
    }
    s
}

#[tokio::test(start_paused = true)]
async fn a_fault_at_every_event_heals_into_the_uninterrupted_stream() {
    for case in cases() {
        let whole: Vec<u8> = case.events.concat();
        for cut in 0..case.events.len() {
            for fault in FAULTS {
                if case.kind == Kind::Sse && cut == 0 && fault == "truncated" {
                    continue; // an event stream without a single event is an empty answer
                }
                let (relay, script) = testing::relay(replay_only);
                script.push(Reply::Http(
                    200,
                    case.content_type,
                    broken(&case.events, cut, fault),
                ));
                script.push(Reply::Http(200, case.content_type, steps(&case.events)));
                let got = read(&relay, &case).await;
                let what = format!("{:?} cut after {cut} events by {fault}", case.kind);
                let got = got.unwrap_or_else(|e| panic!("{what}: body cut: {e}"));
                assert_eq!(
                    events_of(case.kind, &got),
                    events_of(case.kind, &whole),
                    "{what}"
                );
                assert_eq!(script.requests(), 2, "{what}: one retry or resume");
                assert_eq!(script.open_bodies.load(Ordering::SeqCst), 0, "{what}");
                assert_eq!(relay.metrics.active_streams.get(), 0, "{what}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stall_is_detected_after_the_stall_timeout_and_no_sooner() {
    let case = &cases()[0];
    let stall = Duration::from_secs(7);
    let (relay, script) = testing::relay(|s| {
        replay_only(s);
        s.stall_timeout = stall;
    });
    let mut slow = steps(&case.events[..3]);
    // Just under the stall timeout between events: slow, not stalled.
    slow.push(Step::Wait(stall - Duration::from_millis(1)));
    slow.extend(steps(&case.events[3..]));
    script.push(Reply::Http(200, case.content_type, slow));
    let started = tokio::time::Instant::now();
    assert_eq!(read(&relay, case).await.unwrap(), case.events.concat());
    assert_eq!(script.requests(), 1, "a slow stream is not resumed");
    assert!(started.elapsed() >= stall - Duration::from_millis(1));

    let (relay, script) = testing::relay(|s| {
        replay_only(s);
        s.stall_timeout = stall;
    });
    let mut stalled = steps(&case.events[..3]);
    stalled.push(Step::Hang);
    script.push(Reply::Http(200, case.content_type, stalled));
    script.push(Reply::Http(200, case.content_type, steps(&case.events)));
    let started = tokio::time::Instant::now();
    let got = read(&relay, case).await.unwrap();
    assert_eq!(
        events_of(case.kind, &got),
        events_of(case.kind, &case.events.concat())
    );
    assert_eq!(script.requests(), 2);
    let waited = started.elapsed();
    assert!(
        waited >= stall,
        "resumed after {waited:?}, before the stall timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    for case in cases() {
        let (relay, script) = testing::relay(replay_only);
        let mut hanging = steps(&case.events[..3]);
        hanging.push(Step::Hang);
        script.push(Reply::Http(200, case.content_type, hanging));
        let outbound = testing::outbound(&relay, case.path, case.body);
        let mut record = testing::record(case.path);
        record.model = Some("anthropic.claude-3-haiku-20240307-v1:0".into());
        let (attempts, policy) = testing::attempts(&relay, record.operation);
        let Open::Stream(started) =
            open(&relay, case.kind, outbound, attempts, policy, &mut record).await
        else {
            panic!("a stream");
        };
        let mut body = started.respond(relay.clone(), record).into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            first,
            case.events[..3].concat(),
            "what was here came as one write"
        );
        assert_eq!(relay.metrics.active_streams.get(), 1);
        assert_eq!(script.open_bodies.load(Ordering::SeqCst), 1);
        drop(body);
        assert_eq!(
            script.open_bodies.load(Ordering::SeqCst),
            0,
            "upstream dropped"
        );
        assert_eq!(relay.metrics.active_streams.get(), 0);
        assert_eq!(relay.metrics.client_disconnects_total.get(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn with_no_attempt_left_the_client_gets_a_typed_error_and_a_clean_end() {
    for case in cases() {
        let (relay, script) = testing::relay(|s| {
            replay_only(s);
            s.max_attempts = 2;
        });
        let mut first = steps(&case.events[..3]);
        first.push(Step::Reset);
        script.push(Reply::Http(200, case.content_type, first));
        // Every resume attempt is refused (the script answers nothing more).
        let got = read(&relay, &case).await.expect("a clean end, not a cut");
        let (delivered, error) = got.split_at(case.events[..3].concat().len());
        assert_eq!(delivered, &case.events[..3].concat()[..]);
        let text = String::from_utf8_lossy(error);
        match case.kind {
            Kind::EventStream => {
                let m = eventstream::decode(error).expect("one whole frame");
                assert_eq!(
                    eventstream::header_str(&m, ":exception-type"),
                    Some("modelStreamErrorException")
                );
            }
            Kind::Sse => assert!(text.starts_with("event: error\n"), "{text}"),
        }
        assert!(text.contains("no attempt left"), "{text}");
        assert_eq!(script.requests(), 3, "the stream, then two resume attempts");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_gives_up_after_max_resumes() {
    for case in cases() {
        let (relay, script) = testing::relay(|s| {
            replay_only(s);
            s.resume.max_resumes = 1;
        });
        for cut in [2, 4] {
            let mut broken = steps(&case.events[..cut]);
            broken.push(Step::Reset);
            script.push(Reply::Http(200, case.content_type, broken));
        }
        let got = read(&relay, &case).await.expect("a clean end");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("max_resumes"), "{text}");
        assert!(got.starts_with(&case.events[..4].concat()));
        assert_eq!(script.requests(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_replay_that_differs_ends_typed_never_spliced() {
    for case in cases() {
        let (relay, script) = testing::relay(replay_only);
        let mut broken = steps(&case.events[..4]);
        broken.push(Step::Reset);
        script.push(Reply::Http(200, case.content_type, broken));
        let other: Vec<Bytes> = case
            .events
            .iter()
            .map(|e| Bytes::from(String::from_utf8_lossy(e).replace("upon", "UPON")))
            .collect();
        let other = match case.kind {
            // Re-framed: the text changed inside each frame's payload.
            Kind::EventStream => converse_frames()
                .iter()
                .map(|f| {
                    let m = eventstream::decode(f).unwrap();
                    let p = String::from_utf8_lossy(m.payload()).replace("upon", "UPON");
                    eventstream::encode(&eventstream::with_payload(&m, p))
                })
                .collect(),
            Kind::Sse => other,
        };
        script.push(Reply::Http(200, case.content_type, steps(&other)));
        let got = read(&relay, &case).await.expect("a clean end");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("diverged"), "{text}");
        assert!(
            !text.contains("UPON"),
            "nothing of the other answer reached the client"
        );
    }
}

/// The script itself: a reply per request, in order, then refusals.
#[tokio::test(start_paused = true)]
async fn the_script_answers_in_order() {
    let (relay, script): (Arc<Relay>, Arc<Script>) = testing::relay(|_| {});
    script.push(Reply::Http(503, "application/json", vec![]));
    let req = http::Request::post("http://bedrock.test/x")
        .body(Bytes::new())
        .unwrap();
    let resp = relay.upstream.send(req.clone()).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(relay.upstream.send(req).await.is_err());
}

#[tokio::test]
async fn a_pump_that_panics_cuts_the_body_and_is_counted() {
    let (relay, _) = testing::relay(|_| {});
    let panicking =
        futures_util::stream::poll_fn(|_| -> std::task::Poll<Option<std::io::Result<Bytes>>> {
            panic!("a bug in the pump")
        });
    let body = super::pump::PumpBody::new(panicking, relay.clone());
    let read = body.collect().await;
    assert!(
        read.is_err(),
        "the client's body ends with an error, not cleanly"
    );
    assert_eq!(relay.metrics.stream_panics_total.get(), 1);
}

/// The generated schedules' random source (seeded: a seed always gives the same cases).
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        rand::Rng::random_range(&mut self.0, 0..n)
    }
}

/// An attempt's bytes up to `upto`, split at random offsets (never at event boundaries by
/// design), then `fault`.
fn chunked(bytes: &[u8], upto: usize, fault: Option<Step>, rng: &mut Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut at = 0;
    while at < upto {
        let n = 1 + rng.below((upto - at).min(300));
        steps.push(Step::Data(Bytes::copy_from_slice(&bytes[at..at + n])));
        if rng.below(4) == 0 {
            steps.push(Step::Wait(Duration::from_millis(rng.below(50) as u64)));
        }
        at += n;
    }
    steps.extend(fault);
    steps
}

/// Generated schedules, wider than the cases the pump was written for: each attempt's bytes
/// arrive in random pieces and break at a random byte (inside an event, between two, before
/// the first, after the last) in a random way, up to three times in one stream; the client
/// must still get the uninterrupted stream, event for event.
#[tokio::test(start_paused = true)]
async fn generated_fault_schedules_heal_on_both_wires() {
    let mut rng = Rng::new(20_261_206);
    let cases = cases();
    for n in 0..600 {
        let case = &cases[rng.below(2)];
        let whole: Vec<u8> = case.events.concat();
        // Three stalls of the default 5 minutes would pass the request's deadline (a typed
        // end, by design): a shorter stall timeout keeps every schedule within it.
        let (relay, script) = testing::relay(|s| {
            replay_only(s);
            s.stall_timeout = Duration::from_secs(10);
        });
        let faults = rng.below(4);
        for _ in 0..faults {
            let upto = rng.below(whole.len() + 1);
            let fault = match rng.below(4) {
                0 => Some(Step::Reset),
                1 => Some(Step::Eof),
                2 => Some(Step::Hang),
                _ => None, // a clean end before the answer's end
            };
            let steps = chunked(&whole, upto, fault, &mut rng);
            script.push(Reply::Http(200, case.content_type, steps));
        }
        let steps = chunked(&whole, whole.len(), None, &mut rng);
        script.push(Reply::Http(200, case.content_type, steps));
        let what = format!("case {n}: {:?}, {faults} faults", case.kind);
        let got = read(&relay, case).await;
        match got {
            Ok(got) => assert_eq!(
                events_of(case.kind, &got),
                events_of(case.kind, &whole),
                "{what}"
            ),
            // An event stream that ends before its first event is an (empty) answer.
            Err(NotRead::Whole(_)) if case.kind == Kind::Sse => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert_eq!(relay.metrics.active_streams.get(), 0, "{what}");
        assert_eq!(script.open_bodies.load(Ordering::SeqCst), 0, "{what}");
    }
}
