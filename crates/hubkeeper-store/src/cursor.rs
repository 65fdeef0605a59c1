//! Durable reader positions. A reader saves its cursor only after the work for every event up to
//! it is done (for the relay: acknowledged by JetStream), so a crash replays, never skips.

use sqlx::{PgExecutor, Row};

use crate::log::GlobalCursor;

pub async fn load_cursor<'e, E: PgExecutor<'e>>(
    executor: E,
    name: &str,
) -> Result<GlobalCursor, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO stream_cursors (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
         RETURNING last_tx::text AS last_tx, last_position",
    )
    .bind(name)
    .fetch_one(executor)
    .await?;
    let tx: String = row.try_get("last_tx")?;
    Ok(GlobalCursor {
        tx: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: "last_tx".into(),
            source: Box::new(e),
        })?,
        position: row.try_get("last_position")?,
    })
}

pub async fn save_cursor<'e, E: PgExecutor<'e>>(
    executor: E,
    name: &str,
    cursor: GlobalCursor,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stream_cursors (name, last_tx, last_position, updated_at)
         VALUES ($1, $2::text::xid8, $3, now())
         ON CONFLICT (name) DO UPDATE
            SET last_tx = EXCLUDED.last_tx, last_position = EXCLUDED.last_position,
                updated_at = now()",
    )
    .bind(name)
    .bind(cursor.tx.to_string())
    .bind(cursor.position)
    .execute(executor)
    .await?;
    Ok(())
}
