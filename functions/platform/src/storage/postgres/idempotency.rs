//! `Idempotency-Key` bookkeeping: the first request with a key reserves it,
//! its response is stored, and retries of the same request get that
//! response back instead of creating anything again.

use sqlx::Row;

use super::{Database, DbError};
use crate::domain::{Owner, Sha256Digest};

/// A reservation abandoned this long ago (its request died) may be taken
/// over by a retry.
const ABANDONED_AFTER_SECS: f64 = 120.0;

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What a request with a key should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// First use of the key: handle the request, then `finish` or `release`.
    Reserved,
    /// The same request was answered before: send this again.
    Replay(StoredResponse),
    /// The same request is being handled right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

impl Database {
    pub async fn reserve_idempotency_key(&self, owner: &Owner, key: &str, request: &Sha256Digest) -> Result<Reservation, DbError> {
        // The caller's expired keys are forgotten first (so a key can be
        // used again a day later, and the table holds about a day of keys
        // per caller): the primary key's `owner` prefix finds them.
        sqlx::query("DELETE FROM idempotency_keys WHERE owner = $1 AND expires_at < now()").bind(owner.as_str()).execute(self.pool()).await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (owner, key, request_hash) VALUES ($1, $2, $3)
             ON CONFLICT (owner, key) DO NOTHING",
        )
        .bind(owner.as_str())
        .bind(key)
        .bind(request.to_hex())
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Reservation::Reserved);
        }
        let Some(row) = sqlx::query(
            "SELECT request_hash, status_code, content_type, body, created_at < now() - make_interval(secs => $3) AS abandoned
               FROM idempotency_keys WHERE owner = $1 AND key = $2",
        )
        .bind(owner.as_str())
        .bind(key)
        .bind(ABANDONED_AFTER_SECS)
        .fetch_optional(self.pool())
        .await?
        else {
            // Released between the two statements: try once more.
            return Box::pin(self.reserve_idempotency_key(owner, key, request)).await;
        };
        if row.try_get::<String, _>("request_hash")? != request.to_hex() {
            return Ok(Reservation::Mismatch);
        }
        match row.try_get::<Option<i16>, _>("status_code")? {
            Some(status) => Ok(Reservation::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                content_type: row.try_get("content_type")?,
                body: row.try_get::<Option<Vec<u8>>, _>("body")?.unwrap_or_default(),
            })),
            None if row.try_get::<bool, _>("abandoned")? => {
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET created_at = now()
                      WHERE owner = $1 AND key = $2 AND status_code IS NULL AND created_at < now() - make_interval(secs => $3)",
                )
                .bind(owner.as_str())
                .bind(key)
                .bind(ABANDONED_AFTER_SECS)
                .execute(self.pool())
                .await?;
                Ok(if taken.rows_affected() == 1 { Reservation::Reserved } else { Reservation::InProgress })
            }
            None => Ok(Reservation::InProgress),
        }
    }

    /// Stores the response to a reserved key.
    pub async fn finish_idempotency_key(&self, owner: &Owner, key: &str, response: &StoredResponse) -> Result<(), DbError> {
        sqlx::query("UPDATE idempotency_keys SET status_code = $3, content_type = $4, body = $5 WHERE owner = $1 AND key = $2")
            .bind(owner.as_str())
            .bind(key)
            .bind(i16::try_from(response.status).unwrap_or(500))
            .bind(&response.content_type)
            .bind(&response.body)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets a reservation whose request failed in a way worth retrying
    /// (5xx, 429), so the retry runs the request again.
    pub async fn release_idempotency_key(&self, owner: &Owner, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND status_code IS NULL")
            .bind(owner.as_str())
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
