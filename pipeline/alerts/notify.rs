//! Notifications: what each channel is sent, signed where it is a webhook, delivered with retries, each
//! attempt in the rule's delivery log. Delivery runs in its own task: an outbound request never holds up an
//! evaluation, let alone ingestion.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use ledger_stages::log::fingerprint_hex as hex;

use super::Alerts;
use super::rules::{Channel, Condition, Rule};

/// How long a delivery's row stays with its instance after each attempt: longer than the longest wait
/// between attempts plus a request's timeout, so only a dead instance's deliveries are taken over.
pub const HOLD_SECS: i64 = 35;

/// One event of a rule.
#[derive(Clone, Debug)]
pub struct Notice {
    /// `firing`, `resolved` or `test`.
    pub status: &'static str,
    /// Unique per rule: the delivery log's key, which makes the event notified once.
    pub event_key: String,
    pub at: DateTime<Utc>,
    pub summary: String,
    pub details: Value,
    pub fingerprint: Option<u64>,
    /// PagerDuty's severity: critical, error, warning, info.
    pub severity: &'static str,
}

/// `X-Ledger-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub(crate) fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail here.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("t={t},v1={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Alerts {
    /// Where a notification links to: the console's Explore, on the error when there is one.
    pub(crate) fn link(&self, rule: &Rule, notice: &Notice) -> String {
        let filter = match (notice.fingerprint, &rule.condition) {
            (Some(f), _) => format!("?fingerprint={}", hex(f)),
            (None, Condition::ErrorRate { .. }) => String::from("?min_level=ERROR"),
            _ => String::new(),
        };
        format!("{}/#/p/{}/explore{filter}", self.console_url, rule.project_id)
    }

    /// The body for the rule's channel.
    pub(crate) fn body(&self, rule: &Rule, notice: &Notice) -> Value {
        let link = self.link(rule, notice);
        let kind = rule.condition.kind();
        match &rule.channel {
            Channel::Slack { .. } => {
                let title = match notice.status {
                    "firing" => format!(":rotating_light: *{}* is firing", rule.name),
                    "resolved" => format!(":white_check_mark: *{}* resolved", rule.name),
                    _ => format!(":wave: *{}*: a test notification", rule.name),
                };
                json!({
                    "text": format!("[{}] {}: {}", notice.status.to_uppercase(), rule.name, notice.summary),
                    "blocks": [
                        {"type": "section", "text": {"type": "mrkdwn", "text": format!("{title}\n{}", notice.summary)}},
                        {"type": "context", "elements": [{"type": "mrkdwn",
                            "text": format!("{kind} · project {} · {}", rule.project_id, notice.at.to_rfc3339())}]},
                        {"type": "actions", "elements": [{"type": "button",
                            "text": {"type": "plain_text", "text": "Open in Ledger"}, "url": link}]},
                    ],
                })
            }
            Channel::Pagerduty { routing_key, .. } => {
                let dedup_key = match (notice.status, notice.fingerprint) {
                    ("test", _) => format!("ledger:{}:test", rule.id),
                    (_, Some(f)) => format!("ledger:{}:{}", rule.id, hex(f)),
                    (_, None) => format!("ledger:{}", rule.id),
                };
                if notice.status == "resolved" {
                    return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key});
                }
                let summary: String = format!("{}: {}", rule.name, notice.summary).chars().take(1024).collect();
                json!({
                    "routing_key": routing_key,
                    "event_action": "trigger",
                    "dedup_key": dedup_key,
                    "payload": {
                        "summary": summary,
                        "severity": notice.severity,
                        "source": "ledger",
                        "timestamp": notice.at.to_rfc3339(),
                        "component": rule.project_id.to_string(),
                        "class": kind,
                        "custom_details": notice.details,
                    },
                    "links": [{"href": link, "text": "Open in Ledger"}],
                })
            }
            Channel::Webhook { .. } => {
                let mut body = json!({
                    "alert": {"id": rule.id.to_string(), "name": rule.name, "kind": kind},
                    "project_id": rule.project_id.to_string(),
                    "status": notice.status,
                    "at": notice.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "summary": notice.summary,
                    "details": notice.details,
                    "link": link,
                });
                if let Some(f) = notice.fingerprint {
                    body["fingerprint"] = json!(hex(f));
                }
                body
            }
        }
    }

    /// Claims the event and, if this instance made its row, delivers it in the background.
    pub(crate) async fn notify(&self, rule: &Rule, notice: Notice) -> Result<bool, crate::store::StoreError> {
        let payload = self.body(rule, &notice).to_string();
        let held = Utc::now() + chrono::Duration::seconds(HOLD_SECS);
        if !self.store.claim(rule.id, &notice.event_key, notice.status, notice.at, &payload, held).await? {
            return Ok(false);
        }
        crate::metrics::metrics().alert_notified(notice.status);
        let (alerts, rule) = (self.clone(), rule.clone());
        tokio::spawn(async move { alerts.deliver(&rule, &notice.event_key, payload.into_bytes(), 0).await });
        Ok(true)
    }

    /// Finishes deliveries whose instance stopped before them (no attempt for [`HOLD_SECS`]).
    pub(crate) async fn resume_unfinished(&self) -> Result<(), crate::store::StoreError> {
        let now = Utc::now();
        let attempts = 1 + self.backoff.len() as i64;
        for unfinished in self.store.reclaim(now, now + chrono::Duration::seconds(HOLD_SECS), attempts).await? {
            let Some(row) = self.store.rule_by_id(unfinished.rule_id).await? else { continue };
            let rule = match Rule::read(row) {
                Ok(rule) => rule,
                Err(error) => {
                    tracing::error!(%error, "an unfinished alert delivery is left: its rule does not read");
                    continue;
                }
            };
            tracing::info!(rule = %rule.id, event = %unfinished.event_key, attempts = unfinished.attempts, "resuming an alert delivery another instance left");
            let alerts = self.clone();
            tokio::spawn(async move {
                alerts.deliver(&rule, &unfinished.event_key, unfinished.payload.into_bytes(), unfinished.attempts).await
            });
        }
        Ok(())
    }

    /// Sends `body` until a 2xx answer or the attempts run out (after `done` made elsewhere), recording each.
    pub(crate) async fn deliver(&self, rule: &Rule, event_key: &str, body: Vec<u8>, done: i64) -> bool {
        let url = rule.channel.url().to_owned();
        let skip = usize::try_from(done).unwrap_or(0);
        // A resumed delivery goes at once, then keeps to the rest of the schedule.
        let waits: Vec<u64> = std::iter::once(0)
            .chain(self.backoff.iter().copied())
            .enumerate()
            .skip(skip)
            .map(|(i, w)| if i == skip { 0 } else { w })
            .collect();
        let mut attempts = done;
        for wait in waits {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            attempts += 1;
            let held = Utc::now() + chrono::Duration::seconds(HOLD_SECS);
            // Names are checked by the client's resolver at each connection (they may resolve elsewhere now
            // than when the rule was made); an address literal here.
            if super::rules::refused_literal(&url, self.allow_private_targets) {
                tracing::warn!(rule = %rule.id, "alert not sent: its URL is a private address");
                let _ = self.store.attempted(rule.id, event_key, attempts, None, false, held).await;
                break;
            }
            let mut request = self.http.post(&url).header("content-type", "application/json").body(body.clone());
            if !rule.secret.is_empty() {
                request = request.header("x-ledger-signature", signature(&rule.secret, Utc::now().timestamp(), &body));
            }
            let status = match request.send().await {
                Ok(response) => Some(i64::from(response.status().as_u16())),
                Err(error) => {
                    tracing::warn!(rule = %rule.id, error = %error, attempts, "alert delivery failed");
                    None
                }
            };
            let delivered = status.is_some_and(|s| (200..300).contains(&s));
            if let Err(error) = self.store.attempted(rule.id, event_key, attempts, status, delivered, held).await {
                tracing::warn!(rule = %rule.id, %error, "could not record an alert delivery attempt");
            }
            if delivered {
                crate::metrics::metrics().alert_delivery(crate::metrics::AlertDelivery::Delivered);
                return true;
            }
            crate::metrics::metrics().alert_delivery(crate::metrics::AlertDelivery::FailedAttempt);
        }
        tracing::error!(rule = %rule.id, event = %event_key, attempts, "alert not delivered");
        crate::metrics::metrics().alert_delivery(crate::metrics::AlertDelivery::GaveUp);
        false
    }
}

/// A test notification's event.
pub(crate) fn test_notice(rule_id: Uuid) -> Notice {
    let at = Utc::now();
    Notice {
        status: "test",
        event_key: format!("test:{}:{}", at.timestamp_micros(), &Uuid::new_v4().simple().to_string()[..8]),
        at,
        summary: String::from("A test notification from Ledger: this channel works."),
        details: json!({"rule_id": rule_id.to_string()}),
        fingerprint: None,
        severity: "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // The value Python gives: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
        let signed = signature("key", 1_700_000_000, b"{}");
        assert_eq!(signed, "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae");
    }
}
