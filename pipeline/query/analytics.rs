//! Error rate, volume and top errors (from the analytics cache) and usage (from the accounts), each for one
//! project and range: one function per question, the same answer for REST and gRPC.

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
pub async fn volume(
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

pub async fn error_rate(
    cache: &dyn AnalyticsCache,
    project: Uuid,
    range: Range,
) -> Result<Vec<ErrorRateBucket>, ApiError> {
    let counts = volume(cache, project, range, Granularity::FiveMinutes).await?;
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

/// The most frequent errors of `range`, at most `limit` (1 to 100, default 10).
pub async fn top_errors(
    cache: &dyn AnalyticsCache,
    project: Uuid,
    range: Range,
    limit: Option<u32>,
) -> Result<Vec<TopError>, ApiError> {
    let limit = match limit {
        Some(l) if (1..=100).contains(&l) => l as usize,
        Some(_) => return Err(bad("limit", "must be 1 to 100")),
        None => 10,
    };
    // Hourly buckets up to a week, daily beyond: the answer is by whole buckets.
    let g = if range.to - range.from <= chrono::Duration::days(7) { Granularity::Hour } else { Granularity::Day };
    let (first, last) = buckets(g, &range)?;
    let mut errors = cache.errors(project, g, first, last).await?;
    errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.fingerprint.cmp(&b.fingerprint)));
    errors.truncate(limit);
    Ok(errors)
}

/// Each day's usage from `from` (default 29 days before `to`) to `to` (default today, UTC), at most 367 days.
pub async fn usage(
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
