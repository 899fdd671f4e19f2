//! Resolving an API key to its project, through two cache tiers and the account store.
//!
//! Order of look-up: the in-process cache (seconds: it saves even the shared cache's round trip on a hot
//! key), the shared cache (minutes: one instance's look-up serves every instance), then the account store.
//! Unknown keys are cached too, briefly, so a client hammering with a dead key costs one store look-up per
//! `negative_ttl`, not one per request. Concurrent misses for one key are coalesced into one look-up.
//!
//! Revocation must win over every cache: [`KeyValidator::forget`] drops the key from this instance's cache
//! and the shared cache, and the shared cache tells the other instances to drop theirs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::key::{ApiKey, KeyDigest, KeyFormatError};
use crate::ProjectContext;

/// The account store could not answer (down, timed out). Never cached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("account store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// Where the truth about keys lives: the accounts database.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The project of the live key with this digest: not revoked, its project not deleted. The store
    /// compares the digest it finds with [`KeyDigest::ct_eq`], and records the key as used.
    async fn project_for_key(&self, digest: &KeyDigest) -> Result<Option<ProjectContext>, StoreUnavailable>;

    /// Keys were revoked: drop whatever the store itself remembers of them (an emergency cache).
    async fn forget(&self, _digests: &[KeyDigest]) {}
}

#[async_trait]
impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    async fn project_for_key(&self, digest: &KeyDigest) -> Result<Option<ProjectContext>, StoreUnavailable> {
        (**self).project_for_key(digest).await
    }

    async fn forget(&self, digests: &[KeyDigest]) {
        (**self).forget(digests).await
    }
}

/// What a cache remembers about a digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CachedKey {
    Valid(ProjectContext),
    /// No live key has this digest (negative caching).
    Unknown,
}

/// The cache shared by every instance (Redis in the shared backend).
#[async_trait]
pub trait SharedKeyCache: Send + Sync + 'static {
    async fn get(&self, digest: &KeyDigest) -> Result<Option<CachedKey>, StoreUnavailable>;
    async fn put(&self, digest: &KeyDigest, entry: &CachedKey, ttl: Duration) -> Result<(), StoreUnavailable>;
    /// Drops the digests from the shared cache and tells every instance to drop them from its own.
    async fn forget(&self, digests: &[KeyDigest]) -> Result<(), StoreUnavailable>;
}

/// Cache lifetimes, from `[stages.auth]`.
#[derive(Clone, Debug)]
pub struct ValidatorSettings {
    pub local_ttl: Duration,
    pub shared_ttl: Duration,
    pub negative_ttl: Duration,
    pub local_capacity: u64,
}

impl Default for ValidatorSettings {
    fn default() -> Self {
        ValidatorSettings {
            local_ttl: Duration::from_secs(5),
            shared_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            local_capacity: 100_000,
        }
    }
}

