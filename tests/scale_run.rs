//! The scale run: a 3-node JetStream cluster, 2 API processes and 3 processes of every
//! worker role (relay, scheduler, refresher, projector, webhooks) against one Postgres, the
//! HubSpot simulator with 30-second tokens. Accounts are installed through the real OAuth flow,
//! then clients hammer the token API of both APIs while the simulator delivers signed webhook
//! batches (with duplicates, and retries on HubSpot's compressed schedule). Midway one process of
//! every role is SIGKILLed (the leading relay and scheduler, one API, refresher, projector and
//! webhook worker) together with the JetStream meta leader node; the node and the API are
//! started again once the survivors have taken over.
//!
//! Checked, as in the fleet and webhook tests: no expired (or nearly expired) token is ever
//! served and every token served works at HubSpot; the API that was not killed never fails to
//! answer; no installation goes a token lifetime without a refresh, and a second refresh in one
//! lifetime only where its first was in flight on a killed process; every unique webhook event
//! processed exactly once (recorded, counted and republished once, nothing dead-lettered); the
//! read models equal a full replay of the event store; every process not killed is alive at the
//! end and exits cleanly; nothing secret in any table or log.
//!
//! Size: `HK_SCALE_ACCOUNTS` (default 150), `HK_SCALE_SECS` of load (default 90),
//! `HK_SCALE_WEBHOOKS` unique webhook events (default 3,000); scripts/scale-run.sh runs it big.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/read_side.rs"]
mod read_side;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fleet::{
    assert_refresh_discipline, crash, install_all, leader_index, start_fleet, Fleet, FleetSpec,
    TokenLoad, CLIENT_ID, HUB_BASE,
};
use hubkeeper_sim::{DeliverRequest, DeliveryState, RotationMode};
use hubkeeper_testkit::{wait_until, HkProcess, NatsCluster, TestEnv};
use read_side::{checksums, differences, snapshot};
use sqlx::PgPool;

/// Events per simulated delivery job, and per HTTP request within it.
const EVENTS_PER_DELIVERY: u64 = 50;
const BATCH_SIZE: usize = 10;
/// Webhook deliveries are spread over this many waves during the load phase.
const WAVES: u32 = 6;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql)
        .fetch_one(pool)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn webhook_events_seen(pool: &PgPool) -> i64 {
    scalar(pool, "SELECT count(*) FROM webhook_events_seen").await
}

/// How often the processes other than number `except` said they took the lead (`line`).
fn leads(processes: &[HkProcess], except: usize, line: &str) -> usize {
    processes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != except)
        .map(|(_, p)| p.log_text().matches(line).count())
        .sum()
}

/// The name of the node that leads JetStream's meta group (it places and elects streams).
async fn meta_leader(http: &reqwest::Client, cluster: &NatsCluster) -> Option<String> {
    for node in cluster.nodes() {
        let url = format!("http://127.0.0.1:{}/jsz", node.http_port);
        if let Ok(r) = http.get(url).send().await {
            if let Ok(body) = r.json::<serde_json::Value>().await {
                if let Some(leader) = body["meta_cluster"]["leader"].as_str() {
                    return Some(leader.to_owned());
                }
            }
        }
    }
    None
}

/// Delivers `deliveries` webhook jobs in [`WAVES`] waves spread over `run_for`, alternating the
/// two APIs' webhook URLs and the installed portals; returns the delivery ids.
fn deliver_webhooks(
    fleet: &Fleet,
    deliveries: u64,
    accounts: u64,
    run_for: Duration,
) -> tokio::task::JoinHandle<Vec<uuid::Uuid>> {
    let control = fleet.control.clone();
    let urls: Vec<String> = fleet
        .api_urls()
        .iter()
        .map(|api| format!("{api}/webhooks/hubspot/{}", fleet.app_id))
        .collect();
    let started = Instant::now();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let per_wave = deliveries.div_ceil(u64::from(WAVES));
        for wave in 0..WAVES {
            // The load phase's own pace: waves are due at fixed points of it.
            let due = started + run_for * wave / WAVES;
            tokio::time::sleep_until(due.into()).await;
            for d in wave as u64 * per_wave..((wave as u64 + 1) * per_wave).min(deliveries) {
                let mut request = DeliverRequest::new(&urls[d as usize % urls.len()], CLIENT_ID)
                    .generate(EVENTS_PER_DELIVERY as usize, HUB_BASE + d % accounts);
                request.batch_size = BATCH_SIZE;
                request.duplicate_rate = 0.1;
                let report = control
                    .deliver_webhooks(&request)
                    .await
                    .expect("start a delivery");
                ids.push(report.id);
            }
        }
        ids
    })
}

