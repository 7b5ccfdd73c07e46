//! Request signing towards Bedrock: AWS SigV4 (service `bedrock`, signed payload) with
//! credentials from the aws-config default chain, or an HTTP bearer token
//! (`AWS_BEARER_TOKEN_BEDROCK`). Every call signs afresh (new timestamp), so retries and
//! resumes are always signed. Secrets never reach logs: `Debug` of [`Signer`] redacts.

mod credentials;
pub mod events;
mod fast;
mod headers;

pub use headers::{forwarded_copy, strip_hop_by_hop};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use credentials::CachedCredentials;
use http::header::{HeaderValue, AUTHORIZATION, HOST};
use std::sync::Arc;
use std::time::SystemTime;

/// SigV4 signing name of bedrock-runtime and bedrock-agent-runtime.
pub const BEDROCK_SERVICE: &str = "bedrock";

/// Environment variable that switches the relay to bearer-token auth.
pub const BEARER_ENV: &str = "AWS_BEARER_TOKEN_BEDROCK";

#[derive(thiserror::Error, Debug)]
pub enum SigningError {
    #[error("no AWS credentials provider is configured")]
    NoCredentialsProvider,
    #[error("could not load AWS credentials: {0}")]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("request cannot be signed: {0}")]
    Request(String),
    #[error("request URI must be absolute (scheme and host)")]
    RelativeUri,
    #[error("Bedrock accepts only SigV4 on InvokeModelWithBidirectionalStream (its input events are signed), not the relay's bearer token (AWS_BEARER_TOKEN_BEDROCK): run the relay with AWS credentials for this operation")]
    BearerEventStream,
    #[error("SigV4 signing failed: {0}")]
    Sign(#[from] aws_sigv4::http_request::SigningError),
}

enum Mode {
    SigV4(CachedCredentials),
    Bearer(HeaderValue),
}

struct Inner {
    mode: Mode,
    region: String,
    /// The last derived SigV4 signing key (see `fast`).
    keys: fast::KeyCache,
}

/// Signs upstream requests. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Signer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.inner.mode {
            Mode::SigV4(_) => "sigv4",
            Mode::Bearer(_) => "bearer",
        };
        f.debug_struct("Signer")
            .field("mode", &mode)
            .field("region", &self.inner.region)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

impl Signer {
    /// Bearer mode when `AWS_BEARER_TOKEN_BEDROCK` is set, else SigV4 with the aws-config
    /// default credentials chain for `settings.region`. Credentials are first fetched in the
    /// background (a failure is logged, not fatal: they are fetched again on first use).
    ///
    /// The relay's own AWS clients (STS, SSO) must not follow `AWS_ENDPOINT_URL*` back to the
    /// relay: `main` (`app::scrub_endpoint_env`) removes those variables from the process environment first.
    pub async fn from_settings(settings: &crate::config::Settings) -> Result<Signer, SigningError> {
        if let Ok(token) = std::env::var(BEARER_ENV) {
            if !token.trim().is_empty() {
                tracing::info!("using bearer-token auth from {BEARER_ENV}");
                return Ok(Signer::bearer(token.trim(), &settings.region));
            }
        }
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .use_fips(settings.fips)
            .load()
            .await;
        let provider = conf
            .credentials_provider()
            .ok_or(SigningError::NoCredentialsProvider)?;
        let signer = Signer::sigv4(provider, &settings.region);
        let warm = signer.clone();
        tokio::spawn(async move {
            if let Mode::SigV4(c) = &warm.inner.mode {
                match c.get().await {
                    Ok(_) => tracing::info!("AWS credentials loaded"),
                    Err(e) => tracing::warn!(error = %e, "AWS credentials not available yet"),
                }
            }
        });
        Ok(signer)
    }

    /// SigV4 with any credentials provider (cached and refreshed before expiry).
    pub fn sigv4(provider: SharedCredentialsProvider, region: &str) -> Signer {
        Signer {
            inner: Arc::new(Inner {
                mode: Mode::SigV4(CachedCredentials::new(provider)),
                region: region.to_string(),
                keys: fast::KeyCache::default(),
            }),
        }
    }

    /// SigV4 with static credentials (tests).
    pub fn for_tests(
        access_key: &str,
        secret: &str,
        session_token: Option<&str>,
        region: &str,
    ) -> Signer {
        let creds = Credentials::new(
            access_key,
            secret,
            session_token.map(str::to_string),
            None,
            "bedrock-relay-static",
        );
        Signer::sigv4(SharedCredentialsProvider::new(creds), region)
    }

