//! The simulator seen through a raw HTTP/1.1 client: exact bytes of torn streams, control
//! and log endpoints, Bedrock errors, prefill and continuation rules, every model family.

use base64::Engine as _;
use bedrock_relay::eventstream::{header_str, FrameSplitter};
use bedrock_relay::sim::{self, Fault, FaultRule, SimConfig, SimHandle};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const NO_PREFILL: &str = "us.anthropic.claude-opus-4-6-v1";

#[derive(Debug, PartialEq)]
enum End {
    /// Content-length satisfied or chunked terminator seen.
    Complete,
    /// FIN before the body was complete.
    Eof,
    /// The read failed with ECONNRESET.
    Reset,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
    end: End,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// Whole frames in the body: (event or exception type, payload JSON).
    fn frames(&self) -> Vec<(String, Value)> {
        let mut s = FrameSplitter::new();
        s.push(&self.body);
        let mut out = Vec::new();
        while let Ok(Some(f)) = s.next_frame() {
            let ty = header_str(&f.message, ":event-type")
                .or(header_str(&f.message, ":exception-type"))
                .unwrap_or("")
                .to_owned();
            out.push((
                ty,
                serde_json::from_slice(f.message.payload()).unwrap_or(Value::Null),
            ));
        }
        out
    }
}

/// One request on a fresh connection (`connection: close`); reads until EOF or reset.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let mut reset = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no hang")
        {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                reset = true;
                break;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    parse(&raw, reset)
}

fn parse(raw: &[u8], reset: bool) -> Resp {
    let fail = if reset { End::Reset } else { End::Eof };
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Resp {
            status: 0,
            head: String::new(),
            body: Vec::new(),
            end: fail,
        };
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = &raw[head_end + 4..];
    let mut resp = Resp {
        status,
        head,
        body: Vec::new(),
        end: End::Complete,
    };
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        resp.body = rest[..len.min(rest.len())].to_vec();
        if rest.len() < len {
            resp.end = fail;
        }
        return resp;
    }
    loop {
        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
            resp.end = fail;
            return resp;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
        if size == 0 {
            return resp;
        }
        let data = &rest[nl + 2..];
        if data.len() < size + 2 {
            resp.body.extend_from_slice(&data[..size.min(data.len())]);
            resp.end = fail;
            return resp;
        }
        resp.body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

fn converse_body(turns: &[(&str, &str)]) -> String {
    let messages: Vec<Value> = turns
        .iter()
        .map(|(r, t)| json!({"role": r, "content": [{"text": t}]}))
        .collect();
    json!({ "messages": messages }).to_string()
}

async fn start() -> SimHandle {
    sim::start(SimConfig::default()).await.unwrap()
}

#[tokio::test]
async fn torn_streams_have_exact_bytes() {
    let sim = start().await;
    let path = format!("/model/{CLAUDE}/converse-stream");
    let full = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", "exact sim:len=30")]),
    )
    .await;
    assert_eq!(full.end, End::Complete);
    assert_eq!(
        full.header("content-type").as_deref(),
        Some("application/vnd.amazon.eventstream")
    );
    assert!(full.header("x-amzn-requestid").is_some());
    let frames = full.frames();
    assert_eq!(frames.len(), 1 + 30 + 1 + 2);
    assert!(frames.iter().all(|(_, v)| v["p"].is_string()));

    let cases = [
        ("reset_after_events:events=4@tag=a", End::Reset, 4, false),
        ("reset_mid_frame:events=4@tag=b", End::Reset, 4, true),
        ("eof_no_terminator:events=4@tag=c", End::Eof, 4, false),
        (
            "truncate:events=99@tag=d",
            End::Complete,
            frames.len() - 2,
            false,
        ),
        (
            "exception:events=4,type=modelStreamErrorException@tag=e",
            End::Complete,
            5,
            false,
        ),
    ];
    for (spec, end, whole, partial) in cases {
        sim.add_rule(FaultRule::parse_spec(spec).unwrap());
        let tag = &spec[spec.len() - 1..];
        let r = send(
            sim.addr,
            "POST",
            &path,
            &[],
            &converse_body(&[("user", &format!("exact sim:len=30 sim:tag={tag}"))]),
        )
        .await;
        assert_eq!(r.end, end, "{spec}");
        let got = r.frames();
        assert_eq!(got.len(), whole, "{spec}");
        let whole_bytes: usize = {
            let mut s = FrameSplitter::new();
            s.push(&r.body);
            let mut n = 0;
            while let Ok(Some(f)) = s.next_frame() {
                n += f.raw.len();
            }
            n
        };
        assert_eq!(
            r.body.len() > whole_bytes,
            partial,
            "{spec}: half a frame follows"
        );
    }
    let exc = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", "exact sim:len=30 sim:tag=e")]),
    )
    .await;
    let last = exc.frames().pop().unwrap();
    assert_eq!(last.0, "modelStreamErrorException");
    assert_eq!(last.1["originalStatusCode"], 500);

    sim.add_rule(FaultRule::parse_spec("corrupt_crc:events=2@tag=f").unwrap());
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", "exact sim:tag=f")]),
    )
    .await;
    let mut s = FrameSplitter::new();
    s.push(&r.body);
    assert!(s.next_frame().unwrap().is_some() && s.next_frame().unwrap().is_some());
    assert!(s.next_frame().is_err(), "third frame has a bad CRC");
    sim.shutdown().await;
}

