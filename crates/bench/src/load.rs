//! The load driver of the benchmark: a lean HTTP/1.1 keep-alive client (one hyper
//! connection per concurrent worker) that sends Converse or ConverseStream requests and
//! records, per request, the latency to the full body or the arrival time of every
//! EventStream frame.
//!
//! Frames are counted by walking the 4-byte big-endian length prefixes of the stream; the
//! payloads are not decoded (the relay and the simulator check CRCs, the driver only counts).

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Model id used for every benchmark request.
pub const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// Failures of the load driver.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("unexpected status {status} from {path}: {body}")]
    Status {
        status: u16,
        path: String,
        body: String,
    },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

/// Where requests go: an address plus a path prefix (LiteLLM serves Bedrock under `/bedrock`).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub prefix: String,
    /// Extra headers (e.g. LiteLLM's master key).
    pub headers: Vec<(String, String)>,
}

/// What one request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Converse,
    ConverseStream,
}

/// Timing of one completed request.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Send to end of body.
    pub total: Duration,
    /// Send to the first complete EventStream frame (streams only).
    pub first_event: Option<Duration>,
    /// EventStream frames received.
    pub events: u64,
    /// Longest silence between two consecutive frames (streams only).
    pub max_gap: Duration,
}

/// JSON body of a request whose answer has `len` pieces; `salt` makes the conversation unique.
pub fn body(len: usize, salt: &str) -> Bytes {
    let text = format!("benchmark {salt} sim:len={len}");
    Bytes::from(
        serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
            .to_string(),
    )
}

/// One keep-alive connection to a target.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    target: Target,
}

impl Conn {
    /// Open a connection; the connection task runs on the current runtime.
    pub async fn open(target: &Target) -> Result<Self, LoadError> {
        let stream =
            TcpStream::connect(target.addr)
                .await
                .map_err(|source| LoadError::Connect {
                    addr: target.addr,
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            target: target.clone(),
        })
    }

    fn request(&self, op: Op, body: Bytes) -> http::Request<Full<Bytes>> {
        let suffix = match op {
            Op::Converse => "converse",
            Op::ConverseStream => "converse-stream",
        };
        let path = format!("{}/model/{MODEL}/{suffix}", self.target.prefix);
        let mut b = http::Request::post(path)
            .header(http::header::HOST, self.target.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.target.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(body))
            .expect("static request parts are valid")
    }

    /// Send one request and read the whole response, timing it.
    pub async fn send(&mut self, op: Op, body: Bytes) -> Result<Sample, LoadError> {
        self.sender.ready().await?;
        let req = self.request(op, body);
        let start = Instant::now();
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(LoadError::Status {
                status: status.as_u16(),
                path: format!("{}/{op:?}", self.target.name),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        let mut sample = Sample::default();
        let mut counter = FrameCounter::default();
        let mut last = start;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            if op == Op::Converse {
                continue;
            }
            let n = counter.push(&data);
            if n > 0 {
                let now = Instant::now();
                if sample.first_event.is_none() {
                    sample.first_event = Some(now - start);
                } else {
                    sample.max_gap = sample.max_gap.max(now - last);
                }
                last = now;
                sample.events += n;
            }
        }
        sample.total = start.elapsed();
        Ok(sample)
    }

    /// Send a streaming request and keep reading until the first frame arrived; the
    /// returned body keeps the stream open (the caller drops it to close).
    pub async fn open_stream(&mut self, body: Bytes) -> Result<hyper::body::Incoming, LoadError> {
        self.sender.ready().await?;
        let req = self.request(Op::ConverseStream, body);
        let resp = self.sender.send_request(req).await?;
        let mut body = resp.into_body();
        let mut counter = FrameCounter::default();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if counter.push(&data) > 0 {
                    break;
                }
            }
        }
        Ok(body)
    }
}

/// Counts complete EventStream frames in a byte stream split at arbitrary points.
#[derive(Default)]
pub struct FrameCounter {
    buf: BytesMut,
}

impl FrameCounter {
    /// Add bytes; returns how many frames they completed.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        self.buf.extend_from_slice(data);
        let mut n = 0;
        while self.buf.len() >= 4 {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            let len = (len as usize).max(4);
            if self.buf.len() < len {
                break;
            }
            self.buf.advance(len);
            n += 1;
        }
        n
    }
}

/// Run `concurrency` workers, each on its own connection, until `count` requests completed
/// in total or `max_time` passed. Returns the samples and the wall time.
pub async fn drive(
    target: &Target,
    op: Op,
    len: usize,
    concurrency: usize,
    count: usize,
    max_time: Duration,
) -> Result<(Vec<Sample>, Duration), LoadError> {
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + max_time;
    let body = body(len, "load");
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (target, issued, body) = (target.clone(), issued.clone(), body.clone());
        tasks.spawn(async move {
            let mut conn = Conn::open(&target).await?;
            let mut samples = Vec::new();
            while issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count
                && Instant::now() < deadline
            {
                let limit = Duration::from_secs(30);
                match tokio::time::timeout(limit, conn.send(op, body.clone())).await {
                    Ok(r) => samples.push(r?),
                    Err(_) => return Err(LoadError::Timeout(limit)),
                }
            }
            Ok::<_, LoadError>(samples)
        });
    }
    let mut all = Vec::with_capacity(count.min(1 << 20));
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.expect("load worker panicked")?);
    }
    Ok((all, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::FrameCounter;

    #[test]
    fn counts_frames_split_anywhere() {
        let mut wire = Vec::new();
        for len in [16u32, 20, 30] {
            wire.extend_from_slice(&len.to_be_bytes());
            wire.resize(wire.len() + len as usize - 4, 0xab);
        }
        for split in 0..wire.len() {
            let mut c = FrameCounter::default();
            let n = c.push(&wire[..split]) + c.push(&wire[split..]);
            assert_eq!(n, 3, "split at {split}");
        }
    }
}
