//! Which client request headers the relay drops before re-signing and forwarding.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// Client auth headers: replaced by the relay's own signature.
pub(crate) const AUTH: [HeaderName; 4] = [
    AUTHORIZATION,
    HeaderName::from_static("x-amz-date"),
    HeaderName::from_static("x-amz-security-token"),
    HeaderName::from_static("x-amz-content-sha256"),
];

/// Trace-context headers: forwarded as the client sent them but never signed, as the AWS
/// SDKs leave them out (aws-sigv4 excludes `x-amzn-trace-id` itself). A hop that rewrites
/// them (a mesh sidecar, an egress proxy starting its own span) must not break the signature.
pub(crate) const TRACE: [&str; 4] = ["traceparent", "tracestate", "baggage", "x-amzn-trace-id"];

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus `host` and `content-length` (recomputed).
const HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HOST,
    CONTENT_LENGTH,
];

/// Removes client auth headers (authorization, x-amz-date, x-amz-security-token,
/// x-amz-content-sha256) and what [`strip_hop_by_hop`] removes. Keeps every other header
/// (Bedrock's `x-amzn-bedrock-*` among them). The reference [`forwarded_copy`] is tested
/// against.
#[cfg(test)]
fn strip_client_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in AUTH {
        headers.remove(name);
    }
}

/// What [`strip_client_headers`] leaves, as a copy whose values own their bytes, in one
/// pass. hyper's values are slices of the connection's read buffer: a copy kept for the
/// life of a request (a stream's: minutes) does not keep that buffer alive.
pub fn forwarded_copy(headers: &HeaderMap) -> HeaderMap {
    let by_connection = named_by_connection(headers);
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if AUTH.contains(name) || is_hop_by_hop(name) || by_connection.contains(name) {
            continue;
        }
        let mut own = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        own.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), own);
    }
    copy
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1: connection, keep-alive, proxy-*, te,
/// trailer, transfer-encoding, upgrade, and those named by `connection`), plus `host` and
/// `content-length` (set again for the next hop).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in named_by_connection(headers) {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP.contains(name) || name.as_str().starts_with("proxy-")
}

/// The headers a `connection` header names (hop-by-hop too); none, without allocating,
/// when there is no `connection` header.
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_auth_and_hop_by_hop_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKID/..."),
            ("x-amz-date", "20250101T000000Z"),
            ("x-amz-security-token", "tok"),
            ("x-amz-content-sha256", "abc"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("host", "127.0.0.1:8790"),
            ("content-length", "12"),
            ("content-type", "application/json"),
            ("accept", "application/vnd.amazon.eventstream"),
            ("x-amzn-bedrock-guardrailidentifier", "gr-1"),
            ("x-amzn-bedrock-trace", "ENABLED"),
            ("amz-sdk-invocation-id", "uuid"),
            ("user-agent", "aws-sdk-rust"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("baggage", "userId=alice"),
            (
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793",
            ),
        ] {
            h.append(k, v.parse().unwrap());
        }
        let copy = forwarded_copy(&h);
        strip_client_headers(&mut h);
        assert_eq!(copy, h, "one pass leaves what stripping leaves");
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "accept",
                "amz-sdk-invocation-id",
                "baggage",
                "content-type",
                "traceparent",
                "tracestate",
                "user-agent",
                "x-amzn-bedrock-guardrailidentifier",
                "x-amzn-bedrock-trace",
                "x-amzn-trace-id",
            ]
        );
    }

    #[test]
    fn multiple_connection_headers() {
        let mut h = HeaderMap::new();
        h.append("connection", "a".parse().unwrap());
        h.append("connection", "b, c".parse().unwrap());
        for k in ["a", "b", "c", "d"] {
            h.insert(k, "1".parse().unwrap());
        }
        let copy = forwarded_copy(&h);
        strip_client_headers(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["d"]);
        assert_eq!(copy, h);
    }
}
