//! Alerts: rules per project that watch its error rate, a query's count, new errors and regressions, and
//! notify a webhook, Slack or PagerDuty. Every front calls [`Alerts`]' methods (a rule's create, read,
//! change, delete, test and deliveries, each checking that the session's user owns the project); none
//! touches the store or a rule's state itself.
//!
//! - [`rules`]: a rule, typed ([`rules::Condition`], [`rules::Channel`]), and a client's input checked once.
//! - [`evaluate`]: the periodic job that looks at every enabled rule, from the analytics cache where it can.
//! - [`notify`]: the channels' bodies, signatures and the delivery with retries and its log.

pub mod evaluate;
pub mod notify;
pub mod rules;

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::accounts::{Accounts, Session};
use crate::error::{ApiError, FieldProblem};
use crate::store::alerts::{AlertStore, Delivery};
use crate::store::analytics::AnalyticsCache;
use crate::store::logs::LogStore;
use rules::{Channel, Checked, Condition, Rule, RuleInput};

/// What evaluation and delivery stand on.
#[derive(Clone)]
pub struct Alerts {
    pub store: Arc<dyn AlertStore>,
    /// Who owns which project, and the operator's limits.
    pub accounts: Arc<Accounts>,
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
pub(crate) fn http_client(allow_private_targets: bool) -> reqwest::Client {
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
    pub(crate) fn new(
        store: Arc<dyn AlertStore>,
        accounts: Arc<Accounts>,
        analytics: Arc<dyn AnalyticsCache>,
        logs: Arc<dyn LogStore>,
        console_url: String,
        allow_private_targets: bool,
    ) -> Alerts {
        let http = http_client(allow_private_targets);
        Alerts {
            store,
            accounts,
            analytics,
            logs,
            http,
            console_url: console_url.trim_end_matches('/').to_owned(),
            allow_private_targets,
            backoff: vec![2, 5, 10, 20],
        }
    }
}

/// A rule just made, and its webhook signing secret (shown once) when it has one.
pub struct Created {
    pub rule: Rule,
    pub secret: Option<String>,
}

/// A webhook's signing secret: 32 random bytes, hex.
fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rules' routes, typed: what every front calls.
impl Alerts {
    /// The project, if the session's user owns it (else 404, as for any project).
    async fn owned(&self, session: &Session, project: Uuid) -> Result<Uuid, ApiError> {
        self.accounts.project(session.user_id, project).await.map(|p| p.id)
    }

    async fn rule(&self, project: Uuid, id: Uuid) -> Result<Rule, ApiError> {
        let row = self.store.rule(project, id).await?.ok_or(ApiError::NotFound)?;
        Rule::read(row).map_err(ApiError::internal)
    }

    pub(crate) async fn create(&self, session: &Session, project: Uuid, input: RuleInput) -> Result<Created, ApiError> {
        let project = self.owned(session, project).await?;
        let checked = rules::check(input, None, self.allow_private_targets).await?;
        let limits = self.accounts.limits();
        let existing = self.store.rules(project).await?;
        let queries = existing.iter().filter(|r| r.condition.kind == Condition::QUERY_COUNT).count();
        if existing.len() >= limits.max_alert_rules_per_project {
            let reason =
                format!("a project has at most {} alert rules on this server", limits.max_alert_rules_per_project);
            return Err(ApiError::Validation(vec![FieldProblem::new("name", reason)]));
        }
        if matches!(checked.condition, Condition::QueryCount { .. }) && queries >= limits.max_query_rules_per_project {
            let max = limits.max_query_rules_per_project;
            let reason = format!("a project has at most {max} query_count rules on this server");
            return Err(ApiError::Validation(vec![FieldProblem::new("kind", reason)]));
        }
        let Checked { name, condition, channel, cooldown_secs, enabled } = checked;
        let secret = matches!(channel, Channel::Webhook { .. }).then(new_secret);
        let now = Utc::now();
        let rule = Rule {
            id: Uuid::now_v7(),
            project_id: project,
            name,
            condition,
            channel,
            secret: secret.clone().unwrap_or_default(),
            cooldown_secs,
            enabled,
            created_at: now,
            firing: false,
            episode: 0,
            last_fired_at: None,
            checked_until: now,
        };
        self.store.create_rule(&rule.stored()).await?;
        Ok(Created { rule, secret })
    }

    pub(crate) async fn list(&self, session: &Session, project: Uuid) -> Result<Vec<Rule>, ApiError> {
        let project = self.owned(session, project).await?;
        let rows = self.store.rules(project).await?;
        rows.into_iter().map(|row| Rule::read(row).map_err(ApiError::internal)).collect()
    }

    pub(crate) async fn get(&self, session: &Session, project: Uuid, id: Uuid) -> Result<Rule, ApiError> {
        let project = self.owned(session, project).await?;
        self.rule(project, id).await
    }

    /// Changes what `input` names; the kind never changes, and a rule without a signing secret cannot
    /// become a webhook.
    pub(crate) async fn update(
        &self,
        session: &Session,
        project: Uuid,
        id: Uuid,
        input: RuleInput,
    ) -> Result<Rule, ApiError> {
        let project = self.owned(session, project).await?;
        let mut rule = self.rule(project, id).await?;
        let channel_changed = input.channel.is_some();
        let checked = rules::check(input, Some(&rule), self.allow_private_targets).await?;
        if channel_changed && matches!(checked.channel, Channel::Webhook { .. }) && rule.secret.is_empty() {
            return Err(ApiError::validation("channel", "a rule cannot become a webhook: create a webhook rule"));
        }
        rule.name = checked.name;
        rule.condition = checked.condition;
        rule.channel = checked.channel;
        rule.cooldown_secs = checked.cooldown_secs;
        rule.enabled = checked.enabled;
        if !self.store.update_rule(&rule.stored()).await? {
            return Err(ApiError::NotFound);
        }
        Ok(rule)
    }

    pub(crate) async fn delete(&self, session: &Session, project: Uuid, id: Uuid) -> Result<(), ApiError> {
        let project = self.owned(session, project).await?;
        if self.store.delete_rule(project, id).await? { Ok(()) } else { Err(ApiError::NotFound) }
    }

    /// Sends a test notification through the rule's channel; its event key, whose attempts the deliveries show.
    pub(crate) async fn test(&self, session: &Session, project: Uuid, id: Uuid) -> Result<String, ApiError> {
        let project = self.owned(session, project).await?;
        let rule = self.rule(project, id).await?;
        let notice = notify::test_notice(rule.id);
        let event = notice.event_key.clone();
        self.notify(&rule, notice).await?;
        Ok(event)
    }

    /// The rule's last 100 notifications, newest first.
    pub(crate) async fn deliveries(
        &self,
        session: &Session,
        project: Uuid,
        id: Uuid,
    ) -> Result<Vec<Delivery>, ApiError> {
        let project = self.owned(session, project).await?;
        let rule = self.rule(project, id).await?;
        Ok(self.store.deliveries(rule.id, 100).await?)
    }
}
