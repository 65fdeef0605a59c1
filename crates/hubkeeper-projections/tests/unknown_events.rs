//! Events of types this version does not know, at the start of an aggregate's history or in the
//! middle of it: skipped without breaking the row's position, so the known events around them
//! still apply, in replay and in the live projector's arbitrary delivery order.

use chrono::{Duration, Utc};
use hubkeeper_domain::app::{
    AppEvent, AppRegistered, StoredEnvironment, StoredOAuthGeneration, StoredSignatureVersion,
};
use hubkeeper_domain::installation::{
    InstallationConnected, InstallationEvent, InstallationRevoked, StoredInstaller, StoredTokens,
    TokensRefreshed,
};
use hubkeeper_domain::{AppId, HubId, InstallationId};
use hubkeeper_projections::{apply_event, replay, Outcome, ProjectedEvent, ReplayOptions, Tables};
use hubkeeper_store::{read_after, GlobalCursor};
use hubkeeper_testkit::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const SEALED: &str = "v1.dk0011223344556677.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn tokens() -> StoredTokens {
    StoredTokens {
        access: SEALED.parse().unwrap(),
        refresh: SEALED.parse().unwrap(),
        access_expires_at: Utc::now() + Duration::hours(1),
    }
}

fn connected(id: InstallationId, app: AppId, hub: u64) -> Value {
    serde_json::to_value(InstallationEvent::Connected(InstallationConnected {
        installation_id: id,
        app_id: app,
        hub_id: HubId(hub),
        user_id: None,
        hub_domain: format!("portal-{hub}.hubspot.com"),
        installer: StoredInstaller::default(),
        scopes: vec!["oauth".into()],
        tokens: tokens(),
        app_version: None,
        external_ref: None,
        metadata: None,
        generation: 1,
        connected_at: Utc::now(),
    }))
    .unwrap()
}

fn refreshed(generation: u64) -> Value {
    serde_json::to_value(InstallationEvent::TokensRefreshed(TokensRefreshed {
        tokens: tokens(),
        generation,
        refreshed_at: Utc::now(),
    }))
    .unwrap()
}

fn revoked() -> Value {
    serde_json::to_value(InstallationEvent::Revoked(InstallationRevoked {
        reason: "test".into(),
        revoked_at: Utc::now(),
    }))
    .unwrap()
}

fn registered(app: AppId) -> Value {
    serde_json::to_value(AppEvent::Registered(AppRegistered {
        app_id: app,
        label: "Future app".into(),
        description: String::new(),
        environment: StoredEnvironment::Production,
        client_id: "12345678-abcd-ef01-2345-6789abcdef01".into(),
        client_secret: SEALED.parse().unwrap(),
        redirect_uri: "https://example.com/oauth/callback".into(),
        scopes: vec!["oauth".into()],
        optional_scopes: vec![],
        oauth_generation: StoredOAuthGeneration::V2026_03,
        signature_versions: vec![StoredSignatureVersion::V3],
        return_urls: Vec::new(),
        registered_at: Utc::now(),
    }))
    .unwrap()
}

/// A type from a future release: unknown here whatever its payload.
fn future() -> Value {
    json!({"SomethingNew": {"note": "written by a newer release"}})
}

async fn store(pool: &PgPool, kind: &str, id: &str, events: &[(&str, Value)]) {
    for (index, (event_type, payload)) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             VALUES ($1, $2, $3, $4, '1.0', $5, $6)",
        )
        .bind(kind)
        .bind(id)
        .bind(index as i64 + 1)
        .bind(event_type)
        .bind(payload)
        .bind(json!({"actor": "system", "occurred_at": Utc::now().to_rfc3339()}))
        .execute(pool)
        .await
        .expect("insert event");
    }
}

async fn installation_row(pool: &PgPool, id: InstallationId) -> Option<(String, i64)> {
    sqlx::query_as("SELECT status, last_sequence FROM rm_installations WHERE installation_id = $1")
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await
        .expect("read model")
}

