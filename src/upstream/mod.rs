//! The HTTP client towards Bedrock: hyper-util's pooled client over rustls (aws-lc-rs,
//! native roots with webpki-roots fallback; plain http allowed for the simulator), plus the
//! endpoint for each route. `upstream_http2` picks the protocol: by ALPN (h2 preferred,
//! HTTP/1.1 fallback; HTTP/1.1 over plain http), h2 only (h2c prior knowledge over plain
//! http), or HTTP/1.1 only. Over h2 the pool shares one connection per endpoint between all
//! streams (see `h2` for its settings).
//!
//! It applies the connect timeout only (TCP and TLS together); the caller applies first-byte and stall timeouts,
//! since they differ per operation and attempt.

pub mod bidi;
mod body;
mod connect;
mod error;
mod h2;
pub mod regions;
mod tagged;

pub use body::{BoxError, UpstreamBody};
#[cfg(test)]
pub use error::FailureKind;
pub use error::UpstreamError;
pub use tagged::ConnectionId;

use crate::config::{Settings, UpstreamHttp2};
use crate::ops::Route;
use bytes::Bytes;
use connect::ConnectTimeout;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Client and endpoints for Bedrock. Cheap to share behind the `Relay`'s `Arc`.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<ConnectTimeout<HttpsConnector<HttpConnector>>, Full<Bytes>>,
    /// HTTP/2 with streaming request bodies (the bidirectional stream).
    pub bidi: bidi::BidiClient,
    runtime: Uri,
    agent: Uri,
    mantle: Uri,
    /// Unit tests: answers instead of the network.
    #[cfg(test)]
    pub(crate) fake: Option<Fake>,
}

/// What the fake network answers a request with.
#[cfg(test)]
pub(crate) type FakeAnswer =
    futures_util::future::BoxFuture<'static, Result<http::Response<UpstreamBody>, UpstreamError>>;

/// A stand-in for the network in unit tests: answers each (signed) request.
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct Fake(
    pub std::sync::Arc<dyn Fn(http::Request<Bytes>) -> FakeAnswer + Send + Sync>,
);

#[cfg(test)]
impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fake")
    }
}

fn regional(prefix: &str, region: &str, fips: bool) -> Result<Uri, UpstreamError> {
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(UpstreamError::Endpoint(format!(
            "invalid region {region:?}"
        )));
    }
    let fips = if fips { "-fips" } else { "" };
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{prefix}{fips}.{region}.{suffix}")
        .parse()
        .map_err(|e| UpstreamError::Endpoint(format!("{e}")))
}

/// bedrock-mantle's regional endpoint (`https://bedrock-mantle.{region}.api.aws`).
fn mantle(region: &str) -> Result<Uri, UpstreamError> {
    let runtime = regional("bedrock-runtime", region, false)?;
    format!("https://bedrock-mantle.{region}.api.aws")
        .parse()
        .map_err(|e| UpstreamError::Endpoint(format!("{e} ({runtime})")))
}

/// True when `uri` points at `listen` (same port, and the same IP, loopback for a
/// wildcard listen address, or `localhost`).
fn points_at(uri: &Uri, listen: SocketAddr) -> bool {
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    if port != listen.port() {
        return false;
    }
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) if host.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Err(_) => return false,
    };
    ip == listen.ip() || (listen.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
}

/// The connector; `roots` replaces the system's trust anchors (tests only).
fn connector(
    settings: &Settings,
    roots: Option<rustls::RootCertStore>,
) -> Result<ConnectTimeout<HttpsConnector<HttpConnector>>, UpstreamError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(settings.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls_setup = |e: rustls::Error| UpstreamError::Endpoint(format!("TLS setup: {e}"));
    let native = match roots {
        Some(roots) => Ok(HttpsConnectorBuilder::new().with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(tls_setup)?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )),
        None => HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()),
    };
    let builder = match native {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(error = %e, "no usable native root certificates; using webpki roots");
            HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| UpstreamError::Endpoint(format!("TLS setup: {e}")))?
        }
    };
    let builder = builder.https_or_http();
    // ALPN offers only what the mode allows; over plain http the client's own setting decides.
    let https = match settings.upstream_http2 {
        UpstreamHttp2::Auto => builder.enable_all_versions().wrap_connector(http),
        UpstreamHttp2::Always => builder.enable_http2().wrap_connector(http),
        UpstreamHttp2::Never => builder.enable_http1().wrap_connector(http),
    };
    Ok(ConnectTimeout::new(https, settings.connect_timeout))
}

