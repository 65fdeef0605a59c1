//! Installation counts of `rm_apps`, recounted from `rm_installations`.
//!
//! Counts span two aggregates (an installation changes, its app's row counts it), and the events
//! of different aggregates are projected concurrently by different workers. Incrementing inside
//! the installation's transaction would need the app row there too and invite lock-order
//! deadlocks between batches. Instead, after committing, a worker recounts the apps it touched,
//! in a transaction of its own holding a per-app advisory lock: recounts of one app are
//! serialised, each one runs after its own worker's commit and sees every commit before it, so
//! the last recount of an app always sees every installation change. A crash between commit and
//! recount leaves a count stale until the next change of that app or the next projector start
//! (which recounts everything).

use hubkeeper_bus::registry::RECOUNT_LOCK_CLASS;
use sqlx::PgPool;
use uuid::Uuid;

/// Recounts the installation counts of `apps` in `apps_table` from `installations_table`.
pub async fn recount_apps(
    pool: &PgPool,
    apps_table: &str,
    installations_table: &str,
    apps: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut apps = apps.to_vec();
    apps.sort();
    apps.dedup();
    for app in apps {
        let mut tx = pool.begin().await?;
        recount_one(&mut tx, apps_table, installations_table, app).await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn recount_one(
    conn: &mut sqlx::PgConnection,
    apps_table: &str,
    installations_table: &str,
    app: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(RECOUNT_LOCK_CLASS.class)
        .bind(app.to_string())
        .execute(&mut *conn)
        .await?;
    // A new statement, so a new snapshot: taken after the lock, it sees every commit that
    // preceded the previous holder's recount.
    sqlx::query(&format!(
        "UPDATE {apps_table} a SET
            installation_count = c.total, active_installation_count = c.active
           FROM (SELECT count(*) AS total, count(*) FILTER (WHERE status = 'connected') AS active
                   FROM {installations_table} WHERE app_id = $1) c
          WHERE a.app_id = $1
            AND (a.installation_count, a.active_installation_count) IS DISTINCT FROM (c.total, c.active)"
    ))
    .bind(app)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Recounts every app in one statement, inside the caller's transaction (replay swaps and
/// projector start-up).
pub async fn recount_all(
    conn: &mut sqlx::PgConnection,
    apps_table: &str,
    installations_table: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(&format!(
        "UPDATE {apps_table} a SET
            installation_count = COALESCE(c.total, 0), active_installation_count = COALESCE(c.active, 0)
           FROM {apps_table} a2
           LEFT JOIN (SELECT app_id, count(*) AS total,
                             count(*) FILTER (WHERE status = 'connected') AS active
                        FROM {installations_table} GROUP BY app_id) c ON c.app_id = a2.app_id
          WHERE a.app_id = a2.app_id
            AND (a.installation_count, a.active_installation_count)
                IS DISTINCT FROM (COALESCE(c.total, 0), COALESCE(c.active, 0))"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
