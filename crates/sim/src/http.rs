//! A small HTTP/1.1 server layer written on tokio TCP streams with `httparse`.
//!
//! Why not hyper: the simulator exists to break the wire in exact, reproducible ways —
//! "N whole frames, half of the next, then a TCP RST", "close without the chunked
//! terminator", "headers with a content-length, then half the body". hyper owns framing and
//! flushing, so those cuts would be approximations. Here every response byte is written by
//! us, each chunk is flushed when written, and resets are real RSTs (`SO_LINGER 0`, then
//! close). Supported: keep-alive, content-length and chunked request bodies,
//! `Expect: 100-continue`, chunked streaming responses.

use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head and body accepted.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request too large")]
    TooLarge,
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path as sent (still percent-encoded), without the query.
    pub path: String,
    pub query: String,
    /// Header names as sent; look up case-insensitively with [`Request::header`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client asked to close after this request.
    pub close: bool,
}

impl Request {
    /// The request's head as the simulator's `Request` (empty body; `host` from `:authority`).
    pub(super) fn head_of(parts: &http::request::Parts) -> Request {
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if !parts.headers.contains_key(http::header::HOST) {
            if let Some(a) = parts.uri.authority() {
                headers.push(("host".into(), a.to_string()));
            }
        }
        Request {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers,
            body: Vec::new(),
            close: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The service a SigV4 `authorization` header was signed for (for the log).
    pub fn signed_service(&self) -> Option<String> {
        self.header("authorization")
            .and_then(bedrock_relay_wire::ops::signed_service)
            .map(str::to_owned)
    }
}

/// A connection: the socket and bytes read past the previous request.
pub struct Conn {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The simulator's id of this connection (in the log).
    pub id: u64,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            id: 0,
        }
    }

    async fn fill(&mut self) -> Result<bool, HttpError> {
        if self.buf.len() > MAX_HEAD + MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    /// Read the next request; `Ok(None)` when the client closed cleanly between requests.
    pub async fn read_request(&mut self) -> Result<Option<Request>, HttpError> {
        let (head_len, mut req, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 96];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let (req, len) = head(&parsed)?;
                    break (n, req, len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(HttpError::TooLarge);
                    }
                    if !self.fill().await? {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(HttpError::Malformed("eof inside request head".into()))
                        };
                    }
                }
                Err(e) => return Err(HttpError::Malformed(e.to_string())),
            }
        };
        self.buf.advance(head_len);
        if req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        req.body = match body_len {
            BodyLen::Fixed(n) => {
                while self.buf.len() < n {
                    if !self.fill().await? {
                        return Err(HttpError::Malformed("eof inside body".into()));
                    }
                }
                self.buf.split_to(n).to_vec()
            }
            BodyLen::Chunked => self.read_chunked().await?,
        };
        Ok(Some(req))
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !self.fill().await? {
                    return Err(HttpError::Malformed("eof in chunk size".into()));
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| HttpError::Malformed(format!("bad chunk size {size_text:?}")))?;
            if body.len() + size > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            self.buf.advance(line_end + 2);
            if size == 0 {
                // Skip trailers up to the empty line.
                loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        self.buf.advance(i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                    } else if !self.fill().await? {
                        return Err(HttpError::Malformed("eof in trailers".into()));
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await? {
                    return Err(HttpError::Malformed("eof in chunk".into()));
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
    }

    /// Write a complete response with a content-length.
    pub async fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut out = head_bytes(status, headers);
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Start a chunked response.
    pub async fn start_chunked(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
    ) -> std::io::Result<()> {
        let mut out = head_bytes(status, headers);
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        self.stream.write_all(&out).await
    }

    /// Write one chunk (one or more whole frames, or part of one) and flush it.
    pub async fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(data.len() + 12);
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out).await
    }

    /// The terminating zero-length chunk.
    pub async fn end_chunked(&mut self) -> std::io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n").await?;
        self.stream.flush().await
    }

    /// Send raw bytes (used to cut a body at an exact byte).
    pub async fn raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    /// Abort with a TCP RST: `SO_LINGER 0`, then close. Gives the kernel a moment to put
    /// already-written bytes on the wire first, so "N frames then reset" delivers N frames.
    pub async fn reset(self) {
        let _ = self.stream.set_zero_linger();
        tokio::time::sleep(Duration::from_millis(2)).await;
        drop(self.stream);
    }

    /// Close cleanly (FIN) without finishing the response.
    pub async fn close(mut self) {
        let _ = self.stream.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

enum BodyLen {
    Fixed(usize),
    Chunked,
}

fn head(parsed: &httparse::Request<'_, '_>) -> Result<(Request, BodyLen), HttpError> {
    let method = parsed.method.unwrap_or("GET").to_owned();
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let len = if chunked {
        BodyLen::Chunked
    } else {
        let n = get("content-length")
            .map(|v| v.trim().parse::<usize>())
            .transpose()
            .map_err(|_| HttpError::Malformed("bad content-length".into()))?
            .unwrap_or(0);
        if n > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        BodyLen::Fixed(n)
    };
    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || parsed.version == Some(0);
    Ok((
        Request {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: Vec::new(),
            close,
        },
        len,
    ))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        424 => "Failed Dependency",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn head_bytes(status: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out
}
