//! The refresh scheduler against real Postgres and nats-server.

use futures::StreamExt;
use hubkeeper_bus::{ensure_streams, StreamsConfig, REFRESH_SUBJECT_PREFIX};
use hubkeeper_testkit::TestEnv;
use hubkeeper_workers::scheduler::{RefreshScheduler, SchedulerConfig, TickOutcome};
use sqlx::PgPool;

/// `n` connected installations whose tokens expire in a minute, straight into the read model
/// the scheduler reads (no app row: an app without one is not parked).
async fn due_installations(pool: &PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO rm_installations (installation_id, app_id, hub_id, hub_domain, status,
                                       status_changed_at, first_connected_at, last_connected_at,
                                       access_expires_at, last_sequence, last_position,
                                       updated_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 1000 + i, 'hub' || i || '.example.com',
                'connected', now(), now(), now(), now() + interval '1 minute', 1, i, now()
           FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .expect("due installations");
}

/// While a backlog of due installations is worked off, every tick sees them again. A command
/// this scheduler had acknowledged moments ago is not sent again (JetStream would drop it as a
/// duplicate anyway); a scheduler without that memory, such as a new leader, sends it and
/// JetStream drops it. Counted on the wire: a core subscription sees every publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_does_not_send_again_what_jetstream_would_drop() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let nats = env.nats_client().await;
    let js = hubkeeper_bus::jetstream(nats.clone());
    ensure_streams(&js, &StreamsConfig::default())
        .await
        .expect("streams");
    due_installations(&pool, 5).await;
    let mut wire = nats
        .subscribe(format!("{REFRESH_SUBJECT_PREFIX}.>"))
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");

    let scheduler = RefreshScheduler::new(pool.clone(), js.clone(), SchedulerConfig::default());
    let first = scheduler.tick().await.expect("first tick");
    assert_eq!(
        first,
        TickOutcome {
            enqueued: 5,
            already_queued: 0
        }
    );
    let again = scheduler.tick().await.expect("second tick");
    assert_eq!(
        again,
        TickOutcome {
            enqueued: 0,
            already_queued: 5
        },
        "known to be queued"
    );
    let successor = RefreshScheduler::new(pool.clone(), js.clone(), SchedulerConfig::default());
    let from_successor = successor.tick().await.expect("successor's tick");
    assert_eq!(
        from_successor,
        TickOutcome {
            enqueued: 0,
            already_queued: 5
        },
        "sent again and dropped by JetStream"
    );

    // Everything published on this connection arrives in order: what came before the marker
    // is every publish of the three ticks.
    let marker = format!("{REFRESH_SUBJECT_PREFIX}.test-marker");
    nats.publish(marker.clone(), "end".into())
        .await
        .expect("marker");
    let mut publishes = 0;
    while let Some(message) = tokio::time::timeout(std::time::Duration::from_secs(30), wire.next())
        .await
        .expect("the marker arrives")
    {
        if message.subject.as_str() == marker {
            break;
        }
        publishes += 1;
    }
    assert_eq!(
        publishes, 10,
        "5 by the first tick, none by the second, 5 by the successor"
    );
}
