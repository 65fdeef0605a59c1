//! Webhooks end to end: the HubSpot simulator delivers 10,000 events in signed batches (v1 + v3),
//! with deliberate duplicates and HubSpot's retries, to a Hubkeeper API and two webhook worker
//! processes; both workers are SIGKILLed mid-batch and started again, then nats-server is
//! restarted once and later SIGKILLed and started again. Every unique event must be processed
//! exactly once (recorded once, counted once, republished once), nothing lost, nothing
//! dead-lettered; every unique event is in the history once (a `HubSpotWebhookReceived`, listed
//! by the audit export) and the counts the live projector folds from them equal a replay's; an
//! uninstall webhook disconnects its installation; events for an unknown portal are kept for
//! review.

#[path = "support/read_side.rs"]
mod read_side;
#[path = "support/webhooks.rs"]
mod webhooks;

use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use hubkeeper_domain::AppId;
use hubkeeper_projections::{replay, ReplayOptions};
use hubkeeper_sim::{
    dev_seed, AttemptOutcome, DeliverRequest, DeliveryState, SimConfig, SimControl, DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
};
use hubkeeper_testkit::{wait_until, TestEnv};
use read_side::{connected_row, insert_rows, installation_id, metric, percentile};
use serde_json::json;
use webhooks::start_api;

const PORTALS: u64 = 10;
const PER_PORTAL: usize = 1_000;
const HUB_BASE: u64 = 40_000_001;
const UNKNOWN_PORTAL: u64 = 49_999_999;