#[tokio::test]
async fn control_and_log_endpoints() {
    let sim = start().await;
    let r = send(
        sim.addr,
        "POST",
        "/_sim/faults",
        &[],
        r#"[{"kind":"status","code":503,"tag":"x","attempts":[1]}]"#,
    )
    .await;
    assert_eq!(r.json()["added"], 1);
    assert_eq!(
        send(sim.addr, "GET", "/_sim/faults", &[], "").await.json()[0]["kind"],
        "status"
    );
    let path = format!("/model/{CLAUDE}/converse");
    let body = converse_body(&[("user", "hello sim:tag=x")]);
    let r = send(sim.addr, "POST", &path, &[], &body).await;
    assert_eq!(r.status, 503);
    assert!(r
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("ServiceUnavailableException:"));
    assert_eq!(send(sim.addr, "POST", &path, &[], &body).await.status, 200);
    let log = send(sim.addr, "GET", "/_sim/log", &[], "").await.json();
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["fault"], "status");
    assert_eq!(log[0]["tag"], "x");
    assert_eq!(log[1]["attempt"], 2);
    assert_eq!(log[1]["signature"], "unchecked");
    assert_eq!(log[1]["body"]["messages"][0]["role"], "user");
    assert_eq!(log[0]["conversation"], log[1]["conversation"]);
    assert_eq!(
        send(
            sim.addr,
            "POST",
            "/_sim/faults",
            &[],
            "[{\"kind\":\"nope\"}]"
        )
        .await
        .status,
        400
    );
    send(sim.addr, "DELETE", "/_sim/faults", &[], "").await;
    send(sim.addr, "DELETE", "/_sim/log", &[], "").await;
    assert_eq!(
        send(sim.addr, "GET", "/_sim/log", &[], "").await.json(),
        json!([])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bedrock_errors_for_unknown_paths_bad_json_and_auth() {
    let sim = start().await;
    let r = send(sim.addr, "POST", "/model/m/summon", &[], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("UnknownOperationException:"));
    let r = send(
        sim.addr,
        "POST",
        &format!("/model/{CLAUDE}/converse"),
        &[],
        "{not json",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("ValidationException:"));
    sim.shutdown().await;

    let config = SimConfig {
        bearer_tokens: vec!["tok".into()],
        credentials: vec![("AK".into(), "SK".into())],
        ..SimConfig::default()
    };
    let sim = sim::start(config).await.unwrap();
    let path = format!("/model/{CLAUDE}/converse");
    let body = converse_body(&[("user", "hi")]);
    let r = send(sim.addr, "POST", &path, &[], &body).await;
    assert_eq!(
        (
            r.status,
            r.header("x-amzn-errortype")
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        ),
        (403, "MissingAuthenticationTokenException".to_owned())
    );
    assert_eq!(
        send(
            sim.addr,
            "POST",
            &path,
            &[("authorization", "Bearer tok")],
            &body
        )
        .await
        .status,
        200
    );
    let bad = "AWS4-HMAC-SHA256 Credential=AK/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[("authorization", bad), ("x-amz-date", "20250101T000000Z")],
        &body,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));
    let signatures: Vec<Value> = sim
        .log()
        .iter()
        .map(|e| e.signature.clone().into())
        .collect();
    assert_eq!(
        signatures,
        [json!("missing"), json!("bearer"), json!("invalid")]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn prefill_and_instructed_continuation() {
    let sim = start().await;
    let q = "Explain sim:len=80";
    let reference = sim::reference_pieces(CLAUDE, "", &[("user", q)]);
    let text = reference.concat();
    let path = format!("/model/{CLAUDE}/converse-stream");
    // Prefill on a piece boundary: the remaining deltas are exactly the reference pieces.
    let prefill = reference[..20].concat();
    let prefill = prefill.trim_end();
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", q), ("assistant", prefill)]),
    )
    .await;
    let deltas: Vec<String> = r
        .frames()
        .iter()
        .filter_map(|(_, v)| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(format!("{prefill}{}", deltas.concat()), text);
    if prefill.len() == reference[..20].concat().len() {
        assert_eq!(deltas, reference[20..]);
    }
    let log = sim.log();
    assert_eq!(log[0].prefill.as_deref(), Some(prefill));
    // Prefill ending mid-piece: the rest of that piece comes first, then the same pieces.
    let cut = reference[..10].concat().len() + 2;
    let mid = text[..cut].trim_end();
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", q), ("assistant", mid)]),
    )
    .await;
    let deltas: Vec<String> = r
        .frames()
        .iter()
        .filter_map(|(_, v)| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(format!("{mid}{}", deltas.concat()), text);
    assert_eq!(deltas[1..], reference[11..]);

    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", q), ("assistant", "The end ")]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("final assistant content cannot end with trailing whitespace"));
    let np = format!("/model/{NO_PREFILL}/converse");
    let r = send(
        sim.addr,
        "POST",
        &np,
        &[],
        &converse_body(&[("user", q), ("assistant", "The")]),
    )
    .await;
    assert_eq!(r.json()["message"], "This model does not support assistant message prefill. The conversation must end with a user message.");

    // Instructed continuation on a model without prefill.
    let nref = sim::reference_text(NO_PREFILL, "", &[("user", q)]);
    let delivered = nref[..nref.len() / 3].trim_end();
    let ask = "Your previous response was cut off. Continue exactly where it stopped, without repeating anything.";
    let r = send(
        sim.addr,
        "POST",
        &np,
        &[],
        &converse_body(&[("user", q), ("assistant", delivered), ("user", ask)]),
    )
    .await;
    assert_eq!(r.status, 200);
    let answer = r.json()["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let rest = &nref[delivered.len()..];
    let overlap = (0..=delivered.len())
        .rev()
        .find(|k| {
            delivered.is_char_boundary(delivered.len() - k)
                && answer.starts_with(&delivered[delivered.len() - k..])
        })
        .unwrap_or(0);
    assert_eq!(
        answer[overlap..].trim_start(),
        rest.trim_start(),
        "overlap {overlap}"
    );
    assert!(sim.log().last().unwrap().continuation);
    // Prefilled and continued requests are later attempts of the same conversation.
    let claude: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|e| e.model_id.as_deref() == Some(CLAUDE))
        .collect();
    assert!(claude
        .windows(2)
        .all(|w| w[0].conversation == w[1].conversation));
    assert_eq!(
        claude.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        (1..=claude.len() as u32).collect::<Vec<_>>()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn every_family_streams_and_answers_with_native_shapes() {
    let sim = start().await;
    let cases = [
        (
            CLAUDE,
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}),
        ),
        (
            "amazon.nova-lite-v1:0",
            json!({"messages": [{"role": "user", "content": [{"text": "q"}]}], "inferenceConfig": {"maxTokens": 10}}),
        ),
        (
            "meta.llama3-8b-instruct-v1:0",
            json!({"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "max_gen_len": 10}),
        ),
        (
            "mistral.mistral-7b-instruct-v0:2",
            json!({"prompt": "<s>[INST] q [/INST]", "max_tokens": 10}),
        ),
        (
            "amazon.titan-text-express-v1",
            json!({"inputText": "User: q\nBot:", "textGenerationConfig": {"maxTokenCount": 10}}),
        ),
    ];
    for (model, body) in cases {
        let expected: String = sim::reference_pieces(model, "", &[("user", "q")])[..10].concat();
        let r = send(
            sim.addr,
            "POST",
            &format!("/model/{model}/invoke-with-response-stream"),
            &[],
            &body.to_string(),
        )
        .await;
        assert_eq!(
            r.header("x-amzn-bedrock-content-type").as_deref(),
            Some("application/json"),
            "{model}"
        );
        let inner: Vec<Value> = r
            .frames()
            .iter()
            .map(|(ty, v)| {
                assert_eq!(ty, "chunk");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v["bytes"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&bytes).unwrap()
            })
            .collect();
        let text: String = inner
            .iter()
            .filter_map(|e| {
                e.pointer("/delta/text")
                    .or(e.pointer("/contentBlockDelta/delta/text"))
                    .or(e.get("generation"))
                    .or(e.pointer("/outputs/0/text"))
                    .or(e.get("outputText"))
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, expected, "{model}");
        let last = inner.last().unwrap();
        assert_eq!(
            last["amazon-bedrock-invocationMetrics"]["outputTokenCount"], 10,
            "{model}"
        );
        let stop = last
            .pointer("/stop_reason")
            .or(last.pointer("/outputs/0/stop_reason"))
            .or(last.get("completionReason"))
            .cloned()
            .unwrap_or(Value::Null);
        if !stop.is_null() {
            assert!(
                ["length", "LENGTH"].contains(&stop.as_str().unwrap()),
                "{model}: {stop}"
            );
        }
        let r = send(
            sim.addr,
            "POST",
            &format!("/model/{model}/invoke"),
            &[],
            &body.to_string(),
        )
        .await;
        assert_eq!(
            r.header("x-amzn-bedrock-output-token-count").as_deref(),
            Some("10"),
            "{model}"
        );
        let escaped = serde_json::to_string(&expected).unwrap();
        assert!(
            r.json()
                .to_string()
                .contains(&escaped[1..escaped.len() - 1]),
            "{model}"
        );
    }
    let claude_prefill = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 500,
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text", "text": "Pre"}]}]});
    let r = send(
        sim.addr,
        "POST",
        &format!("/model/{CLAUDE}/invoke"),
        &[],
        &claude_prefill.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.log().last().unwrap().prefill.as_deref(), Some("Pre"));
    let count = send(sim.addr, "POST", &format!("/model/{CLAUDE}/count-tokens"), &[], &json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "one two three"}]}]}}}).to_string()).await;
    assert_eq!(count.json()["inputTokens"], 3);
    let g = send(
        sim.addr,
        "POST",
        "/guardrail/g1/version/1/apply",
        &[],
        r#"{"source":"INPUT","content":[]}"#,
    )
    .await;
    assert_eq!(g.json()["action"], "NONE");
    sim.shutdown().await;
}

