//! `hubkeeper backup` and `hubkeeper restore` against real Postgres: retention keeps the newest
//! backups; a backup restored into an empty database of a *new cluster* (whose transaction
//! counter is behind the restored history) has identical event history and read models, reader
//! cursors resume where they were, and events written after the restore sort after the history
//! (the relay and the billing projection see them). On the way, a price change reaches the paid
//! subscriber only when its period is renewed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hubkeeper_core::billing::projection::{BillingProjector, BillingProjectorConfig};
use hubkeeper_core::billing::{
    AssignPlan, BillingService, NewPlan, PlanChanges, PriceInput, UsageReport,
};
use hubkeeper_core::settings::{SettingsChange, SettingsService};
use hubkeeper_core::CommandBus;
use hubkeeper_crypto::{seal, Aad, DataKey};
use hubkeeper_domain::installation::{Connect, InstallationCommand, Installer, SealedTokens};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::plan::{BillingInterval, LimitKind, PlanType, UsageMetric};
use hubkeeper_domain::settings::{Backups, DailyTime};
use hubkeeper_domain::subscription::ChangeTrigger;
use hubkeeper_domain::{AppId, DomainServices, HubId, InstallationId};
use hubkeeper_embedded::{LocalPostgres, PostgresOptions};
use hubkeeper_store::{load_cursor, read_after, GlobalCursor};
use hubkeeper_testkit::{hubkeeper_binary, TestEnv};
use sqlx::PgPool;

fn meta() -> EventMetadata {
    EventMetadata::new(Actor::AdminKey("ak_test".into()), Utc::now()).request_id("req-backup")
}

fn services(pool: &PgPool) -> (BillingService, SettingsService) {
    let bus = Arc::new(CommandBus::new(pool, DomainServices::system()));
    (
        BillingService::new(pool.clone(), bus.clone(), DomainServices::system()),
        SettingsService::new(bus, pool.clone(), None),
    )
}

fn plan(code: &str, plan_type: PlanType, price: i64, requests: u64) -> NewPlan {
    NewPlan {
        code: code.into(),
        name: format!("{code} plan"),
        description: None,
        app_id: None,
        plan_type,
        interval: (plan_type == PlanType::Recurring).then_some(BillingInterval::Monthly),
        price: PriceInput {
            amount_minor: price,
            currency: "NOK".into(),
        },
        unit_pricing: None,
        features: vec!["Standard support".into()],
        limits: [(LimitKind::RequestsPerMonth, requests)]
            .into_iter()
            .collect(),
        status: None,
    }
}

async fn connect_installation(pool: &PgPool, app: AppId, hub: u64) -> InstallationId {
    let bus = CommandBus::new(pool, DomainServices::system());
    let id = InstallationId::derive(app, HubId(hub), None);
    let key = DataKey::generate();
    let tokens = SealedTokens {
        access: seal(&key, b"access", &Aad::access_token(id.to_string())).expect("seal"),
        refresh: seal(&key, b"refresh", &Aad::refresh_token(id.to_string())).expect("seal"),
        access_expires_at: Utc::now() + chrono::Duration::minutes(30),
    };
    bus.installations()
        .execute(
            &id.to_string(),
            InstallationCommand::Connect(Connect {
                app_id: app,
                hub_id: HubId(hub),
                user_id: None,
                hub_domain: format!("hub{hub}.hubspot.com"),
                installer: Installer::default(),
                scopes: vec!["oauth".into()],
                tokens,
                app_version: None,
                customer: None,
            }),
            &meta(),
        )
        .await
        .expect("connect");
    id
}

/// Builds a history: plans, settings, installations on plans, usage, a limit reached.
async fn write_history(pool: &PgPool) {
    let (billing, settings) = services(pool);
    let m = meta();
    billing
        .create_plan(plan("free", PlanType::Free, 0, 3), &m)
        .await
        .expect("free plan");
    billing
        .create_plan(plan("pro", PlanType::Recurring, 9900, 1000), &m)
        .await
        .expect("pro plan");
    settings
        .update(
            SettingsChange {
                backups: Some(Backups {
                    enabled: true,
                    daily_at: DailyTime::new(2, 30).expect("time"),
                    keep: 5,
                }),
                ..SettingsChange::default()
            },
            &m,
        )
        .await
        .expect("settings");
    let app = AppId::new();
    for hub in [40_000_001, 40_000_002, 40_000_003] {
        let id = connect_installation(pool, app, hub).await;
        billing
            .assign_plan(
                id,
                AssignPlan {
                    plan_id: None,
                    plan_code: Some("free".into()),
                    trigger: None,
                },
                ChangeTrigger::Admin,
                &m,
            )
            .await
            .expect("free");
        billing
            .report_usage(
                UsageReport {
                    installation_id: id,
                    metric: UsageMetric::Requests,
                    quantity: 3,
                    idempotency_key: Some(format!("k-{hub}")),
                },
                &m,
            )
            .await
            .expect("usage");
        if hub == 40_000_002 {
            billing
                .assign_plan(
                    id,
                    AssignPlan {
                        plan_id: None,
                        plan_code: Some("pro".into()),
                        trigger: Some(ChangeTrigger::LimitReached),
                    },
                    ChangeTrigger::Admin,
                    &m,
                )
                .await
                .expect("upgrade");
        }
    }
}

