//! HubSpot webhook events are counted once each, whatever the delivery order, however often the
//! live projector receives them (redeliveries, duplicates inside one batch), and a replay of the
//! history gives the same counts.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hubkeeper_domain::installation::{
    InstallationConnected, InstallationEvent, StoredInstaller, StoredTokens,
};
use hubkeeper_domain::webhook_log::{log_id, HubSpotWebhookReceived, WebhookLogEvent};
use hubkeeper_domain::{AppId, HubId, InstallationId};
use hubkeeper_projections::{apply_events, replay, ProjectedEvent, ReplayOptions, Tables};
use hubkeeper_store::{read_after, GlobalCursor};
use hubkeeper_testkit::TestEnv;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const SEALED: &str = "v1.dk0011223344556677.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn day(d: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, hour, 0, 0)
        .single()
        .expect("a valid time")
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
        tokens: StoredTokens {
            access: SEALED.parse().unwrap(),
            refresh: SEALED.parse().unwrap(),
            access_expires_at: day(1, 1),
        },
        app_version: None,
        external_ref: None,
        metadata: None,
        generation: 1,
        connected_at: day(1, 0),
    }))
    .unwrap()
}

fn received(app: AppId, hub: u64, installation: Option<InstallationId>, n: u64) -> Value {
    serde_json::to_value(WebhookLogEvent::Received(HubSpotWebhookReceived {
        identity: format!("{n:064x}"),
        event_id: n,
        subscription_type: "deal.creation".into(),
        object_id: Some(n),
        property_name: None,
        property_value: None,
        change_source: None,
        occurred_at: day(2, 0) + Duration::minutes(n as i64),
        portal_id: HubId(hub),
        app_id: app,
        attempt: Some(0),
        installation_id: installation,
    }))
    .unwrap()
}

async fn store(
    pool: &PgPool,
    kind: &str,
    id: &str,
    sequence: i64,
    event_type: &str,
    payload: Value,
    at: DateTime<Utc>,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ($1, $2, $3, $4, '1.0', $5, $6)",
    )
    .bind(kind)
    .bind(id)
    .bind(sequence)
    .bind(event_type)
    .bind(payload)
    .bind(json!({"actor": "hubspot", "occurred_at": at.to_rfc3339()}))
    .execute(pool)
    .await
    .expect("insert event");
}

type Counts = (
    Vec<(Uuid, i64, Option<DateTime<Utc>>)>,
    Vec<(Uuid, chrono::NaiveDate, i64)>,
    i64,
);

async fn counts(pool: &PgPool) -> Counts {
    (
        sqlx::query_as(
            "SELECT installation_id, webhook_events, last_webhook_at FROM rm_installations
              ORDER BY installation_id",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        sqlx::query_as(
            "SELECT installation_id, day, events FROM webhook_usage_daily ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        sqlx::query_scalar("SELECT count(*) FROM rm_webhook_events")
            .fetch_one(pool)
            .await
            .unwrap(),
    )
}

async fn apply(pool: &PgPool, events: &[ProjectedEvent]) {
    let mut tx = pool.begin().await.unwrap();
    apply_events(&mut tx, &Tables::live(), events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn redelivered_and_reordered_webhook_events_count_once_and_replay_agrees() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let app = AppId::from_uuid(Uuid::now_v7());
    let (hub, other_hub) = (50_100_001, 50_100_002);
    let id = InstallationId::derive(app, HubId(hub), None);
    let other = InstallationId::derive(app, HubId(other_hub), None);
    store(
        &pool,
        "installation",
        &id.to_string(),
        1,
        "InstallationConnected",
        connected(id, app, hub),
        day(1, 0),
    )
    .await;
    store(
        &pool,
        "installation",
        &other.to_string(),
        1,
        "InstallationConnected",
        connected(other, app, other_hub),
        day(1, 0),
    )
    .await;
    // 30 events for the first installation, recorded over two days, 4 for the other, 5 unrouted.
    for n in 1..=30u64 {
        let at = if n <= 12 { day(2, 10) } else { day(3, 10) };
        store(
            &pool,
            "hubspot_webhook_log",
            &id.to_string(),
            n as i64,
            "HubSpotWebhookReceived",
            received(app, hub, Some(id), n),
            at,
        )
        .await;
    }
    for n in 1..=4u64 {
        store(
            &pool,
            "hubspot_webhook_log",
            &other.to_string(),
            n as i64,
            "HubSpotWebhookReceived",
            received(app, other_hub, Some(other), 100 + n),
            day(3, 11),
        )
        .await;
    }
    let unrouted = log_id(app, None);
    for n in 1..=5u64 {
        store(
            &pool,
            "hubspot_webhook_log",
            &unrouted,
            n as i64,
            "HubSpotWebhookReceived",
            received(app, 50_199_999, None, 200 + n),
            day(3, 12),
        )
        .await;
    }
    let stored: Vec<ProjectedEvent> = read_after(&pool, GlobalCursor::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(ProjectedEvent::from_stored)
        .collect();
    assert_eq!(stored.len(), 41);
    let (creates, webhooks) = stored.split_at(2);

    // Live: the creates, then the webhook events newest first in small batches, then every one
    // again (a redelivery), and a batch holding one event twice.
    apply(&pool, creates).await;
    let mut reversed = webhooks.to_vec();
    reversed.reverse();
    for chunk in reversed.chunks(7) {
        apply(&pool, chunk).await;
    }
    apply(&pool, webhooks).await;
    apply(
        &pool,
        &[
            webhooks[3].clone(),
            webhooks[3].clone(),
            webhooks[20].clone(),
        ],
    )
    .await;

    let live = counts(&pool).await;
    let mut expected_installations = vec![
        (id.as_uuid(), 30, Some(day(2, 0) + Duration::minutes(30))),
        (other.as_uuid(), 4, Some(day(2, 0) + Duration::minutes(104))),
    ];
    expected_installations.sort();
    assert_eq!(live.0, expected_installations);
    let mut expected_days = vec![
        (id.as_uuid(), day(2, 0).date_naive(), 12),
        (id.as_uuid(), day(3, 0).date_naive(), 18),
        (other.as_uuid(), day(3, 0).date_naive(), 4),
    ];
    expected_days.sort();
    assert_eq!(live.1, expected_days, "per UTC day the event was recorded");
    assert_eq!(live.2, 39, "every event once, unrouted ones too");
    let lines: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_activity WHERE aggregate_type = 'hubspot_webhook_log'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(lines, 0, "no activity line per webhook event");

    replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(
        counts(&pool).await,
        live,
        "replay counts what the live projector counted"
    );
}
