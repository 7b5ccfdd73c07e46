//! Fuzzing on stable: proptest-driven targets for every parser that sees untrusted bytes,
//! run for a bounded number of cases in CI (`FUZZ_CASES`, default 512 each; set it higher
//! for a longer local run). cargo-fuzz needs nightly, which this project does not use.
//!
//! Targets: the EventStream frame splitter (arbitrary bytes, arbitrary chunking, bit flips
//! in valid frames), the transcript + resumption planner + splicer (arbitrary event
//! sequences and request bodies), the config loader (arbitrary TOML text and values), and
//! the inbound SigV4/bearer parsing (arbitrary Authorization headers). Each asserts the
//! invariant that matters, not only "no panic". Failures are persisted by proptest under
//! `tests/fuzz_inputs.proptest-regressions` and replayed first on every run: a crash found
//! once stays a regression test.

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bedrock_relay::resume::{self, Family, ModelCaps, Msg, StreamFormat, Transcript};
use bedrock_relay_wire::eventstream::{self, FrameSplitter};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    }
}

fn event(event_type: &str, payload: Vec<u8>) -> Message {
    Message::new(payload)
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_string().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
}

const EVENT_TYPES: &[&str] = &[
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
    "chunk",
    "unknownThing",
];

/// Payloads that are sometimes well-formed ConverseStream / chunk JSON, sometimes not.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        (0u32..4, ".{0,20}").prop_map(|(i, t)| serde_json::json!({"contentBlockIndex": i, "delta": {"text": t}}).to_string().into_bytes()),
        (0u32..4, ".{0,12}").prop_map(|(i, n)| serde_json::json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": "t", "name": n}}}).to_string().into_bytes()),
        Just(br#"{"role":"assistant"}"#.to_vec()),
        Just(br#"{"stopReason":"end_turn"}"#.to_vec()),
        (0u64..1000).prop_map(|n| serde_json::json!({"usage": {"inputTokens": n, "outputTokens": n, "totalTokens": 2 * n}}).to_string().into_bytes()),
        any::<Vec<u8>>().prop_map(|b| {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.encode(b);
            serde_json::json!({"bytes": bytes}).to_string().into_bytes()
        }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (prop::sample::select(EVENT_TYPES), payload()).prop_map(|(t, p)| event(t, p))
}

/// Claude messages events' JSON (the SSE APIs' core events), sometimes well-formed, sometimes
/// not: every type and unknown ones, indices of every kind, arbitrary bytes.
fn claude_json() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop::sample::select(vec![
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "sse_chat",
        "unknown_thing",
    ]);
    let index = prop_oneof![
        (0u32..4).prop_map(serde_json::Value::from),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!("0")),
        Just(serde_json::Value::Null),
    ];
    let delta = prop_oneof![
        ".{0,20}".prop_map(|t| serde_json::json!({"type": "text_delta", "text": t})),
        ".{0,20}".prop_map(|t| serde_json::json!({"type": "input_json_delta", "partial_json": t})),
        ".{0,20}".prop_map(|t| serde_json::json!({"type": "thinking_delta", "thinking": t})),
        prop::sample::select(vec!["end_turn", "max_tokens", "tool_use", ""])
            .prop_map(|r| serde_json::json!({"stop_reason": r})),
    ];
    let block = prop_oneof![
        Just(serde_json::json!({"type": "text", "text": ""})),
        ".{0,8}".prop_map(|n| serde_json::json!({"type": "tool_use", "id": "t", "name": n})),
        Just(serde_json::json!({"type": "thinking", "thinking": ""})),
    ];
    prop_oneof![
        4 => (kind, index, delta, block, 0u64..1000).prop_map(|(kind, index, delta, block, n)| {
            serde_json::json!({"type": kind, "index": index, "delta": delta, "content_block": block,
                "usage": {"input_tokens": n, "output_tokens": n},
                "message": {"usage": {"input_tokens": n}}})
            .to_string()
            .into_bytes()
        }),
        1 => any::<Vec<u8>>(),
    ]
}

/// A core message: an EventStream frame, or a Claude messages event's JSON.
fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        message().prop_map(Msg::Frame),
        claude_json().prop_map(|j| Msg::Json(j.into())),
    ]
}

