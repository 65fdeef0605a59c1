//! The event store's global order and the relay to JetStream, against real Postgres and
//! nats-server, with relay processes killed mid-flight.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hubkeeper_bus::registry::RELAY_CURSOR;
use hubkeeper_bus::{RelayedEvent, EVENTS_STREAM};
use hubkeeper_store::{read_after, GlobalCursor};
use hubkeeper_testkit::{
    cursor_at_end, free_port, hubkeeper_binary, wait_until, HkProcess, TestEnv,
};
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

/// Writes one commit the way postgres-es does: one aggregate, consecutive sequences, one
/// transaction. `hold` keeps the transaction open before commit; `abort` rolls it back.
async fn commit_events(
    pool: &PgPool,
    aggregate_id: &str,
    first_sequence: i64,
    count: i64,
    hold: Option<Duration>,
    abort: bool,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for seq in first_sequence..first_sequence + count {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('loadtest', $1, $2, 'Counted', '1.0', $3, '{}')",
        )
        .bind(aggregate_id)
        .bind(seq)
        .bind(serde_json::json!({ "Counted": { "n": seq } }))
        .execute(&mut *tx)
        .await?;
    }
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    if abort {
        tx.rollback().await
    } else {
        tx.commit().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cursor_never_skips_a_transaction_that_commits_late() {
    let env = TestEnv::start().await;
    let pool = env.pool();

    // A writes first (smaller global_position) but commits last.
    let mut slow = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('loadtest', 'slow', 1, 'Counted', '1.0', '{}', '{}')",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    commit_events(&pool, "fast", 1, 1, None, false)
        .await
        .unwrap();

    // The fast event is committed and visible, yet the reader must not pass the slow one.
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(visible, 1, "the fast event is committed");
    let seen = read_after(&pool, GlobalCursor::default(), 100)
        .await
        .unwrap();
    assert!(
        seen.is_empty(),
        "reader advanced past an open transaction: {seen:?}"
    );

    slow.commit().await.unwrap();
    let seen = read_after(&pool, GlobalCursor::default(), 100)
        .await
        .unwrap();
    let ids: Vec<&str> = seen.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(
        ids,
        ["slow", "fast"],
        "commit order: slow's transaction began first"
    );
    assert!(seen[0].global_position < seen[1].global_position);

    // Reading after the last cursor returns nothing more.
    let rest = read_after(&pool, seen[1].cursor(), 100).await.unwrap();
    assert!(rest.is_empty());
}

const WRITERS: usize = 8;
const AGGREGATES_PER_WRITER: usize = 50;
const EVENTS_PER_WRITER: usize = 2_600;

/// Events per relay batch: a SIGKILLed leader can have published at most this many events it had
/// not yet recorded in its cursor, which its successor publishes again.
const BATCH_SIZE: u64 = 200;

/// JetStream's duplicate window for the relayed events, far shorter than the test: a successor
/// republishes the killed leader's last batch within a second or two (dropped as duplicates,
/// counted in `hk_relay_duplicates_total`), but a relay that went back to an older cursor would
/// republish events older than the window, which JetStream would then store twice.
const DUPLICATE_WINDOW_SECS: &str = "10";

/// A relay process with its metrics on a port of its own.
struct Relay {
    process: HkProcess,
    metrics_port: u16,
}

fn spawn_relay(env: &TestEnv, name: &str, logs: &Path) -> Relay {
    let metrics_port = free_port();
    let mut vars = env.process_env();
    vars.push(("HK_RELAY_BATCH_SIZE".into(), BATCH_SIZE.to_string()));
    vars.push((
        "HK_NATS_DUPLICATE_WINDOW_SECS".into(),
        DUPLICATE_WINDOW_SECS.into(),
    ));
    vars.push((
        "HK_METRICS_BIND".into(),
        format!("127.0.0.1:{metrics_port}"),
    ));
    let process = HkProcess::spawn(&hubkeeper_binary(), name, &["worker", "relay"], &vars, logs);
    Relay {
        process,
        metrics_port,
    }
}

/// The relay's `hk_relay_duplicates_total`: publishes JetStream dropped as already stored.
async fn relay_duplicates(relay: &Relay) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", relay.metrics_port))
        .await
        .unwrap_or_else(|e| panic!("{} metrics: {e}", relay.process.name))
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with("hk_relay_duplicates_total"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().expect("counter value") as u64)
}

/// What a successor will publish again after the leader died: the events in JetStream beyond
/// the cursor the relay saved (it saves at most every 100 ms while events keep coming). Read
/// right after the kill, before a standby (retrying every second) takes over.
async fn published_beyond_saved_cursor(pool: &PgPool, js: &async_nats::jetstream::Context) -> u64 {
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE global_position <= (SELECT last_position FROM stream_cursors WHERE name = $1)",
    )
    .bind(RELAY_CURSOR)
    .fetch_one(pool)
    .await
    .expect("count the events below the saved cursor");
    relayed_count(js).await.saturating_sub(recorded as u64)
}

