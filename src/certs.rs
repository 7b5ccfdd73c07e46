//! A TLS certificate/key pair on disk: its paths ([`TlsFiles`]) and loading and checking it
//! ([`load_pair`]). A leaf shared by configuration (a bad pair is a configuration error,
//! reported with the others before anything starts) and the listener (which loads the pair
//! again when it starts, and whenever the files change).

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no usable PEM private key found")]
    NoKey { path: PathBuf },
    #[error("certificate and key do not belong together or are unsupported: {0}")]
    Mismatch(String),
}

/// The certificate and key files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Load and check a certificate chain and its private key.
pub fn load_pair(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: files.key.clone(),
    })?;
    let provider = aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(ck))
}
