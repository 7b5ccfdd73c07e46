//! Cross-check with the real client: a spliced ConverseStream (prefill continuation with a
//! whitespace seam, a renumbered tool block, summed usage) and the give-up exception are
//! served over loopback HTTP to `aws-sdk-bedrockruntime`, which must decode them as one
//! ordinary response (or as its modelled stream error).

use super::util::*;
use crate::eventstream;
use crate::resume::*;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseStreamOutput,
    Message as SdkMessage,
};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serve one HTTP/1.1 response whose body is `frames`, on a loopback port.
async fn serve_once(frames: Vec<u8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then the body by content-length.
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if req.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n\
             x-amzn-requestid: r-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            frames.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&frames).await.unwrap();
        sock.shutdown().await.ok();
    });
    addr
}

fn client(addr: std::net::SocketAddr) -> aws_sdk_bedrockruntime::Client {
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(format!("http://{addr}"))
        .build();
    aws_sdk_bedrockruntime::Client::from_conf(conf)
}

#[derive(Debug, Default)]
struct Got {
    texts: Vec<(i32, String)>,
    tools: Vec<(i32, String, String)>,
    stop: Option<String>,
    usage: Option<(i32, i32, i32)>,
    error: Option<String>,
}

async fn converse(frames: Vec<u8>) -> Got {
    let addr = serve_once(frames).await;
    let msg = SdkMessage::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Tell me".into()))
        .build()
        .unwrap();
    let run = async {
        let mut out = client(addr)
            .converse_stream()
            .model_id("anthropic.claude-3-haiku-20240307-v1:0")
            .messages(msg)
            .send()
            .await
            .expect("response");
        let mut got = Got::default();
        loop {
            match out.stream.recv().await {
                Ok(Some(ConverseStreamOutput::ContentBlockDelta(d))) => match d.delta() {
                    Some(ContentBlockDelta::Text(t)) => {
                        got.texts.push((d.content_block_index(), t.clone()))
                    }
                    Some(ContentBlockDelta::ToolUse(u)) => {
                        if let Some(tool) = got.tools.last_mut() {
                            tool.2.push_str(u.input());
                        }
                    }
                    _ => {}
                },
                Ok(Some(ConverseStreamOutput::ContentBlockStart(s))) => {
                    if let Some(ContentBlockStart::ToolUse(t)) = s.start() {
                        got.tools.push((
                            s.content_block_index(),
                            t.name().to_owned(),
                            String::new(),
                        ));
                    }
                }
                Ok(Some(ConverseStreamOutput::MessageStop(s))) => {
                    got.stop = Some(s.stop_reason().as_str().to_owned())
                }
                Ok(Some(ConverseStreamOutput::Metadata(m))) => {
                    got.usage = m
                        .usage()
                        .map(|u| (u.input_tokens(), u.output_tokens(), u.total_tokens()));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    got.error = Some(format!("{:?}", e.into_service_error()));
                    break;
                }
            }
        }
        got
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("in time")
}

/// Client-visible bytes of a resumed stream: first attempt cut inside "Hello world. ",
/// continuation by prefill that goes straight to a tool call (index 0 upstream).
fn spliced_frames() -> Vec<u8> {
    let full = converse_stream(&[texts(&["Hello", " world", ". ", "Bye"])], "end_turn", 7);
    let mut c = Client::new(StreamFormat::Converse);
    c.feed(&full[..4]).unwrap(); // "Hello world. "
    assert_eq!(c.resume(&user_body(), ALL).unwrap().0, Strategy::Prefill);
    let mut cont = vec![conv("messageStart", json!({"role":"assistant"}), 2)];
    let tool = RefBlock::Tool {
        id: "tooluse_x".into(),
        name: "get_weather".into(),
        pieces: vec!["{\"city\":".into(), "\"Paris\"}".into()],
    };
    converse_block(&tool, 0, &mut cont);
    converse_tail("tool_use", 10, 2, &mut cont);
    c.feed(&cont).unwrap();
    // The relay closed the text block itself, then renumbered the tool block.
    assert_eq!(
        eventstream::header_str(&c.received[4], ":event-type"),
        Some("contentBlockStop")
    );
    c.received
        .iter()
        .flat_map(|m| eventstream::encode(m).to_vec())
        .collect()
}

#[tokio::test]
async fn the_sdk_reads_a_spliced_stream_as_one_response() {
    let got = converse(spliced_frames()).await;
    assert_eq!(got.error, None);
    let text: String = got.texts.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text, "Hello world. ");
    assert!(got.texts.iter().all(|(i, _)| *i == 0));
    assert_eq!(
        got.tools,
        vec![(
            1,
            "get_weather".to_owned(),
            "{\"city\":\"Paris\"}".to_owned()
        )]
    );
    assert_eq!(got.stop.as_deref(), Some("tool_use"));
    // Final 10 in / 2 out plus the failed attempt: 10 - 3 delivered = 7 in, 3 out.
    assert_eq!(got.usage, Some((17, 5, 22)));
}

#[tokio::test]
async fn the_sdk_surfaces_the_give_up_event_as_its_modelled_stream_error() {
    let full = converse_stream(&[texts(&["Hello"])], "end_turn", 1);
    let mut frames: Vec<u8> = full[..2]
        .iter()
        .flat_map(|m| eventstream::encode(m).to_vec())
        .collect();
    frames.extend_from_slice(&eventstream::encode(&give_up_event("replay diverged")));
    let got = converse(frames).await;
    assert_eq!(got.texts, vec![(0, "Hello".to_owned())]);
    let err = got.error.expect("an error");
    assert!(err.contains("ModelStreamErrorException"), "{err}");
    assert!(err.contains("replay diverged"), "{err}");
}
