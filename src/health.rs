//! `bedrock-relay health`: a health probe for container runtimes whose image has no shell
//! and no curl (the distroless image). GETs an admin URL (by default the relay's `/readyz`
//! on loopback, at the port of `BEDROCK_RELAY_ADMIN_LISTEN` when that is set, as it is in
//! the same container) and exits 0 on `200`, 1 on anything else: Docker `HEALTHCHECK`, ECS
//! `healthCheck`, compose `healthcheck`.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default probe: readiness of a relay with the default admin address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8791/readyz";

/// Flags of `bedrock-relay health`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// URL to GET; healthy when it answers 200 (http only, e.g. an admin /healthz or /readyz)
    /// [default: /readyz on 127.0.0.1 at the port of BEDROCK_RELAY_ADMIN_LISTEN, else 8791].
    #[arg(long, env = "BEDROCK_RELAY_HEALTH_URL")]
    pub url: Option<String>,

    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("only http://host:port/path URLs can be probed, not {0:?}")]
    BadUrl(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("not an HTTP response")]
    NotHttp,
    #[error("answered {0}")]
    Status(u16),
}

/// The default probe URL for a relay whose admin listener is `admin_listen` (the value of
/// `BEDROCK_RELAY_ADMIN_LISTEN`, if any): its port on loopback, whatever address it binds.
pub fn default_url(admin_listen: Option<&str>) -> String {
    admin_listen
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
        .map(|a| format!("http://127.0.0.1:{}/readyz", a.port()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Split `http://host:port/path` into (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(&str, &str), ProbeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::BadUrl(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || !authority.contains(':') {
        return Err(ProbeError::BadUrl(url.into()));
    }
    Ok((authority, path))
}

/// GET `url` once; `Ok(())` when it answers 200.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let (authority, path) = split_url(url)?;
    let get = async {
        let mut conn = TcpStream::connect(authority).await?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        // The status line is all we need; read until it is complete or the peer closes.
        while !head.contains(&b'\n') && head.len() < 4096 {
            let mut buf = [0u8; 512];
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, ProbeError>(head)
    };
    let head = tokio::time::timeout(timeout, get)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))??;
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|l| l.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or(ProbeError::NotHttp)?;
    if status == 200 {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// `bedrock-relay health`: the process exit code (0 healthy, 1 not).
pub async fn run(args: HealthArgs) -> i32 {
    let url = args.url.unwrap_or_else(|| {
        default_url(std::env::var("BEDROCK_RELAY_ADMIN_LISTEN").ok().as_deref())
    });
    match probe(&url, args.timeout).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bedrock-relay health: {url}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{serve_admin, Readiness};
    use crate::metrics::Metrics;
    use crate::server::Shutdown;
    use std::sync::Arc;

    #[test]
    fn the_default_url_follows_the_admin_listen_port() {
        assert_eq!(default_url(None), DEFAULT_URL);
        assert_eq!(
            default_url(Some("0.0.0.0:9100")),
            "http://127.0.0.1:9100/readyz"
        );
        assert_eq!(
            default_url(Some("[::]:9200")),
            "http://127.0.0.1:9200/readyz"
        );
        assert_eq!(default_url(Some("not an address")), DEFAULT_URL);
    }

    #[test]
    fn urls_are_split_or_refused() {
        assert_eq!(
            split_url("http://127.0.0.1:8791/readyz").unwrap(),
            ("127.0.0.1:8791", "/readyz")
        );
        assert_eq!(
            split_url("http://localhost:1").unwrap(),
            ("localhost:1", "/")
        );
        for bad in [
            "https://h:1/x",
            "127.0.0.1:8791/readyz",
            "http:///x",
            "http://h/x",
        ] {
            assert!(
                matches!(split_url(bad), Err(ProbeError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn follows_readiness_of_a_live_admin_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Readiness::new();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(serve_admin(
            listener,
            Arc::new(Metrics::new()),
            readiness.clone(),
            shutdown.clone(),
        ));
        let t = Duration::from_secs(5);
        probe(&format!("http://{addr}/readyz"), t).await.unwrap();
        probe(&format!("http://{addr}/healthz"), t).await.unwrap();
        assert!(matches!(
            probe(&format!("http://{addr}/nope"), t).await,
            Err(ProbeError::Status(404))
        ));
        readiness.set_draining();
        assert!(matches!(
            probe(&format!("http://{addr}/readyz"), t).await,
            Err(ProbeError::Status(503))
        ));
        shutdown.trigger();
        task.await.unwrap();
        assert!(matches!(
            probe(&format!("http://{addr}/healthz"), t).await,
            Err(ProbeError::Io(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let r = probe(&format!("http://{addr}/"), Duration::from_millis(200)).await;
        assert!(matches!(r, Err(ProbeError::Timeout(_))), "{r:?}");
        hold.abort();
    }
}
