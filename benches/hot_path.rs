//! Criterion benchmarks of the relay's per-request and per-event work: SigV4 signing of a
//! typical ConverseStream request, and splitting + CRC-checking + re-encoding a typical
//! `contentBlockDelta` frame. Run: `cargo bench --bench hot_path`.
//!
//! `sigv4/sign_converse_stream_2KiB` is the relay's signer (canonical request built in one
//! buffer, signing key cached); `sigv4/aws_sigv4_full_2KiB` signs the same request with
//! aws-sigv4's full signer and the same settings, the baseline of the same run.

use bedrock_relay::Signer;
use bedrock_relay_wire::eventstream::{self, FrameSplitter};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn request_body() -> Bytes {
    let text = "Summarise the following text in three sentences. ".repeat(40);
    Bytes::from(serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}], "inferenceConfig": {"maxTokens": 1024}}).to_string())
}

fn signing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = Signer::for_tests(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        "us-east-1",
    );
    let body = request_body();
    let uri = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream";
    let mut g = c.benchmark_group("sigv4");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_converse_stream_2KiB", |b| {
        b.iter_batched(
            || {
                http::Request::post(uri)
                    .header("content-type", "application/json")
                    .header("x-amzn-bedrock-trace", "DISABLED")
                    .body(body.clone())
                    .unwrap()
            },
            |mut req| rt.block_on(signer.sign(&mut req)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("aws_sigv4_full_2KiB", |b| {
        use aws_credential_types::Credentials;
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
        };
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "bench",
        );
        let identity = creds.into();
        b.iter_batched(
            || {
                http::Request::post(uri)
                    .header("content-type", "application/json")
                    .header("x-amzn-bedrock-trace", "DISABLED")
                    .header("host", "bedrock-runtime.us-east-1.amazonaws.com")
                    .body(body.clone())
                    .unwrap()
            },
            |mut req| {
                let mut settings = SigningSettings::default();
                settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
                let params = aws_sigv4::sign::v4::SigningParams::builder()
                    .identity(&identity)
                    .region("us-east-1")
                    .name("bedrock")
                    .time(std::time::SystemTime::now())
                    .settings(settings)
                    .build()
                    .unwrap()
                    .into();
                let headers: Vec<(&str, &str)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
                    .collect();
                let signable = SignableRequest::new(
                    "POST",
                    uri,
                    headers.into_iter(),
                    SignableBody::Bytes(req.body()),
                )
                .unwrap();
                let (instructions, _) = sign(signable, &params).unwrap().into_parts();
                instructions.apply_to_request_http1x(&mut req);
                req
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let delta = eventstream::event(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":" the quick brown"},"p":"abcdefghijklmnopqrstu"}"#,
    );
    let one = eventstream::encode(&delta);
    let wire: Vec<u8> = one.iter().copied().cycle().take(one.len() * 200).collect();
    let mut g = c.benchmark_group("eventstream");
    g.throughput(Throughput::Elements(200));
    g.bench_function("split_and_check_200_frames", |b| {
        b.iter(|| {
            let mut s = FrameSplitter::new();
            s.push(&wire);
            let mut n = 0;
            while let Some(f) = s.next_frame().unwrap() {
                n += f.raw.len();
            }
            n
        })
    });
    g.bench_function("split_check_reencode_200_frames", |b| {
        b.iter(|| {
            let mut s = FrameSplitter::new();
            s.push(&wire);
            let mut n = 0;
            while let Some(f) = s.next_frame().unwrap() {
                n += eventstream::encode(&f.message()).len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, signing, frames);
criterion_main!(benches);