    /// Bearer-token auth: `authorization: Bearer <token>`.
    pub fn bearer(token: &str, region: &str) -> Signer {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token"));
        value.set_sensitive(true);
        Signer {
            inner: Arc::new(Inner {
                mode: Mode::Bearer(value),
                region: region.to_string(),
                keys: fast::KeyCache::default(),
            }),
        }
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    pub fn is_bearer(&self) -> bool {
        matches!(self.inner.mode, Mode::Bearer(_))
    }

    /// Sign `req` for Bedrock (service `bedrock`). `req` has an absolute URI whose path is
    /// byte-exact as the client sent it. Sets `host` from the URI if absent; adds
    /// `authorization`, `x-amz-date`, `x-amz-content-sha256` (= sha256(body)) and
    /// `x-amz-security-token` when the credentials have one. Bearer mode sets only
    /// `authorization: Bearer <token>`.
    pub async fn sign(&self, req: &mut http::Request<Bytes>) -> Result<(), SigningError> {
        self.sign_as(req, BEDROCK_SERVICE).await
    }

    /// [`Signer::sign`] for another service's signing name (forwarded non-Bedrock calls).
    pub async fn sign_as(
        &self,
        req: &mut http::Request<Bytes>,
        service: &str,
    ) -> Result<(), SigningError> {
        self.sign_for(req, &self.inner.region, service).await
    }

    /// [`Signer::sign`] for another region than the relay's own (spillover): the region is
    /// part of the SigV4 scope. Bearer mode sets only the token, as everywhere.
    pub async fn sign_in_region(
        &self,
        req: &mut http::Request<Bytes>,
        region: &str,
    ) -> Result<(), SigningError> {
        self.sign_for(req, region, BEDROCK_SERVICE).await
    }

    async fn sign_for(
        &self,
        req: &mut http::Request<Bytes>,
        region: &str,
        service: &str,
    ) -> Result<(), SigningError> {
        prepare(req)?;
        match &self.inner.mode {
            Mode::Bearer(v) => {
                req.headers_mut().insert(AUTHORIZATION, v.clone());
                Ok(())
            }
            Mode::SigV4(cache) => {
                let creds = cache.get().await.map_err(SigningError::Credentials)?;
                let at = SystemTime::now();
                match fast::sign(req, &creds, region, service, at, &self.inner.keys) {
                    Some(()) => Ok(()),
                    None => sign_sigv4(req, &creds, region, service, at, PAYLOAD_HEADER),
                }
            }
        }
    }
}

impl Signer {
    /// Sign the head of an event-stream request (`InvokeModelWithBidirectionalStream`) for
    /// Bedrock and return the signer of its input events, chained from this signature.
    /// Bearer mode cannot: Bedrock takes only SigV4 on this operation.
    pub async fn sign_event_stream(
        &self,
        req: &mut http::Request<Bytes>,
    ) -> Result<events::EventSigner, SigningError> {
        prepare(req)?;
        match &self.inner.mode {
            Mode::Bearer(_) => Err(SigningError::BearerEventStream),
            Mode::SigV4(cache) => {
                let creds = cache.get().await.map_err(SigningError::Credentials)?;
                let region = &self.inner.region;
                events::EventSigner::start(req, creds, region, BEDROCK_SERVICE, SystemTime::now())
            }
        }
    }
}

/// Before signing: `host` set from the URI, and no stale auth headers left to sign over (or
/// next to), whoever left them.
fn prepare(req: &mut http::Request<Bytes>) -> Result<(), SigningError> {
    set_host(req)?;
    for name in headers::AUTH {
        req.headers_mut().remove(name);
    }
    Ok(())
}

fn set_host(req: &mut http::Request<Bytes>) -> Result<(), SigningError> {
    if req.headers().contains_key(HOST) {
        return Ok(());
    }
    let authority = req.uri().authority().ok_or(SigningError::RelativeUri)?;
    let value = HeaderValue::from_str(authority.as_str())
        .map_err(|e| SigningError::Request(format!("host: {e}")))?;
    req.headers_mut().insert(HOST, value);
    Ok(())
}

/// The relay sends the payload hash as `x-amz-content-sha256` (the SDKs hash the payload
/// into the signature too but do not send the header; Bedrock accepts both).
const PAYLOAD_HEADER: PayloadChecksumKind = PayloadChecksumKind::XAmzSha256;

/// SigV4 with the settings the AWS SDKs use for Bedrock (double-encoded canonical path,
/// path normalisation, signed payload).
pub(crate) fn sign_sigv4(
    req: &mut http::Request<Bytes>,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    payload_header: PayloadChecksumKind,
) -> Result<(), SigningError> {
    sign_head(req, creds, region, service, time, payload_header, None).map(drop)
}

/// [`sign_sigv4`] with the payload hash given (`precomputed`, e.g. an event stream's) instead
/// of the body's; returns the signature (an event stream's seed).
pub(crate) fn sign_head(
    req: &mut http::Request<Bytes>,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    payload_header: PayloadChecksumKind,
    precomputed: Option<&str>,
) -> Result<String, SigningError> {
    if req.uri().scheme().is_none() || req.uri().authority().is_none() {
        return Err(SigningError::RelativeUri);
    }
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = payload_header;
    // Trace headers stay out of the signature (`headers::TRACE`), as the AWS SDKs sign.
    if let Some(excluded) = settings.excluded_headers.as_mut() {
        for name in headers::TRACE {
            if !excluded.iter().any(|e| e == name) {
                excluded.push(name.into());
            }
        }
    }
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SigningError::Request(e.to_string()))?
        .into();
    let uri = req.uri().to_string();
    let mut headers = Vec::with_capacity(req.headers().len());
    for (k, v) in req.headers() {
        let v = v
            .to_str()
            .map_err(|_| SigningError::Request(format!("header {k} is not visible ASCII")))?;
        headers.push((k.as_str(), v));
    }
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.into_iter(),
        match precomputed {
            Some(hash) => SignableBody::Precomputed(hash.to_owned()),
            None => SignableBody::Bytes(req.body()),
        },
    )?;
    let (instructions, signature) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(req);
    for name in ["authorization", "x-amz-security-token"] {
        if let Some(v) = req.headers_mut().get_mut(name) {
            v.set_sensitive(true);
        }
    }
    Ok(signature)
}

/// aws-sigv4's full signer with the relay's settings: the reference `fast` is tested against.
#[cfg(test)]
fn sign_sigv4_reference(
    req: &mut http::Request<Bytes>,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), SigningError> {
    sign_sigv4(req, creds, region, service, time, PAYLOAD_HEADER)
}

#[cfg(test)]
mod tests;
