//! Listener hardening: the [`Limits`] each connection is served with, and the wait for a
//! client's first bytes that runs before hyper's own header timer.
//!
//! A plain-text connection is HTTP/1.1 unless its first 24 bytes are the HTTP/2 preface
//! (`PRI * HTTP/2.0...`). [`sniff`] peeks (never consumes) until that decision is possible,
//! so `server::serve_with` bounds it with the header read timeout and hands the connection
//! to hyper's HTTP/1.1 or HTTP/2 server directly; from then on hyper's `header_read_timeout`
//! bounds every request head, including the wait on an idle keep-alive connection.

use std::time::Duration;
use tokio::net::TcpStream;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Limits (and optional TLS) of one listener.
#[derive(Clone)]
pub struct Limits {
    /// First bytes (or the TLS handshake), then each request head, within this time.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (at least 8 KiB: hyper's minimum buffer).
    pub max_header_bytes: usize,
    /// Serve TLS with this acceptor (certificate files followed for changes).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for Limits {
    /// hyper's own defaults: 30 s, ~400 KB.
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 400 * 1024,
            tls: None,
        }
    }
}

impl Limits {
    /// The relay listener's limits from `[inbound]`; loads the TLS pair if configured.
    pub fn from_settings(s: &crate::config::InboundSettings) -> Result<Self, super::tls::TlsError> {
        Ok(Limits {
            header_read_timeout: s.header_read_timeout,
            max_header_bytes: s.max_header_bytes,
            tls: s.tls.as_ref().map(super::tls::acceptor).transpose()?,
        })
    }
}

/// The protocol a plain-text client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// Prior knowledge (h2c): the connection starts with the HTTP/2 preface.
    Http2,
}

/// Resolves once the bytes the client sent tell HTTP/1.1 from HTTP/2 (they differ from the
/// preface, or are the whole preface); `None` if the client closed first.
pub async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut seen = 0;
    loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == buf.len() {
            return Some(Protocol::Http2);
        }
        if n == seen {
            // peek returns the same bytes at once until more arrive: do not spin.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn http1_is_decided_on_the_first_differing_byte() {
        let (mut c, s) = pair().await;
        c.write_all(b"G").await.unwrap();
        assert_eq!(sniff(&s).await, Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn a_partial_h2_preface_is_not_decided() {
        let (mut c, s) = pair().await;
        c.write_all(b"PRI * HTTP/2").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(200), sniff(&s)).await;
        assert!(r.is_err(), "must wait for more bytes");
        c.write_all(&H2_PREFACE[12..]).await.unwrap();
        assert_eq!(sniff(&s).await, Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn silence_is_not_decided_and_close_is_none() {
        let (c, s) = pair().await;
        let r = tokio::time::timeout(Duration::from_millis(100), sniff(&s)).await;
        assert!(r.is_err());
        drop(c);
        assert_eq!(sniff(&s).await, None);
    }
}