fn format() -> impl Strategy<Value = StreamFormat> {
    prop::sample::select(vec![
        StreamFormat::Messages,
        StreamFormat::Converse,
        StreamFormat::Invoke(Family::Claude),
        StreamFormat::Invoke(Family::Nova),
        StreamFormat::Invoke(Family::Llama),
        StreamFormat::Invoke(Family::Mistral),
        StreamFormat::Invoke(Family::Titan),
        StreamFormat::Invoke(Family::Other),
    ])
}

/// One header's bytes, often well-formed, sometimes not: names that matter to the relay,
/// other names, invalid UTF-8; every value type and unknown ones; string lengths that lie.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        4 => prop::sample::select(vec![":message-type", ":event-type", ":exception-type", ":error-code", ":content-type"])
            .prop_map(|n| n.as_bytes().to_vec()),
        1 => prop::sample::select(vec!["event", "exception", "error", "x"]).prop_map(|n| n.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec!["event", "exception", "error", "contentBlockDelta", "throttlingException"])
            .prop_map(|v| v.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ];
    (name, 0u8..12, value, any::<bool>(), -3i32..3, any::<bool>()).prop_map(
        |(name, ty, value, lie_name, lie, lie_value)| {
            let mut out = vec![name.len() as u8 + u8::from(lie_name)];
            out.extend_from_slice(&name);
            out.push(ty);
            match ty {
                6 | 7 => {
                    let len = if lie_value {
                        (value.len() as i32 + lie).max(0)
                    } else {
                        value.len() as i32
                    };
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                    out.extend_from_slice(&value);
                }
                0 | 1 => {}
                _ => out.extend_from_slice(&value[..value.len().min(8)]),
            }
            out
        },
    )
}

/// A frame with correct length fields and CRCs around a header section that may be
/// malformed (the only way random input gets past both checksums).
fn checksummed_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(header_bytes(), 0..5),
        -2i32..2,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(headers, lie, lie_len, payload)| {
            let headers: Vec<u8> = headers.concat();
            let headers_len = if lie_len {
                (headers.len() as i32 + lie).max(0) as u32
            } else {
                headers.len() as u32
            };
            let total = (12 + headers.len() + payload.len() + 4) as u32;
            let mut out = total.to_be_bytes().to_vec();
            out.extend_from_slice(&headers_len.to_be_bytes());
            let prelude_crc = crc32fast::hash(&out);
            out.extend_from_slice(&prelude_crc.to_be_bytes());
            out.extend_from_slice(&headers);
            out.extend_from_slice(&payload);
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_be_bytes());
            out
        })
}

