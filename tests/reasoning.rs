//! Reasoning (extended thinking) across a seam, through aws-sdk-bedrockruntime against the
//! simulator, on a model that takes no prefill and samples: a cut in the text after the
//! reasoning is healed by instructed continuation; the client keeps its reasoning block with
//! the signature that belongs to it (the simulator refuses any other when the message is sent
//! back in the next turn), and the new attempt's reasoning never reaches it.

use crate::support;

use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, Message, ReasoningContentBlock, ReasoningTextBlock,
};
use aws_smithy_types::Document;
use bedrock_relay_sim::Fault;
use support::canon::{self, ConverseReq, Received};
use support::Harness;

const SONNET_46: &str = "us.anthropic.claude-sonnet-4-6-v1:0";

/// (reasoning text, signature, text) of a received answer, checking its block structure.
fn assembled(got: &Received) -> (String, String, String) {
    let (mut reasoning, mut signature, mut text) = (String::new(), String::new(), String::new());
    let mut signatures = 0;
    for e in &got.events {
        if let Some(r) = e.strip_prefix("delta idx=0 reasoning=") {
            reasoning.push_str(r);
        } else if let Some(s) = e.strip_prefix("delta idx=0 signature=") {
            signatures += 1;
            signature = s.to_owned();
        } else if let Some(t) = e.strip_prefix("delta idx=1 text=") {
            text.push_str(t);
        } else if e.starts_with("delta") {
            panic!("a delta outside the two blocks: {e}\n{:#?}", got.events);
        }
    }
    assert_eq!(signatures, 1, "one signature: {:#?}", got.events);
    (reasoning, signature, text)
}

fn thinking() -> Document {
    Document::from(std::collections::HashMap::from([(
        "thinking".to_string(),
        Document::from(std::collections::HashMap::from([
            ("type".to_string(), Document::from("enabled")),
            ("budget_tokens".to_string(), Document::from(1024u64)),
        ])),
    )]))
}

#[tokio::test]
async fn a_cut_in_the_text_after_reasoning_keeps_the_signed_reasoning_and_continues_the_text() {
    let h = Harness::start().await;
    for (i, fault) in [
        Fault::ResetAfterEvents { events: 0 },
        Fault::EofNoTerminator { events: 0 },
        Fault::Exception {
            events: 0,
            exception_type: "serviceUnavailableException".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("reasoning-{i}");
        let mut req = ConverseReq::new(
            SONNET_46,
            format!("Why is the sky blue? sim:len=30 sim:tag={tag}"),
        );
        req.reasoning = true;
        let reference = canon::converse_stream(&h.reference, &req).await;
        let first_text = reference
            .events
            .iter()
            .position(|e| e.contains(" text="))
            .expect("the answer has text after its reasoning");
        let at = first_text + 5;
        let fault = match fault {
            Fault::ResetAfterEvents { .. } => Fault::ResetAfterEvents { events: at },
            Fault::EofNoTerminator { .. } => Fault::EofNoTerminator { events: at },
            Fault::Exception { exception_type, .. } => Fault::Exception {
                events: at,
                exception_type,
            },
            other => other,
        };
        h.fault(&tag, Some(vec![1]), fault);
        let got = canon::converse_stream(&h.client, &req).await;
        assert_eq!(got.error, None, "{tag}");
        assert_eq!(
            got.events
                .iter()
                .filter(|e| e.starts_with("messageStart"))
                .count(),
            1,
            "{tag}"
        );
        let (want_reasoning, want_signature, _) = assembled(&reference);
        let (reasoning, signature, text) = assembled(&got);
        assert_eq!(
            (&reasoning, &signature),
            (&want_reasoning, &want_signature),
            "{tag}: the client's own reasoning, untouched"
        );
        let delivered: String = reference.events[first_text..at]
            .iter()
            .filter_map(|e| e.strip_prefix("delta idx=1 text="))
            .collect();
        assert!(
            text.starts_with(&delivered) && text.len() > delivered.len(),
            "{tag}: {text:?}"
        );
        assert_eq!(
            got.events.last().map(String::as_str),
            Some("metadata"),
            "{tag}"
        );
        let attempts = h.attempts_for(&tag);
        assert_eq!(attempts.len(), 2, "{tag}");
        assert!(
            attempts[1].continuation,
            "{tag}: an instructed continuation"
        );

        // The assembled message is valid to send back: the next turn is accepted.
        let next = h
            .client
            .converse()
            .model_id(SONNET_46)
            .additional_model_request_fields(thinking())
            .messages(
                Message::builder()
                    .role(ConversationRole::User)
                    .content(ContentBlock::Text(req.prompt.clone()))
                    .build()
                    .unwrap(),
            )
            .messages(
                Message::builder()
                    .role(ConversationRole::Assistant)
                    .content(ContentBlock::ReasoningContent(
                        ReasoningContentBlock::ReasoningText(
                            ReasoningTextBlock::builder()
                                .text(&reasoning)
                                .signature(&signature)
                                .build()
                                .unwrap(),
                        ),
                    ))
                    .content(ContentBlock::Text(text.clone()))
                    .build()
                    .unwrap(),
            )
            .messages(
                Message::builder()
                    .role(ConversationRole::User)
                    .content(ContentBlock::Text("And at sunset?".into()))
                    .build()
                    .unwrap(),
            )
            .send()
            .await;
        assert!(
            next.is_ok(),
            "{tag}: the healed message goes back as the next turn: {next:?}"
        );
    }
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "instructed"), ("outcome", "success")]
        )
        .await,
        3.0
    );
}

#[tokio::test]
async fn the_simulator_refuses_a_reasoning_block_whose_signature_is_not_its_own() {
    let h = Harness::start().await;
    let bad = h
        .reference
        .converse()
        .model_id(SONNET_46)
        .additional_model_request_fields(thinking())
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text("Hi".into()))
                .build()
                .unwrap(),
        )
        .messages(
            Message::builder()
                .role(ConversationRole::Assistant)
                .content(ContentBlock::ReasoningContent(
                    ReasoningContentBlock::ReasoningText(
                        ReasoningTextBlock::builder()
                            .text("thought")
                            .signature("sig-of-another-text")
                            .build()
                            .unwrap(),
                    ),
                ))
                .content(ContentBlock::Text("Hello".into()))
                .build()
                .unwrap(),
        )
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text("Go on".into()))
                .build()
                .unwrap(),
        )
        .send()
        .await;
    let err = format!("{:?}", bad.expect_err("a foreign signature is refused"));
    assert!(err.contains("signature"), "{err}");
}
