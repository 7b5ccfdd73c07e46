//! Optional TLS on the relay's listener (rustls, aws-lc-rs provider), with the certificate
//! and key files reloaded when they change.
//!
//! [`ReloadingCert`] is the rustls certificate resolver: on a handshake, at most once per
//! [`CHECK_EVERY`], it compares the files' modification times with the loaded ones and, if
//! they changed, loads and checks the new pair. A pair that fails to load (half-written,
//! mismatched) is logged and the previous one keeps being served. ALPN offers `h2` and
//! `http/1.1`, so `serve_with` knows the protocol without sniffing.

pub use crate::certs::{load_pair, TlsError, TlsFiles};
use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often a handshake may look at the files' modification times.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// rustls certificate resolver that follows the files.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
    last_check: Mutex<Instant>,
}

impl ReloadingCert {
    /// Load the pair now (an error here stops the relay from starting).
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let key = load_pair(&files)?;
        let stamps = (mtime(&files.cert), mtime(&files.key));
        Ok(ReloadingCert {
            current: RwLock::new((stamps.0, stamps.1, key)),
            files,
            last_check: Mutex::new(Instant::now()),
        })
    }

    fn maybe_reload(&self) {
        {
            let mut last = self.last_check.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < CHECK_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let stamps = (mtime(&self.files.cert), mtime(&self.files.key));
        let unchanged = {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            (cur.0, cur.1) == stamps
        };
        if unchanged {
            return;
        }
        match load_pair(&self.files) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    (stamps.0, stamps.1, key);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but cannot be loaded; serving the previous one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(cur.2.clone())
    }
}

/// A TLS acceptor for the listener, offering h2 and http/1.1.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let resolver = Arc::new(ReloadingCert::new(files.clone())?);
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn loads_a_pair_and_rejects_mismatches() {
        let good = TlsFiles {
            cert: fixture("cert-a.pem"),
            key: fixture("key-a.pem"),
        };
        assert!(load_pair(&good).is_ok());
        let mixed = TlsFiles {
            cert: fixture("cert-a.pem"),
            key: fixture("key-b.pem"),
        };
        assert!(matches!(load_pair(&mixed), Err(TlsError::Mismatch(_))));
        let swapped = TlsFiles {
            cert: fixture("key-a.pem"),
            key: fixture("cert-a.pem"),
        };
        assert!(load_pair(&swapped).is_err());
        let missing = TlsFiles {
            cert: fixture("nope.pem"),
            key: fixture("key-a.pem"),
        };
        assert!(matches!(load_pair(&missing), Err(TlsError::Read { .. })));
    }
}
