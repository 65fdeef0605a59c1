//! The webhook intake's credentials cache: verified credentials for a short while, "no such app"
//! for a short while, and one lookup in flight per app.
//!
//! HubSpot gives up on a request after 5 seconds, so a lookup for one app must never wait for
//! another's. Each app has its own single-flight lookup (a spawned task whose result every
//! concurrent request for that app awaits), so a burst for an app not yet cached opens its
//! secret once, and a flood of requests for unknown app ids runs beside a real app's lookup
//! instead of in front of it. An unknown app is remembered for a short time (bounded in number),
//! so repeating one unknown id asks the source once per period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use uuid::Uuid;

use crate::ingest::{CredentialSource, IngestError, WebhookCredentials};

/// The outcome of one lookup, shared by every request that waited for it (`Err`: the source
/// failed; its message).
type Lookup = Result<Option<Arc<WebhookCredentials>>, String>;
type SharedLookup = Shared<BoxFuture<'static, Lookup>>;

/// How long and how much the cache keeps.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// How long verified credentials are reused.
    pub ttl: Duration,
    /// How long "no such app" is remembered.
    pub unknown_ttl: Duration,
    /// Most apps with credentials kept (beyond: the cache starts over).
    pub max_known: usize,
    /// Most unknown app ids remembered (beyond: expired ones are dropped, then new ones are not
    /// remembered until room frees up).
    pub max_unknown: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            unknown_ttl: Duration::from_secs(30),
            max_known: 1000,
            max_unknown: 10_000,
        }
    }
}

/// Credentials fetched at an instant under a generation of the source.
struct Entry<T> {
    at: Instant,
    generation: u64,
    value: T,
}

struct State {
    known: HashMap<Uuid, Entry<Arc<WebhookCredentials>>>,
    unknown: HashMap<Uuid, Entry<()>>,
    in_flight: HashMap<Uuid, Entry<SharedLookup>>,
}

struct Inner {
    source: Arc<dyn CredentialSource>,
    limits: CacheLimits,
    state: Mutex<State>,
}

/// Credentials by app id, see the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct CredentialCache {
    inner: Arc<Inner>,
}

/// What the cache already knows about an app.
enum Known {
    Credentials(Arc<WebhookCredentials>),
    Unknown,
    Pending(SharedLookup),
}

impl CredentialCache {
    pub fn new(source: Arc<dyn CredentialSource>, limits: CacheLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                limits,
                state: Mutex::new(State {
                    known: HashMap::new(),
                    unknown: HashMap::new(),
                    in_flight: HashMap::new(),
                }),
            }),
        }
    }

    /// The app's credentials: cached, or from the lookup in flight for this app, or from a new
    /// one. `UnknownApp` when the app does not exist; `Unavailable` when the source failed.
    pub async fn get(&self, app_id: Uuid) -> Result<Arc<WebhookCredentials>, IngestError> {
        let lookup = match self.known_or_start(app_id) {
            Known::Credentials(creds) => return Ok(creds),
            Known::Unknown => return Err(IngestError::UnknownApp(app_id)),
            Known::Pending(lookup) => lookup,
        };
        match lookup.await {
            Ok(Some(creds)) => Ok(creds),
            Ok(None) => Err(IngestError::UnknownApp(app_id)),
            Err(cause) => Err(IngestError::Unavailable(cause)),
        }
    }

    /// How many unknown app ids are remembered (for tests and metrics).
    pub fn unknown_len(&self) -> usize {
        self.inner.state.lock().map_or(0, |s| s.unknown.len())
    }

    fn known_or_start(&self, app_id: Uuid) -> Known {
        let inner = &self.inner;
        let generation = inner.source.generation();
        let Ok(mut state) = inner.state.lock() else {
            // A poisoned lock (a panic elsewhere): look up without the cache.
            return Known::Pending(self.lookup(app_id, generation));
        };
        let fresh = |at: Instant, fetched_in: u64, ttl: Duration| {
            at.elapsed() < ttl && fetched_in == generation
        };
        if let Some(e) = state.known.get(&app_id) {
            if fresh(e.at, e.generation, inner.limits.ttl) {
                return Known::Credentials(e.value.clone());
            }
        }
        if let Some(e) = state.unknown.get(&app_id) {
            if fresh(e.at, e.generation, inner.limits.unknown_ttl) {
                return Known::Unknown;
            }
        }
        if let Some(e) = state.in_flight.get(&app_id) {
            if e.generation == generation {
                return Known::Pending(e.value.clone());
            }
        }
        let lookup = self.lookup(app_id, generation);
        state.in_flight.insert(
            app_id,
            Entry {
                at: Instant::now(),
                generation,
                value: lookup.clone(),
            },
        );
        Known::Pending(lookup)
    }

    /// Starts a lookup as its own task, so it completes (and records its outcome) even when
    /// every request that waited for it went away.
    fn lookup(&self, app_id: Uuid, generation: u64) -> SharedLookup {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let outcome: Lookup = inner
                .source
                .webhook_credentials(app_id)
                .await
                .map(|found| found.map(Arc::new))
                .map_err(|e| e.to_string());
            inner.record(app_id, generation, &outcome);
            outcome
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(format!("credentials lookup failed: {e}")))
        }
        .boxed()
        .shared()
    }
}

