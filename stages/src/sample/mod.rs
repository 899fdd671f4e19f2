//! The sample stage: drops logs by rule, or keeps one in N. It runs after fingerprint (a log without a
//! trace id is sampled by its fingerprint) and before queue.
//!
//! A rule matches a log by any of `levels`, `services`, `environments` (lists; empty or absent: any) and
//! `message` (a regular expression), all that it names; the first rule that matches decides: `drop`, or
//! `sample` with `one_in = N`, which keeps a log when a hash of its trace id (else its fingerprint) is a
//! multiple of N. The choice depends on the trace id alone, so every instance keeps or drops a trace's
//! logs together, and a trace kept at 1 in 100 is kept at 1 in 10 too.
//!
//! A log removed here is still acknowledged (its id is in the 202, and it counts in `accepted` of that
//! answer), is never stored, ends in its own outcome (`dropped_by_rule` or `sampled_out`, in usage and
//! `/metrics`) and does not count against the project's daily quota.

use std::sync::Arc;

use crate::log::{Level, LogRecord};
use crate::request::{Ingest, IngestError, Removed};
use crate::rules::{Compiled, RuleProblem};
pub use crate::rules::{SampleAction, SampleRule};
use crate::stage::{Stage, StageLayer};

/// Why the stage removed a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    DroppedByRule,
    SampledOut,
}

struct Rule {
    levels: Vec<Level>,
    services: Vec<String>,
    environments: Vec<String>,
    message: Option<regex::Regex>,
    /// `None`: drop.
    one_in: Option<u64>,
}

impl Rule {
    fn matches(&self, record: &LogRecord) -> bool {
        let among = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_deref().is_some_and(|v| list.iter().any(|l| l == v))
        };
        (self.levels.is_empty() || self.levels.contains(&record.level))
            && among(&self.services, &record.service)
            && among(&self.environments, &record.environment)
            && self.message.as_ref().is_none_or(|re| re.is_match(&record.message))
    }
}

/// Drop and sample rules, compiled.
#[derive(Default)]
pub struct Sampler {
    rules: Vec<Rule>,
}

/// A well-mixed 64 bits of `x` (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The value sampling decides on: the trace id's, else the fingerprint's.
pub fn sampling_key(record: &LogRecord) -> u64 {
    match record.trace_id.as_deref().and_then(|t| t.get(16..)).and_then(|t| u64::from_str_radix(t, 16).ok()) {
        Some(trace) => mix(trace),
        None => mix(record.fingerprint ^ 0x9e37_79b9_7f4a_7c15),
    }
}

impl Sampler {
    /// Compiles `rules`; problems name their field under `field`.
    pub fn compile(rules: &[SampleRule], field: &str) -> Result<Sampler, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        if rules.len() > crate::rules::MAX_RULES {
            problems.push(RuleProblem::new(field, format!("at most {} rules", crate::rules::MAX_RULES)));
        }
        let mut compiled = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let mut levels = Vec::new();
            for (j, name) in rule.levels.iter().enumerate() {
                match Level::parse(name) {
                    Some(level) => levels.push(level),
                    None => problems.push(RuleProblem::new(
                        format!("{at}.levels[{j}]"),
                        "must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
                    )),
                }
            }
            let message = match &rule.message {
                Some(source) => match crate::rules::regex(source, &format!("{at}.message")) {
                    Ok(re) => Some(re),
                    Err(problem) => {
                        problems.push(problem);
                        None
                    }
                },
                None => None,
            };
            let one_in = match (rule.action, rule.one_in) {
                (SampleAction::Drop, None) => None,
                (SampleAction::Sample, Some(n)) if n >= 2 => Some(n),
                (SampleAction::Sample, _) => {
                    problems.push(RuleProblem::new(format!("{at}.one_in"), "sample needs one_in of 2 or more"));
                    None
                }
                (SampleAction::Drop, Some(_)) => {
                    problems.push(RuleProblem::new(format!("{at}.one_in"), "is only for action sample"));
                    None
                }
            };
            compiled.push(Rule {
                levels,
                services: rule.services.clone(),
                environments: rule.environments.clone(),
                message,
                one_in,
            });
        }
        if problems.is_empty() { Ok(Sampler { rules: compiled }) } else { Err(problems) }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first matching rule's decision: `None` to keep the log; `Some(None)` when no rule matched.
    fn decide(&self, record: &LogRecord) -> Option<Option<Removal>> {
        let rule = self.rules.iter().find(|r| r.matches(record))?;
        Some(match rule.one_in {
            None => Some(Removal::DroppedByRule),
            Some(n) if !sampling_key(record).is_multiple_of(n) => Some(Removal::SampledOut),
            Some(_) => None,
        })
    }
}

/// The sample stage: the project's rules, then the config's.
pub struct Sample {
    rules: Arc<Compiled<Sampler>>,
}

impl Sample {
    pub fn new(rules: Arc<Compiled<Sampler>>) -> Sample {
        Sample { rules }
    }

    pub fn layer(rules: Arc<Compiled<Sampler>>) -> StageLayer<Sample> {
        StageLayer::new(Sample::new(rules))
    }
}

