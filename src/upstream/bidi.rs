//! The client of `InvokeModelWithBidirectionalStream`: HTTP/2 only (ALPN h2 over TLS, h2c
//! with prior knowledge over plain http, as towards the simulator) with a streaming request
//! body, since that operation's input is an event stream the client writes as it goes.
//!
//! A separate pool from the main client (whose bodies are whole `Full<Bytes>`), with the
//! same connector, connect timeout and h2 keep-alive. Dropping the request body's sender
//! with an error, or dropping the response body, resets the stream upstream.

use super::connect::ConnectTimeout;
use super::UpstreamError;
use crate::config::{Settings, UpstreamHttp2};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A request body written as it goes.
pub type StreamBody = BoxBody<Bytes, std::io::Error>;

/// The HTTP/2 client with streaming request bodies.
#[derive(Clone, Debug)]
pub struct BidiClient {
    client: Client<ConnectTimeout<HttpsConnector<HttpConnector>>, StreamBody>,
}

impl BidiClient {
    pub(super) fn build(
        settings: &Settings,
        roots: Option<rustls::RootCertStore>,
    ) -> Result<BidiClient, UpstreamError> {
        let h2 = Settings {
            upstream_http2: UpstreamHttp2::Always,
            ..settings.clone()
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        super::h2::configure(&mut builder, UpstreamHttp2::Always);
        Ok(BidiClient {
            client: builder.build(super::connector(&h2, roots)?),
        })
    }

    /// Send the signed head with its streaming body; returns once response headers arrive.
    pub async fn send(
        &self,
        req: http::Request<StreamBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        self.client
            .request(req)
            .await
            .map_err(UpstreamError::from_client)
    }
}
