//! The shared backend's hot cache on Redis: sessions, counters, the shared tier of the key cache, and the
//! broadcast that makes every instance forget a revoked key at once.
//!
//! Every key starts with `redis.key_prefix`, so deployments and tests can share one Redis. Every command
//! has a deadline: a slow Redis turns into 503s, not into requests that hang; and once Redis has failed to
//! answer, commands fail fast for a second at a time ([`FailFast`]).
//!
//! `redis.url` may name one Redis or a Redis Cluster (one or more of its nodes, comma-separated); which one
//! it is, the first node that answers says (`INFO cluster`). On a cluster every script and transaction
//! touches keys of one hash slot only: keys that are used together share a hash tag (`{3}` for a queue
//! shard, `{<project id>}` for a project's counters), and pipelines that span slots are sent per slot
//! ([`RedisCache::run_pipes`]). The same keys and code serve a single Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use ledger_stages::auth::{CachedKey, KeyDigest, KeyValidator, SharedKeyCache, StoreUnavailable};
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Counters, HealthCheck, SessionStore, StoreError};

/// What `redis.url` names.
#[derive(Clone)]
enum Target {
    Single(redis::Client),
    /// A cluster, and the nodes named in `redis.url` (pub/sub subscribers start from them).
    Cluster {
        client: Box<ClusterClient>,
        seeds: Vec<String>,
    },
}

/// A connection to a single Redis or to a cluster: one type for the code above it.
#[derive(Clone)]
pub enum Conn {
    /// Reconnects by itself: the cache's shared connection.
    Managed(ConnectionManager),
    /// A connection of its own (a worker's, whose XREAD blocks it).
    Plain(MultiplexedConnection),
    /// Routes each command to its slot's node, follows MOVED and failovers.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// `WAIT replicas timeout` on the connection that wrote `key`: how many replicas have every write made
    /// through it so far (on a cluster, the primary of `key`'s slot is asked).
    pub(crate) async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1));
        let acked: i64 = match self {
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let value = c.route_command(wait, RoutingInfo::SingleNode(route)).await?;
                redis::FromRedisValue::from_redis_value(value)?
            }
            other => wait.query_async(other).await?,
        };
        Ok(u32::try_from(acked).unwrap_or(0))
    }
}

#[derive(Clone)]
pub struct RedisCache {
    target: Target,
    conn: Conn,
    prefix: String,
    timeout: Duration,
    fail_fast: Arc<FailFast>,
}

/// After Redis fails to answer, commands fail at once for [`FailFast::OPEN_MS`] instead of each waiting out
/// the timeout; then one command tries Redis again (the others still fail fast), and its answer decides.
/// An outage costs one timeout per second, not one per request.
#[derive(Debug, Default)]
pub struct FailFast {
    /// Milliseconds since `epoch` until which commands fail fast; 0 while Redis answers.
    until_ms: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl FailFast {
    const OPEN_MS: u64 = 1000;

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether a command may go to Redis now; the first after a pause becomes the trial, holding the others
    /// off for as long as it may take (`trial`).
    pub(crate) fn admit(&self, trial: Duration) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        let hold = now.saturating_add(u64::try_from(trial.as_millis()).unwrap_or(u64::MAX));
        self.until_ms.compare_exchange(until, hold, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether commands are failing fast now.
    pub(crate) fn failing(&self) -> bool {
        self.until_ms.load(Ordering::Acquire) != 0
    }

    pub(crate) fn answered(&self) {
        if self.until_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("Redis answers again");
        }
    }

    pub(crate) fn failed(&self) {
        let until = self.now_ms().saturating_add(Self::OPEN_MS);
        if self.until_ms.swap(until, Ordering::AcqRel) == 0 {
            tracing::warn!(fail_fast_ms = Self::OPEN_MS, "Redis does not answer: failing fast, retrying every second");
        }
    }
}

/// Errors that say Redis is unreachable, as opposed to a command it refused.
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn unavailable(cause: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable { what: "cache", cause: cause.to_string() }
}

impl From<StoreError> for StoreUnavailable {
    fn from(e: StoreError) -> Self {
        StoreUnavailable(e.to_string())
    }
}

impl RedisCache {
    /// Connects to the Redis or Redis Cluster that `url` names and checks the connection with a PING.
    pub(crate) async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<RedisCache, StoreError> {
        let seeds: Vec<String> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let late = || unavailable(format!("no answer within {timeout:?}"));
        let cluster = tokio::time::timeout(timeout, cluster_enabled(&seeds)).await.map_err(|_| late())??;
        let (target, conn) = if cluster {
            let client = ClusterClient::builder(seeds.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout.max(Duration::from_secs(10)))
                .build()
                .map_err(|e| StoreError::Internal(format!("redis.url: {e}")))?;
            let conn = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| late())?
                .map_err(unavailable)?;
            (Target::Cluster { client: Box::new(client), seeds }, Conn::Cluster(conn))
        } else {
            let [seed] = &seeds[..] else {
                return Err(StoreError::Internal(
                    "redis.url: several URLs name the nodes of a Redis Cluster, but this Redis is not one".into(),
                ));
            };
            let client =
                redis::Client::open(seed.as_str()).map_err(|e| StoreError::Internal(format!("redis.url: {e}")))?;
            let conn = tokio::time::timeout(timeout, client.get_connection_manager())
                .await
                .map_err(|_| late())?
                .map_err(unavailable)?;
            (Target::Single(client), Conn::Managed(conn))
        };
        let cache = RedisCache { target, conn, prefix: prefix.to_owned(), timeout, fail_fast: Arc::default() };
        cache.check().await?;
        Ok(cache)
    }

