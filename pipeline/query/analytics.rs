//! Error rate, volume and top errors (from the analytics cache) and usage (from the accounts), each for one
//! project and range: one function per question, the same answer for every front.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use uuid::Uuid;

use super::{Range, bad};
use crate::error::ApiError;
use crate::store::analytics::{AnalyticsCache, Granularity, LevelCounts, TopError};
use crate::store::{AccountStore, Usage};

/// Buckets per answer at most: a week of 5-minute buckets.
const MAX_BUCKETS: i64 = 2016;

/// The bucket starts of `range` in `g`, or 400 if there would be too many.
fn buckets(g: Granularity, range: &Range) -> Result<(i64, i64), ApiError> {
    let (first, last) = (g.bucket(&range.from), g.bucket(&range.to));
    if (last - first) / g.seconds() + 1 > MAX_BUCKETS {
        return Err(bad("from", &format!("is too far from `to` for {} buckets (at most {MAX_BUCKETS})", g.name())));
    }
    Ok((first, last))
}

/// Level counts of every bucket of `range`, empty ones included, oldest first.
pub(crate) async fn volume(
    cache: &dyn AnalyticsCache,
    project: Uuid,
    range: Range,
    g: Granularity,
) -> Result<Vec<(i64, LevelCounts)>, ApiError> {
    let (first, last) = buckets(g, &range)?;
    let known: HashMap<i64, LevelCounts> = cache.volume(project, g, first, last).await?.into_iter().collect();
    let step = usize::try_from(g.seconds()).unwrap_or(300);
    Ok((first..=last).step_by(step).map(|b| (b, known.get(&b).copied().unwrap_or_default())).collect())
}

/// One 5-minute bucket of the error rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorRateBucket {
    /// Unix seconds.
    pub start: i64,
    pub total: u64,
    /// ERROR and CRITICAL logs.
    pub errors: u64,
    /// errors / total; 0 for an empty bucket.
    pub error_rate: f64,
}

/// The width of the error rate's buckets.
pub const ERROR_RATE_BUCKET: Granularity = Granularity::FiveMinutes;

pub(crate) async fn error_rate(
    cache: &dyn AnalyticsCache,
    project: Uuid,
    range: Range,
) -> Result<Vec<ErrorRateBucket>, ApiError> {
    let counts = volume(cache, project, range, ERROR_RATE_BUCKET).await?;
    Ok(counts
        .into_iter()
        .map(|(start, c)| {
            let total: u64 = c.iter().sum();
            let errors = c[3] + c[4];
            let error_rate = if total == 0 { 0.0 } else { errors as f64 / total as f64 };
            ErrorRateBucket { start, total, errors, error_rate }
        })
        .collect())
}

/// An error of a range, measured against the time before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStatus {
    /// First seen inside the range.
    New,
    /// Seen before, then quiet for [`REGRESSION_QUIET_SECS`] up to its first occurrence in the range.
    Regressed,
    /// Neither: it was occurring before the range too.
    Ongoing,
}

impl ErrorStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorStatus::New => "new",
            ErrorStatus::Regressed => "regressed",
            ErrorStatus::Ongoing => "ongoing",
        }
    }
}

/// A day without an error, then the error again: a regression.
pub const REGRESSION_QUIET_SECS: i64 = 86_400;

/// Top errors of a range, each with its count per bucket (`series`, only the range's buckets) and status.
pub struct TopErrors {
    pub granularity: Granularity,
    /// Bucket starts of the range (Unix seconds), inclusive.
    pub first: i64,
    pub last: i64,
    pub errors: Vec<(TopError, ErrorStatus)>,
}

impl TopErrors {
    /// An error's counts for every bucket of the range, empty ones included, oldest first.
    pub(crate) fn dense_series(&self, error: &TopError) -> Vec<u64> {
        let step = self.granularity.seconds();
        let mut dense = vec![0; usize::try_from((self.last - self.first) / step + 1).unwrap_or(0)];
        for (bucket, count) in &error.series {
            if let Some(slot) = usize::try_from((bucket - self.first) / step).ok().and_then(|i| dense.get_mut(i)) {
                *slot += count;
            }
        }
        dense
    }
}

/// Where an error of the range stands; `before` holds its buckets in the quiet window before the range.
fn status(error: &TopError, range_start: i64, before: &[(i64, u64)], g: Granularity) -> ErrorStatus {
    let first_seen = error.info.first_seen.div_euclid(1_000_000);
    if first_seen >= range_start {
        return ErrorStatus::New;
    }
    let Some((first_in_range, _)) = error.series.first() else { return ErrorStatus::Ongoing };
    // Quiet: no occurrence in the window ending at its first bucket in the range, and it existed before it.
    let quiet_from = first_in_range - REGRESSION_QUIET_SECS.max(g.seconds());
    let quiet = !before.iter().chain(&error.series).any(|(b, c)| *c > 0 && *b >= quiet_from && b < first_in_range);
    if quiet && first_seen < quiet_from { ErrorStatus::Regressed } else { ErrorStatus::Ongoing }
}

