//! The dead-letter table (logs database, PostgreSQL): queue entries that cannot be written, kept whole with
//! why, so that nothing leaves the queue without an outcome. Written through the write port, in the
//! transaction that moves the shard's offset past the entry; read, replayed and discarded by
//! `ledger dead-letter`.
//!
//! Two reasons put an entry here: it cannot be decoded (`undecodable`), or PostgreSQL refuses its logs for
//! a data reason (`refused`: a SQLSTATE of class 22, 23 or 54, found by writing a refused batch's entries
//! one at a time). Anything else (a connection lost, a timeout) is transient and retried.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Why an entry was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Undecodable,
    Refused,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Refused => "refused",
        }
    }
}

/// One queue entry on its way to the table.
#[derive(Debug)]
pub struct Poison {
    pub shard: i32,
    pub entry_id: String,
    pub project: Option<Uuid>,
    pub logs: i32,
    pub reason: Reason,
    pub detail: String,
    pub payload: Option<Vec<u8>>,
}

/// A stored dead letter, as listed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub shard: i32,
    pub entry_id: String,
    pub project_id: Option<Uuid>,
    pub logs: i32,
    pub reason: String,
    pub detail: String,
    pub failed_at: DateTime<Utc>,
}

/// Whether PostgreSQL refused a write for what the data holds (retrying cannot help), rather than for a
/// passing reason.
pub(crate) fn is_data_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
        }
        _ => false,
    }
}

/// Stores `poison` in the caller's transaction.
pub(crate) async fn store(conn: &mut PgConnection, poison: &Poison) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (shard, entry_id, project_id, logs, reason, detail, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(poison.shard)
    .bind(&poison.entry_id)
    .bind(poison.project)
    .bind(poison.logs)
    .bind(poison.reason.as_str())
    .bind(&poison.detail)
    .bind(poison.payload.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

/// Every dead letter, oldest first.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, shard, entry_id, project_id, logs, reason, detail, failed_at FROM dead_letters ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// A dead letter taken out of the table, with what it takes to queue it again.
#[derive(Debug, sqlx::FromRow)]
pub struct Taken {
    pub shard: i32,
    pub project_id: Option<Uuid>,
    pub logs: i32,
    pub payload: Option<Vec<u8>>,
}

/// Takes dead letters out of the table (all of them, or those with the given ids), handing each to `then`
/// inside its transaction: the row is deleted only if `then` succeeds. How many were taken.
pub(crate) async fn take<F, Fut>(pool: &PgPool, ids: Option<&[i64]>, mut then: F) -> Result<usize, String>
where
    F: FnMut(Taken) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let wanted: Vec<i64> = match ids {
        Some(ids) => ids.to_vec(),
        None => sqlx::query_scalar("SELECT id FROM dead_letters ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?,
    };
    let mut taken = 0;
    for id in wanted {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        let row: Option<Taken> =
            sqlx::query_as("DELETE FROM dead_letters WHERE id = $1 RETURNING shard, project_id, logs, payload")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
        let Some(letter) = row else {
            return Err(format!("no dead letter {id}"));
        };
        then(letter).await?;
        tx.commit().await.map_err(|e| e.to_string())?;
        taken += 1;
    }
    Ok(taken)
}
