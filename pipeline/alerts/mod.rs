//! Alerts: rules per project that watch its error rate, a query's count, new errors and regressions, and
//! notify a webhook, Slack or PagerDuty.
//!
//! - [`rules`]: a rule as clients send it, checked once (kind, parameters, channel and its URL).
//! - [`evaluate`]: the periodic job that looks at every enabled rule, from the analytics cache where it can.
//! - [`notify`]: the channels' bodies, signatures and the delivery with retries and its log.

pub mod evaluate;
pub mod notify;
pub mod rules;

use std::sync::Arc;

use crate::store::alerts::AlertStore;
use crate::store::analytics::AnalyticsCache;
use crate::store::logs::LogStore;

/// What evaluation and delivery stand on.
#[derive(Clone)]
pub struct Alerts {
    pub store: Arc<dyn AlertStore>,
    pub analytics: Arc<dyn AnalyticsCache>,
    pub logs: Arc<dyn LogStore>,
    pub http: reqwest::Client,
    /// Where notifications link to (the console).
    pub console_url: String,
    pub allow_private_targets: bool,
    /// Seconds to wait before each delivery attempt after the first.
    pub backoff: Vec<u64>,
}

/// The client deliveries are made with: no redirects followed, and unless private targets are allowed,
/// names resolved by [`rules::PublicResolver`] (checked and connected to as checked).
pub fn http_client(allow_private_targets: bool) -> reqwest::Client {
    let mut http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        // A redirect could lead anywhere, private addresses included: none is followed.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ledger-alerts/", env!("CARGO_PKG_VERSION")));
    if !allow_private_targets {
        http = http.dns_resolver(Arc::new(rules::PublicResolver));
    }
    http.build().unwrap_or_default()
}

impl Alerts {
    pub fn new(
        store: Arc<dyn AlertStore>,
        analytics: Arc<dyn AnalyticsCache>,
        logs: Arc<dyn LogStore>,
        console_url: String,
        allow_private_targets: bool,
    ) -> Alerts {
        let http = http_client(allow_private_targets);
        Alerts {
            store,
            analytics,
            logs,
            http,
            console_url: console_url.trim_end_matches('/').to_owned(),
            allow_private_targets,
            backoff: vec![2, 5, 10, 20],
        }
    }
}