#[async_trait::async_trait]
impl Stage for Sample {
    const NAME: &'static str = "sample";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let project = request.project()?;
        let own = self
            .rules
            .project(project.project_id, project.stages.as_ref().filter(|s| !s.sample.is_empty()), |rules| {
                Sampler::compile(&rules.sample, "stages.sample")
            })
            .await;
        let global = self.rules.global();
        if global.is_empty() && own.is_none() {
            return Ok(());
        }
        let project_rules = own.is_some();
        let decisions: Vec<Option<Removal>> =
            crate::stage::over_records(&mut request.records, project_rules, move |records| {
                let decide = |record: &LogRecord| {
                    own.as_ref().and_then(|own| own.decide(record)).or_else(|| global.decide(record)).flatten()
                };
                records.iter().map(decide).collect()
            })
            .await?;
        if decisions.iter().all(Option::is_none) {
            return Ok(());
        }
        let mut removed = Removed::default();
        for decision in decisions.iter().flatten() {
            match decision {
                Removal::DroppedByRule => removed.dropped += 1,
                Removal::SampledOut => removed.sampled_out += 1,
            }
        }
        // Every log is acknowledged, in request order; only the kept ones go on.
        request.acknowledged = Some(request.records.iter().map(|r| r.id).collect());
        let mut decisions = decisions.into_iter();
        request.records.retain(|_| decisions.next().flatten().is_none());
        let _ = request.report.removed.set(removed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::testing;

    fn record(level: Level, service: &str, trace: Option<String>, fingerprint: u64) -> LogRecord {
        LogRecord {
            id: Uuid::now_v7(),
            level,
            service: Some(service.into()),
            trace_id: trace,
            fingerprint,
            ..testing::log("GET /health 200")
        }
    }

    fn sampler(rules: serde_json::Value) -> Sampler {
        let rules: Vec<SampleRule> = serde_json::from_value(rules).expect("rules");
        Sampler::compile(&rules, "stages.sample").unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let s = sampler(json!([
            {"levels": ["debug"], "action": "drop"},
            {"services": ["api"], "message": "^GET /health", "action": "drop"},
            {"action": "sample", "one_in": 1000000}
        ]));
        assert_eq!(s.decide(&record(Level::Debug, "web", None, 1)), Some(Some(Removal::DroppedByRule)));
        assert_eq!(s.decide(&record(Level::Error, "api", None, 1)), Some(Some(Removal::DroppedByRule)));
        let kept = (0..100u64).filter(|f| s.decide(&record(Level::Info, "web", None, *f)) == Some(None)).count();
        assert!(kept < 5, "about 1 in a million kept, {kept} of 100");
        assert_eq!(
            sampler(json!([{"levels": ["ERROR"], "action": "drop"}])).decide(&record(Level::Info, "web", None, 1)),
            None
        );
    }

    #[test]
    fn sampling_keeps_or_drops_a_trace_whole_and_about_one_in_n() {
        let s = sampler(json!([{"action": "sample", "one_in": 10}]));
        let mut kept_traces = 0;
        for t in 0..2000u64 {
            let trace = format!("{:032x}", mix(t) as u128 * 7919);
            let decisions: Vec<_> =
                (0..5u64).map(|f| s.decide(&record(Level::Info, "api", Some(trace.clone()), f))).collect();
            assert!(decisions.windows(2).all(|w| w[0] == w[1]), "a trace is decided whole");
            if decisions[0] == Some(None) {
                kept_traces += 1;
            }
        }
        assert!((120..=280).contains(&kept_traces), "about 200 of 2000 traces kept: {kept_traces}");
    }

    #[test]
    fn bad_rules_name_their_field() {
        let rules: Vec<SampleRule> = serde_json::from_value(json!([
            {"levels": ["loud"], "action": "drop"}, {"message": "(", "action": "drop"},
            {"action": "sample"}, {"action": "drop", "one_in": 3}
        ]))
        .expect("rules");
        let problems = Sampler::compile(&rules, "stages.sample").err().expect("refused");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "stages.sample[0].levels[0]",
                "stages.sample[1].message",
                "stages.sample[2].one_in",
                "stages.sample[3].one_in"
            ]
        );
    }

    #[tokio::test]
    async fn removed_logs_are_acknowledged_counted_and_not_passed_on() {
        let global = sampler(json!([{"levels": ["DEBUG"], "action": "drop"}]));
        let stage = Sample::layer(Arc::new(Compiled::new(global)));
        let records = vec![record(Level::Debug, "a", None, 1), record(Level::Info, "a", None, 2)];
        let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
        let seen = testing::passed_on(stage, testing::project(None), records).await;
        assert_eq!(seen.records.len(), 1);
        assert_eq!(seen.records[0].level, Level::Info);
        assert_eq!(seen.acknowledged.as_deref(), Some(ids.as_slice()), "every id, in request order");
        assert_eq!(seen.report.removed.get(), Some(&Removed { dropped: 1, sampled_out: 0 }));
    }
}
