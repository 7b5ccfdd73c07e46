//! Inbound authentication and policy: who may use the relay and what they may do.
//!
//! Checked at step 1 of `proxy::handle`, before anything is forwarded:
//! 1. authentication, when `[inbound]` configures client keys or tokens: a SigV4 signature
//!    made with a relay-only client key (checked in two phases: the header, key and clock
//!    at once, the signature itself once the body is read, since it covers the body hash),
//!    or `Authorization: Bearer <token>`;
//! 2. policy: allow/deny lists of operations and model ids;
//! 3. a per-client concurrency slot (client = access key id, token, or peer IP), held until
//!    the response body is finished or dropped.
//!
//! The client's own `Authorization` is removed later by the signer, which signs afresh
//! with the relay's credentials. Refusals are [`Denied`], shaped as Bedrock's errors.

mod error;
mod limit;
/// SigV4 verification, shared with the simulator.
pub use bedrock_relay_wire::sigv4;

pub use error::Denied;
pub use limit::ClientSlots;

use crate::config::InboundSettings;
use crate::ops::Operation;
use bytes::Bytes;
use http::request::Parts;
use limit::Slot;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// The peer address of a connection, put in each request's extensions by `server::serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Inbound checks, built once from the settings and shared by all connections.
pub struct Inbound {
    settings: InboundSettings,
    /// `(access key id, secret)` in the form `sigv4::verify` takes.
    keys: Vec<(String, String)>,
    tokens: Vec<String>,
    slots: ClientSlots,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("keys", &self.keys.len())
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// A request that passed the checks possible before its body arrived. Holds the client's
/// concurrency slot; [`Admission::verify_body`] finishes SigV4 authentication.
#[derive(Debug)]
#[must_use]
pub struct Admission {
    sigv4: bool,
    slot: Option<Slot>,
    /// The authenticated client (`key:<id>`, `token:<digest>`); `None` without inbound auth.
    client: Option<String>,
}

impl Inbound {
    pub fn new(settings: &InboundSettings) -> Self {
        Inbound {
            keys: settings
                .sigv4_keys
                .iter()
                .map(|k| {
                    let secret = k.secret_access_key.expose().to_string();
                    (k.access_key_id.clone(), secret)
                })
                .collect(),
            tokens: settings
                .bearer_tokens
                .iter()
                .map(|t| t.expose().to_string())
                .collect(),
            slots: ClientSlots::new(settings.max_concurrency_per_client),
            settings: settings.clone(),
        }
    }

    /// Requests currently holding a concurrency slot (all clients).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight()
    }

    /// Step 1: authentication as far as the head allows, policy, concurrency slot.
    pub fn admit(
        &self,
        parts: &Parts,
        operation: Operation,
        model_id: Option<&str>,
    ) -> Result<Admission, Denied> {
        let (client, sigv4) = self.authenticate_head(parts)?;
        self.operation_policy(operation)?;
        // The OpenAI- and Anthropic-compatible paths name their model in the body: checked
        // once it is read (`model_policy`).
        if !operation.is_sse() {
            self.model_policy(model_id)?;
        }
        let authenticated = client.clone();
        let client = client.unwrap_or_else(|| match parts.extensions.get::<PeerAddr>() {
            Some(PeerAddr(a)) => format!("ip:{}", a.ip()),
            None => "ip:unknown".into(),
        });
        let slot = self.slots.acquire(&client)?;
        Ok(Admission {
            sigv4,
            slot,
            client: authenticated,
        })
    }

