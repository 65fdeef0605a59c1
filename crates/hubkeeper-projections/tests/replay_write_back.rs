//! A replay's fill keeps rows in memory across batches and writes them back later: whatever the
//! batch size and however small its memory bound (rows written, dropped and loaded again), the
//! rebuilt read models equal the ones the live path builds batch by batch. The history has
//! status changes, scheduled and cancelled removals and webhook events counted for installations
//! changed in the same and in earlier batches, so status periods and webhook counts span
//! batches.

#[path = "../../../tests/support/read_side.rs"]
mod support;

use chrono::{DateTime, Duration, TimeZone, Utc};
use hubkeeper_domain::AppId;
use hubkeeper_projections::counts::recount_all;
use hubkeeper_projections::{apply_events, replay, ProjectedEvent, ReplayOptions, Tables};
use hubkeeper_store::{read_after, GlobalCursor};
use hubkeeper_testkit::TestEnv;
use sqlx::PgPool;
use support::{
    app_rows, checksums, connected_row, insert_rows, lifecycle_row, removal_row, webhook_row, Row,
};

const INSTALLATIONS: u64 = 40;
const ROUNDS: i64 = 12;
const HUB_BASE: u64 = 70_000_000;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 8, 0, 0)
        .single()
        .expect("a valid time")
}

fn apps() -> [AppId; 2] {
    [1u128, 2].map(|n| {
        AppId::from_uuid(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 + n,
        ))
    })
}

/// Round `r`: the r-th event of every installation and, every third round, a webhook event for
/// each after it (and a few unrouted ones).
fn round(r: i64) -> Vec<Row> {
    let apps = apps();
    let mut rows: Vec<Row> = (0..INSTALLATIONS)
        .map(|k| {
            let app = apps[(k % 2) as usize];
            let hub = HUB_BASE + k;
            let at = start() + Duration::minutes(r * 700 + k as i64);
            match r {
                0 => connected_row(app, hub, at, at + Duration::minutes(30)),
                4 if k % 4 == 0 => removal_row(app, hub, k, r + 1, at, false),
                5 if k % 8 == 0 => removal_row(app, hub, k, r + 1, at, true),
                _ => lifecycle_row(app, hub, k, r + 1, at),
            }
        })
        .collect();
    if r % 3 == 1 {
        let n = r / 3 + 1;
        rows.extend((0..INSTALLATIONS).map(|k| {
            let app = apps[(k % 2) as usize];
            let at = start() + Duration::minutes(r * 700 + k as i64) + Duration::seconds(1);
            webhook_row(app, Some(HUB_BASE + k), n, k * 100 + n as u64, at)
        }));
        rows.push(webhook_row(
            apps[0],
            None,
            n,
            9_000_000 + n as u64,
            start() + Duration::minutes(r * 700),
        ));
    }
    rows
}

/// The live path: every event applied in batches of `batch` with [`apply_events`], then the
/// app counts recounted (the live projector does that after its commits).
async fn project_live(pool: &PgPool, batch: i64) {
    let mut cursor = GlobalCursor::default();
    loop {
        let stored = read_after(pool, cursor, batch).await.expect("read");
        let Some(last) = stored.last().map(|e| e.cursor()) else {
            break;
        };
        cursor = last;
        let events: Vec<ProjectedEvent> = stored
            .into_iter()
            .map(ProjectedEvent::from_stored)
            .collect();
        let mut tx = pool.begin().await.expect("begin");
        apply_events(&mut tx, &Tables::live(), &events)
            .await
            .expect("apply");
        tx.commit().await.expect("commit");
    }
    let mut conn = pool.acquire().await.expect("connection");
    recount_all(&mut conn, "rm_apps", "rm_installations")
        .await
        .expect("recount");
}

#[tokio::test]
async fn replays_with_rows_kept_across_batches_and_evicted_equal_the_live_path() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let [first, second] = apps();
    let mut history = app_rows(first, "First", start() - Duration::days(1));
    history.extend(app_rows(second, "Second", start() - Duration::days(1)));
    insert_rows(&pool, &history).await.expect("apps");
    for r in 0..ROUNDS {
        let mut rows = round(r);
        if r == 0 {
            // Text that `COPY` must escape, in an activity line's actor.
            rows[0].metadata["actor"] = "key:ak\\odd\tactor\nname".into();
        }
        insert_rows(&pool, &rows).await.expect("round");
    }

    project_live(&pool, 13).await;
    let live = checksums(&pool).await;
    let periods: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_installation_status_periods WHERE ended_at IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("periods");
    assert!(periods > INSTALLATIONS as i64, "status changes span rounds");
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(webhook_events)::bigint FROM rm_installations")
            .fetch_one(&pool)
            .await
            .expect("webhook counts");
    assert_eq!(counted, INSTALLATIONS as i64 * 4);

    // (batch size, aggregates held): everything in one batch; rows held across tiny batches (a
    // webhook event and its installation's change in the same and in different batches); and a
    // bound far below the fleet, so rows are written, dropped and loaded again all along.
    for (batch_size, cache_aggregates) in
        [(5000, 200_000), (1, 200_000), (3, 200_000), (3, 5), (7, 1)]
    {
        let report = replay(
            &pool,
            &ReplayOptions {
                batch_size,
                cache_aggregates,
                ..ReplayOptions::default()
            },
            |_| {},
        )
        .await
        .expect("replay");
        assert_eq!(report.caught_up, 0);
        assert_eq!(
            checksums(&pool).await,
            live,
            "replay with batches of {batch_size} holding {cache_aggregates} aggregates"
        );
    }
}
