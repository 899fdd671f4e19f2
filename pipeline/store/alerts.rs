//! Alert rules, what each has seen, and the notifications it sent: the `alert_*` tables of the account
//! database (PostgreSQL or SQLite, one implementation in [`SqlStore`]).
//!
//! A notification is a row keyed by (rule, event key) before it is sent: the instance whose insert makes
//! the row sends it, so an event is notified once however many instances evaluate it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
use super::sql::{Db, SqlStore, on_db};

/// What a rule watches, as the store keeps it: the kind's name and its parameters as JSON. The alerts core
/// reads it typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Watch {
    pub kind: String,
    pub params: Value,
}

/// A rule and its state. The store keeps what it watches and where it notifies as JSON (`C` = [`Watch`],
/// `N` = the channel's object); the alerts core has them typed (`alerts::rules::Rule`).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule<C = Watch, N = Value> {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    /// What it watches.
    pub condition: C,
    /// Where it notifies.
    pub channel: N,
    /// The webhook signing secret; empty for other channels.
    pub secret: String,
    pub cooldown_secs: i64,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub firing: bool,
    pub episode: i64,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub checked_until: DateTime<Utc>,
}

impl<C, N> AlertRule<C, N> {
    /// The same rule with what it watches and where it notifies in another form.
    pub fn try_map<C2, N2, E>(
        self,
        condition: impl FnOnce(C) -> Result<C2, E>,
        channel: impl FnOnce(N) -> Result<N2, E>,
    ) -> Result<AlertRule<C2, N2>, E> {
        Ok(AlertRule {
            id: self.id,
            project_id: self.project_id,
            name: self.name,
            condition: condition(self.condition)?,
            channel: channel(self.channel)?,
            secret: self.secret,
            cooldown_secs: self.cooldown_secs,
            enabled: self.enabled,
            created_at: self.created_at,
            firing: self.firing,
            episode: self.episode,
            last_fired_at: self.last_fired_at,
            checked_until: self.checked_until,
        })
    }
}

/// A notification whose delivery another instance left unfinished, claimed for this one.
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    pub rule_id: Uuid,
    pub event_key: String,
    pub payload: String,
    pub attempts: i64,
}

/// One notification and how its delivery went.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub event_key: String,
    pub status: String,
    pub at: DateTime<Utc>,
    pub attempts: i64,
    pub response_status: Option<i64>,
    pub delivered: bool,
}

