//! What the auth stage learns about a request's credential and hands to every later stage.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A permission an API key carries. Keys are scoped so that a key baked into an application (ingest) cannot
/// read back the logs of every other application of the project (query).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Ingest,
    Query,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Ingest, Scope::Query];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// Declares every project setting once: its type, default, upper bound and doc. From it come
/// [`ProjectSettings`] (what a project has; also `[defaults]` in config.toml) and [`SettingsPatch`] (any
/// subset, as a client sends it), so a new setting is one line here.
macro_rules! project_settings {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $default:expr, at most $max:expr;)*) => {
        /// A project's limits. Defaults come from `[defaults]` in config.toml; each project may override them.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(default, deny_unknown_fields)]
        pub struct ProjectSettings {
            $($(#[$doc])* pub $name: $ty,)*
        }

        impl Default for ProjectSettings {
            fn default() -> Self {
                ProjectSettings { $($name: $default,)* }
            }
        }

        /// Any subset of the settings, as a client sends them (whole numbers of any size, each checked
        /// against its bounds by [`SettingsPatch::problems`]).
        #[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(deny_unknown_fields)]
        pub struct SettingsPatch {
            $($(#[$doc])* pub $name: Option<u64>,)*
        }

        impl SettingsPatch {
            /// Each value outside its bounds: (setting, reason).
            pub fn problems(&self) -> Vec<(&'static str, String)> {
                let mut problems = Vec::new();
                $(
                    if let Some(v) = self.$name
                        && (!(1..=$max).contains(&v) || <$ty>::try_from(v).is_err())
                    {
                        problems.push((stringify!($name), format!("must be 1 to {}", $max)));
                    }
                )*
                problems
            }

            /// Each value above the operator's ceiling for it (`[limits]`): (setting, reason). A value past
            /// its type's own bound is one of [`Self::problems`] instead.
            pub fn problems_within(&self, ceiling: &ProjectSettings) -> Vec<(&'static str, String)> {
                let mut problems = Vec::new();
                $(
                    let max = u64::try_from(ceiling.$name).unwrap_or(u64::MAX);
                    if let Some(v) = self.$name
                        && v > max
                        && v <= $max
                    {
                        problems.push((stringify!($name), format!("must be at most {max} on this server")));
                    }
                )*
                problems
            }

            /// `settings` with the values of this patch that are within bounds (see [`Self::problems`]).
            pub fn apply(&self, mut settings: ProjectSettings) -> ProjectSettings {
                $(
                    if let Some(v) = self.$name.filter(|v| (1..=$max).contains(v))
                        && let Ok(v) = <$ty>::try_from(v)
                    {
                        settings.$name = v;
                    }
                )*
                settings
            }
        }
    };
}

/// What both databases store in a signed 64-bit column.
const MAX_I64: u64 = i64::MAX as u64;

project_settings! {
    /// Ingestion requests per sliding minute.
    rate_limit_per_minute: u32 = 1000, at most u64::from(u32::MAX);
    /// Ingestion requests per sliding hour.
    rate_limit_per_hour: u32 = 50_000, at most u64::from(u32::MAX);
    /// Logs accepted per UTC day.
    daily_quota: u64 = 10_000_000, at most MAX_I64;
    /// Days a log is kept, up to ten years.
    retention_days: u32 = 30, at most 3650;
    /// Logs that may wait in the queue before ingestion answers 503 `queue_full`.
    max_queue_depth: u64 = 100_000, at most MAX_I64;
}

/// The project an API key belongs to, as the auth stage resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectContext {
    pub project_id: Uuid,
    pub key_id: Uuid,
    pub scopes: Vec<Scope>,
    pub settings: ProjectSettings,
    /// The project's own rules for the parse, redact and sample stages, if it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<std::sync::Arc<crate::rules::StageRules>>,
}

impl ProjectContext {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_is_checked_against_each_bound_and_applied() {
        let patch = SettingsPatch { retention_days: Some(7), daily_quota: Some(5), ..SettingsPatch::default() };
        assert!(patch.problems().is_empty());
        let settings = patch.apply(ProjectSettings::default());
        assert_eq!((settings.retention_days, settings.daily_quota), (7, 5));
        assert_eq!(settings.rate_limit_per_minute, 1000, "untouched");
        let bad = SettingsPatch {
            retention_days: Some(4000),
            rate_limit_per_minute: Some(0),
            rate_limit_per_hour: Some(u64::from(u32::MAX) + 1),
            ..SettingsPatch::default()
        };
        let fields: Vec<&str> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["rate_limit_per_minute", "rate_limit_per_hour", "retention_days"]);
    }
}