/// `base` plus `path_and_query` (as the client sent it, byte-exact). A path prefix in the
/// base (an override like `http://h:1/prefix`) is kept.
pub fn join(base: &Uri, path_and_query: &str) -> Result<Uri, UpstreamError> {
    let prefix = base.path().trim_end_matches('/');
    let mut parts = base.clone().into_parts();
    let pq = format!("{prefix}{path_and_query}");
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|e| UpstreamError::Endpoint(format!("path {path_and_query:?}: {e}")))?,
    );
    Uri::from_parts(parts).map_err(|e| UpstreamError::Endpoint(e.to_string()))
}

impl Upstream {
    /// Build the client. Refuses an endpoint override that points at the relay's own
    /// `listen` address (pass the bound address when listening on port 0).
    pub fn new(settings: &Settings) -> Result<Upstream, UpstreamError> {
        Self::build(settings, None)
    }

    /// [`Upstream::new`] trusting only `roots` (tests of TLS and ALPN against a local server).
    #[cfg(test)]
    pub(crate) fn with_roots(
        settings: &Settings,
        roots: rustls::RootCertStore,
    ) -> Result<Upstream, UpstreamError> {
        Self::build(settings, Some(roots))
    }

    fn build(
        settings: &Settings,
        roots: Option<rustls::RootCertStore>,
    ) -> Result<Upstream, UpstreamError> {
        let runtime = match &settings.upstream {
            Some(u) => u.clone(),
            None => regional("bedrock-runtime", &settings.region, settings.fips)?,
        };
        let agent = match &settings.agent_upstream {
            Some(u) => u.clone(),
            None => regional("bedrock-agent-runtime", &settings.region, settings.fips)?,
        };
        let mantle = match &settings.mantle_upstream {
            Some(u) => u.clone(),
            None => mantle(&settings.region)?,
        };
        for u in [&runtime, &agent, &mantle]
            .into_iter()
            .chain(settings.service_upstreams.values())
        {
            if points_at(u, settings.listen) {
                return Err(UpstreamError::Loop(u.to_string()));
            }
        }
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        h2::configure(&mut builder, settings.upstream_http2);
        let client = builder.build(connector(settings, roots.clone())?);
        Ok(Upstream {
            client,
            bidi: bidi::BidiClient::build(settings, roots)?,
            runtime,
            agent,
            mantle,
            #[cfg(test)]
            fake: None,
        })
    }

    /// Base URI of a route: the regional (or FIPS, or China) endpoint, or the override.
    pub fn base(&self, route: Route) -> &Uri {
        match route {
            Route::Runtime => &self.runtime,
            Route::AgentRuntime => &self.agent,
            Route::Mantle => &self.mantle,
        }
    }

    #[cfg(test)]
    /// Absolute URI for `path_and_query` (as the client sent it, byte-exact) on `route`.
    pub fn uri_for(&self, route: Route, path_and_query: &str) -> Result<Uri, UpstreamError> {
        join(self.base(route), path_and_query)
    }

    /// Send one request (absolute URI, already signed). Returns once response headers
    /// arrive; no header timeout here (the caller applies `first_byte_timeout`).
    pub async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<UpstreamBody>, UpstreamError> {
        #[cfg(test)]
        if let Some(fake) = &self.fake {
            return (fake.0)(req).await;
        }
        let req = req.map(Full::new);
        let resp = self.client.request(req).await;
        resp.map(|r| r.map(UpstreamBody::from))
            .map_err(UpstreamError::from_client)
    }
}

#[cfg(test)]
mod tests;
