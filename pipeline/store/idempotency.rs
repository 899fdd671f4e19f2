//! The embedded backend's idempotency keys: claims in flight in memory (a claim of a process that stops
//! lapses anyway), answers in the logs file's `idempotency_keys` table, so that a retry after a graceful
//! restart or a crash is answered as before it. The embedded queue writes a batch's answer in the
//! transaction that commits the batch ([`crate::store::logs::WriteBatch::answers`]); [`complete`] writes it
//! too, for answers no batch carries (a request whose logs were all sampled out).
//!
//! [`complete`]: IdempotencyStore::complete

use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::memory::MemoryIdempotency;
use super::{Claim, IdempotencyStore, StoreError};

pub struct SqliteIdempotency {
    pool: SqlitePool,
    claims: MemoryIdempotency,
}

impl SqliteIdempotency {
    pub(crate) fn new(pool: SqlitePool) -> SqliteIdempotency {
        SqliteIdempotency { pool, claims: MemoryIdempotency::default() }
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable { what: "the logs file", cause: e.to_string() }
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotency {
    async fn claim(&self, project: Uuid, key: &str, pending: Duration) -> Result<Claim, StoreError> {
        let now = chrono::Utc::now().timestamp_micros();
        let kept: Option<(String,)> =
            sqlx::query_as("SELECT answer FROM idempotency_keys WHERE project_id = ? AND key = ? AND expires_at > ?")
                .bind(project)
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        match kept {
            Some((answer,)) => Ok(Claim::Answered(answer)),
            None => self.claims.claim(project, key, pending).await,
        }
    }

    async fn complete(&self, project: Uuid, key: &str, answer: &str, keep: Duration) -> Result<(), StoreError> {
        let expires_at = chrono::Utc::now() + keep;
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let kept = super::logs::KeptAnswer { project, key, answer, expires_at };
        super::logs::sqlite::keep_answer(&mut conn, &kept).await.map_err(unavailable)?;
        // Lapsed answers go as new ones come: the table holds about ten minutes of keys.
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?")
            .bind(chrono::Utc::now().timestamp_micros())
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        self.claims.complete(project, key, answer, keep).await
    }

    async fn release(&self, project: Uuid, key: &str) -> Result<(), StoreError> {
        self.claims.release(project, key).await
    }
}