async fn seen(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_events_seen")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Per installation (count, latest time), per installation and day, and events projected.
type WebhookReadModels = (
    Vec<(uuid::Uuid, i64, Option<chrono::DateTime<Utc>>)>,
    Vec<(uuid::Uuid, chrono::NaiveDate, i64)>,
    i64,
);

async fn webhook_read_models(pool: &sqlx::PgPool) -> WebhookReadModels {
    let per_installation = sqlx::query_as(
        "SELECT installation_id, webhook_events, last_webhook_at FROM rm_installations
          ORDER BY installation_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let per_day = sqlx::query_as(
        "SELECT installation_id, day, events FROM webhook_usage_daily ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let projected = sqlx::query_scalar("SELECT count(*) FROM rm_webhook_events")
        .fetch_one(pool)
        .await
        .unwrap();
    (per_installation, per_day, projected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_events_exactly_once_across_a_nats_restart() {
    let mut env = TestEnv::start().await;
    let pool = env.pool();
    let sim = hubkeeper_sim::spawn(SimConfig {
        seed: Some(dev_seed()),
        // HubSpot's 24 hours of retries, compressed.
        webhook_retry_schedule: [200u64, 400, 800, 1000, 1500, 2000, 3000, 4000, 5000, 6000]
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let control = SimControl::new(&sim.base_url).expect("control client");

    let hk = start_api(&env, &[]).await;
    let app = hk
        .register_app("Webhook app", DEV_CLIENT_ID, DEV_CLIENT_SECRET, None)
        .await;
    // Installations for the portals, projected so the workers can route.
    let rows: Vec<_> = (0..PORTALS)
        .map(|k| {
            connected_row(
                AppId::from_uuid(app),
                HUB_BASE + k,
                Utc::now() - Span::hours(1),
                Utc::now() + Span::days(1),
            )
        })
        .collect();
    insert_rows(&pool, &rows).await.unwrap();
    replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .expect("project installations");
    // The relay and a projector too: the webhook counts are folded from the webhook logs'
    // events, live, through the same NATS restarts.
    let mut workers = [
        hk.spawn_worker(&env, "webhooks-a", "webhooks"),
        hk.spawn_worker(&env, "webhooks-b", "webhooks"),
        hk.spawn_worker(&env, "relay", "relay"),
        hk.spawn_worker(&env, "projector", "projector"),
    ];

    let started = Instant::now();
    let mut deliveries = Vec::new();
    let deliver_portal = |k: u64| {
        let mut request = DeliverRequest::new(&hk.webhook_url(app), DEV_CLIENT_ID)
            .generate(PER_PORTAL, HUB_BASE + k);
        request.duplicate_rate = 0.1;
        request
    };
    // First half of the portals, an uninstall for one portal, events for a portal nobody
    // installed.
    for k in 0..PORTALS / 2 {
        deliveries.push(
            control
                .deliver_webhooks(&deliver_portal(k))
                .await
                .unwrap()
                .id,
        );
    }
    let mut lifecycle = DeliverRequest::new(&hk.webhook_url(app), DEV_CLIENT_ID);
    lifecycle.events = vec![json!({
        "portalId": HUB_BASE + 3, "subscriptionType": "app.uninstall", "objectId": 0,
        "occurredAt": Utc::now().timestamp_millis()
    })];
    deliveries.push(control.deliver_webhooks(&lifecycle).await.unwrap().id);
    let mut stray = DeliverRequest::new(&hk.webhook_url(app), DEV_CLIENT_ID);
    stray.generate = Some(hubkeeper_sim::GenerateEvents {
        count: 5,
        portal_id: UNKNOWN_PORTAL,
        subscription_type: Some("company.creation".into()),
    });
    deliveries.push(control.deliver_webhooks(&stray).await.unwrap().id);
    let unique = PORTALS as i64 * PER_PORTAL as i64 + 1 + 5;

    // NATS goes down while batches are being processed; the second half of the portals is
    // delivered into the outage (the API cannot store them: 503, HubSpot retries), then NATS
    // comes back: one restart.
    wait_until(
        "a fifth of the events processed",
        Duration::from_secs(120),
        || async { seen(&pool).await >= unique / 5 },
    )
    .await;
    // Both webhook workers crash (SIGKILL) in the middle of batches, and are started again. To
    // be sure they are mid-batch, the test holds a lock that stops their commits: each batch
    // they take is republished and then waits to record its events. What they had taken and not
    // acknowledged comes back after ack_wait; nothing they acknowledged may be missing from the
    // store. Only this crash parts a batch's acknowledgement from its commit (a worker
    // acknowledging before its transaction commits loses the batch here): the NATS outages
    // below leave the workers and Postgres running. It comes before them, while every batch in
    // the queue is HubSpot's first attempt: after an outage, a batch stored while its answer was
    // lost comes again as HubSpot's retry (a new body: its attempt number), and that copy would
    // make up for one lost here.
    let mut hold = pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE webhook_events_seen IN SHARE MODE")
        .execute(&mut *hold)
        .await
        .expect("hold the workers' commits");
    wait_until(
        "a worker waits to record a batch",
        Duration::from_secs(120),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO webhook_events_seen%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                > 0
        },
    )
    .await;
    for worker in &mut workers[..2] {
        worker.crash();
    }
    hold.rollback().await.expect("release the workers' commits");
    let at_worker_crash = seen(&pool).await;
    assert!(
        at_worker_crash < unique,
        "the workers' crash must hit processing in progress ({at_worker_crash} of {unique} \
         processed)"
    );
    workers[0] = hk.spawn_worker(&env, "webhooks-a-restarted", "webhooks");
    workers[1] = hk.spawn_worker(&env, "webhooks-b-restarted", "webhooks");

    env.nats.stop();
    let mut during_outage = Vec::new();
    for k in PORTALS / 2..PORTALS {
        during_outage.push(
            control
                .deliver_webhooks(&deliver_portal(k))
                .await
                .unwrap()
                .id,
        );
    }
    wait_until(
        "the API refuses batches it cannot store",
        Duration::from_secs(60),
        || async {
            let mut refused = false;
            for id in &during_outage {
                if let Ok(report) = control.webhook_status(*id).await {
                    refused |= report.batches.iter().flat_map(|b| &b.attempts).any(
                        |a| matches!(a.outcome, AttemptOutcome::Http { status } if status == 503),
                    );
                }
            }
            refused
        },
    )
    .await;
    env.nats.restart().await.expect("restart nats-server");
    deliveries.extend(during_outage);

    // Then nats-server crashes (SIGKILL: no chance to flush or say goodbye) while the second
    // half is being delivered and processed, and is started again on its store.
    wait_until(
        "three fifths of the events processed",
        Duration::from_secs(120),
        || async { seen(&pool).await >= unique * 3 / 5 },
    )
    .await;
    env.nats.kill();
    let at_crash = seen(&pool).await;
    assert!(
        at_crash < unique,
        "the crash must hit delivery in progress ({at_crash} of {unique} processed)"
    );
    env.nats
        .restart()
        .await
        .expect("start nats-server after the crash");

    let mut attempts = 0usize;
    let mut batches = 0usize;
    let mut duplicate_batches = 0usize;
    let mut latencies = Vec::new();
    let mut rejected_during_restart = 0usize;
    for id in deliveries {
        let report = control
            .wait_for_delivery(id, Duration::from_secs(180))
            .await
            .expect("delivery finishes");
        assert_eq!(report.state, DeliveryState::Completed);
        assert_eq!(
            report.failed_batches, 0,
            "HubSpot gave up on a batch: {report:?}"
        );
        batches += report.batches.len();
        attempts += report.total_attempts;
        for b in &report.batches {
            duplicate_batches += usize::from(b.duplicate);
            for a in &b.attempts {
                match &a.outcome {
                    AttemptOutcome::Http { status } if *status == 200 => {
                        latencies.push(a.latency_ms as f64)
                    }
                    AttemptOutcome::Http { status } if *status == 503 => {
                        rejected_during_restart += 1
                    }
                    _ => {}
                }
            }
        }
    }
    let delivered_in = started.elapsed();
    wait_until(
        "every unique event processed",
        Duration::from_secs(120),
        || async { seen(&pool).await >= unique },
    )
    .await;
    let processed_in = started.elapsed();

    // Exactly once: one record per unique event, counted once, republished once.
    assert_eq!(seen(&pool).await, unique, "duplicates were recorded");
    assert!(duplicate_batches > 0, "the simulator sent duplicates");
    assert!(
        attempts > batches,
        "HubSpot retried ({attempts} attempts, {batches} batches)"
    );
    // Every unique event is in the history exactly once: one `HubSpotWebhookReceived` per
    // identity, routed ones in their installation's log, the unknown portal's in the app's.
    let (logged, identities): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payload -> 'HubSpotWebhookReceived' ->> 'identity')
           FROM events WHERE aggregate_type = 'hubspot_webhook_log'
            AND event_type = 'HubSpotWebhookReceived'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (logged, identities),
        (unique, unique),
        "each event logged once"
    );
    let in_apps_log: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(format!("app:{app}"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(in_apps_log, 5, "unrouted events are in the app's log");
    // Each log's sequences run 1..n without a hole.
    let holes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT aggregate_id, max(sequence) AS m, count(*) AS n FROM events
                                WHERE aggregate_type = 'hubspot_webhook_log'
                                GROUP BY aggregate_id) AS l WHERE m <> n",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(holes, 0, "a webhook log has a gap in its sequences");
    // The audit export lists them all, once each.
    let export = hk
        .http
        .get(format!(
            "{}/v1/events/export?event_type=HubSpotWebhookReceived",
            hk.base
        ))
        .bearer_auth(&hk.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status().as_u16(), 200);
    let exported = export.text().await.unwrap();
    let mut exported_ids = std::collections::HashSet::new();
    for line in exported.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("an NDJSON line");
        let identity = event["payload"]["HubSpotWebhookReceived"]["identity"]
            .as_str()
            .expect("an identity")
            .to_owned();
        assert!(exported_ids.insert(identity), "exported twice: {line}");
    }
    assert_eq!(exported_ids.len() as i64, unique);

    // The counts are folded from those events by the live projector.
    let routed = PORTALS as i64 * PER_PORTAL as i64 + 1;
    let counted = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(sum(webhook_events), 0)::bigint FROM rm_installations",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
    };
    wait_until(
        "the projector counted every routed event",
        Duration::from_secs(120),
        || async { counted().await >= routed },
    )
    .await;
    let counted = counted().await;
    assert_eq!(counted, routed);
    let daily: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM webhook_usage_daily")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(daily, counted);
    let per_portal: Vec<(i64, i64)> =
        sqlx::query_as("SELECT hub_id, webhook_events FROM rm_installations ORDER BY hub_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (hub, n) in &per_portal {
        let expected = PER_PORTAL as i64 + i64::from(*hub == (HUB_BASE + 3) as i64);
        assert_eq!(*n, expected, "portal {hub}");
    }
    let unrouted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_unrouted WHERE portal_id = $1")
            .bind(UNKNOWN_PORTAL as i64)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unrouted, 5, "unknown portals are kept for review");

    // A replay folds the same counts from the history as the live projector did.
    let live = webhook_read_models(&pool).await;
    assert_eq!(live.0.len(), PORTALS as usize);
    assert_eq!(live.2, unique, "every event projected once");
    replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(
        webhook_read_models(&pool).await,
        live,
        "replay differs from the live projection"
    );

    let js = hubkeeper_bus::jetstream(env.nats_client().await);
    let mut events = js
        .get_stream("HK_WEBHOOK_EVENTS")
        .await
        .expect("events stream");
    let info = events.info().await.expect("stream info").clone();
    assert_eq!(
        info.state.messages as i64, unique,
        "each event republished once"
    );
    let first = events
        .get_raw_message(info.state.first_sequence)
        .await
        .expect("a republished event");
    assert!(
        first
            .subject
            .as_str()
            .starts_with(&format!("hk.webhooks.{app}.")),
        "{}",
        first.subject
    );
    // A batch whose ack was lost in the restart comes back after ack_wait, is found fully
    // processed, and is acknowledged: the queue drains.
    wait_until(
        "every batch acknowledged",
        Duration::from_secs(60),
        || async {
            match js.get_stream("HK_WEBHOOKS").await {
                Ok(mut raw) => raw.info().await.is_ok_and(|i| i.state.messages == 0),
                Err(_) => false,
            }
        },
    )
    .await;
    assert_eq!(
        seen(&pool).await,
        unique,
        "redelivered batches recorded nothing twice"
    );
    let dead = hubkeeper_bus::dead_letter::list(&js, Some("webhooks"), 10, None)
        .await
        .expect("list dead letters");
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");

    // The uninstall disconnected the installation (as HubSpot, by the webhook).
    let uninstalled = installation_id(AppId::from_uuid(app), HUB_BASE + 3);
    let (event_type, actor): (String, String) = sqlx::query_as(
        "SELECT event_type, metadata->>'actor' FROM events
          WHERE aggregate_type = 'installation' AND aggregate_id = $1 AND sequence = 2",
    )
    .bind(uninstalled.to_string())
    .fetch_one(&pool)
    .await
    .expect("uninstall recorded");
    assert_eq!(
        (event_type.as_str(), actor.as_str()),
        ("InstallationDisconnected", "hubspot")
    );

    latencies.sort_by(f64::total_cmp);
    let metrics = reqwest::get(format!("{}/metrics", hk.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    eprintln!(
        "FIGURES webhooks: {unique} unique events ({attempts} requests for {batches} batches, \
         {duplicate_batches} duplicate batches, {rejected_during_restart} answered 503 during the \
         NATS restart); all accepted after {:.1}s, all processed after {:.1}s = {:.0} events/s; \
         accept latency seen by the simulator p50 {:.0} ms, p99 {:.0} ms; API-side accept \
         histogram: count {:?}, sum {:?} s",
        delivered_in.as_secs_f64(),
        processed_in.as_secs_f64(),
        unique as f64 / processed_in.as_secs_f64(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        metric(&metrics, "hk_webhook_accept_seconds_count"),
        metric(&metrics, "hk_webhook_accept_seconds_sum"),
    );
}

/// A batch that cannot be processed (its installation exists but the projector has not caught
/// up, and retries run out) is dead-lettered; operators list and inspect it over the API and the
/// CLI, fix the cause, and re-drive it: it is then processed normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_listed_inspected_and_redriven() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let hk = start_api(&env, &[]).await;
    let app = hk
        .register_app("DLQ app", DEV_CLIENT_ID, DEV_CLIENT_SECRET, None)
        .await;
    let portal = 40_100_001u64;
    // The installation exists in the store but is not projected: the worker must wait for it.
    insert_rows(
        &pool,
        &[connected_row(
            AppId::from_uuid(app),
            portal,
            Utc::now(),
            Utc::now() + Span::days(1),
        )],
    )
    .await
    .unwrap();
    let mut vars = hk.vars.clone();
    vars.push(("HK_WEBHOOK_MAX_DELIVER".into(), "2".into()));
    let _worker = hubkeeper_testkit::HkProcess::spawn(
        &hubkeeper_testkit::hubkeeper_binary(),
        "webhooks",
        &["worker", "webhooks"],
        &vars,
        &env.path().join("logs"),
    );

    let url = hk.webhook_url(app);
    let body = serde_json::to_vec(&json!([
        {"eventId": 1, "portalId": portal, "occurredAt": Utc::now().timestamp_millis(),
         "subscriptionType": "deal.creation", "objectId": 9},
        {"eventId": 2, "portalId": portal, "occurredAt": Utc::now().timestamp_millis(),
         "subscriptionType": "deal.creation", "objectId": 10}
    ]))
    .unwrap();
    let ts = Utc::now().timestamp_millis();
    let r = hk
        .http
        .post(&url)
        .header(
            "x-hubspot-signature-v3",
            hubkeeper_hubspot::signature::sign_v3(DEV_CLIENT_SECRET, "POST", &url, &body, ts),
        )
        .header("x-hubspot-request-timestamp", ts.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let list = || async {
        let r = hk
            .http
            .get(format!("{}/v1/dlq?kind=webhooks", hk.base))
            .bearer_auth(&hk.admin_key)
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    wait_until(
        "the batch is dead-lettered",
        Duration::from_secs(60),
        || async { !list().await["items"].as_array().unwrap().is_empty() },
    )
    .await;
    let items = list().await;
    let letter = &items["items"][0];
    let seq = letter["seq"].as_u64().unwrap();
    assert_eq!(letter["kind"], "webhooks");
    assert_eq!(letter["deliveries"], 2);
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("not projected yet"),
        "{letter}"
    );
    assert_eq!(
        letter["source_subject"],
        format!("hk.webhook_batches.{app}")
    );

    // The CLI sees the same, with the payload.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(hubkeeper_testkit::hubkeeper_binary())
            .args(args)
            .env("NATS_URL", env.nats_url())
            .env("HK_LOG", "warn")
            .output()
            .expect("hubkeeper dlq");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cli(&["dlq", "list", "--kind", "webhooks"]);
    assert!(
        listed.contains(&seq.to_string()) && listed.contains("not projected yet"),
        "{listed}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&cli(&["dlq", "show", &seq.to_string()])).expect("show prints JSON");
    assert_eq!(shown["payload"][0]["subscriptionType"], "deal.creation");
    assert_eq!(shown["headers"]["Hk-App-Id"], app.to_string());

    // An auditor may look but not re-drive.
    let auditor = hubkeeper_api::auth::create_key(
        &pool,
        "auditor",
        hubkeeper_api::auth::Role::Auditor,
        "test",
    )
    .await
    .unwrap();
    let r = hk
        .http
        .post(format!("{}/v1/dlq/{seq}/redrive", hk.base))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&auditor.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Fix the cause (project), re-drive: processed, counted, and gone from the DLQ.
    replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    let r = hk
        .http
        .post(format!("{}/v1/dlq/{seq}/redrive", hk.base))
        .bearer_auth(&hk.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_until(
        "the re-driven batch is processed",
        Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE event_type = 'HubSpotWebhookReceived'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 2)
        },
    )
    .await;
    // Counted from those events (no projector runs here: a replay projects).
    replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    let counted: i64 =
        sqlx::query_scalar("SELECT webhook_events FROM rm_installations WHERE hub_id = $1")
            .bind(portal as i64)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counted, 2);
    assert!(list().await["items"].as_array().unwrap().is_empty());
    let r = hk
        .http
        .get(format!("{}/v1/dlq/{seq}", hk.base))
        .bearer_auth(&hk.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