    /// Who the client claims to be (`None` when unauthenticated) and whether the SigV4
    /// signature still has to be checked against the body.
    fn authenticate_head(&self, parts: &Parts) -> Result<(Option<String>, bool), Denied> {
        if self.keys.is_empty() && self.tokens.is_empty() {
            return Ok((None, false));
        }
        let authz = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Denied::Missing)?;
        if authz.starts_with("Bearer ") {
            let headers = [("authorization".to_string(), authz.to_string())];
            let req = sigv4::SignedRequest {
                method: "",
                path: "",
                query: "",
                headers: &headers,
                body: b"",
            };
            return match sigv4::verify(&req, &[], &self.tokens) {
                sigv4::Verdict::Bearer => {
                    // The slot key is a digest prefix, never the token itself.
                    let id = sigv4_token_id(authz);
                    Ok((Some(format!("token:{id}")), false))
                }
                _ => Err(Denied::BadBearer),
            };
        }
        let auth = sigv4::parse_authorization(authz).ok_or(Denied::Missing)?;
        if !self.keys.iter().any(|(k, _)| *k == auth.access_key_id) {
            return Err(Denied::UnknownKey {
                access_key_id: auth.access_key_id,
            });
        }
        let skew = self.settings.max_clock_skew;
        let date = parts
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_amz_date);
        match date {
            Some(t) if within(t, SystemTime::now(), skew) => {}
            _ => {
                return Err(Denied::Expired {
                    max_skew_secs: skew.as_secs(),
                })
            }
        }
        Ok((Some(format!("key:{}", auth.access_key_id)), true))
    }

    fn operation_policy(&self, operation: Operation) -> Result<(), Denied> {
        let s = &self.settings;
        let op = operation.name();
        let listed = |l: &[String]| l.iter().any(|n| n == op);
        if listed(&s.deny_operations)
            || (!s.allow_operations.is_empty() && !listed(&s.allow_operations))
        {
            return Err(Denied::Operation { operation: op });
        }
        Ok(())
    }

    /// The model allow/deny lists. Paths carry the model for Bedrock's own operations;
    /// the OpenAI- and Anthropic-compatible ones carry it in the body's `model`.
    pub fn model_policy(&self, model_id: Option<&str>) -> Result<(), Denied> {
        let s = &self.settings;
        if s.allow_models.is_empty() && s.deny_models.is_empty() {
            return Ok(());
        }
        // Model ids arrive percent-encoded in the path (ARNs); policy sees them decoded.
        let raw = model_id.unwrap_or("");
        let id = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        let matches = |l: &[regex::Regex]| l.iter().any(|r| r.is_match(&id));
        if matches(&s.deny_models) || (!s.allow_models.is_empty() && !matches(&s.allow_models)) {
            return Err(Denied::Model {
                model_id: id.into_owned(),
            });
        }
        Ok(())
    }
}

impl Admission {
    /// The authenticated client identity (`key:<access key id>`, `token:<digest prefix>`);
    /// `None` when inbound authentication is off.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// Step 2 (body read): check the SigV4 signature over the method, path, query, signed
    /// headers and the body's hash.
    pub fn verify_body(
        &self,
        inbound: &Inbound,
        parts: &Parts,
        body: &Bytes,
    ) -> Result<(), Denied> {
        if !self.sigv4 {
            return Ok(());
        }
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // HTTP/2 carries the host as :authority, which hyper puts in the URI.
        if parts.headers.get(http::header::HOST).is_none() {
            if let Some(a) = parts.uri.authority() {
                headers.push(("host".into(), a.as_str().to_string()));
            }
        }
        let req = sigv4::SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            body,
        };
        match sigv4::verify(&req, &inbound.keys, &[]) {
            sigv4::Verdict::Valid => Ok(()),
            _ => Err(Denied::BadSignature),
        }
    }

    /// Keep the client's concurrency slot until `resp`'s body is finished or dropped.
    pub fn hold(
        self,
        resp: http::Response<crate::body::Body>,
    ) -> http::Response<crate::body::Body> {
        use http_body_util::BodyExt;
        match self.slot {
            None => resp,
            Some(slot) => resp.map(move |b| {
                b.map_frame(move |f| {
                    let _held = &slot;
                    f
                })
                .boxed()
            }),
        }
    }
}

/// A short, non-reversible id for a bearer token (slot keys and logs).
fn sigv4_token_id(authz: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(authz.as_bytes())[..6])
}

/// `20150830T123600Z` → the instant it names.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !s.is_ascii() {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    humantime::parse_rfc3339(&rfc).ok()
}

fn within(t: SystemTime, now: SystemTime, skew: Duration) -> bool {
    let diff = match now.duration_since(t) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    diff <= skew
}

#[cfg(test)]
mod tests;
