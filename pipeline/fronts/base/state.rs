//! The services every front's handlers call, shared by one reference count.

use std::sync::Arc;

use crate::accounts::Accounts;
use crate::store::Backend;

use super::operator::OperatorToken;

/// What the handlers of every front use. Axum clones the state for each request: one shared allocation
/// makes that one reference count instead of one per service (the profile of single-log requests had the
/// clone and drop of the whole struct at ~6% of the daemon's time).
#[derive(Clone)]
pub struct AppState(Arc<FrontServices>);

impl AppState {
    pub(crate) fn new(services: FrontServices) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = FrontServices;

    fn deref(&self) -> &FrontServices {
        &self.0
    }
}

pub struct FrontServices {
    pub accounts: Arc<Accounts>,
    pub backend: Backend,
    pub ingestion: crate::ingest::Ingestion,
    pub logs: Arc<dyn crate::store::logs::LogStore>,
    pub queue: Arc<dyn ledger_stages::queue::LogQueue>,
    pub analytics: Arc<dyn crate::store::analytics::AnalyticsCache>,
    /// The account store's circuit breaker, for `/metrics`.
    pub breaker: Arc<ledger_stages::auth::BreakerStore<Arc<dyn ledger_stages::auth::KeyStore>>>,
    /// Who may read `/metrics`, `/health/deep` and gRPC reflection.
    pub operator: OperatorToken,
    pub console: ConsoleSettings,
    /// Live tail: this instance's subscribers and their readers.
    pub tail: crate::query::tail::TailHub,
    /// How often a quiet tail stream gets a heartbeat.
    pub tail_heartbeat: std::time::Duration,
    /// Alert rules' checks and notifications (the test notification).
    pub alerts: crate::alerts::Alerts,
}

/// What the console needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleSettings {
    /// `console.enabled`.
    pub enabled: bool,
    /// Cookies marked `Secure` (the listener speaks TLS).
    pub secure_cookie: bool,
}