#[tokio::test]
async fn keep_alive_and_chunked_request_bodies() {
    let sim = start().await;
    let mut s = TcpStream::connect(sim.addr).await.unwrap();
    let body = converse_body(&[("user", "ka")]);
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /model/{CLAUDE}/converse HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\nGET /_sim/log HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        a.len(), b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains(&sim::reference_text(CLAUDE, "", &[("user", "ka")])[..20]));
    sim.shutdown().await;
}

#[tokio::test]
async fn random_faults_are_reproducible() {
    async fn run() -> Vec<Option<String>> {
        let config = SimConfig {
            fault_rate: 0.5,
            seed: 42,
            ..SimConfig::default()
        };
        let sim = sim::start(config).await.unwrap();
        for i in 0..16 {
            let body = converse_body(&[("user", &format!("random {i}"))]);
            send(
                sim.addr,
                "POST",
                &format!("/model/{CLAUDE}/converse-stream"),
                &[],
                &body,
            )
            .await;
        }
        let kinds = sim.log().into_iter().map(|e| e.fault).collect();
        sim.shutdown().await;
        kinds
    }
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(
        a.iter().any(Option::is_some) && a.iter().any(Option::is_none),
        "{a:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let sim = start().await;
    let addr = sim.addr;
    sim.add_rule(FaultRule {
        operation: None,
        tag: None,
        attempts: None,
        fault: Fault::Stall {
            events: 1,
            duration: Duration::from_secs(30),
        },
    });
    let stalled = tokio::spawn(async move {
        send(
            addr,
            "POST",
            &format!("/model/{CLAUDE}/converse-stream"),
            &[],
            &converse_body(&[("user", "s")]),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(2), sim.shutdown())
        .await
        .expect("shutdown does not wait for stalled streams");
    let torn = stalled.await.unwrap();
    assert_ne!(torn.end, End::Complete);
    assert!(TcpStream::connect(addr).await.is_err());
}
