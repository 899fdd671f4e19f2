//! Compiling the three rule stages together: a project's rules checked before they are saved
//! ([`StageRules::check`]), the config's compiled at start and on reload ([`compile_config`]). Above the
//! stages it compiles: [`crate::rules`] holds the rules as data, each stage its compiled form.

use crate::parse::ParseRule;
use crate::redact::RedactRule;
use crate::rules::{
    MAX_COMPILE_TIME, MAX_PROJECT_RULES, MAX_PROJECT_RULES_BYTES, RuleProblem, StageRules, off_the_runtime,
};
use crate::sample::SampleRule;

impl StageRules {
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