impl Inner {
    /// Keeps a lookup's outcome (a failure is not kept: the next request asks again) and ends
    /// its in-flight entry.
    fn record(&self, app_id: Uuid, generation: u64, outcome: &Lookup) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state
            .in_flight
            .get(&app_id)
            .is_some_and(|e| e.generation == generation)
        {
            state.in_flight.remove(&app_id);
        }
        let now = Instant::now();
        match outcome {
            Ok(Some(creds)) => {
                state.unknown.remove(&app_id);
                if state.known.len() >= self.limits.max_known {
                    state.known.clear();
                }
                state.known.insert(
                    app_id,
                    Entry {
                        at: now,
                        generation,
                        value: creds.clone(),
                    },
                );
            }
            Ok(None) => {
                state.known.remove(&app_id);
                if state.unknown.len() >= self.limits.max_unknown {
                    let ttl = self.limits.unknown_ttl;
                    state.unknown.retain(|_, e| e.at.elapsed() < ttl);
                }
                if state.unknown.len() < self.limits.max_unknown {
                    state.unknown.insert(
                        app_id,
                        Entry {
                            at: now,
                            generation,
                            value: (),
                        },
                    );
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ValidSecret;
    use secrecy::SecretString;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// A source that knows one app and answers every other id only once `gate` lets it.
    struct GatedSource {
        real: Uuid,
        gate: Semaphore,
        lookups: AtomicUsize,
        waiting_unknown: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl CredentialSource for GatedSource {
        async fn webhook_credentials(
            &self,
            app_id: Uuid,
        ) -> Result<Option<WebhookCredentials>, hubkeeper_core::CoreError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if app_id == self.real {
                return Ok(Some(WebhookCredentials {
                    client_secrets: vec![ValidSecret {
                        secret: SecretString::from("s".to_owned()),
                        valid_until_ms: None,
                    }],
                    accepted: vec![hubkeeper_hubspot::signature::SignatureVersion::V3],
                }));
            }
            self.waiting_unknown.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await;
            Ok(None)
        }
    }

    fn gated(real: Uuid) -> Arc<GatedSource> {
        Arc::new(GatedSource {
            real,
            gate: Semaphore::new(0),
            lookups: AtomicUsize::new(0),
            waiting_unknown: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn one_lookup_per_app_and_unknown_apps_are_remembered() {
        let real = Uuid::new_v4();
        let source = gated(real);
        let cache = CredentialCache::new(source.clone(), CacheLimits::default());
        let unknown = Uuid::new_v4();
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(unknown).await })
            })
            .collect();
        while source.waiting_unknown.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        source.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Err(IngestError::UnknownApp(_))));
        }
        // Fifty requests, one lookup; asking again is answered from memory.
        assert_eq!(source.lookups.load(Ordering::SeqCst), 1);
        assert!(matches!(
            cache.get(unknown).await,
            Err(IngestError::UnknownApp(_))
        ));
        assert_eq!(source.lookups.load(Ordering::SeqCst), 1);
        assert_eq!(cache.unknown_len(), 1);
        for _ in 0..3 {
            assert!(cache.get(real).await.is_ok());
        }
        assert_eq!(source.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unknown_ids_remembered_are_bounded() {
        let source = gated(Uuid::new_v4());
        source.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        let cache = CredentialCache::new(
            source.clone(),
            CacheLimits {
                max_unknown: 10,
                ..CacheLimits::default()
            },
        );
        for _ in 0..25 {
            assert!(cache.get(Uuid::new_v4()).await.is_err());
        }
        assert_eq!(cache.unknown_len(), 10);
    }
}
