//! Projections under load: three projector processes (one killed, one restarted gracefully on
//! the way) project 50,000+ events relayed through JetStream, 10,000+ of them HubSpot webhook
//! events whose counts are folded into the installations' read models; `hubkeeper replay` then rebuilds
//! every read model from the events table, and both give identical tables (checksums). Events
//! written after the swap are projected on top of the rebuilt tables by the live projectors, and a
//! second replay agrees again.

#[path = "support/read_side.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use hubkeeper_domain::AppId;
use hubkeeper_testkit::{free_port, hubkeeper_binary, wait_until, HkProcess, TestEnv};
use sqlx::PgPool;
use support::{
    app_rows, checksums, connected_row, differences, insert_rows, lifecycle_row, metric,
    removal_row, snapshot, webhook_row, Row,
};

const INSTALLATIONS: u64 = 2_600;
const EVENTS_EACH: i64 = 20;
const HUB_BASE: u64 = 60_000_000;

fn apps() -> Vec<AppId> {
    (1..=3u128)
        .map(|n| {
            AppId::from_uuid(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_0000 + n,
            ))
        })
        .collect()
}

/// Rounds in which every installation also receives a HubSpot webhook event (in the same
/// transaction as its lifecycle event, after it).
fn webhook_round(r: i64) -> Option<i64> {
    (r % 5 == 2).then_some(r / 5 + 1)
}

const WEBHOOK_ROUNDS: i64 = EVENTS_EACH / 5;
/// Unrouted webhook events (the first app's log), in the last webhook round.
const UNROUTED: i64 = 20;

/// Rows of round `r` (the r-th event of every installation, and in some rounds a webhook event
/// each), oldest history first.
fn round(r: i64, apps: &[AppId], start: chrono::DateTime<Utc>) -> Vec<Row> {
    let mut rows = lifecycle_round(r, apps, start);
    if let Some(n) = webhook_round(r) {
        rows.extend((0..INSTALLATIONS).map(|k| {
            let app = apps[(k % apps.len() as u64) as usize];
            let at = start + Span::minutes(r * 700 + (k % 600) as i64) + Span::seconds(1);
            webhook_row(app, Some(HUB_BASE + k), n, k * 100 + n as u64, at)
        }));
        if n == WEBHOOK_ROUNDS {
            rows.extend((1..=UNROUTED).map(|i| {
                webhook_row(
                    apps[0],
                    None,
                    i,
                    9_000_000 + i as u64,
                    start + Span::minutes(r * 700),
                )
            }));
        }
    }
    rows
}

/// The round in which every fourth installation gets a removal scheduled, and the next, in which
/// every other one of those is cancelled (both before the first replay).
const SCHEDULE_ROUND: i64 = 6;
const CANCEL_ROUND: i64 = 7;

fn lifecycle_round(r: i64, apps: &[AppId], start: chrono::DateTime<Utc>) -> Vec<Row> {
    (0..INSTALLATIONS)
        .map(|k| {
            let app = apps[(k % apps.len() as u64) as usize];
            let hub = HUB_BASE + k;
            // Ten days of history, one event per installation every ~12 hours.
            let at = start + Span::minutes(r * 700 + (k % 600) as i64);
            if r == 0 {
                connected_row(app, hub, at, at + Span::minutes(30))
            } else if (r == SCHEDULE_ROUND && k % 4 == 0) || (r == CANCEL_ROUND && k % 8 == 0) {
                // Removals scheduled with notice, half of them cancelled, the rest left pending
                // or cleared by a later revoke, disconnect or reconnect.
                removal_row(app, hub, k, r + 1, at, r == CANCEL_ROUND)
            } else {
                lifecycle_row(app, hub, k, r + 1, at)
            }
        })
        .collect()
}

fn spawn(env: &TestEnv, name: &str, args: &[&str], extra: &[(&str, String)]) -> HkProcess {
    let mut vars = env.process_env();
    vars.push(("HK_PROJECTOR_ACK_WAIT_SECS".into(), "3".into()));
    vars.push(("HK_RELAY_BATCH_SIZE".into(), "1000".into()));
    for (k, v) in extra {
        vars.push(((*k).into(), v.clone()));
    }
    HkProcess::spawn(
        &hubkeeper_binary(),
        name,
        args,
        &vars,
        &env.path().join("logs"),
    )
}

