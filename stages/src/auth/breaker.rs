//! A circuit breaker around the account store, with an emergency cache of stale answers.
//!
//! CLOSED: every look-up goes to the store. After `failure_threshold` consecutive failures: OPEN, for
//! `open_for`: no look-up reaches the store; keys seen within `stale_for` are answered from the emergency
//! cache, and other keys get `StoreUnavailable` (a 503, never a 401). Then HALF_OPEN: one look-up is let
//! through; its success closes the circuit, its failure opens it again.
//!
//! Revocation still wins: it goes through the store (not this wrapper) and clears the validator's caches,
//! and a revoked key's stale entry is dropped by [`BreakerStore::forget`].

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::key::KeyDigest;
use super::validator::{KeyStore, StoreUnavailable};
use crate::ProjectContext;

#[derive(Clone, Debug)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
    pub stale_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failure_threshold: 5, open_for: Duration::from_secs(30), stale_for: Duration::from_secs(600) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        since: Instant,
    },
    /// One trial look-up is under way.
    HalfOpen,
}

pub struct BreakerStore<S> {
    inner: S,
    settings: BreakerSettings,
    // A std mutex: held only to read or flip the state, never across an await.
    state: Mutex<State>,
    /// Last good answers with when they were had. Ages are checked against tokio's clock on read (moka's
    /// own expiry is only a backstop), so the 10 minutes are exact and testable with paused time.
    stale: moka::future::Cache<KeyDigest, (ProjectContext, Instant)>,
}

impl<S: KeyStore> BreakerStore<S> {
    pub fn new(inner: S, settings: BreakerSettings) -> BreakerStore<S> {
        let stale = moka::future::Cache::builder().max_capacity(100_000).time_to_live(settings.stale_for).build();
        BreakerStore { inner, settings, state: Mutex::new(State::Closed { failures: 0 }), stale }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { since } if since.elapsed() >= self.settings.open_for => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Whether this look-up may go to the store; moves OPEN to HALF_OPEN when its time is up.
    fn admit(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { since } if since.elapsed() >= self.settings.open_for => {
                *state = State::HalfOpen;
                tracing::info!("account store circuit half-open: trying one look-up");
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!("account store circuit closed");
        }
        *state = State::Closed { failures: 0 };
    }

    fn failed(&self) {
        let mut state = self.lock();
        let open = match *state {
            State::Closed { failures } if failures + 1 >= self.settings.failure_threshold => true,
            State::Closed { failures } => {
                *state = State::Closed { failures: failures + 1 };
                false
            }
            State::HalfOpen | State::Open { .. } => true,
        };
        if open {
            tracing::warn!("account store circuit open: answering from the emergency cache");
            *state = State::Open { since: Instant::now() };
        }
    }

    async fn stale_answer(
        &self,
        digest: &KeyDigest,
        cause: String,
    ) -> Result<Option<ProjectContext>, StoreUnavailable> {
        match self.stale.get(digest).await {
            Some((ctx, at)) if at.elapsed() < self.settings.stale_for => Ok(Some(ctx)),
            _ => Err(StoreUnavailable(cause)),
        }
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for BreakerStore<S> {
    async fn project_for_key(&self, digest: &KeyDigest) -> Result<Option<ProjectContext>, StoreUnavailable> {
        if !self.admit() {
            return self.stale_answer(digest, "account store circuit is open".into()).await;
        }
        match self.inner.project_for_key(digest).await {
            Ok(answer) => {
                self.succeeded();
                match &answer {
                    Some(ctx) => self.stale.insert(*digest, (ctx.clone(), Instant::now())).await,
                    None => self.stale.invalidate(digest).await,
                }
                Ok(answer)
            }
            Err(e) => {
                self.failed();
                self.stale_answer(digest, e.0).await
            }
        }
    }

    /// Drops revoked keys from the emergency cache, and tells the store.
    async fn forget(&self, digests: &[KeyDigest]) {
        for digest in digests {
            self.stale.invalidate(digest).await;
        }
        self.inner.forget(digests).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::auth::ApiKey;
    use crate::{ProjectSettings, Scope};

    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl KeyStore for &'static Flaky {
        async fn project_for_key(&self, _: &KeyDigest) -> Result<Option<ProjectContext>, StoreUnavailable> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(StoreUnavailable("down".into()))
            } else {
                Ok(Some(ProjectContext {
                    project_id: Uuid::nil(),
                    key_id: Uuid::nil(),
                    scopes: vec![Scope::Ingest],
                    settings: ProjectSettings::default(),
                    stages: None,
                }))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_five_failures_serves_stale_then_half_opens_after_30s() {
        let store: &'static Flaky = Box::leak(Box::default());
        let breaker = BreakerStore::new(store, BreakerSettings::default());
        let (known, unknown) = (ApiKey::generate().digest(), ApiKey::generate().digest());
        assert!(breaker.project_for_key(&known).await.expect("up").is_some());

        store.down.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            // The known key keeps working from the emergency cache while the store fails.
            assert!(breaker.project_for_key(&known).await.expect("stale").is_some());
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let calls = store.calls.load(Ordering::SeqCst);
        assert!(breaker.project_for_key(&known).await.expect("stale").is_some());
        assert!(breaker.project_for_key(&unknown).await.is_err(), "an unknown key is unavailable, not unknown");
        assert_eq!(store.calls.load(Ordering::SeqCst), calls, "an open circuit spares the store");

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        store.down.store(false, Ordering::SeqCst);
        assert!(breaker.project_for_key(&unknown).await.expect("trial").is_some());
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_again() {
        let store: &'static Flaky = Box::leak(Box::default());
        let breaker = BreakerStore::new(store, BreakerSettings::default());
        store.down.store(true, Ordering::SeqCst);
        let key = ApiKey::generate().digest();
        for _ in 0..5 {
            assert!(breaker.project_for_key(&key).await.is_err());
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(breaker.project_for_key(&key).await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_entries_expire_after_ten_minutes_and_can_be_forgotten() {
        let store: &'static Flaky = Box::leak(Box::default());
        let breaker = BreakerStore::new(store, BreakerSettings::default());
        let (a, b) = (ApiKey::generate().digest(), ApiKey::generate().digest());
        breaker.project_for_key(&a).await.expect("up");
        breaker.project_for_key(&b).await.expect("up");
        store.down.store(true, Ordering::SeqCst);
        breaker.forget(&[a]).await;
        assert!(breaker.project_for_key(&a).await.is_err(), "a forgotten key is not served stale");
        assert!(breaker.project_for_key(&b).await.is_ok());
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(breaker.project_for_key(&b).await.is_err());
    }
}