#[async_trait]
pub trait AlertStore: Send + Sync + 'static {
    async fn create_rule(&self, rule: &AlertRule) -> Result<(), StoreError>;
    async fn rules(&self, project_id: Uuid) -> Result<Vec<AlertRule>, StoreError>;
    async fn rule(&self, project_id: Uuid, id: Uuid) -> Result<Option<AlertRule>, StoreError>;
    /// Name, params, channel, cooldown and enabled; `false` if there is no such rule.
    async fn update_rule(&self, rule: &AlertRule) -> Result<bool, StoreError>;
    async fn delete_rule(&self, project_id: Uuid, id: Uuid) -> Result<bool, StoreError>;
    /// Every enabled rule, for evaluation.
    async fn enabled_rules(&self) -> Result<Vec<AlertRule>, StoreError>;
    /// Moves a rule from not firing to firing (a new episode, fired at `at`) or back; `None` if another
    /// evaluation moved it first, else the episode.
    async fn set_firing(&self, id: Uuid, firing: bool, at: DateTime<Utc>) -> Result<Option<i64>, StoreError>;
    /// new_error and regression: errors up to `until` have been looked at.
    async fn checked(&self, id: Uuid, until: DateTime<Utc>) -> Result<(), StoreError>;
    /// regression: when the rule last saw `fingerprint`, then records `seen` as the new last time.
    async fn swap_seen(
        &self,
        id: Uuid,
        fingerprint: u64,
        seen: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Makes the notification's row with the body to send, held by this instance until `held_until`; `true`
    /// if this call made it (and so must send it).
    async fn claim(
        &self,
        id: Uuid,
        event_key: &str,
        status: &str,
        at: DateTime<Utc>,
        payload: &str,
        held_until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records a delivery attempt, holding the row until `held_until`.
    async fn attempted(
        &self,
        id: Uuid,
        event_key: &str,
        attempts: i64,
        response_status: Option<i64>,
        delivered: bool,
        held_until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Undelivered notifications with attempts left whose holder has not touched them since `now` (its
    /// instance died), each claimed for the caller until `held_until`.
    async fn reclaim(
        &self,
        now: DateTime<Utc>,
        held_until: DateTime<Utc>,
        max_attempts: i64,
    ) -> Result<Vec<Unfinished>, StoreError>;
    /// A rule by id, whatever its project (for finishing its deliveries).
    async fn rule_by_id(&self, id: Uuid) -> Result<Option<AlertRule>, StoreError>;
    /// The rule's notifications, newest first.
    async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, StoreError>;
}

const RULE_COLUMNS: &str = "id, project_id, name, kind, params, channel, secret, cooldown_secs, enabled, created_at, \
                            firing, episode, last_fired_at, checked_until";

#[derive(sqlx::FromRow)]
struct RuleRow {
    id: Uuid,
    project_id: Uuid,
    name: String,
    kind: String,
    params: String,
    channel: String,
    secret: String,
    cooldown_secs: i64,
    enabled: bool,
    created_at: DateTime<Utc>,
    firing: bool,
    episode: i64,
    last_fired_at: Option<DateTime<Utc>>,
    checked_until: DateTime<Utc>,
}

impl From<RuleRow> for AlertRule {
    fn from(r: RuleRow) -> AlertRule {
        AlertRule {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            // Text that is not JSON reads as null, which the alerts core refuses to read as a rule, naming it.
            condition: Watch { kind: r.kind, params: serde_json::from_str(&r.params).unwrap_or(Value::Null) },
            channel: serde_json::from_str(&r.channel).unwrap_or(Value::Null),
            secret: r.secret,
            cooldown_secs: r.cooldown_secs,
            enabled: r.enabled,
            created_at: r.created_at,
            firing: r.firing,
            episode: r.episode,
            last_fired_at: r.last_fired_at,
            checked_until: r.checked_until,
        }
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    event_key: String,
    status: String,
    at: DateTime<Utc>,
    attempts: i64,
    response_status: Option<i64>,
    delivered: bool,
}

#[async_trait]
impl AlertStore for SqlStore {
    async fn create_rule(&self, r: &AlertRule) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO alert_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        );
        let (params, channel) = (r.condition.params.to_string(), r.channel.to_string());
        on_db!(self.db(), pool => {
            sqlx::query(&sql)
                .bind(r.id).bind(r.project_id).bind(&r.name).bind(&r.condition.kind).bind(&params).bind(&channel)
                .bind(&r.secret).bind(r.cooldown_secs).bind(r.enabled).bind(r.created_at).bind(r.firing)
                .bind(r.episode).bind(r.last_fired_at).bind(r.checked_until)
                .execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    async fn rules(&self, project_id: Uuid) -> Result<Vec<AlertRule>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = $1 ORDER BY created_at, id");
        let rows: Vec<RuleRow> =
            on_db!(self.db(), pool => sqlx::query_as(&sql).bind(project_id).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(AlertRule::from).collect())
    }

    async fn rule(&self, project_id: Uuid, id: Uuid) -> Result<Option<AlertRule>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = $1 AND id = $2");
        let row: Option<RuleRow> =
            on_db!(self.db(), pool => sqlx::query_as(&sql).bind(project_id).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(AlertRule::from))
    }

    async fn update_rule(&self, r: &AlertRule) -> Result<bool, StoreError> {
        let sql = "UPDATE alert_rules SET name = $3, params = $4, channel = $5, cooldown_secs = $6, enabled = $7 \
                   WHERE project_id = $1 AND id = $2";
        let (params, channel) = (r.condition.params.to_string(), r.channel.to_string());
        let n = on_db!(self.db(), pool => {
            sqlx::query(sql)
                .bind(r.project_id).bind(r.id).bind(&r.name).bind(&params).bind(&channel)
                .bind(r.cooldown_secs).bind(r.enabled)
                .execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(n == 1)
    }

    async fn delete_rule(&self, project_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
        let sql = "DELETE FROM alert_rules WHERE project_id = $1 AND id = $2";
        let n = on_db!(self.db(), pool => {
            sqlx::query(sql).bind(project_id).bind(id).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(n == 1)
    }

    async fn enabled_rules(&self) -> Result<Vec<AlertRule>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE enabled = $1 ORDER BY created_at, id");
        let rows: Vec<RuleRow> = on_db!(self.db(), pool => sqlx::query_as(&sql).bind(true).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(AlertRule::from).collect())
    }

    async fn set_firing(&self, id: Uuid, firing: bool, at: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        let sql = if firing {
            "UPDATE alert_rules SET firing = $2, episode = episode + 1, last_fired_at = $3 \
             WHERE id = $1 AND firing <> $2 RETURNING episode"
        } else {
            "UPDATE alert_rules SET firing = $2 WHERE id = $1 AND firing <> $2 AND $3 = $3 RETURNING episode"
        };
        let row: Option<(i64,)> = on_db!(self.db(), pool => {
            sqlx::query_as(sql).bind(id).bind(firing).bind(at).fetch_optional(pool).await
        })?;
        Ok(row.map(|(episode,)| episode))
    }

    async fn checked(&self, id: Uuid, until: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "UPDATE alert_rules SET checked_until = $2 WHERE id = $1 AND checked_until < $2";
        on_db!(self.db(), pool => sqlx::query(sql).bind(id).bind(until).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    async fn swap_seen(
        &self,
        id: Uuid,
        fingerprint: u64,
        seen: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let fingerprint = fingerprint as i64;
        let select = "SELECT last_seen FROM alert_seen WHERE rule_id = $1 AND fingerprint = $2";
        let upsert = "INSERT INTO alert_seen (rule_id, fingerprint, last_seen) VALUES ($1, $2, $3) \
                      ON CONFLICT (rule_id, fingerprint) DO UPDATE SET last_seen = excluded.last_seen";
        on_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let before: Option<(DateTime<Utc>,)> =
                sqlx::query_as(select).bind(id).bind(fingerprint).fetch_optional(&mut *tx).await?;
            sqlx::query(upsert).bind(id).bind(fingerprint).bind(seen).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(before.map(|(t,)| t))
        })
    }

    async fn claim(
        &self,
        id: Uuid,
        event_key: &str,
        status: &str,
        at: DateTime<Utc>,
        payload: &str,
        held_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO alert_deliveries (rule_id, event_key, status, at, payload, claimed_until) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule_id, event_key) DO NOTHING";
        let n = on_db!(self.db(), pool => {
            sqlx::query(sql).bind(id).bind(event_key).bind(status).bind(at).bind(payload).bind(held_until)
                .execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(n == 1)
    }

    async fn reclaim(
        &self,
        now: DateTime<Utc>,
        held_until: DateTime<Utc>,
        max_attempts: i64,
    ) -> Result<Vec<Unfinished>, StoreError> {
        let sql = "UPDATE alert_deliveries SET claimed_until = $2 \
                   WHERE delivered = $4 AND attempts < $3 AND claimed_until < $1 \
                   RETURNING rule_id, event_key, payload, attempts";
        let rows: Vec<(Uuid, String, String, i64)> = on_db!(self.db(), pool => {
            sqlx::query_as(sql).bind(now).bind(held_until).bind(max_attempts).bind(false).fetch_all(pool).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(rule_id, event_key, payload, attempts)| Unfinished { rule_id, event_key, payload, attempts })
            .collect())
    }

    async fn rule_by_id(&self, id: Uuid) -> Result<Option<AlertRule>, StoreError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = $1");
        let row: Option<RuleRow> = on_db!(self.db(), pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(AlertRule::from))
    }

    async fn attempted(
        &self,
        id: Uuid,
        event_key: &str,
        attempts: i64,
        response_status: Option<i64>,
        delivered: bool,
        held_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE alert_deliveries SET attempts = $3, response_status = $4, delivered = $5, claimed_until = $6 \
                   WHERE rule_id = $1 AND event_key = $2";
        on_db!(self.db(), pool => {
            sqlx::query(sql).bind(id).bind(event_key).bind(attempts).bind(response_status).bind(delivered)
                .bind(held_until).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let sql = "SELECT event_key, status, at, attempts, response_status, delivered FROM alert_deliveries \
                   WHERE rule_id = $1 ORDER BY at DESC, event_key DESC LIMIT $2";
        let rows: Vec<DeliveryRow> =
            on_db!(self.db(), pool => sqlx::query_as(sql).bind(id).bind(limit).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|r| Delivery {
                event_key: r.event_key,
                status: r.status,
                at: r.at,
                attempts: r.attempts,
                response_status: r.response_status,
                delivered: r.delivered,
            })
            .collect())
    }
}
