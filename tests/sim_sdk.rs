//! The simulator seen through the real `aws-sdk-bedrockruntime` client: every operation,
//! every fault kind, and SigV4 verification. Each test starts its own simulator on port 0.

use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput, ConverseStreamOutput,
    Message, ResponseStream,
};
use aws_sdk_bedrockruntime::Client;
use aws_smithy_types::event_stream::RawMessage;
use bedrock_relay_sim::{self as sim, Fault, FaultRule, SimConfig, SimHandle};
use std::time::{Duration, Instant};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn client(sim: &SimHandle, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(sim.url())
        .credentials_provider(Credentials::new(key, secret, None, None, "static"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5)),
        )
        .build();
    Client::from_conf(conf)
}

async fn sim_with(config: SimConfig) -> (SimHandle, Client) {
    let sim = sim::start(config).await.expect("simulator starts");
    let c = client(&sim, "AKIDSIM", "simsecret");
    (sim, c)
}

fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .expect("message")
}

fn rule(tag: &str, attempts: Option<Vec<u32>>, fault: Fault) -> FaultRule {
    FaultRule {
        operation: None,
        tag: Some(tag.to_owned()),
        attempts,
        fault,
    }
}

/// What a ConverseStream call delivered before it ended.
#[derive(Debug, Default)]
struct Streamed {
    text: String,
    events: usize,
    stop: bool,
    metadata: bool,
    error: Option<SdkError<ConverseStreamOutputError, RawMessage>>,
}

async fn converse_stream(c: &Client, model: &str, prompt: &str) -> Streamed {
    let mut out = c
        .converse_stream()
        .model_id(model)
        .messages(user(prompt))
        .send()
        .await
        .expect("stream starts");
    let mut s = Streamed::default();
    loop {
        match out.stream.recv().await {
            Ok(Some(ev)) => {
                s.events += 1;
                match ev {
                    ConverseStreamOutput::ContentBlockDelta(d) => {
                        if let Some(ContentBlockDelta::Text(t)) = d.delta {
                            s.text.push_str(&t);
                        }
                    }
                    ConverseStreamOutput::MessageStop(_) => s.stop = true,
                    ConverseStreamOutput::Metadata(_) => s.metadata = true,
                    _ => {}
                }
            }
            Ok(None) => return s,
            Err(e) => {
                s.error = Some(e);
                return s;
            }
        }
    }
}

async fn converse_text(c: &Client, model: &str, prompt: &str) -> Result<String, String> {
    let out = c
        .converse()
        .model_id(model)
        .messages(user(prompt))
        .send()
        .await
        .map_err(|e| {
            format!(
                "{}: {}",
                e.code().unwrap_or("?"),
                aws_sdk_bedrockruntime::error::DisplayErrorContext(&e)
            )
        })?;
    let Some(ConverseOutput::Message(m)) = out.output else {
        return Err("no message".into());
    };
    Ok(m.content
        .iter()
        .filter_map(|b| b.as_text().ok().cloned())
        .collect())
}