/// Applies the billing projection until it has read everything.
async fn project(pool: &PgPool) -> GlobalCursor {
    let (billing, _) = services(pool);
    let projector = BillingProjector::new(
        pool.clone(),
        billing,
        BillingProjectorConfig {
            assign_default_plans: false,
            ..BillingProjectorConfig::default()
        },
    );
    let mut conn = pool.acquire().await.expect("conn");
    let mut cursor = load_cursor(&mut *conn, "billing-projection")
        .await
        .expect("cursor");
    while projector.step(&mut conn, &mut cursor).await.expect("step") > 0 {}
    projector
        .save_reached(&mut conn, cursor)
        .await
        .expect("save the cursor");
    cursor
}

async fn scalar(pool: &PgPool, sql: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_default()
}

/// Content checksums of everything that must survive: the event history (every column but the
/// cluster-local transaction id), its global order, and every other table.
async fn fingerprint(pool: &PgPool) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "events".to_string(),
            scalar(
                pool,
                "SELECT md5(string_agg(concat_ws('|', aggregate_type, aggregate_id, sequence,
                        event_type, event_version, payload::text, metadata::text, global_position,
                        recorded_at), E'\\n' ORDER BY aggregate_type, aggregate_id, sequence))
                   FROM events",
            )
            .await,
        ),
        (
            "global order".to_string(),
            scalar(
                pool,
                "SELECT string_agg(global_position::text, ',' ORDER BY tx_id, global_position)
                   FROM events",
            )
            .await,
        ),
    ];
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
          WHERE schemaname = 'public'
            AND tablename NOT IN ('events', 'stream_cursors', 'backup_runs')
          ORDER BY tablename",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    for table in tables {
        let sum = scalar(
            pool,
            &format!("SELECT md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM {table} t"),
        )
        .await;
        out.push((table, sum));
    }
    out
}

