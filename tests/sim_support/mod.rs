//! Shared helpers for the simulator's raw-wire tests: a one-shot HTTP/1.1 client that
//! records how a response ended (complete, FIN, RST), and request builders.
#![allow(dead_code)]

use bedrock_relay_sim::{self as sim, SimConfig, SimHandle};
use bedrock_relay_wire::eventstream::{header_str, FrameSplitter};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
pub const NO_PREFILL: &str = "us.anthropic.claude-opus-4-6-v1";

#[derive(Debug, PartialEq)]
pub enum End {
    /// Content-length satisfied or chunked terminator seen.
    Complete,
    /// FIN before the body was complete.
    Eof,
    /// The read failed with ECONNRESET.
    Reset,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub end: End,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// Whole frames in the body: (event or exception type, payload JSON).
    pub fn frames(&self) -> Vec<(String, Value)> {
        let mut s = FrameSplitter::new();
        s.push(&self.body);
        let mut out = Vec::new();
        while let Ok(Some(f)) = s.next_frame() {
            let message = f.message();
            let ty = header_str(&message, ":event-type")
                .or(header_str(&message, ":exception-type"))
                .unwrap_or("")
                .to_owned();
            out.push((
                ty,
                serde_json::from_slice(message.payload()).unwrap_or(Value::Null),
            ));
        }
        out
    }
}

/// One request on a fresh connection (`connection: close`); reads until EOF or reset.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let mut reset = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no hang")
        {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                reset = true;
                break;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    parse(&raw, reset)
}

pub fn parse(raw: &[u8], reset: bool) -> Resp {
    let fail = if reset { End::Reset } else { End::Eof };
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Resp {
            status: 0,
            head: String::new(),
            body: Vec::new(),
            end: fail,
        };
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = &raw[head_end + 4..];
    let mut resp = Resp {
        status,
        head,
        body: Vec::new(),
        end: End::Complete,
    };
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        resp.body = rest[..len.min(rest.len())].to_vec();
        if rest.len() < len {
            resp.end = fail;
        }
        return resp;
    }
    loop {
        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
            resp.end = fail;
            return resp;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
        if size == 0 {
            return resp;
        }
        let data = &rest[nl + 2..];
        if data.len() < size + 2 {
            resp.body.extend_from_slice(&data[..size.min(data.len())]);
            resp.end = fail;
            return resp;
        }
        resp.body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

pub fn converse_body(turns: &[(&str, &str)]) -> String {
    let messages: Vec<Value> = turns
        .iter()
        .map(|(r, t)| json!({"role": r, "content": [{"text": t}]}))
        .collect();
    json!({ "messages": messages }).to_string()
}

pub async fn start() -> SimHandle {
    sim::start(SimConfig::default()).await.unwrap()
}