    /// Whether `redis.url` names a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// A connection of its own, for commands that block it (a worker's XREAD): a multiplexed connection to
    /// a single Redis, or a cluster connection of its own.
    pub(crate) async fn dedicated(&self) -> redis::RedisResult<Conn> {
        match &self.target {
            Target::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(10)));
                Ok(Conn::Plain(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Target::Cluster { client, .. } => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    pub(crate) fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn forget_channel(&self) -> String {
        format!("{}apikey-forget", self.prefix)
    }

    /// Runs a command with this cache's deadline.
    pub(crate) async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.query(cmd).await
    }

    /// Runs a pipeline with this cache's deadline.
    pub(crate) async fn run_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        self.query_pipe(pipe).await
    }

    /// Runs a script with this cache's deadline.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.guarded(invocation.invoke_async(&mut conn)).await
    }

    /// Runs one Redis call with this cache's deadline, failing fast while Redis is known not to answer.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if !self.fail_fast.admit(self.timeout) {
            return Err(unavailable("Redis did not answer a moment ago (failing fast)"));
        }
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                self.fail_fast.failed();
                Err(unavailable(format!("no answer within {:?}", self.timeout)))
            }
            Ok(Err(e)) if unreachable(&e) => {
                self.fail_fast.failed();
                Err(unavailable(e))
            }
            Ok(result) => {
                self.fail_fast.answered();
                result.map_err(unavailable)
            }
        }
    }

    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// Waits until `replicas` replicas hold every write made so far on the connection that wrote `key` (on a
    /// cluster, its slot's primary), for at most half this cache's deadline; an error when fewer do.
    pub(crate) async fn wait_replicas(&self, key: &str, replicas: u32) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let acked = self.guarded(conn.wait_replicas(key, replicas, self.timeout / 2)).await?;
        if acked < replicas {
            return Err(unavailable(format!(
                "{acked} of the {replicas} replicas asked for (redis.min_replicas_acked) confirmed the write in time"
            )));
        }
        Ok(())
    }

    /// Runs pipelines that each touch one hash slot, at once, with this cache's deadline: what a pipeline
    /// spanning slots becomes on a cluster (on a single Redis they share the connection's pipelining).
    pub(crate) async fn run_pipes<T: redis::FromRedisValue>(
        &self,
        pipes: &[redis::Pipeline],
    ) -> Result<Vec<T>, StoreError> {
        let calls = pipes.iter().map(|pipe| {
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<T>(&mut conn).await }
        });
        self.guarded(async { futures::future::join_all(calls).await.into_iter().collect() }).await
    }

    /// Whether commands fail fast now, Redis having failed to answer.
    pub(crate) fn failing_fast(&self) -> bool {
        self.fail_fast.failing()
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.guarded(cmd.query_async(&mut conn)).await
    }

    async fn query_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        self.guarded(pipe.query_async(&mut conn)).await
    }

    /// Subscribes to other instances' revocations. Awaited before the instance says it is ready, so no
    /// revocation made after that can be missed.
    pub async fn subscribe_key_revocations(&self) -> Result<redis::aio::PubSub, StoreError> {
        let mut pubsub = self.pubsub().await?;
        pubsub.subscribe(self.forget_channel()).await.map_err(unavailable)?;
        Ok(pubsub)
    }

    /// A pub/sub connection. On a cluster, a message published on any node reaches the subscribers of every
    /// node, so one node is enough: the first of the cluster's nodes (as it knows them now, then those named
    /// in `redis.url`) that answers.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, StoreError> {
        let seeds = match &self.target {
            Target::Single(client) => return client.get_async_pubsub().await.map_err(unavailable),
            Target::Cluster { seeds, .. } => seeds,
        };
        let mut candidates = self.cluster_nodes().await.unwrap_or_default();
        candidates.extend(seeds.iter().cloned());
        let mut last = None;
        for url in candidates {
            let connect = async { redis::Client::open(url.as_str())?.get_async_pubsub().await };
            match tokio::time::timeout(self.timeout, connect).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some(format!("{} did not answer", crate::store::redact(&url))),
            }
        }
        Err(unavailable(last.unwrap_or_else(|| "no cluster node to subscribe on".into())))
    }

    /// The URLs of the cluster's nodes that are not marked as failing, from `CLUSTER NODES`, with the
    /// scheme and credentials of the first URL in `redis.url`.
    async fn cluster_nodes(&self) -> Result<Vec<String>, StoreError> {
        let Target::Cluster { seeds, .. } = &self.target else { return Ok(Vec::new()) };
        let listing: String = self.query(&redis::cmd("CLUSTER").arg("NODES").to_owned()).await?;
        Ok(node_urls(&listing, seeds.first().map(String::as_str).unwrap_or("redis://")))
    }

    /// The fewest replicas attached to a primary: what `redis.min_replicas_acked` can count on now.
    pub(crate) async fn fewest_replicas(&self) -> Result<u32, StoreError> {
        match &self.target {
            Target::Single(_) => {
                let info: String = self.query(redis::cmd("INFO").arg("replication")).await?;
                Ok(info
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("connected_slaves:").and_then(|n| n.parse().ok()))
                    .unwrap_or(0))
            }
            Target::Cluster { .. } => {
                let listing: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
                Ok(fewest_replicas(&listing))
            }
        }
    }

    /// Drops other instances' revoked keys from `validator`'s in-process tier until `shutdown`, starting
    /// from `pubsub`. Resubscribes after a broken connection; while disconnected, the in-process tier's short
    /// lifetime bounds how long a revoked key could still pass on this instance.
    pub async fn follow_key_revocations(
        self,
        mut pubsub: redis::aio::PubSub,
        validator: KeyValidator,
        shutdown: CancellationToken,
    ) {
        loop {
            {
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let digests: Vec<KeyDigest> =
                        message.get_payload_bytes().chunks(32).filter_map(KeyDigest::from_slice).collect();
                    validator.forget_local(&digests).await;
                }
            }
            tracing::warn!("key revocation subscription ended; resubscribing");
            pubsub = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                match self.subscribe_key_revocations().await {
                    Ok(pubsub) => break pubsub,
                    Err(error) => tracing::warn!(%error, "cannot subscribe to key revocations; retrying"),
                }
            };
        }
    }
}