/// The most frequent errors of `range`, at most `limit` (1 to 100, default 10).
pub(crate) async fn top_errors(
    cache: &dyn AnalyticsCache,
    project: Uuid,
    range: Range,
    limit: Option<u32>,
) -> Result<TopErrors, ApiError> {
    let limit = match limit {
        Some(l) if (1..=100).contains(&l) => l as usize,
        Some(_) => return Err(bad("limit", "must be 1 to 100")),
        None => 10,
    };
    // Hourly buckets up to a week, daily beyond: the answer is by whole buckets.
    let g = if range.to - range.from <= chrono::Duration::days(7) { Granularity::Hour } else { Granularity::Day };
    let (first, last) = buckets(g, &range)?;
    // The quiet window before the range too, to tell a regression.
    let lookback = REGRESSION_QUIET_SECS.max(g.seconds());
    let mut errors = cache.errors(project, g, first - lookback, last).await?;
    let mut ranked: Vec<(TopError, ErrorStatus)> = Vec::with_capacity(errors.len());
    for mut error in errors.drain(..) {
        let before: Vec<(i64, u64)> = error.series.iter().copied().filter(|(b, _)| *b < first).collect();
        error.series.retain(|(b, _)| *b >= first);
        error.count = error.series.iter().map(|(_, c)| c).sum();
        if error.count == 0 {
            continue;
        }
        let status = status(&error, first, &before, g);
        ranked.push((error, status));
    }
    ranked.sort_by(|(a, _), (b, _)| b.count.cmp(&a.count).then(a.fingerprint.cmp(&b.fingerprint)));
    ranked.truncate(limit);
    Ok(TopErrors { granularity: g, first, last, errors: ranked })
}

/// Each day's usage from `from` (default 29 days before `to`) to `to` (default today, UTC), at most 367 days.
pub(crate) async fn usage(
    accounts: &dyn AccountStore,
    project: Uuid,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<(NaiveDate, Usage)>, ApiError> {
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let from = from.unwrap_or(to - chrono::Duration::days(29));
    if from > to {
        return Err(bad("from", "must not be after `to`"));
    }
    if (to - from).num_days() > 366 {
        return Err(bad("from", "may be at most 366 days before `to`"));
    }
    let known: HashMap<NaiveDate, Usage> = accounts.usage(project, from, to).await?.into_iter().collect();
    Ok(from.iter_days().take_while(|d| *d <= to).map(|d| (d, known.get(&d).copied().unwrap_or_default())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::analytics::memory::MemoryAnalytics;
    use crate::store::analytics::{ErrorInfo, Stats};
    use chrono::{DateTime, Duration};

    /// Error counts for fingerprint `f` in the hourly buckets `hours_ago`, first seen at the oldest of them.
    fn errors(project: Uuid, now: i64, f: u64, hours_ago: &[i64]) -> Stats {
        let mut stats = Stats::default();
        for h in hours_ago {
            let bucket = Granularity::Hour.bucket(&DateTime::from_timestamp(now - h * 3600, 0).expect("time"));
            stats.errors.insert((project, Granularity::Hour, bucket, f), 2);
        }
        let oldest = now - hours_ago.iter().max().expect("hours") * 3600;
        let info = ErrorInfo {
            first_seen: oldest * 1_000_000,
            last_seen: now * 1_000_000,
            level: 40,
            service: None,
            sample_message: String::from("boom"),
            exception_type: None,
        };
        stats.info.insert((project, f), info);
        stats
    }

    #[tokio::test]
    async fn errors_are_new_regressed_or_ongoing_with_a_series_of_the_range() {
        let cache = MemoryAnalytics::default();
        let project = Uuid::new_v4();
        let now = Utc::now();
        let t = now.timestamp();
        cache.add(&errors(project, t, 1, &[2, 1])).await.expect("new");
        cache.add(&errors(project, t, 2, &[60, 3])).await.expect("quiet for 57 hours: regressed");
        cache.add(&errors(project, t, 3, &[30, 12, 3])).await.expect("seen 12 hours before: ongoing");
        let range = Range::new(Some(now - Duration::hours(6)), Some(now)).expect("range");
        let top = top_errors(&cache, project, range, None).await.expect("top errors");
        let by = |f: u64| top.errors.iter().find(|(e, _)| e.fingerprint == f).expect("listed");
        assert_eq!(by(1).1, ErrorStatus::New);
        assert_eq!(by(2).1, ErrorStatus::Regressed);
        assert_eq!(by(3).1, ErrorStatus::Ongoing);
        // Counts of the range only: the occurrences before it are not in `count` nor in the series.
        let (ongoing, _) = by(3);
        assert_eq!(ongoing.count, 2);
        let dense = top.dense_series(ongoing);
        assert_eq!(dense.len(), 7, "six hours and the current one");
        assert_eq!(dense.iter().sum::<u64>(), 2);
        assert_eq!(dense[3], 2, "three hours ago");
    }
}
