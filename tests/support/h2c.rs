//! An `HttpClient` for aws-sdk-bedrockruntime that speaks h2c (HTTP/2 with prior knowledge)
//! over hyper-util: the SDK's default client does not do HTTP/2 to an `http://` endpoint,
//! and `InvokeModelWithBidirectionalStream` is HTTP/2 only.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

type H2Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The SDK's HTTP client: h2c with prior knowledge.
#[derive(Clone, Debug)]
pub struct H2c(
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, H2Body>,
);

impl H2c {
    pub fn shared() -> SharedHttpClient {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        SharedHttpClient::new(H2c(client))
    }
}

impl HttpConnector for H2c {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let req = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?
                .map(|b: SdkBody| b.boxed());
            let resp = client
                .request(req)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            let resp = resp.map(SdkBody::from_body_1_x);
            aws_smithy_runtime_api::http::Response::try_from(resp)
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl HttpClient for H2c {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}
