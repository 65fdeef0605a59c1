//! Cache invalidation across processes over core NATS.
//!
//! Every process caches some decrypted material (access tokens, unwrapped data keys, app
//! credentials) and verified API keys. When one process changes the underlying state it publishes an [`Invalidation`]
//! on [`INVALIDATE_SUBJECT`] and every process (itself included) drops its copy.
//!
//! This is deliberately plain core NATS, not JetStream: a message missed while NATS is down must
//! only ever cost a cache miss, never correctness. Each cache entry therefore carries what makes
//! it safe on its own (expiry, generation, a maximum age), and Postgres stays the source of truth.

use std::future::Future;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// Core NATS subject of cache invalidations (not captured by any stream).
pub const INVALIDATE_SUBJECT: &str = "hk.cache.invalidate";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalidation {
    /// An installation's tokens changed. `current_generation: Some(g)` (refresh, reconnect):
    /// entries of an older generation are stale. `None` (revoke, disconnect, re-authorisation
    /// needed, tenant forgotten): every entry of the installation is stale.
    Tokens {
        installation_id: String,
        current_generation: Option<u64>,
    },
    /// A data key was destroyed (crypto-shredding) or replaced.
    DataKey { owner: String },
    /// An app's configuration changed or it was deleted.
    App { app_id: String },
    /// An API key was revoked: API processes forget what they cached about it.
    ApiKey { key_id: String },
}

/// Publishes invalidations; a no-op without NATS (single-process tools such as the CLI).
#[derive(Clone, Default)]
pub struct Broadcaster {
    nats: Option<async_nats::Client>,
}

impl Broadcaster {
    pub fn new(nats: async_nats::Client) -> Self {
        Self { nats: Some(nats) }
    }

    /// For processes that share no caches with anyone (CLI commands, unit tests).
    pub fn disabled() -> Self {
        Self { nats: None }
    }

    /// Best effort: a lost message only makes other processes serve from Postgres later than
    /// they could (see the module docs), so failures are logged and counted, not returned.
    pub async fn publish(&self, invalidation: &Invalidation) {
        let Some(nats) = &self.nats else { return };
        let payload = match serde_json::to_vec(invalidation) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode cache invalidation");
                return;
            }
        };
        // Flushed so peers hear about the change before the caller answers its client.
        let sent = match nats.publish(INVALIDATE_SUBJECT, payload.into()).await {
            Ok(()) => nats.flush().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            metrics::counter!("hk_cache_invalidations_failed_total").increment(1);
            tracing::warn!(error = %e, "cache invalidation not published; peers rely on expiry");
        }
    }

    /// Calls `handler` with every invalidation published anywhere, for as long as `owner` is
    /// alive. async-nats resubscribes by itself after a reconnect.
    pub async fn listen<T, F, Fut>(&self, owner: Weak<T>, handler: F) -> Option<ListenerGuard>
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>, Invalidation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let nats = self.nats.as_ref()?;
        let mut subscriber = match nats.subscribe(INVALIDATE_SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to cache invalidations");
                return None;
            }
        };
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let Some(owner) = owner.upgrade() else { break };
                match serde_json::from_slice::<Invalidation>(&message.payload) {
                    Ok(invalidation) => handler(owner, invalidation).await,
                    Err(e) => tracing::debug!(error = %e, "ignoring unknown cache invalidation"),
                }
            }
        });
        Some(ListenerGuard(task))
    }
}

/// Stops a listener when its owner goes away.
pub struct ListenerGuard(JoinHandle<()>);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_have_a_stable_wire_form() {
        let tokens = Invalidation::Tokens {
            installation_id: "i-1".into(),
            current_generation: Some(3),
        };
        let json = serde_json::to_string(&tokens).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"tokens","installation_id":"i-1","current_generation":3}"#
        );
        assert_eq!(serde_json::from_str::<Invalidation>(&json).unwrap(), tokens);
        let shred: Invalidation =
            serde_json::from_str(r#"{"kind":"data_key","owner":"app:x"}"#).unwrap();
        assert_eq!(
            shred,
            Invalidation::DataKey {
                owner: "app:x".into()
            }
        );
        let key = Invalidation::ApiKey {
            key_id: "ak0123456789ab".into(),
        };
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            r#"{"kind":"api_key","key_id":"ak0123456789ab"}"#
        );
    }
}