fn hubkeeper(args: &[&str], database_url: &str, data_dir: &Path) -> (bool, String) {
    let output = Command::new(hubkeeper_binary())
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("HK_DATA_DIR", data_dir)
        .env("HK_LOG", "warn")
        .env_remove("NATS_URL")
        .output()
        .expect("run hubkeeper");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_cluster_has_identical_state_and_a_safe_order() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    // A production database has used far more transaction ids than a fresh cluster: make this
    // one too, so the restore below must deal with ids ahead of the new cluster's counter.
    for _ in 0..1500 {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&pool)
            .await
            .expect("xid");
    }
    write_history(&pool).await;
    project(&pool).await;

    // A price change reaches the paid subscriber only at renewal: renewing 40 days later moves
    // it to version 2.
    let (billing, _) = services(&pool);
    let pro = billing.plan_id_by_code("pro").await.expect("pro");
    billing
        .update_plan(
            pro,
            PlanChanges {
                price: Some(PriceInput {
                    amount_minor: 12_900,
                    currency: "NOK".into(),
                }),
                ..PlanChanges::default()
            },
            &meta(),
        )
        .await
        .expect("reprice");
    let version_paid = "SELECT string_agg(plan_version::text, ',') FROM rm_subscriptions
                         WHERE plan_code = 'pro'";
    project(&pool).await;
    assert_eq!(scalar(&pool, version_paid).await, "1", "kept until renewal");
    let in_40_days = DomainServices::fixed(Utc::now() + chrono::Duration::days(40));
    let later = BillingService::new(
        pool.clone(),
        Arc::new(CommandBus::new(&pool, in_40_days.clone())),
        in_40_days,
    );
    assert_eq!(later.renew_due(&meta()).await.expect("renew"), 1);
    assert_eq!(
        later.renew_due(&meta()).await.expect("renew"),
        0,
        "renewed once"
    );
    let billing_cursor = project(&pool).await;
    assert_eq!(
        scalar(&pool, version_paid).await,
        "2",
        "renewed onto the new price"
    );
    let relay_at_end = read_after(&pool, GlobalCursor::default(), 10_000)
        .await
        .expect("read")
        .last()
        .map(|e| e.cursor())
        .expect("events");
    hubkeeper_store::save_cursor(&pool, "relay", relay_at_end)
        .await
        .expect("relay cursor");
    assert_eq!(
        billing_cursor, relay_at_end,
        "the projection read everything"
    );
    let rows = scalar(&pool, "SELECT count(*)::text FROM rm_plan_changes").await;
    assert_eq!(
        rows, "4",
        "three registrations and one upgrade were projected"
    );

    // Three backups with retention 2: the oldest is deleted.
    let out = env.path().join("backups");
    let out_arg = out.display().to_string();
    let mut files = Vec::new();
    for _ in 0..3 {
        let (ok, text) = hubkeeper(
            &["backup", "--out", &out_arg, "--keep", "2"],
            &env.database_url(),
            env.path(),
        );
        assert!(ok, "backup failed: {text}");
        files.push(text.lines().next().expect("file name").trim().to_string());
        // File names carry the time to the millisecond: the next backup starts in a later one.
        let taken = Utc::now().timestamp_millis();
        hubkeeper_testkit::wait_until(
            "the clock passed the last backup's millisecond",
            Duration::from_secs(1),
            || async move { Utc::now().timestamp_millis() > taken },
        )
        .await;
    }
    // Backups hold every table: a private directory of private files.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700, "backup directory mode");
        for file in &files[1..] {
            assert_eq!(mode(Path::new(file)), 0o600, "{file} mode");
        }
    }
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    left.sort();
    assert_eq!(left, files[1..].to_vec(), "retention keeps the newest two");
    let ok_runs = scalar(
        &pool,
        "SELECT count(*)::text FROM backup_runs WHERE ok AND trigger = 'cli'",
    )
    .await;
    assert_eq!(ok_runs, "3");
    let before = fingerprint(&pool).await;

    // Restore the newest into an empty database of a fresh cluster.
    let target = LocalPostgres::start(PostgresOptions {
        dir: env.path().join("postgres-restored"),
        port: None,
        database: "restored".into(),
        durable: false,
    })
    .await
    .expect("second cluster");
    let (ok, text) = hubkeeper(&["restore", &files[2]], &target.database_url(), env.path());
    assert!(ok, "restore failed: {text}");
    assert!(
        text.contains("transaction ids renumbered"),
        "a new cluster's counter is behind the history: {text}"
    );
    let restored = hubkeeper_store::connect(
        &secrecy::SecretString::from(target.database_url()),
        &hubkeeper_store::PoolConfig::default(),
    )
    .expect("pool");
    let after = fingerprint(&restored).await;
    assert_eq!(before.len(), after.len());
    for ((table, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "{table} differs after the restore");
    }
    assert!(
        before
            .iter()
            .any(|(t, s)| t == "rm_subscriptions" && !s.is_empty()),
        "read models were compared with content"
    );

    // Cursors: the projection's points at the same event as before; the relay starts over.
    let mapped = scalar(
        &restored,
        "SELECT count(*)::text FROM stream_cursors c JOIN events e
            ON e.tx_id = c.last_tx AND e.global_position = c.last_position
         WHERE c.name = 'billing-projection'",
    )
    .await;
    assert_eq!(
        mapped, "1",
        "the projection cursor names its event in the new ids"
    );
    let relay = load_cursor(&restored, "relay").await.expect("relay");
    assert_eq!(
        relay,
        GlobalCursor::default(),
        "the relay republishes everything"
    );

    // New events sort after the restored history: the relay reads them last, and the billing
    // projection, resuming at its mapped cursor, reads exactly them.
    let (billing, _) = services(&restored);
    billing
        .create_plan(plan("team", PlanType::OneTime, 50_000, 10_000), &meta())
        .await
        .expect("a plan after the restore");
    let all = read_after(&restored, GlobalCursor::default(), 10_000)
        .await
        .expect("read");
    let last = all.last().expect("events");
    assert_eq!(last.aggregate_type, "plan");
    assert_eq!(last.event_type, "PlanCreated");
    assert!(
        all[..all.len() - 1].iter().all(|e| e.tx_id < last.tx_id),
        "the new event sorts after the whole history"
    );
    let billing_cursor = load_cursor(&restored, "billing-projection")
        .await
        .expect("cursor");
    let pending = read_after(&restored, billing_cursor, 100)
        .await
        .expect("read");
    // After its cursor: the three backups started on the command line (recorded as operator
    // actions after the projection last ran), then the new plan.
    assert_eq!(
        pending
            .iter()
            .map(|e| (e.event_type.as_str(), e.global_position))
            .collect::<Vec<_>>(),
        all[all.len() - 4..]
            .iter()
            .map(|e| (e.event_type.as_str(), e.global_position))
            .collect::<Vec<_>>(),
        "the projection sees exactly the events after its cursor"
    );
    assert_eq!(
        pending
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        [
            "BackupStarted",
            "BackupStarted",
            "BackupStarted",
            "PlanCreated"
        ],
    );
    project(&restored).await;
    let team = scalar(&restored, "SELECT code FROM rm_plans WHERE code = 'team'").await;
    assert_eq!(team, "team");

    // A database with tables is refused.
    let (ok, text) = hubkeeper(&["restore", &files[2]], &target.database_url(), env.path());
    assert!(!ok, "restoring over data must fail");
    assert!(text.contains("not empty"), "{text}");
    restored.close().await;
}
