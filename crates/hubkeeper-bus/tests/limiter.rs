//! The shared rate limiter against a real Postgres: exact sliding windows, FIFO reservations,
//! refusals with the time to the next slot, blocks, clearing and the sweep; two limiters on two
//! pools (as two processes would hold) share one budget.

use std::time::{Duration, Instant};

use hubkeeper_bus::limiter::{Limit, Reservation, SharedRateLimiter};
use hubkeeper_testkit::TestEnv;

fn limit(max: u32, window_ms: u64, max_wait_ms: u64) -> Limit {
    Limit {
        max,
        window: Duration::from_millis(window_ms),
        max_wait: Duration::from_millis(max_wait_ms),
    }
}

async fn second_pool(env: &TestEnv) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&env.database_url())
        .await
        .expect("second pool")
}

#[tokio::test]
async fn two_processes_share_one_budget_and_waiters_are_spread_over_windows() {
    let env = TestEnv::start().await;
    let a = SharedRateLimiter::new(env.pool());
    let b = SharedRateLimiter::new(second_pool(&env).await);
    let l = limit(5, 1000, 5000);
    // Ten reservations alternating between the two "processes": five now, five one window on.
    let mut waits = Vec::new();
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        match limiter.reserve("portal:1", l).await.unwrap() {
            Reservation::Granted(wait) => waits.push(wait),
            other => panic!("reservation {i} refused: {other:?}"),
        }
    }
    let immediate = waits.iter().filter(|w| w.is_zero()).count();
    assert_eq!(immediate, 5, "the first five go at once: {waits:?}");
    for w in &waits[5..] {
        // One window after the first five, less the time the reservations themselves took.
        assert!(
            *w >= Duration::from_millis(500) && *w <= Duration::from_millis(1000),
            "the next five wait for the first to leave the window: {waits:?}"
        );
    }
    assert_eq!(a.in_window("portal:1", l.window).await.unwrap(), 10);
    // Other buckets are independent.
    assert!(matches!(
        b.reserve("portal:2", l).await.unwrap(),
        Reservation::Granted(w) if w.is_zero()
    ));
}

#[tokio::test]
async fn a_full_window_refuses_with_the_time_to_the_next_slot() {
    let env = TestEnv::start().await;
    let limiter = SharedRateLimiter::new(env.pool());
    let l = Limit::refuse_when_full(3, Duration::from_secs(60));
    for _ in 0..3 {
        assert!(matches!(
            limiter.reserve("login:203.0.113.7", l).await.unwrap(),
            Reservation::Granted(_)
        ));
    }
    match limiter.reserve("login:203.0.113.7", l).await.unwrap() {
        Reservation::RetryAfter(after) => assert!(
            after > Duration::from_secs(55) && after <= Duration::from_secs(60),
            "{after:?}"
        ),
        other => panic!("a fourth request in the window passed: {other:?}"),
    }
    assert_eq!(
        limiter
            .in_window("login:203.0.113.7", l.window)
            .await
            .unwrap(),
        3,
        "a refusal reserves nothing"
    );
    assert_eq!(limiter.clear("login:").await.unwrap(), 1);
    assert!(matches!(
        limiter.reserve("login:203.0.113.7", l).await.unwrap(),
        Reservation::Granted(_)
    ));
    limiter.forget("login:203.0.113.7").await.unwrap();
    assert_eq!(
        limiter
            .in_window("login:203.0.113.7", l.window)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn no_window_ever_holds_more_than_the_limit_under_concurrency() {
    let env = TestEnv::start().await;
    let pools = [env.pool(), second_pool(&env).await];
    let l = limit(20, 500, 10_000);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let limiter = SharedRateLimiter::new(pools[i % 2].clone());
        tasks.push(tokio::spawn(async move {
            limiter.reserve("portal:9", l).await.unwrap()
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Reservation::Granted(wait) => waits.push(wait),
            other => panic!("refused within the deadline: {other:?}"),
        }
    }
    waits.sort();
    // Sixty at 20 per 500 ms: forty must wait (how long depends on how fast the reservations
    // themselves came in; the instants below are the exact check).
    assert!(waits[20..].iter().all(|w| !w.is_zero()), "{waits:?}");
    // The reserved send instants, as the database holds them: twenty-one in a row never fit
    // in one window.
    let slots: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT s FROM rate_limit_windows, unnest(slots) AS s WHERE bucket = 'portal:9' ORDER BY s",
    )
    .fetch_all(&env.pool())
    .await
    .unwrap();
    assert_eq!(slots.len(), 60);
    for run in slots.windows(21) {
        assert!(
            run[20] - run[0] >= chrono::Duration::milliseconds(500),
            "21 slots within {}",
            run[20] - run[0]
        );
    }
    // And a caller that acquires sleeps until its slot.
    let limiter = SharedRateLimiter::new(env.pool());
    let started = Instant::now();
    let waited = limiter.acquire("portal:9", l).await.unwrap().unwrap();
    assert!(started.elapsed() >= waited && waited > Duration::from_millis(500));
}

#[tokio::test]
async fn a_deadline_shorter_than_the_wait_is_refused_and_a_block_delays_new_slots() {
    let env = TestEnv::start().await;
    let limiter = SharedRateLimiter::new(env.pool());
    let l = limit(1, 10_000, 100);
    assert!(matches!(
        limiter.reserve("portal:3", l).await.unwrap(),
        Reservation::Granted(_)
    ));
    match limiter.reserve("portal:3", l).await.unwrap() {
        Reservation::RetryAfter(after) => assert!(after > Duration::from_secs(9), "{after:?}"),
        other => panic!("{other:?}"),
    }
    limiter
        .block("portal:4", Duration::from_secs(5))
        .await
        .unwrap();
    match limiter
        .reserve("portal:4", limit(100, 10_000, 0))
        .await
        .unwrap()
    {
        Reservation::RetryAfter(after) => assert!(
            after > Duration::from_secs(4) && after <= Duration::from_secs(5),
            "{after:?}"
        ),
        other => panic!("a blocked bucket granted a slot: {other:?}"),
    }
}

#[tokio::test]
async fn expired_buckets_are_swept() {
    let env = TestEnv::start().await;
    let limiter = SharedRateLimiter::new(env.pool());
    let l = Limit::refuse_when_full(5, Duration::from_millis(50));
    for i in 0..30 {
        limiter
            .reserve(&format!("oauth:10.0.0.{i}"), l)
            .await
            .unwrap();
    }
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rate_limit_windows")
            .fetch_one(&env.pool())
            .await
            .unwrap()
    };
    assert_eq!(rows().await, 30);
    hubkeeper_testkit::wait_until("windows passed", Duration::from_secs(5), || async {
        limiter.sweep().await.unwrap();
        rows().await == 0
    })
    .await;
}
