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

use crate::parse::ParseRule;
use crate::redact::RedactRule;
use crate::sample::SampleRule;

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

/// Runs `apply` over a request's records: inline when only the operator's rules apply, on the blocking pool
/// ([`off_the_runtime`]) when the project's own do, so that their cost is paid by the project's requests
/// and not by the async workers every tenant shares.
pub async fn over_records<R: Send + 'static>(
    records: &mut Vec<crate::LogRecord>,
    project_rules: bool,
    apply: impl FnOnce(&mut [crate::LogRecord]) -> R + Send + 'static,
) -> Result<R, crate::IngestError> {
    if !project_rules {
        return Ok(apply(records));
    }
    let mut taken = std::mem::take(records);
    let (taken, result) = off_the_runtime(move || {
        let result = apply(&mut taken);
        (taken, result)
    })
    .await
    .ok_or_else(|| crate::IngestError::unavailable("the project's stage rules"))?;
    *records = taken;
    Ok(result)
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

    /// Every problem with these rules as a project's: over the project budget (rules, bytes, compile time),
    /// or not compiling. Compiled off the async workers ([`off_the_runtime`]).
    pub async fn check(self, hash_key: Option<Vec<u8>>) -> Vec<RuleProblem> {
        let rules = self.parse.len() + self.redact.len() + self.sample.len();
        let bytes = serde_json::to_vec(&self).map_or(usize::MAX, |json| json.len());
        let mut problems = Vec::new();
        if rules > MAX_PROJECT_RULES {
            problems
                .push(RuleProblem::new("stages", format!("{rules} rules; a project has at most {MAX_PROJECT_RULES}")));
        }
        if bytes > MAX_PROJECT_RULES_BYTES {
            let reason = format!("{bytes} bytes of rules; a project has at most {MAX_PROJECT_RULES_BYTES}");
            problems.push(RuleProblem::new("stages", reason));
        }
        if !problems.is_empty() {
            return problems;
        }
        let compiled = off_the_runtime(move || {
            let started = std::time::Instant::now();
            let mut problems = self.problems(hash_key.as_deref());
            let took = started.elapsed();
            if problems.is_empty() && took > MAX_COMPILE_TIME {
                let reason =
                    format!("take {} ms to compile; at most {} ms", took.as_millis(), MAX_COMPILE_TIME.as_millis());
                problems.push(RuleProblem::new("stages", reason));
            }
            problems
        })
        .await;
        compiled.unwrap_or_else(|| vec![RuleProblem::new("stages", "could not be compiled")])
    }

    /// Every problem with these rules, each naming its field (`stages.redact[2].pattern`); empty when
    /// they compile. `hash_key`: the operator's key for the redact stage's `hash` action, if any.
    pub fn problems(&self, hash_key: Option<&[u8]>) -> Vec<RuleProblem> {
        let mut problems = Vec::new();
        if let Err(p) = crate::parse::Parser::compile(&self.parse, "stages.parse") {
            problems.extend(p);
        }
        if let Err(p) = crate::redact::Redactor::compile(&self.redact, hash_key, "stages.redact") {
            problems.extend(p);
        }
        if let Err(p) = crate::sample::Sampler::compile(&self.sample, "stages.sample") {
            problems.extend(p);
        }
        problems
    }
}

/// The config's rules of the three stages, compiled (`hash_key` empty: none); or every problem, on one
/// line, each naming its key (`stages.redact.rules[2].pattern`).
pub fn compile_config(
    parse: &[ParseRule],
    redact: &[RedactRule],
    hash_key: &[u8],
    sample: &[SampleRule],
) -> Result<(crate::parse::Parser, crate::redact::Redactor, crate::sample::Sampler), String> {
    use crate::redact::MIN_HASH_KEY_BYTES;
    if !hash_key.is_empty() && hash_key.len() < MIN_HASH_KEY_BYTES {
        return Err(format!("stages.redact.hash_key must be at least {MIN_HASH_KEY_BYTES} bytes"));
    }
    let key = (!hash_key.is_empty()).then_some(hash_key);
    let mut problems = Vec::new();
    let parse = crate::parse::Parser::compile(parse, "stages.parse.rules").map_err(|p| problems.extend(p));
    let redact = crate::redact::Redactor::compile(redact, key, "stages.redact.rules").map_err(|p| problems.extend(p));
    let sample = crate::sample::Sampler::compile(sample, "stages.sample.rules").map_err(|p| problems.extend(p));
    match (parse, redact, sample) {
        (Ok(parse), Ok(redact), Ok(sample)) => Ok((parse, redact, sample)),
        _ => Err(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
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