/// The URLs of the nodes in a `CLUSTER NODES` listing that are not marked as failing, with the scheme and
/// credentials of `base`.
fn node_urls(listing: &str, base: &str) -> Vec<String> {
    let (scheme, rest) = base.split_once("://").unwrap_or(("redis", base));
    let userinfo = rest.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            // `<id> <ip:port@cport[,hostname]> <flags> ...`
            let address = fields.nth(1)?.split(['@', ',']).next()?;
            let flags = fields.next()?;
            (!flags.contains("fail") && !address.starts_with(':')).then(|| format!("{scheme}://{userinfo}{address}"))
        })
        .collect()
}

/// The fewest healthy replicas of a healthy primary in a `CLUSTER NODES` listing.
fn fewest_replicas(listing: &str) -> u32 {
    let nodes: Vec<Vec<&str>> =
        listing.lines().map(|l| l.split(' ').collect()).filter(|f: &Vec<&str>| f.len() > 3).collect();
    let healthy = |f: &[&str]| !f[2].contains("fail");
    nodes
        .iter()
        .filter(|f| f[2].contains("master") && healthy(f))
        .map(|primary| {
            let replicas = nodes.iter().filter(|f| f[2].contains("slave") && healthy(f) && f[3] == primary[0]).count();
            u32::try_from(replicas).unwrap_or(u32::MAX)
        })
        .min()
        .unwrap_or(0)
}