proptest! {
    #![proptest_config(config())]

    /// The relay's own frame check (which spares it decoding every frame) gives the same
    /// verdict as aws-smithy-eventstream's decoder, which the SDKs use: on well-formed and
    /// malformed header sections behind valid checksums, on every bit flip and on arbitrary
    /// bytes. Where both accept, the relay reads the same type and payload.
    #[test]
    fn frame_check_agrees_with_the_smithy_decoder(
        frame in prop_oneof![
            4 => checksummed_frame(),
            1 => (message(), any::<prop::sample::Index>(), 0u8..8).prop_map(|(m, at, bit)| {
                let mut raw = eventstream::encode(&m).to_vec();
                let i = at.index(raw.len());
                raw[i] ^= 1 << bit;
                raw
            }),
            1 => any::<Vec<u8>>(),
        ],
    ) {
        let ours = eventstream::Frame::check(bytes::Bytes::from(frame.clone()));
        let theirs = eventstream::decode(&frame);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "check: {:?}, decoder: {:?}", ours.as_ref().err(), theirs.as_ref().err());
        if let (Ok(f), Ok(m)) = (ours, theirs) {
            prop_assert_eq!(f.kind(), eventstream::kind(&m));
            prop_assert_eq!(f.payload(), &m.payload()[..]);
            prop_assert_eq!(f.message(), m);
        }
    }

    /// Arbitrary bytes in arbitrary chunks: the splitter errors or yields frames whose raw
    /// bytes decode to the same message; it never panics or buffers past one frame's worth
    /// plus the chunk it was given.
    #[test]
    fn frame_splitter_on_arbitrary_bytes(bytes in any::<Vec<u8>>(), cut in any::<prop::sample::Index>()) {
        let mut s = FrameSplitter::new();
        let at = cut.index(bytes.len() + 1);
        for chunk in [&bytes[..at], &bytes[at..]] {
            s.push(chunk);
            while let Ok(Some(f)) = s.next_frame() {
                prop_assert_eq!(eventstream::decode(&f.raw).ok(), Some(f.message()));
            }
        }
        prop_assert!(s.pending() <= bytes.len());
    }

    /// Valid frames split anywhere come out whole and identical; one flipped bit is caught
    /// by a CRC (never a silently different frame).
    #[test]
    fn frame_splitter_on_valid_and_flipped_frames(
        msgs in prop::collection::vec(message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let wire: Vec<u8> = msgs.iter().flat_map(|m| eventstream::encode(m).to_vec()).collect();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len())).collect();
        points.sort_unstable();
        let mut s = FrameSplitter::new();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([wire.len()]) {
            s.push(&wire[last..p]);
            last = p;
            while let Some(f) = s.next_frame().expect("valid frames split cleanly") {
                out.push(f.raw);
            }
        }
        let expected: Vec<_> = msgs.iter().map(eventstream::encode).collect();
        prop_assert_eq!(out, expected);

        let mut bad = wire.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        let mut s = FrameSplitter::new();
        s.push(&bad);
        let mut good = Vec::new();
        let mut failed = false;
        loop {
            match s.next_frame() {
                Ok(Some(f)) => good.push(f.raw),
                Ok(None) => break,
                Err(_) => { failed = true; break; }
            }
        }
        let original: Vec<_> = msgs.iter().map(eventstream::encode).collect();
        prop_assert!(good.iter().all(|g| original.contains(g)), "a corrupted frame was accepted");
        prop_assert!(failed || good.len() < original.len(), "the flip went unnoticed");
    }

    /// Arbitrary event sequences (EventStream frames and SSE APIs' Claude JSON events, in
    /// every format, mixed) through the transcript, the planner and the splicer: no
    /// panic; once the delivered content passes the per-stream limit the transcript drops it
    /// (`overflowed`) and the planner refuses to resume instead of buffering more.
    #[test]
    fn transcript_plan_and_splice_on_arbitrary_events(
        fmt in format(),
        first in prop::collection::vec(msg(), 0..12),
        second in prop::collection::vec(msg(), 0..12),
        body in prop_oneof![any::<Vec<u8>>(), Just(br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#.to_vec()), Just(br#"{"anthropic_version":"bedrock-2023-05-31","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#.to_vec())],
        limit in 0usize..256,
        prefill in any::<bool>(),
        instructed in any::<bool>(),
        replay in any::<bool>(),
    ) {
        let mut t = Transcript::with_limit(fmt, limit);
        for m in &first {
            t.observe(m);
            prop_assert!(t.bytes() <= limit || t.overflowed(), "{} bytes kept over the limit {limit}", t.bytes());
        }
        let caps = ModelCaps { prefill, instructed, replay };
        let overflowed = t.overflowed() && !t.is_complete();
        let planned = resume::plan(&fmt, &body, &mut t, &caps);
        if overflowed {
            prop_assert!(matches!(planned, Err(resume::CannotResume::TranscriptTooLarge { .. })), "{planned:?}");
        }
        if let Ok(mut cont) = planned {
            for m in &second {
                match cont.splicer.accept(m) {
                    Ok(out) => for s in out { t.observe(&s.into_message(m)); },
                    Err(_) => break,
                }
            }
            prop_assert!(t.bytes() <= limit || t.overflowed());
        }
    }
}

fn known_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "listen",
        "admin_listen",
        "region",
        "upstream",
        "stall_timeout",
        "max_attempts",
        "backoff_base",
        "backoff_max",
        "retry_budget",
        "max_request_body",
        "log_format",
        "resume.max_resumes",
        "resume.prefill_models",
        "resume.replay",
        "inbound.bearer_tokens",
        "inbound.allow_models",
        "inbound.deny_operations",
        "inbound.max_concurrency_per_client",
        "inbound.header_read_timeout",
        "inbound.max_header_bytes",
        "inbound.sigv4_keys",
        "inbound.max_clock_skew",
    ])
    .prop_map(str::to_string)
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"[ -~]{0,16}\"",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[\"(\", \"x\"]".to_string()),
        Just("[{ access_key_id = \"\", secret_access_key = \"\" }]".to_string()),
        Just("[{ env = \"RELAY_FUZZ_UNSET\" }]".to_string()),
        "[ -~]{0,12}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary config files (random text, or known keys with random values): `load`
    /// returns settings or a list of problems, never panics; invalid never passes silently
    /// when the text is not TOML at all.
    #[test]
    fn config_loader_on_arbitrary_files(
        text in prop_oneof![
            "[ -~\n]{0,200}",
            prop::collection::vec((known_key(), toml_value()), 0..6).prop_map(|kv| {
                kv.into_iter()
                    .map(|(k, v)| match k.split_once('.') {
                        Some((table, key)) => format!("[{table}]\n{key} = {v}\n"),
                        None => format!("{k} = {v}\n"),
                    })
                    .collect::<String>()
            }),
        ],
    ) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        let args = bedrock_relay::ServeArgs {
            config: Some(f.path().to_path_buf()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        match bedrock_relay::load_config(&args) {
            Ok(s) => prop_assert!(s.listen.ip().is_loopback() || s.inbound.authenticates() || s.inbound.allow_unauthenticated_non_loopback),
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    /// Arbitrary Authorization headers: parsing never panics, and nothing but a correct
    /// signature or token is ever accepted.
    #[test]
    fn inbound_auth_on_arbitrary_headers(
        authz in prop_oneof![
            "[ -~]{0,120}",
            "Bearer [ -~]{0,20}",
            ("[A-Z0-9]{0,12}", "[0-9]{0,8}", "[a-z0-9-]{0,12}", "[a-z;-]{0,30}", "[0-9a-f]{0,64}").prop_map(|(k, d, r, s, sig)| {
                format!("AWS4-HMAC-SHA256 Credential={k}/{d}/{r}/bedrock/aws4_request, SignedHeaders={s}, Signature={sig}")
            }),
        ],
        date in "[0-9TZ]{0,16}",
        body in any::<Vec<u8>>(),
    ) {
        use bedrock_relay_wire::sigv4::{self, SignedRequest, Verdict};
        let _ = sigv4::parse_authorization(&authz);
        let headers = vec![
            ("host".to_string(), "127.0.0.1:8790".to_string()),
            ("x-amz-date".to_string(), date),
            ("authorization".to_string(), authz),
        ];
        let req = SignedRequest { method: "POST", path: "/model/m/converse", query: "", headers: &headers, body: &body };
        let keys = vec![("AKIDAPP".to_string(), "app-secret".to_string())];
        let tokens = vec!["the-one-token".to_string()];
        let v = sigv4::verify(&req, &keys, &tokens);
        prop_assert!(v != Verdict::Valid && v != Verdict::Bearer && v != Verdict::Unchecked, "{v:?}");
    }
}
