//! Shared helpers of the read-side tests (projections, audit, webhooks): valid domain events
//! written straight into the events table (fast, and exactly what postgres-es would store), read
//! model checksums, metric scraping.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use hubkeeper_domain::app::{
    AppEvent, AppRegistered, AppUpdated, StoredEnvironment, StoredOAuthGeneration,
    StoredSignatureVersion,
};
use hubkeeper_domain::installation::{
    InstallationConnected, InstallationDisconnected, InstallationEvent, InstallationReconnected,
    InstallationRemovalCancelled, InstallationRemovalScheduled, InstallationRevoked,
    ReauthorizationRequired, RefreshFailed, StoredDisconnectCause, StoredInstallationStatus,
    StoredInstaller, StoredRefreshFailureClass, StoredRemovalAction, StoredTokens, TenantForgotten,
    TokensRefreshed,
};
use hubkeeper_domain::webhook_log::{log_id, HubSpotWebhookReceived, WebhookLogEvent};
use hubkeeper_domain::{AppId, HubId, InstallationId, Sealed, UserId};
use serde_json::{json, Value};
use sqlx::PgPool;

pub const SEALED: &str = "v1.dk0011223344556677.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// One row for the events table.
#[derive(Debug, Clone)]
pub struct Row {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

pub fn sealed() -> Sealed {
    SEALED.parse().expect("valid sealed value")
}

fn tokens(expires: DateTime<Utc>) -> StoredTokens {
    StoredTokens {
        access: sealed(),
        refresh: sealed(),
        access_expires_at: expires,
    }
}

fn meta(actor: &str, at: DateTime<Utc>) -> Value {
    json!({
        "actor": actor,
        "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "request_id": "test",
    })
}

pub fn app_rows(app: AppId, label: &str, at: DateTime<Utc>) -> Vec<Row> {
    let registered = AppEvent::Registered(AppRegistered {
        app_id: app,
        label: label.into(),
        description: format!("{label} description"),
        environment: StoredEnvironment::Production,
        client_id: "12345678-abcd-ef01-2345-6789abcdef01".into(),
        client_secret: sealed(),
        redirect_uri: "https://example.com/oauth/callback".into(),
        scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
        optional_scopes: vec![],
        oauth_generation: StoredOAuthGeneration::V2026_03,
        signature_versions: vec![
            StoredSignatureVersion::V1,
            StoredSignatureVersion::V2,
            StoredSignatureVersion::V3,
        ],
        return_urls: Vec::new(),
        registered_at: at,
    });
    let updated = AppEvent::Updated(AppUpdated {
        app_id: app,
        label: Some(format!("{label} (renamed)")),
        description: None,
        environment: Some(StoredEnvironment::Staging),
        redirect_uri: None,
        scopes: None,
        optional_scopes: None,
        oauth_generation: None,
        signature_versions: Some(vec![StoredSignatureVersion::V3]),
        return_urls: None,
        updated_at: at + Duration::minutes(1),
    });
    vec![
        Row {
            aggregate_type: "app".into(),
            aggregate_id: app.to_string(),
            sequence: 1,
            event_type: "AppRegistered".into(),
            event_version: "1.1".into(),
            payload: serde_json::to_value(registered).expect("json"),
            metadata: meta("key:akadmin0000001", at),
        },
        Row {
            aggregate_type: "app".into(),
            aggregate_id: app.to_string(),
            sequence: 2,
            event_type: "AppUpdated".into(),
            event_version: "1.0".into(),
            payload: serde_json::to_value(updated).expect("json"),
            metadata: meta("key:akadmin0000001", at + Duration::minutes(1)),
        },
    ]
}

/// The id an installation of `app` in `hub` gets.
pub fn installation_id(app: AppId, hub: u64) -> InstallationId {
    InstallationId::derive(app, HubId(hub), None)
}

pub fn connected_row(app: AppId, hub: u64, at: DateTime<Utc>, expires: DateTime<Utc>) -> Row {
    let id = installation_id(app, hub);
    installation_row(
        id,
        1,
        InstallationEvent::Connected(InstallationConnected {
            installation_id: id,
            app_id: app,
            hub_id: HubId(hub),
            user_id: None,
            hub_domain: format!("portal-{hub}.hubspot.com"),
            installer: StoredInstaller {
                user_id: Some(UserId(7_000_000 + hub % 1000)),
                email: Some(format!("owner{hub}@example.com")),
            },
            scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
            tokens: tokens(expires),
            app_version: Some("1.0.0".into()),
            external_ref: None,
            metadata: None,
            generation: 1,
            connected_at: at,
        }),
        "key:akadmin0000001",
        at,
    )
}

fn installation_row(
    id: InstallationId,
    sequence: i64,
    event: InstallationEvent,
    actor: &str,
    at: DateTime<Utc>,
) -> Row {
    let event_type = match &event {
        InstallationEvent::Connected(_) => "InstallationConnected",
        InstallationEvent::Reconnected(_) => "InstallationReconnected",
        InstallationEvent::TokensRefreshed(_) => "InstallationTokensRefreshed",
        InstallationEvent::RefreshFailed(_) => "InstallationRefreshFailed",
        InstallationEvent::ReauthorizationRequired(_) => "InstallationReauthorizationRequired",
        InstallationEvent::Revoked(_) => "InstallationRevoked",
        InstallationEvent::Disconnected(_) => "InstallationDisconnected",
        InstallationEvent::TenantForgotten(_) => "InstallationTenantForgotten",
        InstallationEvent::RemovalScheduled(_) => "InstallationRemovalScheduled",
        InstallationEvent::RemovalCancelled(_) => "InstallationRemovalCancelled",
    };
    Row {
        aggregate_type: "installation".into(),
        aggregate_id: id.to_string(),
        sequence,
        event_type: event_type.into(),
        event_version: "1.0".into(),
        payload: serde_json::to_value(event).expect("json"),
        metadata: meta(actor, at),
    }
}

/// Event `sequence` (>= 2) of installation number `k`: a fixed but varied lifecycle, so the read
/// models end up with every status and plenty of transitions.
/// An operator scheduling a revoke (even `k`) or disconnect a day ahead, or (`cancel`) cancelling
/// it.
pub fn removal_row(
    app: AppId,
    hub: u64,
    k: u64,
    sequence: i64,
    at: DateTime<Utc>,
    cancel: bool,
) -> Row {
    let action = if k.is_multiple_of(2) {
        StoredRemovalAction::Revoke
    } else {
        StoredRemovalAction::Disconnect
    };
    let event = if cancel {
        InstallationEvent::RemovalCancelled(InstallationRemovalCancelled {
            action,
            effective_at: at + Duration::days(1),
            reason: k.is_multiple_of(3).then(|| "customer paid".to_owned()),
            cancelled_at: at,
        })
    } else {
        InstallationEvent::RemovalScheduled(InstallationRemovalScheduled {
            action,
            reason: "contract ended".into(),
            effective_at: at + Duration::days(1),
            scheduled_by: "key:akoperator0001".into(),
            scheduled_at: at,
        })
    };
    installation_row(
        installation_id(app, hub),
        sequence,
        event,
        "key:akoperator0001",
        at,
    )
}

pub fn lifecycle_row(app: AppId, hub: u64, k: u64, sequence: i64, at: DateTime<Utc>) -> Row {
    let id = installation_id(app, hub);
    let generation = sequence as u64;
    let kind = (sequence as u64 + k) % 19;
    let event = match kind {
        0..=9 => InstallationEvent::TokensRefreshed(TokensRefreshed {
            tokens: tokens(at + Duration::minutes(30)),
            generation,
            refreshed_at: at,
        }),
        10 | 11 => InstallationEvent::RefreshFailed(RefreshFailed {
            class: StoredRefreshFailureClass::ServerError,
            message: format!("HubSpot answered 503 (attempt {sequence})"),
            generation,
            consecutive_failures: (kind - 9) as u32,
            failed_at: at,
        }),
        12 => InstallationEvent::ReauthorizationRequired(ReauthorizationRequired {
            class: StoredRefreshFailureClass::InvalidGrant,
            message: "BAD_REFRESH_TOKEN".into(),
            generation,
            failed_at: at,
        }),
        13 => InstallationEvent::Reconnected(InstallationReconnected {
            installation_id: id,
            hub_domain: format!("portal-{hub}.hubspot.com"),
            installer: StoredInstaller {
                user_id: None,
                email: Some(format!("admin{hub}@example.com")),
            },
            scopes: vec![
                "crm.objects.contacts.read".into(),
                "oauth".into(),
                "tickets".into(),
            ],
            tokens: tokens(at + Duration::minutes(30)),
            app_version: Some(format!("1.{}.0", sequence % 4)),
            external_ref: None,
            metadata: None,
            previous_status: StoredInstallationStatus::NeedsReauthorization,
            generation,
            connected_at: at,
        }),
        14 => InstallationEvent::Disconnected(InstallationDisconnected {
            cause: if k.is_multiple_of(2) {
                StoredDisconnectCause::Operator
            } else {
                StoredDisconnectCause::Uninstalled
            },
            reason: k.is_multiple_of(2).then(|| "customer asked".to_owned()),
            disconnected_at: at,
        }),
        15 => InstallationEvent::TenantForgotten(TenantForgotten {
            reason: "GDPR request 42".into(),
            forgotten_at: at,
        }),
        16 => InstallationEvent::Reconnected(InstallationReconnected {
            installation_id: id,
            hub_domain: format!("portal-{hub}.hubspot.com"),
            installer: StoredInstaller::default(),
            scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
            tokens: tokens(at + Duration::minutes(30)),
            app_version: None,
            external_ref: None,
            metadata: None,
            previous_status: StoredInstallationStatus::Disconnected,
            generation,
            connected_at: at,
        }),
        17 => InstallationEvent::Revoked(InstallationRevoked {
            reason: "suspicious activity".into(),
            revoked_at: at,
        }),
        _ => InstallationEvent::TokensRefreshed(TokensRefreshed {
            tokens: tokens(at + Duration::hours(6)),
            generation,
            refreshed_at: at,
        }),
    };
    let actor = match kind {
        0..=12 | 18 => "system:refresher",
        13 | 16 => "key:akoperator0001",
        _ => "key:akadmin0000001",
    };
    installation_row(id, sequence, event, actor, at)
}

/// Inserts rows as one transaction (postgres-es writes one transaction per command; bulk
/// transactions only make the test fast, the global order is the same kind).
pub async fn insert_rows(pool: &PgPool, rows: &[Row]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(1000) {
        let mut types = Vec::with_capacity(chunk.len());
        let mut ids = Vec::with_capacity(chunk.len());
        let mut seqs = Vec::with_capacity(chunk.len());
        let mut event_types = Vec::with_capacity(chunk.len());
        let mut versions = Vec::with_capacity(chunk.len());
        let mut payloads = Vec::with_capacity(chunk.len());
        let mut metas = Vec::with_capacity(chunk.len());
        for r in chunk {
            types.push(r.aggregate_type.clone());
            ids.push(r.aggregate_id.clone());
            seqs.push(r.sequence);
            event_types.push(r.event_type.clone());
            versions.push(r.event_version.clone());
            payloads.push(r.payload.to_string());
            metas.push(r.metadata.to_string());
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             SELECT t, i, s, e, v, p::json, m::json
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                           $6::text[], $7::text[]) WITH ORDINALITY AS u(t, i, s, e, v, p, m, n)
              ORDER BY n",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&seqs)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metas)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A `HubSpotWebhookReceived` of the webhook log of `app`'s installation in `hub` (or, with no
/// hub, of the app's log of unrouted events), as the webhook workers write it.
pub fn webhook_row(
    app: AppId,
    hub: Option<u64>,
    sequence: i64,
    event_id: u64,
    at: DateTime<Utc>,
) -> Row {
    let installation = hub.map(|h| installation_id(app, h));
    let received = WebhookLogEvent::Received(HubSpotWebhookReceived {
        identity: format!("{:032x}{event_id:032x}", app.as_uuid().as_u128() & 0xffff),
        event_id,
        subscription_type: "contact.propertyChange".into(),
        object_id: Some(event_id % 977),
        property_name: Some("lifecyclestage".into()),
        property_value: Some("customer".into()),
        change_source: Some("CRM_UI".into()),
        occurred_at: at - Duration::milliseconds(150 + (event_id % 400) as i64),
        portal_id: HubId(hub.unwrap_or(49_999_999)),
        app_id: app,
        attempt: Some(0),
        installation_id: installation,
    });
    Row {
        aggregate_type: "hubspot_webhook_log".into(),
        aggregate_id: log_id(app, installation),
        sequence,
        event_type: "HubSpotWebhookReceived".into(),
        event_version: "1.0".into(),
        payload: serde_json::to_value(received).expect("json"),
        metadata: meta("hubspot", at),
    }
}

/// The read-model tables and their primary-key order.
pub const READ_MODELS: [(&str, &str); 7] = [
    ("rm_installations", "installation_id"),
    (
        "rm_installation_status_periods",
        "installation_id, sequence",
    ),
    ("rm_apps", "app_id"),
    ("rm_activity", "global_position"),
    ("rm_activity_subjects", "installation_id"),
    ("rm_webhook_events", "log_id, sequence"),
    ("webhook_usage_daily", "installation_id, day"),
];

/// `(table, rows, md5 of every row's text in primary-key order)` for every read model.
pub async fn checksums(pool: &PgPool) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for (table, order) in READ_MODELS {
        let (rows, md5): (i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY {order})) FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .expect("checksum");
        out.push((table.to_owned(), rows, md5.unwrap_or_default()));
    }
    out
}

/// A gauge or counter value from a Prometheus text page (first series of that name).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Percentile (0..=100) of a sample, in the sample's unit.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Copies every read model (`snap_<table>`), to explain a checksum difference later.
pub async fn snapshot(pool: &PgPool) {
    for (table, _) in READ_MODELS {
        sqlx::query(&format!("DROP TABLE IF EXISTS snap_{table}"))
            .execute(pool)
            .await
            .expect("drop snapshot");
        sqlx::query(&format!("CREATE TABLE snap_{table} AS TABLE {table}"))
            .execute(pool)
            .await
            .expect("snapshot");
    }
}

/// Rows that differ between each read model and its snapshot (a few of each side).
pub async fn differences(pool: &PgPool) -> String {
    let mut out = String::new();
    for (table, order) in READ_MODELS {
        for (label, a, b) in [
            ("only live", format!("snap_{table}"), table.to_owned()),
            ("only rebuilt", table.to_owned(), format!("snap_{table}")),
        ] {
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT x::text FROM (SELECT * FROM {a} EXCEPT SELECT * FROM {b}) x ORDER BY {order} LIMIT 5"
            ))
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            for r in rows {
                out.push_str(&format!("{table} {label}: {r}\n"));
            }
        }
    }
    out
}
