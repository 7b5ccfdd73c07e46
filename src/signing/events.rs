//! Event-stream signing for `InvokeModelWithBidirectionalStream`, as the AWS SDKs sign it.
//!
//! The initial HTTP/2 request is SigV4-signed with the payload hash
//! `STREAMING-AWS4-HMAC-SHA256-EVENTS` (sent as `x-amz-content-sha256`); its signature is the
//! seed of a chain. Every input event is then wrapped in an outer message whose payload is
//! the encoded event and whose headers are `:date` and `:chunk-signature`, signed over the
//! prior signature (aws-sigv4's `event_stream::sign_message`); a signed empty message ends
//! the input. [`unwrap_client`] takes the client's own wrapper off (signed with its keys,
//! which the relay does not check against Bedrock's) so the inner event can be re-signed;
//! it and the payload hash are Bedrock wire facts, shared with the simulator
//! (`bedrock_relay_wire::sigv4::events`).

use super::{SigningError, PAYLOAD_HEADER};
use aws_credential_types::Credentials;
use aws_sigv4::event_stream::{sign_empty_message, sign_message};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::Message;
use bytes::Bytes;
use std::time::SystemTime;

pub use bedrock_relay_wire::sigv4::events::{unwrap_client, Input, STREAMING_EVENTS};

/// Signs the input events of one stream, each chained to the signature before it.
pub struct EventSigner {
    creds: Credentials,
    region: String,
    service: String,
    last: String,
}

impl std::fmt::Debug for EventSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSigner")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl EventSigner {
    /// Sign the stream's request head (its body is the event stream, not hashed) at `time`
    /// and start the chain from its signature.
    pub(crate) fn start(
        req: &mut http::Request<Bytes>,
        creds: Credentials,
        region: &str,
        service: &str,
        time: SystemTime,
    ) -> Result<EventSigner, SigningError> {
        let seed = super::sign_head(
            req,
            &creds,
            region,
            service,
            time,
            PAYLOAD_HEADER,
            Some(STREAMING_EVENTS),
        )?;
        Ok(EventSigner {
            creds,
            region: region.to_owned(),
            service: service.to_owned(),
            last: seed,
        })
    }

    /// The signature the next message is chained to (the seed before the first).
    pub fn last_signature(&self) -> &str {
        &self.last
    }

    fn params<'a>(
        &'a self,
        identity: &'a aws_smithy_runtime_api::client::identity::Identity,
        time: SystemTime,
    ) -> Result<v4::SigningParams<'a, ()>, SigningError> {
        v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(())
            .build()
            .map_err(|e| SigningError::Request(e.to_string()))
    }

    /// The signed wrapper of `event`, encoded, at `time`.
    pub fn sign_at(&mut self, event: &Message, time: SystemTime) -> Result<Bytes, SigningError> {
        let identity = self.creds.clone().into();
        let params = self.params(&identity, time)?;
        let (outer, signature) = sign_message(event, &self.last, &params)
            .map_err(|e| SigningError::Request(format!("event signing: {e}")))?
            .into_parts();
        self.last = signature;
        encode(&outer)
    }

    /// [`EventSigner::sign_at`] now.
    pub fn sign(&mut self, event: &Message) -> Result<Bytes, SigningError> {
        self.sign_at(event, SystemTime::now())
    }

    /// The signed empty message that ends the input, encoded.
    pub fn finish(&mut self) -> Result<Bytes, SigningError> {
        let identity = self.creds.clone().into();
        let params = self.params(&identity, SystemTime::now())?;
        let (outer, signature) = sign_empty_message(&self.last, &params)
            .map_err(|e| SigningError::Request(format!("event signing: {e}")))?
            .into_parts();
        self.last = signature;
        encode(&outer)
    }
}

/// One message in its wire encoding.
pub fn encode(message: &Message) -> Result<Bytes, SigningError> {
    let mut out = Vec::new();
    write_message_to(message, &mut out)
        .map_err(|e| SigningError::Request(format!("event encoding: {e}")))?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests;
