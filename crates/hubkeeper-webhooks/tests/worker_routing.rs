//! The webhook worker against real Postgres and NATS: an uninstall reported by webhook stops token
//! hand-outs in another process as promptly as a revoke does, and events are routed to one
//! installation of (app, portal) by the documented rule when there are several.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Span, Utc};
use hubkeeper_core::{
    AppService, Broadcaster, CommandBus, CoreError, TokenConfig, TokenDeps, TokenService, Vault,
};
use hubkeeper_crypto::{generate_key_b64, ExposeSecret, MasterKeyring};
use hubkeeper_domain::installation::{Connect, InstallationCommand, InstallationStatus, Installer};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, DomainServices, HubId, InstallationId, UserId};
use hubkeeper_hubspot::{HubSpotClient, HubSpotConfig};
use hubkeeper_projections::{replay, ReplayOptions};
use hubkeeper_testkit::{wait_until, TestEnv};
use hubkeeper_webhooks::{ensure_webhook_streams, WebhookStreamsConfig, WebhookWorker};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// What an API process holds: its own NATS connection and token service (with its cache).
struct ApiSide {
    tokens: TokenService,
    vault: Vault,
    bus: Arc<CommandBus>,
}

async fn api_side(env: &TestEnv, pool: &PgPool) -> ApiSide {
    let keyring = MasterKeyring::parse(&format!("t1:{}", generate_key_b64().expose_secret()), None)
        .expect("keyring");
    let broadcaster = Broadcaster::new(env.nats_client().await);
    let vault = Vault::start(pool.clone(), keyring, broadcaster.clone()).await;
    let bus = Arc::new(CommandBus::new(pool, DomainServices::system()));
    let apps = AppService::start(
        pool.clone(),
        bus.clone(),
        vault.clone(),
        broadcaster.clone(),
    )
    .await;
    let tokens = TokenService::start(TokenDeps {
        pool: pool.clone(),
        bus: bus.clone(),
        vault: vault.clone(),
        apps,
        hubspot: HubSpotClient::new(HubSpotConfig::default()).expect("hubspot client"),
        broadcaster,
        clock: DomainServices::system(),
        // A cache far longer than the test: only an invalidation can end a hit.
        config: TokenConfig {
            cache_max_age: Duration::from_secs(3600),
            ..TokenConfig::default()
        },
    })
    .await;
    ApiSide { tokens, vault, bus }
}

impl ApiSide {
    async fn connect(&self, app: AppId, hub: u64, user: Option<u64>) -> InstallationId {
        let id = InstallationId::derive(app, HubId(hub), user.map(UserId));
        let tokens = self
            .vault
            .seal_tokens(
                &id,
                "CNaccess-under-test",
                "refresh-under-test",
                Utc::now() + Span::hours(1),
            )
            .await
            .expect("seal");
        self.tokens
            .record_connect(
                Connect {
                    app_id: app,
                    hub_id: HubId(hub),
                    user_id: user.map(UserId),
                    hub_domain: format!("portal-{hub}.hubspot.com"),
                    installer: Installer::default(),
                    scopes: vec!["oauth".into()],
                    tokens,
                    app_version: None,
                    customer: None,
                },
                &EventMetadata::new(Actor::System, Utc::now()),
            )
            .await
            .expect("connect")
    }

    async fn status(&self, id: &InstallationId) -> Option<InstallationStatus> {
        let (installation, _) = self
            .bus
            .installations()
            .load(&id.to_string())
            .await
            .expect("load");
        installation.status_at(Utc::now())
    }
}

/// A worker process: its own NATS connection and command bus.
async fn worker(env: &TestEnv, pool: &PgPool) -> WebhookWorker {
    let js = hubkeeper_bus::jetstream(env.nats_client().await);
    ensure_webhook_streams(&js, &WebhookStreamsConfig::default())
        .await
        .expect("webhook streams");
    WebhookWorker::new(
        pool.clone(),
        js,
        Arc::new(CommandBus::new(pool, DomainServices::system())),
        Default::default(),
    )
}

fn batch(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(events).expect("json")
}

/// An event a minute after every connect of the test (an uninstall older than the latest
/// connect is ignored), at a time fixed per event id, so a redelivery is the same event.
fn event(event_id: i64, portal: u64, kind: &str, object: i64) -> Value {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| Utc::now().timestamp_millis() + 60_000);
    json!({
        "eventId": event_id, "portalId": portal, "subscriptionType": kind, "objectId": object,
        "occurredAt": base + event_id,
    })
}

