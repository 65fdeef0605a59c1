//! Which app an installation belongs to, for binding service keys to apps.
//!
//! An installation never changes app (its id is derived from the app, see
//! `InstallationId::derive`), so the answer read from its `InstallationConnected` event is
//! cached for the life of the process; only found answers are cached.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use hubkeeper_domain::installation::event_types;
use hubkeeper_domain::{AppId, InstallationId};
use sqlx::PgPool;

/// Entries kept before the cache is emptied (one entry is two UUIDs).
const MAX_ENTRIES: usize = 200_000;

/// Installation → app, from the event store, cached.
pub struct InstallationApps {
    pool: PgPool,
    known: Mutex<HashMap<InstallationId, AppId>>,
}

impl InstallationApps {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The app of installation `id`; `None` when no such installation was ever connected.
    pub async fn app_of(&self, id: &InstallationId) -> Result<Option<AppId>, sqlx::Error> {
        if let Some(app) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(Some(*app));
        }
        let Some(app) = installation_app(&self.pool, id).await? else {
            return Ok(None);
        };
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_ENTRIES {
            known.clear();
        }
        known.insert(*id, app);
        Ok(Some(app))
    }
}

/// The app of installation `id`, read from its `InstallationConnected` event (uncached); `None`
/// when no such installation was ever connected.
pub async fn installation_app(
    pool: &PgPool,
    id: &InstallationId,
) -> Result<Option<AppId>, sqlx::Error> {
    let app: Option<String> = sqlx::query_scalar(
        "SELECT payload -> $2 ->> 'app_id' FROM events
          WHERE aggregate_type = 'installation' AND aggregate_id = $1 AND event_type = $2
          ORDER BY sequence LIMIT 1",
    )
    .bind(id.to_string())
    .bind(event_types::CONNECTED)
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(app.and_then(|a| a.parse().ok()))
}
