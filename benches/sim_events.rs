//! Simulator throughput: streamed ConverseStream events per second with zero delays.
//!
//! A plain `main` (harness = false): starts the simulator in-process on a single-threaded
//! runtime (one core), then streams `SIM_BENCH_RESPONSES` (default 50) responses of
//! `sim:len=1000` over one keep-alive raw HTTP/1.1 connection on loopback, decoding the
//! chunked body and counting EventStream frames by their length prefix.
//! Run: `cargo bench --bench sim_events`.

use bedrock_relay_sim::{self as sim, SimConfig};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut scratch = [0u8; 64 * 1024];
    let n = stream.read(&mut scratch).await?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "eof",
        ));
    }
    buf.extend_from_slice(&scratch[..n]);
    Ok(())
}

/// Read one chunked response; returns the number of frames in its body.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    buf.drain(..head_end);
    let mut body = Vec::new();
    loop {
        let line = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(stream, buf).await?;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&buf[..line]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        while buf.len() < line + 2 + size + 2 {
            fill(stream, buf).await?;
        }
        body.extend_from_slice(&buf[line + 2..line + 2 + size]);
        buf.drain(..line + 2 + size + 2);
        if size == 0 {
            break;
        }
    }
    let (mut frames, mut at) = (0, 0);
    while at + 4 <= body.len() {
        let len = u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize;
        at += len.max(16);
        frames += 1;
    }
    Ok(frames)
}

fn main() {
    let responses: usize = std::env::var("SIM_BENCH_RESPONSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let handle = sim::start(SimConfig::default()).await.expect("simulator starts");
        let mut stream = TcpStream::connect(handle.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = Vec::new();
        let started = Instant::now();
        let mut events = 0;
        for i in 0..responses {
            let body = format!(
                r#"{{"messages":[{{"role":"user","content":[{{"text":"bench {i} sim:len=1000"}}]}}]}}"#
            );
            let req = format!(
                "POST /model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                handle.addr,
                body.len()
            );
            stream.write_all(req.as_bytes()).await.expect("write");
            events += read_response(&mut stream, &mut buf).await.expect("response");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "sim_events: {events} events in {responses} responses, {secs:.3} s, {:.0} events/s",
            events as f64 / secs
        );
        handle.shutdown().await;
    });
}