async fn relayed_count(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream(EVENTS_STREAM).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// 8 concurrent writers append 20,000+ events over 400 aggregates (some transactions held open,
/// some rolled back) while relay processes run; relays are SIGKILLed and replaced twice. JetStream
/// must end up with every committed event exactly once, each aggregate's events in order, no gap,
/// with a duplicate window shorter than the test, and the relays must have published again no
/// more than the kills explain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_delivers_every_event_once_in_order_across_relay_crashes() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let logs = env.path().join("logs");
    let mut relays = vec![
        spawn_relay(&env, "relay-a", &logs),
        spawn_relay(&env, "relay-b", &logs),
    ];

    let written = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            let mut next_seq: HashMap<String, i64> = HashMap::new();
            let mut done = 0usize;
            let mut commits = 0usize;
            while done < EVENTS_PER_WRITER {
                let agg = format!("w{w}-a{}", rng.gen_range(0..AGGREGATES_PER_WRITER));
                let count = rng.gen_range(1..=4).min((EVENTS_PER_WRITER - done) as i64);
                let first = *next_seq.get(&agg).unwrap_or(&1);
                commits += 1;
                // Every 40th commit is held open a while; every 25th is rolled back.
                let hold = commits
                    .is_multiple_of(40)
                    .then(|| Duration::from_millis(rng.gen_range(100..600)));
                let abort = commits.is_multiple_of(25);
                commit_events(&pool, &agg, first, count, hold, abort)
                    .await
                    .expect("write");
                if !abort {
                    next_seq.insert(agg, first + count);
                    done += count as usize;
                    written.fetch_add(count as usize, Ordering::Relaxed);
                }
            }
            next_seq
        }));
    }

    // Kill the relays one after the other while the writers run, replacing each.
    let client = env.nats_client().await;
    let js = hubkeeper_bus::jetstream(client.clone());
    let total = WRITERS * EVENTS_PER_WRITER;
    let (mut duplicates, mut kills, mut unrecorded) = (0u64, 0u64, 0u64);
    for (round, name) in ["relay-c", "relay-d"].into_iter().enumerate() {
        let threshold = (round as u64 + 1) * total as u64 / 4;
        wait_until("relay makes progress", Duration::from_secs(120), || async {
            relayed_count(&js).await >= threshold
        })
        .await;
        let mut victim = relays.remove(0);
        // Its count dies with it: read it just before the kill (a relay only meets duplicates
        // when it takes over, long before this).
        duplicates += relay_duplicates(&victim).await;
        victim.process.crash();
        kills += 1;
        unrecorded += published_beyond_saved_cursor(&pool, &js).await;
        relays.push(spawn_relay(&env, name, &logs));
    }

    let mut expected: HashMap<String, i64> = HashMap::new();
    for writer in writers {
        for (agg, next) in writer.await.expect("writer task") {
            expected.insert(agg, next - 1);
        }
    }
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        committed as usize, total,
        "writers committed what they counted"
    );
    assert_eq!(written.load(Ordering::Relaxed), total);

    // Settled: the leader's saved cursor is at the last event (nothing is left to publish), and
    // it is still there once the stream has been counted.
    wait_until(
        "the relay's cursor reaches the last event",
        Duration::from_secs(180),
        || cursor_at_end(&pool, RELAY_CURSOR),
    )
    .await;
    let stream = js.get_stream(EVENTS_STREAM).await.unwrap();
    let last = relayed_count(&js).await;
    assert!(
        cursor_at_end(&pool, RELAY_CURSOR).await,
        "the relay moved on"
    );
    assert_eq!(
        last, total as u64,
        "JetStream holds exactly one message per event"
    );

    let mut seen_ids = HashSet::new();
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.expect("stream message");
        let event: RelayedEvent = serde_json::from_slice(&msg.payload).expect("envelope");
        let id = msg
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string())
            .expect("Nats-Msg-Id header");
        assert_eq!(id, event.message_id());
        assert_eq!(msg.subject.as_str(), event.subject());
        assert!(seen_ids.insert(id.clone()), "duplicate message {id}");
        let prev = last_seq
            .insert(event.aggregate_id.clone(), event.sequence)
            .unwrap_or(0);
        assert_eq!(
            event.sequence,
            prev + 1,
            "aggregate {} out of order or with a gap at stream seq {seq}",
            event.aggregate_id
        );
    }
    assert_eq!(
        last_seq, expected,
        "every aggregate complete up to its last event"
    );

    // Every duplicate publish is explained by a kill: what the killed leader had published
    // beyond its saved cursor, republished once by its successor (plus a batch per kill, for a
    // standby that took over and saved before the count was read).
    for relay in &relays {
        duplicates += relay_duplicates(relay).await;
    }
    assert!(
        duplicates <= unrecorded + kills * BATCH_SIZE,
        "{duplicates} events published again, more than {kills} kills of a leader that had \
         published {unrecorded} events beyond its saved cursor explain (batches of {BATCH_SIZE})"
    );

    for relay in relays.iter_mut() {
        relay.process.stop(Duration::from_secs(20));
    }
    let logs_text: String = relays.iter().map(|r| r.process.log_text()).collect();
    assert!(
        logs_text.contains("relay took the lead"),
        "a replacement relay took over"
    );
    eprintln!("relay: {kills} leader kills, {duplicates} duplicate publishes");
}