/// Why a key was refused. Clients see one message for `Malformed` and `Unknown` (401); `Unavailable` is a
/// 503, never a 401, so a store outage does not look like a revocation to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("malformed API key: {0}")]
    Malformed(#[from] KeyFormatError),
    #[error("unknown or revoked API key")]
    Unknown,
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// How validations were answered, since start: for the cache hit ratio.
#[derive(Debug, Default)]
pub struct ValidatorCounts {
    pub validations: std::sync::atomic::AtomicU64,
    /// Not in the in-process cache.
    pub local_misses: std::sync::atomic::AtomicU64,
    /// Of those, found in the shared cache.
    pub shared_hits: std::sync::atomic::AtomicU64,
}

/// Resolves keys; cheap to clone (the caches are shared between clones).
#[derive(Clone)]
pub struct KeyValidator {
    store: Arc<dyn KeyStore>,
    shared: Option<Arc<dyn SharedKeyCache>>,
    local: moka::future::Cache<KeyDigest, CachedKey>,
    settings: ValidatorSettings,
    counts: Arc<ValidatorCounts>,
}

impl KeyValidator {
    pub fn new(
        store: Arc<dyn KeyStore>,
        shared: Option<Arc<dyn SharedKeyCache>>,
        settings: ValidatorSettings,
    ) -> KeyValidator {
        let local = moka::future::Cache::builder()
            .max_capacity(settings.local_capacity)
            .time_to_live(settings.local_ttl)
            .build();
        KeyValidator { store, shared, local, settings, counts: Arc::default() }
    }

    pub fn counts(&self) -> &ValidatorCounts {
        &self.counts
    }

    /// The project of `raw`, or why not.
    pub async fn validate(&self, raw: &str) -> Result<ProjectContext, AuthError> {
        let key = ApiKey::parse(raw)?;
        let digest = key.digest();
        self.counts.validations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let entry = self
            .local
            .try_get_with(digest, self.resolve_uncached(digest))
            .await
            .map_err(|e: Arc<StoreUnavailable>| AuthError::Unavailable((*e).clone()))?;
        match entry {
            CachedKey::Valid(ctx) => Ok(ctx),
            CachedKey::Unknown => Err(AuthError::Unknown),
        }
    }

    async fn resolve_uncached(&self, digest: KeyDigest) -> Result<CachedKey, StoreUnavailable> {
        self.counts.local_misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(shared) = &self.shared {
            match shared.get(&digest).await {
                Ok(Some(entry)) => {
                    self.counts.shared_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(entry);
                }
                Ok(None) => {}
                // The shared cache is an optimisation: without it, ask the store.
                Err(error) => tracing::warn!(%error, "shared key cache read failed"),
            }
        }
        let entry = match self.store.project_for_key(&digest).await? {
            Some(ctx) => CachedKey::Valid(ctx),
            None => CachedKey::Unknown,
        };
        if let Some(shared) = &self.shared {
            let ttl = match entry {
                CachedKey::Valid(_) => self.settings.shared_ttl,
                CachedKey::Unknown => self.settings.negative_ttl,
            };
            if let Err(error) = shared.put(&digest, &entry, ttl).await {
                tracing::warn!(%error, "shared key cache write failed");
            }
        }
        Ok(entry)
    }

    /// Forgets keys everywhere: this instance, the shared cache, and (through it) every other instance.
    /// Called after the store has revoked or deleted them, so the next request sees the store's answer.
    pub async fn forget(&self, digests: &[KeyDigest]) -> Result<(), StoreUnavailable> {
        self.forget_local(digests).await;
        match &self.shared {
            Some(shared) => shared.forget(digests).await,
            None => Ok(()),
        }
    }

    /// Forgets keys in this instance only: what another instance's revocation asks of this one.
    pub async fn forget_local(&self, digests: &[KeyDigest]) {
        for digest in digests {
            self.local.invalidate(digest).await;
        }
        self.store.forget(digests).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::{ProjectSettings, Scope};

    #[derive(Default)]
    struct FakeStore {
        keys: Mutex<Vec<(KeyDigest, ProjectContext)>>,
        lookups: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl KeyStore for FakeStore {
        async fn project_for_key(&self, digest: &KeyDigest) -> Result<Option<ProjectContext>, StoreUnavailable> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreUnavailable("down".into()));
            }
            let keys = self.keys.lock().expect("lock");
            Ok(keys.iter().find(|(d, _)| d.ct_eq(digest)).map(|(_, ctx)| ctx.clone()))
        }
    }

    fn context() -> ProjectContext {
        ProjectContext {
            project_id: Uuid::now_v7(),
            key_id: Uuid::now_v7(),
            scopes: vec![Scope::Ingest],
            settings: ProjectSettings::default(),
            stages: None,
        }
    }

    fn validator(store: Arc<FakeStore>) -> KeyValidator {
        KeyValidator::new(store, None, ValidatorSettings::default())
    }

    #[tokio::test]
    async fn a_known_key_resolves_once_then_from_cache() {
        let store = Arc::new(FakeStore::default());
        let key = ApiKey::generate();
        let ctx = context();
        store.keys.lock().expect("lock").push((key.digest(), ctx.clone()));
        let v = validator(store.clone());
        for _ in 0..5 {
            assert_eq!(v.validate(key.expose_secret()).await.expect("valid"), ctx);
        }
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn malformed_keys_never_reach_the_store() {
        let store = Arc::new(FakeStore::default());
        let v = validator(store.clone());
        assert!(matches!(v.validate("ledger_nope").await, Err(AuthError::Malformed(_))));
        assert!(matches!(v.validate("Bearer x").await, Err(AuthError::Malformed(_))));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn unknown_keys_are_negatively_cached() {
        let store = Arc::new(FakeStore::default());
        let v = validator(store.clone());
        let key = ApiKey::generate();
        for _ in 0..3 {
            assert!(matches!(v.validate(key.expose_secret()).await, Err(AuthError::Unknown)));
        }
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn forget_makes_the_next_request_ask_the_store() {
        let store = Arc::new(FakeStore::default());
        let key = ApiKey::generate();
        store.keys.lock().expect("lock").push((key.digest(), context()));
        let v = validator(store.clone());
        v.validate(key.expose_secret()).await.expect("valid");
        store.keys.lock().expect("lock").clear();
        v.forget(&[key.digest()]).await.expect("forget");
        assert!(matches!(v.validate(key.expose_secret()).await, Err(AuthError::Unknown)));
    }

    #[tokio::test]
    async fn a_store_outage_is_unavailable_and_not_cached() {
        let store = Arc::new(FakeStore::default());
        let key = ApiKey::generate();
        store.keys.lock().expect("lock").push((key.digest(), context()));
        store.down.store(true, Ordering::SeqCst);
        let v = validator(store.clone());
        assert!(matches!(v.validate(key.expose_secret()).await, Err(AuthError::Unavailable(_))));
        store.down.store(false, Ordering::SeqCst);
        assert!(v.validate(key.expose_secret()).await.is_ok());
    }
}