async fn projected(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM rm_activity),
                (SELECT COALESCE(sum(last_sequence), 0)::bigint FROM rm_installations)",
    )
    .fetch_one(pool)
    .await
    .unwrap_or((0, 0))
}

/// Whether every app's counts equal a recount (the projector recounts after its commits).
async fn counts_exact(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, Option<bool>>(
        "SELECT bool_and(a.installation_count = c.total AND a.active_installation_count = c.active)
           FROM rm_apps a
           JOIN (SELECT app_id, count(*) AS total,
                        count(*) FILTER (WHERE status = 'connected') AS active
                   FROM rm_installations GROUP BY app_id) c USING (app_id)",
    )
    .fetch_one(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Waits until `activity` rows reach `target`; on timeout prints what every component was doing.
async fn wait_or_explain(
    env: &TestEnv,
    pool: &PgPool,
    projectors: &[HkProcess],
    relay: &HkProcess,
    metrics_ports: &[u16],
    what: &str,
    target: i64,
) {
    let reached = tokio::time::timeout(
        Duration::from_secs(150),
        wait_until(what, Duration::from_secs(600), || async {
            projected(pool).await.0 >= target
        }),
    )
    .await;
    if reached.is_ok() {
        return;
    }
    for p in projectors.iter().chain(std::iter::once(relay)) {
        let _ = std::fs::copy(&p.log, format!("/tmp/hk-debug-{}.log", p.name));
        let log = p.log_text();
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("dead-lettered"))
            .rev()
            .take(12)
            .collect();
        eprintln!("--- {} ---\n{}", p.name, tail.join("\n"));
    }
    let js = hubkeeper_bus::jetstream(env.nats_client().await);
    if let Ok(mut stream) = js.get_stream("HK_EVENTS").await {
        eprintln!(
            "stream: {:?}",
            stream.info().await.map(|i| i.state.messages)
        );
        if let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("projector")
            .await
        {
            eprintln!(
                "consumer: {:?}",
                c.info().await.map(|i| (
                    i.delivered,
                    i.ack_floor,
                    i.num_ack_pending,
                    i.num_pending,
                    i.num_waiting
                ))
            );
        }
    }
    let cursor: Option<(String, i64)> = sqlx::query_as(
        "SELECT last_tx::text, last_position FROM stream_cursors WHERE name = 'relay'",
    )
    .fetch_optional(pool)
    .await
    .unwrap_or_default();
    let horizon: Option<String> =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            .fetch_one(pool)
            .await
            .ok();
    let at = hubkeeper_store::GlobalCursor {
        tx: cursor.as_ref().and_then(|c| c.0.parse().ok()).unwrap_or(0),
        position: cursor.as_ref().map_or(0, |c| c.1),
    };
    let next = hubkeeper_store::read_after(pool, at, 5)
        .await
        .map(|v| v.len());
    eprintln!("relay cursor {cursor:?} horizon {horizon:?} next readable {next:?}");
    let txs: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT tx_id::text, count(*), min(global_position), max(global_position)
           FROM events GROUP BY tx_id ORDER BY tx_id",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    eprintln!("transactions in the store: {txs:?}");
    let all = hubkeeper_store::read_after(pool, hubkeeper_store::GlobalCursor::default(), 100_000)
        .await
        .map(|v| (v.len(), v.iter().map(|e| e.global_position).max()));
    eprintln!("read_after from the start now returns {all:?}");
    for port in metrics_ports {
        let text = scrape(*port).await;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("hk_relay") || l.starts_with("hk_projector"))
            .collect();
        eprintln!("metrics {port}: {}", lines.join(" | "));
    }
    let open: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT application_name, left(query, 120), extract(epoch from now() - xact_start)::bigint
           FROM pg_stat_activity WHERE xact_start IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    eprintln!("open transactions: {open:?}");
    panic!("stalled before `{what}`: {:?}", projected(pool).await);
}

async fn scrape(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Runs `hubkeeper replay` and checks it replayed exactly the events the store holds.
async fn replay_checked(env: &TestEnv, pool: &PgPool) -> String {
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap();
    let output = replay(env);
    let replayed: i64 = output
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1);
    assert_eq!(replayed, stored, "replay read every event once: {output}");
    output
}

