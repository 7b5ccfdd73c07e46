//! Signed event streams (`InvokeModelWithBidirectionalStream`'s input, as the AWS SDKs
//! sign it): the request's payload hash [`STREAMING_EVENTS`], taking a client's signing
//! wrapper off a message ([`unwrap_client`]: the relay re-signs the inner event, the
//! simulator reads it), and checking the chain of signatures ([`Chain`]: the simulator's
//! check of its clients, and the relay's tests of its own signer). Every input message
//! carries `:date` and `:chunk-signature`, the signature chained from the one before it
//! (the request's seed signature first); a signed empty message ends the input.
//!
//! [`Chain`] is written from the documented scheme, independently of aws-sigv4's signer
//! (the relay signs with that one): string to sign `AWS4-HMAC-SHA256-PAYLOAD\n{date-time}\n
//! {scope}\n{prior}\n{sha256(encoded :date header)}\n{sha256(payload)}`, HMAC-SHA256 with
//! the SigV4 key of the message's own date.

use aws_smithy_eventstream::frame::{read_message_from, write_headers_to};
use aws_smithy_types::date_time::Format;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The payload hash of a signed event-stream request (sent as `x-amz-content-sha256`).
pub const STREAMING_EVENTS: &str = "STREAMING-AWS4-HMAC-SHA256-EVENTS";

/// What a client's input message carries once its signing wrapper is off.
#[derive(Debug, PartialEq)]
pub enum Input {
    /// An event to forward (re-signed).
    Event(Message),
    /// The client's signed empty message: its input is over.
    End,
}

/// Take the client's signing wrapper off `message` (one with `:chunk-signature`); a message
/// without one (an unsigned client) is the event itself. The signature is not checked.
pub fn unwrap_client(message: Message) -> Result<Input, String> {
    let signed = message
        .headers()
        .iter()
        .any(|h| h.name().as_str() == ":chunk-signature");
    if !signed {
        return Ok(Input::Event(message));
    }
    if message.payload().is_empty() {
        return Ok(Input::End);
    }
    let mut payload = message.payload().clone();
    let inner = read_message_from(&mut payload).map_err(|e| format!("signed event: {e}"))?;
    Ok(Input::Event(inner))
}

/// Why a signed input message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No `:date` or `:chunk-signature` header, or one of the wrong type.
    Unsigned,
    /// The signature does not match the chain.
    Mismatch,
    /// The payload is not an event-stream message.
    Malformed,
}

/// What a verified message carried.
#[derive(Debug, PartialEq)]
pub enum Verified {
    Event(Message),
    /// The signed empty message: the input is over.
    End,
}

/// The chain of one stream: the key material and the last good signature.
pub struct Chain {
    secret: String,
    region: String,
    service: String,
    last: String,
    /// Messages verified so far (the end message included).
    pub verified: u64,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl Chain {
    /// Start from the request's `seed` signature, made with `secret` for `region`/`service`.
    pub fn new(secret: &str, region: &str, service: &str, seed: &str) -> Chain {
        Chain {
            secret: secret.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            last: seed.to_owned(),
            verified: 0,
        }
    }

    /// The signature `message` should carry next, from its `:date` (`None`: unsigned).
    fn expected(&self, message: &Message) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut date = None;
        let mut signature = None;
        for h in message.headers() {
            match (h.name().as_str(), h.value()) {
                (":date", HeaderValue::Timestamp(t)) => date = Some(*t),
                (":chunk-signature", HeaderValue::ByteArray(b)) => signature = Some(b.to_vec()),
                _ => {}
            }
        }
        let (date, signature) = (date?, signature?);
        let iso = date.fmt(Format::DateTime).ok()?;
        let iso = iso.split('.').next().unwrap_or(&iso).trim_end_matches('Z');
        let stamp: String = iso.chars().filter(|c| *c != '-' && *c != ':').collect();
        let stamp = format!("{stamp}Z");
        let day = &stamp[..8];
        let mut date_header = Vec::new();
        write_headers_to(
            &[Header::new(":date", HeaderValue::Timestamp(date))],
            &mut date_header,
        )
        .ok()?;
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{stamp}\n{scope}\n{}\n{}\n{}",
            self.last,
            hex::encode(Sha256::digest(&date_header)),
            hex::encode(Sha256::digest(message.payload())),
        );
        let mut key = hmac(format!("AWS4{}", self.secret).as_bytes(), day.as_bytes());
        for part in [self.region.as_str(), self.service.as_str(), "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        Some((hmac(&key, to_sign.as_bytes()), signature))
    }

    /// Check one outer message against the chain and advance it.
    pub fn verify(&mut self, message: &Message) -> Result<Verified, Refused> {
        let (expected, got) = self.expected(message).ok_or(Refused::Unsigned)?;
        if !super::constant_time_eq(&expected, &got) {
            return Err(Refused::Mismatch);
        }
        self.last = hex::encode(&expected);
        self.verified += 1;
        if message.payload().is_empty() {
            return Ok(Verified::End);
        }
        let mut payload = message.payload().clone();
        read_message_from(&mut payload)
            .map(Verified::Event)
            .map_err(|_| Refused::Malformed)
    }
}