async fn project(pool: &PgPool) {
    replay(pool, &ReplayOptions::default(), |_| {})
        .await
        .expect("project");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninstall_webhook_stops_cached_token_handouts_in_other_processes() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let api = api_side(&env, &pool).await;
    let app = AppId::from_uuid(Uuid::now_v7());
    let hub = 40_200_001;
    let id = api.connect(app, hub, None).await;
    // The API process now holds the token in its cache.
    api.tokens
        .get_token(&id, Duration::from_secs(60), None)
        .await
        .expect("token before the uninstall");
    project(&pool).await;

    let outcome = worker(&env, &pool)
        .await
        .process(
            app.as_uuid(),
            &batch(&[event(1, hub, "app.uninstall", 0)]),
            1,
        )
        .await
        .expect("processed");
    assert_eq!(outcome.uninstalls, 1);
    assert_eq!(
        api.status(&id).await,
        Some(InstallationStatus::Disconnected)
    );

    // Within the invalidation's delivery time, not the hour the cache entry would live.
    wait_until(
        "the API process stops handing out the uninstalled installation's token",
        Duration::from_secs(5),
        || async {
            api.tokens
                .get_token(&id, Duration::from_secs(60), None)
                .await
                .is_err()
        },
    )
    .await;
    let refused = api
        .tokens
        .get_token(&id, Duration::from_secs(60), None)
        .await;
    assert!(
        matches!(refused, Err(CoreError::Disconnected { .. })),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_the_active_installation_of_the_portal_and_named_user() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let api = api_side(&env, &pool).await;
    let app = AppId::from_uuid(Uuid::now_v7());
    let hub = 40_300_001;
    // Two users' installations, then a hub-level one connected last and disconnected: the
    // leftover is the most recent, so only the status rule keeps it from getting the events.
    let user7 = api.connect(app, hub, Some(7)).await;
    let user8 = api.connect(app, hub, Some(8)).await;
    let leftover = api.connect(app, hub, None).await;
    api.bus
        .installations()
        .execute(
            &leftover.to_string(),
            InstallationCommand::Disconnect {
                reason: "reinstalled per user".into(),
            },
            &EventMetadata::new(Actor::System, Utc::now()),
        )
        .await
        .expect("disconnect");
    project(&pool).await;

    let mut for_user7 = event(3, hub, "contact.creation", 30);
    for_user7["userId"] = json!(7);
    let worker = worker(&env, &pool).await;
    let outcome = worker
        .process(
            app.as_uuid(),
            &batch(&[
                event(1, hub, "contact.creation", 10),
                event(2, hub, "contact.creation", 20),
                for_user7,
            ]),
            1,
        )
        .await
        .expect("processed");
    assert_eq!((outcome.new_events, outcome.unrouted), (3, 0));
    // Each event is in its installation's webhook log; the counts are folded from those.
    let logged: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, sequence FROM events
          WHERE aggregate_type = 'hubspot_webhook_log' ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&pool)
    .await
    .expect("logs");
    let mut expected = vec![
        (user8.to_string(), 1),
        (user8.to_string(), 2),
        (user7.to_string(), 1),
    ];
    expected.sort();
    assert_eq!(logged, expected);
    project(&pool).await;

    let counted = |id: InstallationId| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT webhook_events FROM rm_installations WHERE installation_id = $1",
            )
            .bind(id.as_uuid())
            .fetch_one(&pool)
            .await
            .expect("row")
        }
    };
    // Each event counted once, on one installation: the most recently connected active one,
    // or the named user's own.
    assert_eq!(
        counted(user8).await,
        2,
        "portal events go to the newest active install"
    );
    assert_eq!(
        counted(user7).await,
        1,
        "a user's events go to their install"
    );
    assert_eq!(
        counted(leftover).await,
        0,
        "a disconnected leftover gets nothing"
    );
    let recorded: Vec<(i64, Option<Uuid>)> = sqlx::query_as(
        "SELECT event_id, installation_id FROM webhook_events_seen ORDER BY event_id",
    )
    .fetch_all(&pool)
    .await
    .expect("seen");
    assert_eq!(
        recorded,
        vec![
            (1, Some(user8.as_uuid())),
            (2, Some(user8.as_uuid())),
            (3, Some(user7.as_uuid())),
        ]
    );

    // The same batch again, by another worker: the same answer, nothing counted twice.
    let again = worker
        .process(
            app.as_uuid(),
            &batch(&[event(1, hub, "contact.creation", 10)]),
            2,
        )
        .await
        .expect("processed");
    assert_eq!((again.new_events, again.duplicates), (0, 1));

    // An uninstall removes the app from the portal: every installation loses its tokens.
    worker
        .process(
            app.as_uuid(),
            &batch(&[event(4, hub, "app.uninstall", 0)]),
            3,
        )
        .await
        .expect("uninstall processed");
    for id in [user7, user8, leftover] {
        assert_eq!(
            api.status(&id).await,
            Some(InstallationStatus::Disconnected)
        );
    }
}
