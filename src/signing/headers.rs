//! Which client request headers the relay drops before re-signing and forwarding.

use http::header::{HeaderMap, HeaderName, CONNECTION};

/// Client auth headers: replaced by the relay's own signature.
const AUTH: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus `host` and `content-length` (recomputed).
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Removes client auth headers (authorization, x-amz-date, x-amz-security-token,
/// x-amz-content-sha256) and what [`strip_hop_by_hop`] removes. Keeps every other header
/// (Bedrock's `x-amzn-bedrock-*` among them).
pub fn strip_client_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in AUTH {
        headers.remove(*name);
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1: connection, keep-alive, proxy-*, te,
/// trailer, transfer-encoding, upgrade, and those named by `connection`), plus `host` and
/// `content-length` (set again for the next hop).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named_by_connection {
        headers.remove(name);
    }
    for name in HOP {
        headers.remove(*name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
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
        ] {
            h.append(k, v.parse().unwrap());
        }
        strip_client_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "accept",
                "amz-sdk-invocation-id",
                "content-type",
                "user-agent",
                "x-amzn-bedrock-guardrailidentifier",
                "x-amzn-bedrock-trace",
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
        strip_client_headers(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["d"]);
    }
}