/// Whether the first of `seeds` that answers runs in cluster mode.
async fn cluster_enabled(seeds: &[String]) -> Result<bool, StoreError> {
    let mut last = StoreError::Internal("redis.url names no Redis".into());
    for seed in seeds {
        let client = redis::Client::open(seed.as_str()).map_err(|e| StoreError::Internal(format!("redis.url: {e}")))?;
        let answer: redis::RedisResult<String> = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO").arg("cluster").query_async(&mut conn).await
        }
        .await;
        match answer {
            Ok(info) => return Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1")),
            Err(e) => last = unavailable(e),
        }
    }
    Err(last)
}

#[async_trait]
impl HealthCheck for RedisCache {
    async fn check(&self) -> Result<(), StoreError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" { Ok(()) } else { Err(unavailable(format!("PING answered {pong}"))) }
    }
}

#[async_trait]
impl SessionStore for RedisCache {
    async fn create_session(&self, id: Uuid, user_id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("session", id)).arg(user_id.to_string()).arg("EX").arg(ttl.as_secs().max(1));
        self.query::<()>(&cmd).await
    }

    async fn session_user(&self, id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let user: Option<String> = self.query(redis::cmd("GET").arg(self.key("session", id))).await?;
        Ok(user.and_then(|u| Uuid::parse_str(&u).ok()))
    }

    async fn delete_session(&self, id: Uuid) -> Result<(), StoreError> {
        self.query::<()>(redis::cmd("DEL").arg(self.key("session", id))).await
    }
}

fn remaining(pttl_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(pttl_ms).unwrap_or(0))
}

#[async_trait]
impl super::JobLease for RedisCache {
    async fn take(&self, job: &str, period: Duration) -> Result<bool, String> {
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        let taken: Option<String> = self
            .query(redis::cmd("SET").arg(self.key("job", job)).arg(1).arg("NX").arg("PX").arg(period_ms))
            .await
            .map_err(|e| e.to_string())?;
        Ok(taken.is_some())
    }
}

#[async_trait]
impl Counters for RedisCache {
    async fn hit(&self, key: &str, window: Duration) -> Result<(u64, Duration), StoreError> {
        let key = self.key("count", key);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        // One atomic round trip: start the window if there is none, count, read what is left of it.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("PX")
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key);
        let (count, pttl): (u64, i64) = self.query_pipe(&pipe).await?;
        Ok((count, remaining(pttl)))
    }

    async fn peek(&self, key: &str) -> Result<(u64, Duration), StoreError> {
        let key = self.key("count", key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        let (count, pttl): (Option<u64>, i64) = self.query_pipe(&pipe).await?;
        Ok((count.unwrap_or(0), remaining(pttl)))
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.query::<()>(redis::cmd("DEL").arg(self.key("count", key))).await
    }
}

/// An idempotency key's Redis key: the client's key hashed, so any printable key of up to 128 characters
/// makes a bounded Redis key.
fn idempotency_id(project: Uuid, key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{project}:{hex}")
}

/// A claimed key holds this until its answer replaces it.
const PENDING: &str = "\u{0}pending";

#[async_trait]
impl super::IdempotencyStore for RedisCache {
    async fn claim(&self, project: Uuid, key: &str, pending: Duration) -> Result<super::Claim, StoreError> {
        let redis_key = self.key("idem", idempotency_id(project, key));
        let ms = u64::try_from(pending.as_millis()).unwrap_or(u64::MAX).max(1);
        // One round trip: claim the key if free, and read what holds it either way.
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg(&redis_key).arg(PENDING).arg("NX").arg("PX").arg(ms).cmd("GET").arg(&redis_key);
        let (claimed, held): (Option<String>, Option<String>) = self.query_pipe(&pipe).await?;
        Ok(match (claimed, held) {
            (Some(_), _) => super::Claim::Claimed,
            (None, Some(held)) if held == PENDING => super::Claim::Pending,
            (None, Some(answer)) => super::Claim::Answered(answer),
            // Lapsed between the two commands of the transaction: cannot happen in MULTI, but be safe.
            (None, None) => super::Claim::Pending,
        })
    }

