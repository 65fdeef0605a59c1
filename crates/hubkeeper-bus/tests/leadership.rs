//! Leader election against a real Postgres: one of two contenders leads; when its session dies
//! it stops and the other takes over; shutdown releases the lock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hubkeeper_bus::registry::LockKey;
use hubkeeper_bus::{run_as_leader, LeaderRole, LeaderWork, Leadership};
use hubkeeper_testkit::{wait_until, TestEnv};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Recorded nowhere: no metrics recorder is installed in this test.
const TEST_LEADER_GAUGE: &str = "hk_test_role_leader";
const TEST_ERRORS_COUNTER: &str = "hk_test_role_errors_total";

const LOCK: LockKey = LockKey {
    name: "test role",
    key: 0x7465_7374,
    leader_gauge: TEST_LEADER_GAUGE,
    errors_counter: TEST_ERRORS_COUNTER,
};

/// The contender leading now (name, backend pid of its lock session) and every lead taken.
#[derive(Clone, Default)]
struct Board {
    current: Arc<Mutex<Option<(&'static str, i32)>>>,
    leads: Arc<Mutex<Vec<&'static str>>>,
}

impl Board {
    fn current(&self) -> Option<(&'static str, i32)> {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Contender {
    name: &'static str,
    board: Board,
}

impl LeaderWork for Contender {
    type Error = sqlx::Error;

    async fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(leadership.connection())
            .await?;
        *self
            .board
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((self.name, pid));
        self.board
            .leads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.name);
        let result = async {
            while !shutdown.is_cancelled() {
                leadership.confirm().await?;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            Ok(())
        }
        .await;
        let mut current = self
            .board
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.is_some_and(|(name, _)| name == self.name) {
            *current = None;
        }
        result
    }
}

/// Backend pids holding the test lock.
async fn holders(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(LOCK.key)
    .fetch_all(pool)
    .await
    .expect("pg_locks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leaders_session_dies_and_shutdown_releases() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let role = LeaderRole::new(LOCK, Duration::from_millis(50), Duration::from_millis(50));
    let board = Board::default();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for name in ["first", "second"] {
        let (pool, role, shutdown) = (pool.clone(), role.clone(), shutdown.clone());
        let work = Contender {
            name,
            board: board.clone(),
        };
        tasks.push(tokio::spawn(async move {
            run_as_leader(&pool, &role, &work, &shutdown).await
        }));
    }

    wait_until("a contender leads", Duration::from_secs(10), || {
        let board = board.clone();
        async move { board.current().is_some() }
    })
    .await;
    let (leader, pid) = board.current().expect("a leader");
    assert_eq!(
        holders(&pool).await,
        [pid],
        "only the leader's session holds the lock"
    );

    // The leader's session dies (as when its process or network does).
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&pool)
        .await
        .expect("terminate");
    assert!(terminated);
    wait_until("the other contender leads", Duration::from_secs(10), || {
        let board = board.clone();
        async move { board.current().is_some_and(|(name, _)| name != leader) }
    })
    .await;
    let (successor, successor_pid) = board.current().expect("a leader");
    assert_ne!(successor, leader);
    assert_eq!(holders(&pool).await, [successor_pid]);
    assert_eq!(
        *board.leads.lock().unwrap_or_else(PoisonError::into_inner),
        [leader, successor],
        "one lead each: the old leader stood by once its session was gone"
    );

    shutdown.cancel();
    for task in tasks {
        task.await.expect("the loop stops on shutdown");
    }
    assert!(
        holders(&pool).await.is_empty(),
        "shutdown releases the lock"
    );
}
