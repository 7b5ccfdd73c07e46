//! A cloneable, level-triggered shutdown signal shared by the listeners.

use std::sync::Arc;
use tokio::sync::watch;

/// Once triggered, stays triggered; every clone sees it.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(false);
        Shutdown { tx: Arc::new(tx) }
    }

    /// Begin shutdown (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    #[cfg(test)]
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] has been called (immediately if it already was).
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|t| *t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_wakes_waiters_and_late_waiters() {
        let s = Shutdown::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.triggered().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        s.trigger();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(s.is_triggered());
        tokio::time::timeout(Duration::from_secs(2), s.triggered())
            .await
            .unwrap();
    }
}