    async fn complete(&self, project: Uuid, key: &str, answer: &str, keep: Duration) -> Result<(), StoreError> {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("idem", idempotency_id(project, key))).arg(answer).arg("PX").arg(ms);
        self.query::<()>(&cmd).await
    }

    async fn release(&self, project: Uuid, key: &str) -> Result<(), StoreError> {
        self.query::<()>(redis::cmd("DEL").arg(self.key("idem", idempotency_id(project, key)))).await
    }
}

#[async_trait]
impl SharedKeyCache for RedisCache {
    async fn get(&self, digest: &KeyDigest) -> Result<Option<CachedKey>, StoreUnavailable> {
        let raw: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(self.key("apikey", digest.to_hex()))).await?;
        // An entry this version cannot read (written by another version) is treated as a miss.
        Ok(raw.and_then(|raw| serde_json::from_slice(&raw).ok()))
    }

    async fn put(&self, digest: &KeyDigest, entry: &CachedKey, ttl: Duration) -> Result<(), StoreUnavailable> {
        let value = serde_json::to_vec(entry).map_err(|e| StoreUnavailable(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("apikey", digest.to_hex())).arg(value).arg("EX").arg(ttl.as_secs().max(1));
        Ok(self.query::<()>(&cmd).await?)
    }

    async fn forget(&self, digests: &[KeyDigest]) -> Result<(), StoreUnavailable> {
        if digests.is_empty() {
            return Ok(());
        }
        let payload: Vec<u8> = digests.iter().flat_map(|d| d.as_bytes().iter().copied()).collect();
        // Each key in its own slot; deleted before the broadcast, so an instance that forgets a key then
        // finds nothing in the shared tier either.
        let deletes: Vec<redis::Pipeline> = digests
            .iter()
            .map(|digest| {
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(self.key("apikey", digest.to_hex())).ignore();
                pipe
            })
            .collect();
        self.run_pipes::<()>(&deletes).await?;
        Ok(self.query::<()>(redis::cmd("PUBLISH").arg(self.forget_channel()).arg(payload)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_fast_holds_commands_off_then_lets_one_trial_through() {
        let f = FailFast::default();
        assert!(f.admit(Duration::from_secs(2)), "Redis is presumed up");
        f.failed();
        assert!(!f.admit(Duration::from_secs(2)), "failing fast after a failure");
        // The second is over: one trial goes, the others wait for its answer.
        f.until_ms.store(1, Ordering::Release);
        let _ = f.now_ms();
        assert!(f.admit(Duration::from_secs(2)), "the trial");
        assert!(!f.admit(Duration::from_secs(2)), "held off during the trial");
        f.answered();
        assert!(f.admit(Duration::from_secs(2)) && f.admit(Duration::from_secs(2)), "Redis answers again");
    }

    #[test]
    fn the_fewest_replicas_of_a_primary_are_counted() {
        let listing = "a 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-5460\n\
                       b 127.0.0.1:3@4 master - 0 0 2 connected 5461-16383\n\
                       c 127.0.0.1:5@6 slave a 0 0 1 connected\n\
                       d 127.0.0.1:7@8 slave b 0 0 2 connected\n\
                       e 127.0.0.1:9@10 slave,fail b 0 0 2 connected\n";
        assert_eq!(fewest_replicas(listing), 1);
        assert_eq!(fewest_replicas(&listing.replace("slave a", "slave,fail a")), 0);
    }

    #[test]
    fn cluster_nodes_become_urls_with_the_configured_credentials() {
        let listing = "07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                       67ed 127.0.0.1:30002@40002,node-2 master - 0 0 2 connected 5461-10922\n\
                       292f 127.0.0.1:30003@40003 master,fail - 0 0 3 connected\n\
                       e7d1 :0@0 slave,noaddr - 0 0 0 disconnected\n";
        assert_eq!(
            node_urls(listing, "rediss://user:pw@10.0.0.1:7000"),
            ["rediss://user:pw@127.0.0.1:30001", "rediss://user:pw@127.0.0.1:30002"]
        );
        assert_eq!(node_urls(listing, "redis://h:1"), ["redis://127.0.0.1:30001", "redis://127.0.0.1:30002"]);
    }
}