#[tokio::test]
async fn replay_projects_aggregates_whose_history_starts_with_unknown_events() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let app = AppId::from_uuid(Uuid::now_v7());
    let id = InstallationId::derive(app, HubId(50_000_001), None);
    store(
        &pool,
        "installation",
        &id.to_string(),
        &[
            ("InstallationNoteAdded", future()),
            ("InstallationConnected", connected(id, app, 50_000_001)),
            ("InstallationLabelled", future()),
            ("InstallationRevoked", revoked()),
        ],
    )
    .await;
    store(
        &pool,
        "app",
        &app.to_string(),
        &[("AppDrafted", future()), ("AppRegistered", registered(app))],
    )
    .await;

    replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");

    assert_eq!(
        installation_row(&pool, id).await,
        Some(("revoked".to_owned(), 4)),
        "the known events around the unknown ones applied, and the position is the last event's"
    );
    let app_row: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT label, last_sequence, installation_count FROM rm_apps WHERE app_id = $1",
    )
    .bind(app.as_uuid())
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert_eq!(app_row, Some(("Future app".to_owned(), 2, 1)));
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_activity")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lines, 6, "every event, known or not, has its activity line");
}

#[tokio::test]
async fn the_live_projector_applies_around_unknown_events_in_any_delivery_order() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let app = AppId::from_uuid(Uuid::now_v7());
    let id = InstallationId::derive(app, HubId(50_000_002), None);
    store(
        &pool,
        "installation",
        &id.to_string(),
        &[
            ("InstallationNoteAdded", future()),
            ("InstallationConnected", connected(id, app, 50_000_002)),
            ("InstallationTokensRefreshed", refreshed(2)),
        ],
    )
    .await;
    // Never connected: its known event follows only unknown ones and can never be projected.
    let orphan = InstallationId::derive(app, HubId(50_000_003), None);
    store(
        &pool,
        "installation",
        &orphan.to_string(),
        &[
            ("InstallationNoteAdded", future()),
            ("InstallationTokensRefreshed", refreshed(2)),
        ],
    )
    .await;
    let stored: Vec<ProjectedEvent> = read_after(&pool, GlobalCursor::default(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(ProjectedEvent::from_stored)
        .collect();
    let event = |aggregate: InstallationId, sequence: i64| {
        stored
            .iter()
            .find(|e| e.aggregate_id == aggregate.to_string() && e.sequence == sequence)
            .cloned()
            .expect("stored event")
    };
    let apply = |e: ProjectedEvent| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let report = apply_event(&mut tx, &Tables::live(), &e).await.unwrap();
            tx.commit().await.unwrap();
            report.outcome
        }
    };

    // The refresh comes first: its connect is in the store but not applied yet, so it waits.
    assert!(matches!(apply(event(id, 3)).await, Outcome::Gap { .. }));
    // The unknown first event: acknowledged (activity line), no row to create.
    assert_eq!(apply(event(id, 1)).await, Outcome::Applied);
    assert_eq!(installation_row(&pool, id).await, None);
    // The connect creates the row although it is not the first event.
    assert_eq!(apply(event(id, 2)).await, Outcome::Applied);
    assert_eq!(
        installation_row(&pool, id).await,
        Some(("connected".to_owned(), 2))
    );
    // The redelivered refresh now applies; redeliveries of older events are duplicates.
    assert_eq!(apply(event(id, 3)).await, Outcome::Applied);
    assert_eq!(installation_row(&pool, id).await.map(|r| r.1), Some(3));
    assert_eq!(apply(event(id, 1)).await, Outcome::Duplicate);
    assert_eq!(apply(event(id, 2)).await, Outcome::Duplicate);

    // Without any connect, a later known event is not retried forever.
    assert_eq!(apply(event(orphan, 2)).await, Outcome::Applied);
    assert_eq!(installation_row(&pool, orphan).await, None);
}
