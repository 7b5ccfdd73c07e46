//! Tool calls are atomic to the client (`resume.hold_tool_use`, on by default): a stream cut
//! inside a tool-use block is resumed and the client receives exactly one complete tool call
//! with valid JSON input — through aws-sdk-bedrockruntime, against the simulator.

use crate::support;

use aws_sdk_bedrockruntime::types::{ContentBlockDelta, ContentBlockStart, ConverseStreamOutput};
use bedrock_relay_sim::Fault;
use support::canon::{self, ConverseReq};
use support::Harness;

const CLAUDE_35: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// What the client assembled: tool calls (name, input JSON text) and events seen.
#[derive(Debug, Default)]
struct Assembled {
    tools: Vec<(String, String)>,
    text: String,
    starts: usize,
    stops: Vec<String>,
    error: Option<String>,
}

async fn run(client: &aws_sdk_bedrockruntime::Client, req: &ConverseReq) -> Assembled {
    let mut call = client
        .converse_stream()
        .model_id(&req.model)
        .tool_config(canon::tool_config())
        .messages(
            aws_sdk_bedrockruntime::types::Message::builder()
                .role(aws_sdk_bedrockruntime::types::ConversationRole::User)
                .content(aws_sdk_bedrockruntime::types::ContentBlock::Text(
                    req.prompt.clone(),
                ))
                .build()
                .unwrap(),
        );
    if let Some(t) = req.temperature {
        call = call.inference_config(
            aws_sdk_bedrockruntime::types::InferenceConfiguration::builder()
                .temperature(t)
                .build(),
        );
    }
    let mut out = Assembled::default();
    let mut stream = match call.send().await {
        Ok(o) => o.stream,
        Err(e) => {
            out.error = Some(format!("{e:?}"));
            return out;
        }
    };
    let mut open: Option<(i32, String, String)> = None;
    loop {
        match stream.recv().await {
            Ok(Some(ConverseStreamOutput::MessageStart(_))) => out.starts += 1,
            Ok(Some(ConverseStreamOutput::ContentBlockStart(s))) => {
                if let Some(ContentBlockStart::ToolUse(t)) = s.start {
                    open = Some((s.content_block_index, t.name, String::new()));
                }
            }
            Ok(Some(ConverseStreamOutput::ContentBlockDelta(d))) => match d.delta {
                Some(ContentBlockDelta::ToolUse(t)) => {
                    let (i, _, input) = open
                        .as_mut()
                        .expect("tool input inside a started tool block");
                    assert_eq!(*i, d.content_block_index);
                    input.push_str(&t.input);
                }
                Some(ContentBlockDelta::Text(t)) => out.text.push_str(&t),
                _ => {}
            },
            Ok(Some(ConverseStreamOutput::ContentBlockStop(s))) => {
                if let Some((i, name, input)) = open.take() {
                    assert_eq!(i, s.content_block_index);
                    out.tools.push((name, input));
                }
            }
            Ok(Some(ConverseStreamOutput::MessageStop(s))) => {
                out.stops.push(s.stop_reason.as_str().to_owned())
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                out.error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out
}

/// How many frames the reference answer has before its tool-use block starts.
fn tool_start_position(reference: &canon::Received) -> usize {
    reference
        .events
        .iter()
        .position(|e| e.contains("tool="))
        .expect("the reference answer calls a tool")
}

#[tokio::test]
async fn a_cut_inside_a_tool_call_reaches_the_client_as_one_complete_call() {
    let h = Harness::start().await;
    for (i, fault) in [
        Fault::ResetAfterEvents { events: 0 },
        Fault::ResetMidFrame { events: 0 },
        Fault::EofNoTerminator { events: 0 },
        Fault::Exception {
            events: 0,
            exception_type: "serviceUnavailableException".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("tool-cut-{i}");
        let mut req = ConverseReq::new(
            CLAUDE_35,
            format!("What is the weather in Paris? sim:len=20 sim:tag={tag}"),
        );
        req.tools = true;
        // Sampled: a replay would differ, so only a continuation can heal this stream.
        req.temperature = Some(0.7);
        let reference = canon::converse_stream(&h.reference, &req).await;
        // Cut two frames into the tool-use block (its start and part of its input delivered).
        let at = tool_start_position(&reference) + 2;
        let fault = match fault {
            Fault::ResetAfterEvents { .. } => Fault::ResetAfterEvents { events: at },
            Fault::ResetMidFrame { .. } => Fault::ResetMidFrame { events: at },
            Fault::EofNoTerminator { .. } => Fault::EofNoTerminator { events: at },
            Fault::Exception { exception_type, .. } => Fault::Exception {
                events: at,
                exception_type,
            },
            other => other,
        };
        h.fault(&tag, Some(vec![1]), fault.clone());
        let got = run(&h.client, &req).await;
        assert_eq!(got.error, None, "{tag} {fault:?}");
        assert_eq!(got.starts, 1, "{tag}: one messageStart");
        assert_eq!(got.tools.len(), 1, "{tag}: exactly one tool call: {got:?}");
        let input: serde_json::Value = serde_json::from_str(&got.tools[0].1).unwrap_or_else(|e| {
            panic!(
                "{tag}: the tool input is valid JSON ({e}): {:?}",
                got.tools[0].1
            )
        });
        assert!(input.is_object(), "{tag}");
        assert_eq!(got.tools[0].0, "get_weather", "{tag}");
        // The text before the call was delivered before the cut: it is there once, and
        // whatever the continuation added follows it.
        let delivered = reference.text();
        assert!(
            got.text.starts_with(&delivered),
            "{tag}: {:?} / {delivered:?}",
            got.text
        );
        assert_eq!(got.stops, vec!["tool_use".to_string()], "{tag}");
        let attempts = h.attempts_for(&tag);
        assert_eq!(attempts.len(), 2, "{tag}: healed by one resume");
        assert!(
            attempts[1].prefill.is_some(),
            "{tag}: by continuing the text, not replay"
        );
    }
}

#[tokio::test]
async fn with_hold_tool_use_off_tool_input_streams_and_a_cut_inside_heals_by_replay() {
    let h = Harness::start_full(|_| {}, |s| s.resume.hold_tool_use = false).await;
    let tag = "tool-live";
    let mut req = ConverseReq::new(
        CLAUDE_35,
        format!("What is the weather in Oslo? sim:len=20 sim:tag={tag}"),
    );
    req.tools = true;
    req.temperature = Some(0.0);
    let reference = canon::converse_stream(&h.reference, &req).await;
    let at = tool_start_position(&reference) + 2;
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: at });
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events);
    let attempts = h.attempts_for(tag);
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[1].prefill, None,
        "a tool block in flight is resumed by replay"
    );
}