#[tokio::test]
async fn four_main_operations_succeed_and_stream_equals_converse() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    let prompt = "Tell me a story sim:len=120";
    let whole = converse_text(&c, MODEL, prompt).await.unwrap();
    assert_eq!(whole, sim::reference_text(MODEL, "", &[("user", prompt)]));
    let streamed = converse_stream(&c, MODEL, prompt).await;
    assert!(streamed.error.is_none() && streamed.stop && streamed.metadata);
    assert_eq!(streamed.text, whole);

    let body = serde_json::json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 500,
        "messages": [{"role": "user", "content": prompt}]});
    let out = c
        .invoke_model()
        .model_id(MODEL)
        .content_type("application/json")
        .body(Blob::new(body.to_string()))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(out.body.as_ref()).unwrap();
    assert_eq!(v["content"][0]["text"], whole.as_str());

    let llama = "meta.llama3-70b-instruct-v1:0";
    let body = serde_json::json!({"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi sim:len=30<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "max_gen_len": 100});
    let mut out = c
        .invoke_model_with_response_stream()
        .model_id(llama)
        .content_type("application/json")
        .body(Blob::new(body.to_string()))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let mut last = serde_json::Value::Null;
    while let Some(ev) = out.body.recv().await.unwrap() {
        if let ResponseStream::Chunk(part) = ev {
            last = serde_json::from_slice(part.bytes.unwrap().as_ref()).unwrap();
            text.push_str(last["generation"].as_str().unwrap());
        }
    }
    assert_eq!(
        text,
        sim::reference_text(llama, "", &[("user", "Hi sim:len=30")])
    );
    assert_eq!(last["stop_reason"], "stop");
    assert!(last.get("amazon-bedrock-invocationMetrics").is_some());
    let ops: Vec<String> = sim.log().into_iter().map(|e| e.operation).collect();
    assert_eq!(
        ops,
        [
            "Converse",
            "ConverseStream",
            "InvokeModel",
            "InvokeModelWithResponseStream"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn signatures_are_verified_and_arn_model_ids_work() {
    let config = SimConfig {
        credentials: vec![("AKIDSIM".into(), "simsecret".into())],
        ..SimConfig::default()
    };
    let (sim, c) = sim_with(config).await;
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0";
    let text = converse_text(&c, arn, "hello via arn").await.unwrap();
    assert_eq!(
        text,
        sim::reference_text(arn, "", &[("user", "hello via arn")])
    );
    let log = sim.log();
    assert_eq!(log[0].signature, "valid");
    assert_eq!(log[0].model_id.as_deref(), Some(arn));

    let wrong = client(&sim, "AKIDSIM", "not-the-secret");
    let err = converse_text(&wrong, MODEL, "hello").await.unwrap_err();
    assert!(err.starts_with("InvalidSignatureException"), "{err}");
    let unknown = client(&sim, "AKIDNOBODY", "simsecret");
    let err = converse_text(&unknown, MODEL, "hello").await.unwrap_err();
    assert!(err.starts_with("UnrecognizedClientException"), "{err}");
    assert!(sim.log().iter().any(|e| e.signature == "invalid"));
    sim.shutdown().await;
}

#[tokio::test]
async fn status_429_is_retried_by_the_sdk_and_400_is_not() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    sim.add_rule(rule("t429", Some(vec![1]), Fault::Status { code: 429 }));
    let text = converse_text(&c, MODEL, "sim:tag=t429 hi").await.unwrap();
    assert!(!text.is_empty());
    let log = sim.log();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].attempt, log[0].fault.as_deref(), log[0].status),
        (1, Some("status"), 429)
    );
    assert_eq!((log[1].attempt, log[1].fault.as_deref()), (2, None));
    sim.add_rule(rule("t400", None, Fault::Status { code: 400 }));
    let err = converse_text(&c, MODEL, "sim:tag=t400 hi")
        .await
        .unwrap_err();
    assert!(err.starts_with("ValidationException"), "{err}");
    assert_eq!(sim.log().len(), 3, "400 is not retried");
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_before_headers_is_retried_by_the_sdk() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    sim.add_rule(rule("rbh", Some(vec![1]), Fault::ResetBeforeHeaders));
    let s = converse_stream(&c, MODEL, "sim:tag=rbh hi").await;
    assert!(s.error.is_none() && s.stop && s.metadata);
    let log = sim.log();
    assert_eq!(log.iter().map(|e| e.attempt).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(log[0].fault.as_deref(), Some("reset_before_headers"));
    sim.shutdown().await;
}

#[tokio::test]
async fn mid_stream_breaks_surface_as_errors_on_recv() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    let faults = [
        ("a", Fault::ResetAfterEvents { events: 5 }),
        ("b", Fault::ResetMidFrame { events: 5 }),
        ("c", Fault::EofNoTerminator { events: 5 }),
        ("d", Fault::CorruptCrc { events: 5 }),
    ];
    for (tag, fault) in faults {
        sim.add_rule(rule(tag, None, fault.clone()));
        let prompt = format!("sim:tag={tag} sim:len=100 go");
        let s = converse_stream(&c, MODEL, &prompt).await;
        let reference = sim::reference_pieces(MODEL, "", &[("user", &prompt)]);
        assert!(s.error.is_some(), "{fault:?} must surface as an error");
        assert!(!s.stop && !s.metadata, "{fault:?}");
        assert_eq!(
            s.events, 5,
            "{fault:?}: exactly the whole frames before the fault"
        );
        assert_eq!(s.text, reference[..4].concat(), "{fault:?}");
        let e = s.error.unwrap();
        assert!(
            matches!(
                e,
                SdkError::ResponseError(_)
                    | SdkError::DispatchFailure(_)
                    | SdkError::ServiceError(_)
            ),
            "{fault:?}: {e:?}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn clean_truncation_goes_unnoticed_by_the_sdk() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    sim.add_rule(rule("trunc", None, Fault::Truncate { events: 1000 }));
    let s = converse_stream(&c, MODEL, "sim:tag=trunc sim:len=50 go").await;
    assert!(s.error.is_none(), "the SDK reports no error: {:?}", s.error);
    assert!(!s.stop && !s.metadata, "terminal events are missing");
    assert_eq!(
        s.text,
        sim::reference_text(MODEL, "", &[("user", "sim:tag=trunc sim:len=50 go")])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn in_stream_exceptions_surface_as_modelled_errors() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    for (tag, ty) in [
        ("mse", "modelStreamErrorException"),
        ("thr", "throttlingException"),
        ("ise", "internalServerException"),
    ] {
        sim.add_rule(rule(
            tag,
            None,
            Fault::Exception {
                events: 3,
                exception_type: ty.into(),
            },
        ));
        let s = converse_stream(&c, MODEL, &format!("sim:tag={tag} go")).await;
        assert_eq!(s.events, 3);
        let err = s.error.expect("exception surfaces").into_service_error();
        match ty {
            "modelStreamErrorException" => {
                assert!(err.is_model_stream_error_exception(), "{err:?}")
            }
            "throttlingException" => assert!(err.is_throttling_exception(), "{err:?}"),
            _ => assert!(err.is_internal_server_exception(), "{err:?}"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn stall_delays_and_then_completes() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    sim.add_rule(rule(
        "stall",
        None,
        Fault::Stall {
            events: 4,
            duration: Duration::from_millis(300),
        },
    ));
    let started = Instant::now();
    let s = converse_stream(&c, MODEL, "sim:tag=stall go").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(s.error.is_none() && s.stop && s.metadata);
    sim.shutdown().await;
}

#[tokio::test]
async fn non_stream_body_cut_is_an_error() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    sim.add_rule(rule("rmb", None, Fault::ResetMidBody));
    let err = converse_text(&c, MODEL, "sim:tag=rmb hi").await;
    assert!(err.is_err());
    assert!(sim
        .log()
        .iter()
        .all(|e| e.fault.as_deref() == Some("reset_mid_body")));
    sim.shutdown().await;
}

#[tokio::test]
async fn ttft_and_inter_token_delays_apply() {
    let config = SimConfig {
        ttft: Duration::from_millis(150),
        inter_token: Duration::from_millis(5),
        ..SimConfig::default()
    };
    let (sim, c) = sim_with(config).await;
    let started = Instant::now();
    let s = converse_stream(&c, MODEL, "sim:len=20 timing").await;
    assert!(s.stop);
    assert!(started.elapsed() >= Duration::from_millis(150 + 20 * 5));
    sim.shutdown().await;
}

fn doc_object(pairs: Vec<(&str, aws_smithy_types::Document)>) -> aws_smithy_types::Document {
    aws_smithy_types::Document::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

#[tokio::test]
async fn tool_use_and_reasoning_blocks_parse_in_the_sdk() {
    use aws_sdk_bedrockruntime::types::{
        ContentBlockStart, ReasoningContentBlockDelta, StopReason, Tool, ToolConfiguration,
        ToolInputSchema, ToolSpecification,
    };
    use aws_smithy_types::Document;
    let (sim, c) = sim_with(SimConfig::default()).await;
    let schema = doc_object(vec![
        ("type", Document::String("object".into())),
        (
            "properties",
            doc_object(vec![(
                "city",
                doc_object(vec![("type", Document::String("string".into()))]),
            )]),
        ),
    ]);
    let tool = Tool::ToolSpec(
        ToolSpecification::builder()
            .name("get_weather")
            .input_schema(ToolInputSchema::Json(schema))
            .build()
            .unwrap(),
    );
    let thinking = doc_object(vec![(
        "thinking",
        doc_object(vec![
            ("type", Document::String("enabled".into())),
            (
                "budget_tokens",
                Document::Number(aws_smithy_types::Number::PosInt(1024)),
            ),
        ]),
    )]);
    let mut out = c
        .converse_stream()
        .model_id(MODEL)
        .messages(user("weather in Paris?"))
        .tool_config(ToolConfiguration::builder().tools(tool).build().unwrap())
        .additional_model_request_fields(thinking)
        .send()
        .await
        .unwrap();
    let (mut reasoning, mut signature, mut input, mut tool_id, mut stop) =
        (String::new(), None, String::new(), None, None);
    while let Some(ev) = out.stream.recv().await.unwrap() {
        match ev {
            ConverseStreamOutput::ContentBlockStart(s) => {
                if let Some(ContentBlockStart::ToolUse(t)) = s.start {
                    assert_eq!(t.name, "get_weather");
                    assert_eq!(s.content_block_index, 2);
                    tool_id = Some(t.tool_use_id);
                }
            }
            ConverseStreamOutput::ContentBlockDelta(d) => match d.delta {
                Some(ContentBlockDelta::ReasoningContent(ReasoningContentBlockDelta::Text(t))) => {
                    reasoning.push_str(&t)
                }
                Some(ContentBlockDelta::ReasoningContent(
                    ReasoningContentBlockDelta::Signature(s),
                )) => signature = Some(s),
                Some(ContentBlockDelta::ToolUse(t)) => input.push_str(&t.input),
                _ => {}
            },
            ConverseStreamOutput::MessageStop(m) => stop = Some(m.stop_reason),
            _ => {}
        }
    }
    assert!(!reasoning.is_empty() && signature.is_some());
    assert!(tool_id.is_some_and(|id| id.starts_with("tooluse_")));
    let input: serde_json::Value = serde_json::from_str(&input).unwrap();
    assert!(input["city"].is_string());
    assert_eq!(stop, Some(StopReason::ToolUse));
    sim.shutdown().await;
}

#[tokio::test]
async fn invoke_stream_exceptions_are_modelled_too() {
    let (sim, c) = sim_with(SimConfig::default()).await;
    sim.add_rule(rule(
        "mto",
        None,
        Fault::Exception {
            events: 2,
            exception_type: "modelTimeoutException".into(),
        },
    ));
    let body = serde_json::json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
        "messages": [{"role": "user", "content": "sim:tag=mto hi"}]});
    let mut out = c
        .invoke_model_with_response_stream()
        .model_id(MODEL)
        .content_type("application/json")
        .body(Blob::new(body.to_string()))
        .send()
        .await
        .unwrap();
    let mut chunks = 0;
    let err = loop {
        match out.body.recv().await {
            Ok(Some(_)) => chunks += 1,
            Ok(None) => panic!("stream ended without the exception"),
            Err(e) => break e.into_service_error(),
        }
    };
    assert_eq!(chunks, 2);
    assert!(err.is_model_timeout_exception(), "{err:?}");
    sim.shutdown().await;
}