/// Waits for `waiting`; returns `what` and the time since `since`.
async fn timed(
    since: Instant,
    what: &'static str,
    waiting: impl std::future::Future<Output = ()>,
) -> (&'static str, Duration) {
    waiting.await;
    (what, since.elapsed())
}

/// Runs `hubkeeper replay` over every projection; returns its summary line.
fn replay(env: &TestEnv) -> String {
    let out = std::process::Command::new(hubkeeper_testkit::hubkeeper_binary())
        .args(["replay", "--projection", "all"])
        .env("DATABASE_URL", env.database_url())
        .env("HK_LOG", "warn")
        .output()
        .expect("run hubkeeper replay");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "replay failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_run_survives_killing_one_of_each_role_and_a_nats_node() {
    let accounts = knob("HK_SCALE_ACCOUNTS", 150);
    let run_for = Duration::from_secs(knob("HK_SCALE_SECS", 90));
    // At least one delivery per wave: webhooks must keep coming after the kills.
    let deliveries = knob("HK_SCALE_WEBHOOKS", 3_000)
        .div_ceil(EVENTS_PER_DELIVERY)
        .max(u64::from(WAVES));
    let unique = (deliveries * EVENTS_PER_DELIVERY) as i64;

    let env = TestEnv::start().await;
    let mut cluster = NatsCluster::start(
        &env.path().join("nats-cluster"),
        &env.path().join("logs"),
        3,
    )
    .await;
    let mut spec = FleetSpec::new(RotationMode::Off, accounts);
    spec.relays = 3;
    spec.projectors = 3;
    spec.schedulers = 3;
    spec.refreshers = 3;
    spec.webhook_workers = 3;
    // HubSpot's 24 hours of retries compressed to a minute: longer than the killed API is down.
    spec.webhook_retry_schedule = Some(
        [
            500u64, 1000, 2000, 3000, 5000, 5000, 10_000, 10_000, 10_000, 15_000,
        ]
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect(),
    );
    spec.extra_env = [
        ("NATS_URL", cluster.url()),
        ("HK_NATS_REPLICAS", "3".into()),
        ("HK_WEBHOOK_ACK_WAIT_SECS", "3".into()),
        ("HK_WEBHOOK_BACKOFF_MS", "200,500,1000,2000".into()),
        ("HK_PROJECTOR_ACK_WAIT_SECS", "3".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let started = Instant::now();
    let mut fleet = start_fleet(env, &spec).await;
    let pool = fleet.env.pool();
    let fleet_up = started.elapsed();

    let installing = Instant::now();
    let installed = install_all(&fleet, accounts).await;
    let install_time = installing.elapsed();
    let ids: Vec<String> = installed.into_iter().map(|(_, id)| id).collect();

    // The load: token clients on both APIs, webhook waves.
    let load_started = Instant::now();
    let load_start = Utc::now();
    let load = TokenLoad::start(&fleet, Arc::new(ids), 16, load_started + run_for);
    let webhook_jobs = deliver_webhooks(&fleet, deliveries, accounts, run_for);

    // Midway: SIGKILL one process of every role, the leaders where there is one, and the node
    // leading JetStream.
    tokio::time::sleep(run_for / 2).await;
    let relay = leader_index(&fleet.relays, "relay took the lead").expect("a relay leads");
    let scheduler =
        leader_index(&fleet.schedulers, "scheduler took the lead").expect("a scheduler leads");
    let leader_node = meta_leader(&fleet.http, &cluster)
        .await
        .expect("JetStream has a meta leader");
    let node = cluster
        .nodes()
        .iter()
        .position(|n| n.name == leader_node)
        .expect("the leader is one of our nodes");
    let relay_leads = leads(&fleet.relays, relay, "relay took the lead");
    let scheduler_leads = leads(&fleet.schedulers, scheduler, "scheduler took the lead");
    let position_before = scalar(&pool, "SELECT max(global_position) FROM events").await;
    let seen_before = webhook_events_seen(&pool).await;

    let killed = Instant::now();
    load.api_killed(1);
    crash(&mut fleet.apis[1].0, &mut fleet.kills);
    crash(&mut fleet.relays[relay], &mut fleet.kills);
    crash(&mut fleet.schedulers[scheduler], &mut fleet.kills);
    crash(&mut fleet.refreshers[0], &mut fleet.kills);
    crash(&mut fleet.projectors[0], &mut fleet.kills);
    crash(&mut fleet.webhook_workers[0], &mut fleet.kills);
    cluster.kill(node);

    // Recovery, each measured from the kill (watched side by side, so no wait inflates another).
    let (relays, schedulers) = (&fleet.relays, &fleet.schedulers);
    let (relay_back, scheduler_back, projection_back, webhooks_back) = tokio::join!(
        timed(
            killed,
            "relay",
            wait_until(
                "a standby relay takes the lead",
                Duration::from_secs(60),
                || {
                    let n = leads(relays, relay, "relay took the lead");
                    async move { n > relay_leads }
                }
            )
        ),
        timed(
            killed,
            "scheduler",
            wait_until(
                "a standby scheduler takes the lead",
                Duration::from_secs(60),
                || {
                    let n = leads(schedulers, scheduler, "scheduler took the lead");
                    async move { n > scheduler_leads }
                }
            )
        ),
        timed(
            killed,
            "projection",
            wait_until(
                "events written after the kill are projected",
                Duration::from_secs(90),
                || async {
                    scalar(&pool, "SELECT max(global_position) FROM rm_activity").await
                        > position_before
                }
            )
        ),
        timed(
            killed,
            "webhooks",
            wait_until(
                "webhook events are processed after the kill",
                Duration::from_secs(90),
                || async { webhook_events_seen(&pool).await > seen_before }
            )
        ),
    );
    let mut recovered = vec![relay_back, scheduler_back, projection_back, webhooks_back];
    cluster.restart(node, Duration::from_secs(90)).await;
    recovered.push(("NATS node back, cluster healthy", killed.elapsed()));
    fleet.respawn_api(1).await;
    recovered.push(("API restarted", killed.elapsed()));

    // Tokens: served all along, never (nearly) expired, accepted by HubSpot.
    let (served, unavailable, _) = load.finish().await;
    let load_time = load_started.elapsed();
    let load_end = Utc::now();
    assert!(served > 1_000, "clients were served tokens: {served}");

    // Webhooks: HubSpot saw every batch accepted (after retries), each unique event processed
    // exactly once.
    let jobs = webhook_jobs.await.expect("webhook deliveries");
    let (mut batches, mut attempts, mut duplicate_batches, mut refused) = (0, 0, 0, 0);
    for id in jobs {
        let report = fleet
            .control
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
            refused += b
                .attempts
                .iter()
                .filter(|a| !a.outcome.is_success())
                .count();
        }
    }
    wait_until(
        "every unique webhook event processed",
        Duration::from_secs(120),
        || async { webhook_events_seen(&pool).await >= unique },
    )
    .await;
    let webhooks_done = load_started.elapsed();
    assert_eq!(
        webhook_events_seen(&pool).await,
        unique,
        "duplicates recorded"
    );
    assert!(duplicate_batches > 0, "the simulator sent duplicates");
    // Counted by the projectors, from the webhook logs' events.
    let counted = || async {
        scalar(
            &pool,
            "SELECT COALESCE(sum(webhook_events), 0)::bigint FROM rm_installations",
        )
        .await
    };
    wait_until(
        "every webhook event counted by the projectors",
        Duration::from_secs(120),
        || async { counted().await >= unique },
    )
    .await;
    assert_eq!(counted().await, unique, "each event counted once");
    let daily = scalar(&pool, "SELECT sum(events)::bigint FROM webhook_usage_daily").await;
    assert_eq!(daily, unique, "daily usage counts each event once");
    let nats = hubkeeper_bus::connect(&secrecy::SecretString::from(cluster.url()), "scale-run")
        .await
        .expect("connect to the cluster");
    let js = hubkeeper_bus::jetstream(nats);
    let mut republished = js
        .get_stream("HK_WEBHOOK_EVENTS")
        .await
        .expect("events stream");
    let info = republished.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3, "streams are replicated");
    assert_eq!(
        info.state.messages as i64, unique,
        "each event republished once"
    );
    wait_until(
        "every webhook batch acknowledged",
        Duration::from_secs(60),
        || async {
            match js.get_stream("HK_WEBHOOKS").await {
                Ok(mut raw) => raw.info().await.is_ok_and(|i| i.state.messages == 0),
                Err(_) => false,
            }
        },
    )
    .await;
    let dead = hubkeeper_bus::dead_letter::list(&js, None, 10, None)
        .await
        .expect("list dead letters");
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");

    // Stop every writer, so that the simulator's counters and the event store describe the same
    // run, and the read models can settle.
    // Each must still be running and exit cleanly: a crash nobody caused fails the run.
    for p in fleet
        .apis
        .iter_mut()
        .map(|(p, _)| p)
        .chain(fleet.schedulers.iter_mut())
        .chain(fleet.refreshers.iter_mut())
        .chain(fleet.webhook_workers.iter_mut())
        .filter(|p| !p.was_stopped())
    {
        p.stop(Duration::from_secs(20));
    }

    // Refreshes: one per token lifetime, unless a kill explains a second.
    let counters = fleet.control.counters().await.expect("sim counters");
    let figures =
        assert_refresh_discipline(&fleet, &counters, spec.token_lifetime, load_start, load_end);
    let (refreshes, twice) = (figures.calls, figures.explained_repeats);
    let recorded = scalar(
        &pool,
        "SELECT count(*) FROM events WHERE event_type = 'InstallationTokensRefreshed'",
    )
    .await;
    fleet.assert_no_secrets().await;

    // Read models equal a replay: let the projectors catch up, compare.
    // Settled: one activity line per stored event (HubSpot webhook events get none: they are
    // counted), and the same checksums twice in a row (the projectors recount after their
    // commits).
    let last = std::sync::Mutex::new(Vec::new());
    wait_until(
        "every event projected and the read models settled",
        Duration::from_secs(120),
        || async {
            let events = scalar(
                &pool,
                "SELECT count(*) FROM events WHERE aggregate_type <> 'hubspot_webhook_log'",
            )
            .await;
            let activity = scalar(&pool, "SELECT count(*) FROM rm_activity").await;
            let now = checksums(&pool).await;
            let previous = std::mem::replace(&mut *last.lock().unwrap(), now.clone());
            events == activity && now == previous
        },
    )
    .await;
    fleet.stop_survivors();
    let live = checksums(&pool).await;
    snapshot(&pool).await;
    let stored = scalar(&pool, "SELECT count(*) FROM events").await;
    let by_type: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC")
            .fetch_all(&pool)
            .await
            .expect("events by type");
    let by_type: Vec<String> = by_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let replayed = replay(&fleet.env);
    assert_eq!(
        replayed.split_whitespace().nth(1),
        Some(stored.to_string().as_str()),
        "replay read every event once: {replayed}"
    );
    assert_eq!(
        live,
        checksums(&pool).await,
        "live read models and a replay differ:\n{}",
        differences(&pool).await
    );

    let recovery: Vec<String> = recovered
        .iter()
        .map(|(what, after)| format!("{what} {:.1}s", after.as_secs_f64()))
        .collect();
    eprintln!(
        "FIGURES scale run: {accounts} accounts installed in {:.1}s ({:.0}/s; fleet of 2 APIs + \
         15 workers + 3 NATS nodes up in {:.1}s); {:.0}s of load: {served} tokens served \
         ({:.0}/s, {unavailable} requests found their API killed), {refreshes} refresh calls \
         at HubSpot, {recorded} recorded ({twice} installations refreshed twice within one \
         lifetime, each explained by a kill), {unique} unique webhook \
         events in {batches} batches ({duplicate_batches} duplicates, {attempts} requests, \
         {refused} refused or failed) all processed {:.1}s after the load began; recovery after \
         the kills: {}; {stored} events ({}), replay: {replayed}",
        install_time.as_secs_f64(),
        accounts as f64 / install_time.as_secs_f64(),
        fleet_up.as_secs_f64(),
        load_time.as_secs_f64(),
        served as f64 / load_time.as_secs_f64(),
        webhooks_done.as_secs_f64(),
        recovery.join(", "),
        by_type.join(", "),
    );
}
