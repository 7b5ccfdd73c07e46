//! A refreshing cache in front of an AWS credentials provider.
//!
//! aws-config's default chain (env, profile, SSO, credential_process, web identity,
//! container, IMDS) does not cache by itself (SDK clients put an identity cache around it);
//! the relay signs every attempt, so it keeps the current credentials here and asks the
//! provider again only when they are within [`REFRESH_BEFORE`] of expiry. One refresh at a
//! time (single flight); if a refresh fails while the old credentials are still valid,
//! those keep being used.

use aws_credential_types::provider::{
    error::CredentialsError, ProvideCredentials, SharedCredentialsProvider,
};
use aws_credential_types::Credentials;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

/// Refresh this long before expiry (the SDKs use a similar buffer).
pub(crate) const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

pub(crate) struct CachedCredentials {
    provider: SharedCredentialsProvider,
    current: RwLock<Option<Credentials>>,
    refresh: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        CachedCredentials {
            provider,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, margin: Duration) -> Option<Credentials> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        let c = guard.as_ref()?;
        match c.expiry() {
            None => Some(c.clone()),
            Some(exp) => (exp > SystemTime::now() + margin).then(|| c.clone()),
        }
    }

    /// Current credentials, refreshed first when missing or close to expiry.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        if let Some(c) = self.cached(REFRESH_BEFORE) {
            return Ok(c);
        }
        let _single_flight = self.refresh.lock().await;
        if let Some(c) = self.cached(REFRESH_BEFORE) {
            return Ok(c);
        }
        match self.provider.provide_credentials().await {
            Ok(c) => {
                tracing::debug!(expiry = ?c.expiry(), "AWS credentials refreshed");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                Ok(c)
            }
            Err(e) => match self.cached(Duration::ZERO) {
                Some(old) => {
                    tracing::warn!(error = %e, "credentials refresh failed; using the unexpired ones");
                    Ok(old)
                }
                None => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::future;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        lifetime: Duration,
        fail_after: u32,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n > self.fail_after {
                return future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                    "gone",
                )));
            }
            let c = Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                Some(SystemTime::now() + self.lifetime),
                "test",
            );
            future::ProvideCredentials::ready(Ok(c))
        }
    }

    fn cache(lifetime: Duration, fail_after: u32) -> (CachedCredentials, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let p = Counting {
            calls: calls.clone(),
            lifetime,
            fail_after,
        };
        (
            CachedCredentials::new(SharedCredentialsProvider::new(p)),
            calls,
        )
    }

    #[tokio::test]
    async fn long_lived_credentials_are_fetched_once() {
        let (c, calls) = cache(Duration::from_secs(3600), u32::MAX);
        for _ in 0..5 {
            assert_eq!(c.get().await.unwrap().access_key_id(), "AKID1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn near_expiry_credentials_are_refreshed() {
        let (c, calls) = cache(Duration::from_secs(60), u32::MAX);
        assert_eq!(c.get().await.unwrap().access_key_id(), "AKID1");
        assert_eq!(c.get().await.unwrap().access_key_id(), "AKID2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_unexpired_credentials() {
        let (c, _) = cache(Duration::from_secs(60), 1);
        assert_eq!(c.get().await.unwrap().access_key_id(), "AKID1");
        assert_eq!(c.get().await.unwrap().access_key_id(), "AKID1");
        let (c, _) = cache(Duration::from_secs(60), 0);
        assert!(c.get().await.is_err());
    }
}