fn replay(env: &TestEnv) -> String {
    let out = std::process::Command::new(hubkeeper_binary())
        .args(["replay", "--projection", "all"])
        .env("DATABASE_URL", env.database_url())
        .env("HK_LOG", "warn")
        .output()
        .expect("run hubkeeper replay");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "replay failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_projectors_with_restarts_match_a_full_replay() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let apps = apps();
    let start = Utc::now() - Span::days(10);

    let mut first: Vec<Row> = apps
        .iter()
        .enumerate()
        .flat_map(|(i, app)| app_rows(*app, &format!("App {i}"), start - Span::hours(1)))
        .collect();
    for r in 0..EVENTS_EACH / 2 {
        first.extend(round(r, &apps, start));
    }
    // Events of a kind this version does not know, and of an aggregate type without a
    // projection: skipped (apart from their activity line), never fatal.
    first.push(Row {
        aggregate_type: "plan".into(),
        aggregate_id: "starter".into(),
        sequence: 1,
        event_type: "PlanCreated".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({"PlanCreated": {"code": "starter"}}),
        metadata: serde_json::json!({"actor": "key:akadmin0000001"}),
    });
    for chunk in first.chunks(5_000) {
        insert_rows(&pool, chunk).await.expect("insert events");
    }

    let metrics_ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let started = Instant::now();
    let _relay = spawn(
        &env,
        "relay",
        &["worker", "relay"],
        &[
            ("HK_METRICS_BIND", format!("127.0.0.1:{}", metrics_ports[4])),
            ("HK_LOG", "info,hubkeeper_bus=debug".into()),
        ],
    );
    let mut projectors: Vec<HkProcess> = (0..3)
        .map(|i| {
            spawn(
                &env,
                &format!("projector-{i}"),
                &["worker", "projector"],
                &[("HK_METRICS_BIND", format!("127.0.0.1:{}", metrics_ports[i]))],
            )
        })
        .collect();

    // The second half arrives while the projectors work.
    let writer = {
        let pool = pool.clone();
        let apps = apps.clone();
        tokio::spawn(async move {
            for r in EVENTS_EACH / 2..EVENTS_EACH {
                insert_rows(&pool, &round(r, &apps, start))
                    .await
                    .expect("insert events");
            }
        })
    };
    let total_events = apps.len() as i64 * 2 + INSTALLATIONS as i64 * EVENTS_EACH + 1;
    let expected_sequences = INSTALLATIONS as i64 * EVENTS_EACH;

    // Crash one projector a fifth of the way in, restart another gracefully at three fifths.
    wait_or_explain(
        &env,
        &pool,
        &projectors,
        &_relay,
        &metrics_ports,
        "projectors make progress",
        total_events / 5,
    )
    .await;
    let checkpoint = (Instant::now(), projected(&pool).await.0);
    let mut lag_samples = Vec::new();
    for port in &metrics_ports[..3] {
        let text = scrape(*port).await;
        if let (Some(events), Some(seconds)) = (
            metric(&text, "hk_projector_lag_events"),
            metric(&text, "hk_projector_lag_seconds"),
        ) {
            lag_samples.push((events, seconds));
        }
    }
    projectors[0].kill();
    projectors.push(spawn(
        &env,
        "projector-3",
        &["worker", "projector"],
        &[("HK_METRICS_BIND", format!("127.0.0.1:{}", metrics_ports[3]))],
    ));
    wait_or_explain(
        &env,
        &pool,
        &projectors,
        &_relay,
        &metrics_ports,
        "projectors pass 60%",
        total_events * 3 / 5,
    )
    .await;
    assert!(
        projectors[1].terminate(Duration::from_secs(20)),
        "a projector stops gracefully on SIGTERM"
    );
    projectors.push(spawn(
        &env,
        "projector-4",
        &["worker", "projector"],
        &[("HK_METRICS_BIND", format!("127.0.0.1:{}", metrics_ports[5]))],
    ));
    writer.await.expect("writer");

    wait_or_explain(
        &env,
        &pool,
        &projectors,
        &_relay,
        &metrics_ports,
        "every event projected",
        total_events,
    )
    .await;
    wait_until("every event projected", Duration::from_secs(60), || async {
        projected(&pool).await == (total_events, expected_sequences)
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let sustained = (total_events - checkpoint.1) as f64 / checkpoint.0.elapsed().as_secs_f64();
    let apps_done: i64 = sqlx::query_scalar("SELECT sum(last_sequence)::bigint FROM rm_apps")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(apps_done, 6, "both events of every app projected");
    wait_until(
        "installation counts settled",
        Duration::from_secs(30),
        || counts_exact(&pool),
    )
    .await;
    let mut final_metrics = String::new();
    for port in &metrics_ports[2..] {
        final_metrics.push_str(&scrape(*port).await);
    }
    eprintln!(
        "FIGURES projector: {total_events} events through 3 projector processes (one killed, one \
         restarted) in {elapsed:.1}s = {:.0} events/s end-to-end (relay and writer included), \
         {sustained:.0} events/s from the 20% mark to the end; lag samples at 20% (events, \
         seconds) per process: {lag_samples:?}; gaps retried: {:?}",
        total_events as f64 / elapsed,
        metric(&final_metrics, "hk_projector_events_total{outcome=\"gap\"}"),
    );

    // Sanity of what was projected: every status occurs, activity has every level.
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM rm_installations GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(statuses.len() >= 4, "varied statuses: {statuses:?}");
    // Pending scheduled removals are in the compared tables too (cancelled ones are not).
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_installations WHERE removal_action IS NOT NULL
            AND removal_effective_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        pending > 0 && pending < INSTALLATIONS as i64 / 4,
        "some removals pending: {pending}"
    );
    let levels: i64 = sqlx::query_scalar("SELECT count(DISTINCT level) FROM rm_activity")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(levels, 3);
    let plan_line: String =
        sqlx::query_scalar("SELECT message FROM rm_activity WHERE aggregate_type = 'plan'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(plan_line.contains("PlanCreated"), "{plan_line}");

    // Every HubSpot webhook event is counted, once, by the live projectors.
    let webhook_total = INSTALLATIONS as i64 * WEBHOOK_ROUNDS + UNROUTED;
    wait_until(
        "webhook events counted",
        Duration::from_secs(60),
        || async {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT count(*) FROM rm_webhook_events),
                        (SELECT COALESCE(sum(webhook_events), 0)::bigint FROM rm_installations)",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == (webhook_total, webhook_total - UNROUTED))
        },
    )
    .await;
    let (days, daily): (i64, i64) =
        sqlx::query_as("SELECT count(DISTINCT day), sum(events)::bigint FROM webhook_usage_daily")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(daily, webhook_total - UNROUTED);
    assert!(days >= WEBHOOK_ROUNDS, "counted per day: {days} days");

    // Side columns owned by other components survive a replay.
    sqlx::query("UPDATE rm_installations SET plan_code = 'pro' WHERE hub_id = $1")
        .bind((HUB_BASE + 5) as i64)
        .execute(&pool)
        .await
        .unwrap();

    let index_names = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT indexname::text FROM pg_indexes WHERE tablename LIKE 'rm\\_%'
              ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let indexes_before = index_names().await;
    let live = checksums(&pool).await;
    snapshot(&pool).await;
    let output = replay_checked(&env, &pool).await;
    eprintln!("FIGURES replay (1st): {}", output.trim());
    let rebuilt = checksums(&pool).await;
    assert_eq!(
        live,
        rebuilt,
        "live projection and replay differ:\n{}",
        differences(&pool).await
    );

    // After the swap, the live projectors keep working on the rebuilt tables.
    let extra: Vec<Row> = (0..200u64)
        .map(|k| {
            let app = apps[(k % 3) as usize];
            lifecycle_row(app, HUB_BASE + k, k, EVENTS_EACH + 1, Utc::now())
        })
        .collect();
    insert_rows(&pool, &extra).await.unwrap();
    wait_until(
        "events after the swap projected",
        Duration::from_secs(60),
        || async { projected(&pool).await == (total_events + 200, expected_sequences + 200) },
    )
    .await;
    wait_until(
        "counts settled after the swap",
        Duration::from_secs(30),
        || counts_exact(&pool),
    )
    .await;
    let live = checksums(&pool).await;
    snapshot(&pool).await;
    let output = replay_checked(&env, &pool).await;
    eprintln!("FIGURES replay (2nd): {}", output.trim());
    assert_eq!(
        live,
        checksums(&pool).await,
        "second replay differs from live:\n{}",
        differences(&pool).await
    );
    let kept: (Option<String>, i64) =
        sqlx::query_as("SELECT plan_code, webhook_events FROM rm_installations WHERE hub_id = $1")
            .bind((HUB_BASE + 5) as i64)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kept, (Some("pro".into()), WEBHOOK_ROUNDS));
    assert_eq!(
        index_names().await,
        indexes_before,
        "indexes keep their names"
    );
    let rebuilds: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_rebuilds")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rebuilds, 3);
}
