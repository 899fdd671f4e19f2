//! The rules operators give the parse, redact and sample stages: in config.toml (`[stages.parse]`,
//! `[stages.redact]`, `[stages.sample]`) for every project, and per project (the project's `stages`,
//! through the projects API). Each stage compiles its rules once: the config's into a handle that a reload
//! swaps without stopping a request, each project's on first use, kept while they do not change.
//!
//! How the two combine, stage by stage:
//! - parse: the project's rules are tried first, then the config's; the first rule that applies to the
//!   log's service and parses its message wins.
//! - redact: every rule of both applies (the config's first): a project can add redaction, never lift the
//!   operator's.
//! - sample: the project's rules are tried first, then the config's; the first rule that matches decides.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Rules at most per stage and project (and in config.toml): enough for any real pipeline, and a bound on
/// what one project can make every request of its own cost.
pub const MAX_RULES: usize = 100;
/// Bytes of one regular expression's source at most.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled size of one regular expression at most (the `regex` crate's limit, in bytes).
pub const MAX_COMPILED_BYTES: usize = 1 << 20;
/// A project's own rules, all stages together, at most: compiling and running them is paid by every one of
/// the project's requests, off the async workers but on the same cores as every other tenant's.
pub const MAX_PROJECT_RULES: usize = 100;
/// Bytes of a project's own rules, all stages together, as JSON at most.
pub const MAX_PROJECT_RULES_BYTES: usize = 32 * 1024;
/// Time a project's rules may take to compile, checked when they are saved.
pub const MAX_COMPILE_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Rule work (compiling a project's rules, running them over a batch) happens on the blocking pool, this
/// many jobs at once: a project with heavy rules waits for a slot instead of holding the async workers
/// that answer every other tenant.
static RULE_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs `job` on the blocking pool once one of the rule slots is free; `None` if it panicked.
pub async fn off_the_runtime<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = RULE_SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(job).await.ok()
}

// The rules of each stage, as config.toml and the projects API take them; each stage compiles its own.

/// How a rule reads a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The message is a JSON object.
    Json,
    /// The message is `key=value` pairs separated by spaces; values may be double-quoted.
    Logfmt,
    /// `pattern` matches the message; its named captures are the fields.
    Regex,
}

/// One parse rule, as config.toml and the projects API take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ParseRule {
    /// The services whose logs it reads; empty or absent: every log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub format: Format,
    /// The regular expression of format `regex` (named captures: `(?P<name>...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A built-in detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    Email,
    Card,
    Ipv4,
    Ipv6,
    Jwt,
    Bearer,
    CloudKeys,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Mask,
    Hash,
    Remove,
}

/// One redact rule, as config.toml and the projects API take it: exactly one of `detector`, `pattern` and
/// `attribute`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<Detector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The rule's name in `/metrics`; default: the detector's name, `pattern_<n>` or `attribute_<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub action: Action,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SampleAction {
    Drop,
    Sample,
}

/// One drop or sample rule, as config.toml and the projects API take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SampleRule {
    /// Level names (case-insensitive, `warn` and `fatal` too); empty: any level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// A regular expression the message must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub action: SampleAction,
    /// With `sample`: keep one log (one trace) in this many, 2 or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_in: Option<u64>,
}

/// A project's own rules (the `stages` of a project in the API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct StageRules {
    pub parse: Vec<ParseRule>,
    pub redact: Vec<RedactRule>,
    pub sample: Vec<SampleRule>,
}

impl StageRules {
    pub fn is_empty(&self) -> bool {
        self.parse.is_empty() && self.redact.is_empty() && self.sample.is_empty()
    }
}

/// One thing wrong with a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleProblem {
    /// Where, e.g. `stages.parse[0].pattern`.
    pub field: String,
    pub reason: String,
}

impl RuleProblem {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> RuleProblem {
        RuleProblem { field: field.into(), reason: reason.into() }
    }
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Compiles a regular expression from a rule, with the bounds above; the problem names `field`.
pub fn regex(source: &str, field: &str) -> Result<regex::Regex, RuleProblem> {
    if source.len() > MAX_PATTERN_BYTES {
        return Err(RuleProblem::new(field, format!("longer than {MAX_PATTERN_BYTES} bytes")));
    }
    regex::RegexBuilder::new(source)
        .size_limit(MAX_COMPILED_BYTES)
        .build()
        .map_err(|e| RuleProblem::new(field, format!("not a valid regular expression: {}", one_line(&e.to_string()))))
}

/// The `regex` crate's errors draw the pattern over several lines; an API answer wants one.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// A stage's compiled rules: the config's, swapped whole on reload, and each project's, compiled on first
/// use and kept while the project's rules are the same.
pub struct Compiled<C> {
    global: ArcSwap<C>,
    projects: moka::sync::Cache<Uuid, (Arc<StageRules>, Arc<C>)>,
}

impl<C: Send + Sync + 'static> Compiled<C> {
    pub fn new(global: C) -> Compiled<C> {
        Compiled { global: ArcSwap::from_pointee(global), projects: moka::sync::Cache::new(10_000) }
    }

    /// The config's rules, as of now.
    pub fn global(&self) -> Arc<C> {
        self.global.load_full()
    }

    /// Swaps in the config's new rules; projects' rules are compiled again on next use (they may depend
    /// on the config, e.g. the hash key).
    pub fn replace(&self, global: C) {
        self.global.store(Arc::new(global));
        self.projects.invalidate_all();
    }

    /// A project's compiled rules, `None` when it has none for this stage. `compile` runs when they are
    /// new or changed, off the async workers ([`off_the_runtime`]); rules that do not compile (they were
    /// checked when saved, so only a config change can cause it) are skipped with a warning.
    pub async fn project(
        &self,
        project: Uuid,
        rules: Option<&Arc<StageRules>>,
        compile: impl FnOnce(&StageRules) -> Result<C, Vec<RuleProblem>> + Send + 'static,
    ) -> Option<Arc<C>> {
        let rules = rules?;
        if let Some((seen, compiled)) = self.projects.get(&project)
            && (Arc::ptr_eq(&seen, rules) || *seen == **rules)
        {
            return Some(compiled);
        }
        let owned = rules.clone();
        match off_the_runtime(move || compile(&owned)).await {
            Some(Ok(compiled)) => {
                let compiled = Arc::new(compiled);
                self.projects.insert(project, (rules.clone(), compiled.clone()));
                Some(compiled)
            }
            Some(Err(problems)) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::warn!(%project, ?problems, "a project's stage rules do not compile; they are skipped");
                None
            }
            None => {
                tracing::error!(%project, "compiling a project's stage rules panicked; they are skipped");
                None
            }
        }
    }
}
