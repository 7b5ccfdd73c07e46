//! The relay's event signer (aws-sigv4) checked by the independent verifier the simulator
//! checks its clients with (`bedrock_relay_wire::sigv4::events`).

use super::*;
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{Header, HeaderValue};
use bedrock_relay_wire::sigv4::events::{Chain, Refused, Verified};

fn event(text: &str) -> Message {
    Message::new(Bytes::from(format!("{{\"bytes\":\"{text}\"}}")))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String("chunk".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
}

fn started(secret: &str) -> (http::Request<Bytes>, EventSigner) {
    let mut req = http::Request::post(
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-sonic-v1:0/invoke-with-bidirectional-stream",
    )
    .header("host", "bedrock-runtime.us-east-1.amazonaws.com")
    .body(Bytes::new())
    .unwrap();
    let creds = Credentials::new("AKIDRELAY", secret, None, None, "test");
    let signer =
        EventSigner::start(&mut req, creds, "us-east-1", "bedrock", SystemTime::now()).unwrap();
    (req, signer)
}

fn seed_of(req: &http::Request<Bytes>) -> String {
    let authz = req.headers()["authorization"].to_str().unwrap();
    crate::inbound::sigv4::parse_authorization(authz)
        .unwrap()
        .signature
}

fn decode(bytes: &Bytes) -> Message {
    read_message_from(&mut bytes.clone()).unwrap()
}

#[test]
fn head_carries_the_streaming_payload_hash_and_the_seed() {
    let (req, signer) = started("relay-secret");
    assert_eq!(req.headers()["x-amz-content-sha256"], STREAMING_EVENTS);
    assert_eq!(seed_of(&req), signer.last_signature());
}

#[test]
fn every_event_and_the_end_verify_in_a_chain() {
    let (req, mut signer) = started("relay-secret");
    let mut chain = Chain::new("relay-secret", "us-east-1", "bedrock", &seed_of(&req));
    for text in ["one", "two", "three"] {
        let outer = decode(&signer.sign(&event(text)).unwrap());
        assert_eq!(chain.verify(&outer), Ok(Verified::Event(event(text))));
    }
    let end = decode(&signer.finish().unwrap());
    assert_eq!(chain.verify(&end), Ok(Verified::End));
    assert_eq!(chain.verified, 4);
}

#[test]
fn another_key_or_a_broken_chain_is_refused() {
    let (req, mut signer) = started("relay-secret");
    let mut other = Chain::new("client-secret", "us-east-1", "bedrock", &seed_of(&req));
    let first = decode(&signer.sign(&event("one")).unwrap());
    assert_eq!(other.verify(&first), Err(Refused::Mismatch));
    // Skipping a message breaks the chain for the next one.
    let mut chain = Chain::new("relay-secret", "us-east-1", "bedrock", &seed_of(&req));
    let second = decode(&signer.sign(&event("two")).unwrap());
    assert_eq!(chain.verify(&second), Err(Refused::Mismatch));
    assert_eq!(chain.verify(&event("bare")), Err(Refused::Unsigned));
}

#[test]
fn the_clients_wrapper_comes_off() {
    let (_, mut client) = started("dummy-client-secret");
    let wrapped = decode(&client.sign(&event("hi")).unwrap());
    assert_eq!(unwrap_client(wrapped), Ok(Input::Event(event("hi"))));
    let end = decode(&client.finish().unwrap());
    assert_eq!(unwrap_client(end), Ok(Input::End));
    assert_eq!(unwrap_client(event("raw")), Ok(Input::Event(event("raw"))));
}
