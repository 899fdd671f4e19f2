//! The embedded backend's metrics cache: maps in memory, pruned to each granularity's lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{AnalyticsCache, ErrorInfo, Granularity, LevelCounts, Stats, TopError};
use crate::store::StoreError;

#[derive(Default)]
struct Maps {
    volume: HashMap<(Uuid, Granularity, i64), LevelCounts>,
    errors: HashMap<(Uuid, Granularity, i64, u64), u64>,
    info: HashMap<(Uuid, u64), ErrorInfo>,
}

#[derive(Default)]
pub struct MemoryAnalytics {
    // A std mutex: map operations only, never held across an await.
    maps: Mutex<Maps>,
}

impl MemoryAnalytics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn prune(maps: &mut Maps) {
    let now = chrono::Utc::now().timestamp();
    maps.volume.retain(|(_, g, bucket), _| *bucket >= now - g.keep_secs());
    maps.errors.retain(|(_, g, bucket, _), _| *bucket >= now - g.keep_secs());
}

#[async_trait]
impl AnalyticsCache for MemoryAnalytics {
    async fn add(&self, stats: &Stats) -> Result<(), StoreError> {
        let mut maps = self.lock();
        for (key, counts) in &stats.volume {
            let total = maps.volume.entry(*key).or_default();
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c;
            }
        }
        for (key, count) in &stats.errors {
            *maps.errors.entry(*key).or_default() += count;
        }
        for (key, info) in &stats.info {
            maps.info.entry(*key).and_modify(|i| i.merge(info)).or_insert_with(|| info.clone());
        }
        if maps.volume.len() > 1_000_000 {
            prune(&mut maps);
        }
        Ok(())
    }

    async fn replace(&self, stats: &Stats) -> Result<(), StoreError> {
        let mut maps = self.lock();
        for (key, counts) in &stats.volume {
            maps.volume.insert(*key, *counts);
        }
        let buckets: std::collections::HashSet<(Uuid, Granularity, i64)> =
            stats.errors.keys().map(|(p, g, b, _)| (*p, *g, *b)).collect();
        maps.errors.retain(|(p, g, b, _), _| !buckets.contains(&(*p, *g, *b)));
        for (key, count) in &stats.errors {
            maps.errors.insert(*key, *count);
        }
        // A rebuild sees only its window: widen what is known rather than replace it.
        for (key, info) in &stats.info {
            maps.info.entry(*key).and_modify(|i| i.merge(info)).or_insert_with(|| info.clone());
        }
        prune(&mut maps);
        Ok(())
    }

    async fn volume(
        &self,
        project: Uuid,
        g: Granularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, LevelCounts)>, StoreError> {
        let maps = self.lock();
        // Walking the buckets in order gives them in order.
        Ok((from..=to)
            .step_by(usize::try_from(g.seconds()).unwrap_or(300))
            .filter_map(|bucket| maps.volume.get(&(project, g, bucket)).map(|c| (bucket, *c)))
            .collect())
    }

    async fn errors(&self, project: Uuid, g: Granularity, from: i64, to: i64) -> Result<Vec<TopError>, StoreError> {
        let maps = self.lock();
        let mut series: HashMap<u64, Vec<(i64, u64)>> = HashMap::new();
        for ((p, gg, bucket, fingerprint), count) in &maps.errors {
            if *p == project && *gg == g && (from..=to).contains(bucket) {
                series.entry(*fingerprint).or_default().push((*bucket, *count));
            }
        }
        Ok(series
            .into_iter()
            .filter_map(|(fingerprint, mut series)| {
                series.sort_unstable();
                let count = series.iter().map(|(_, c)| c).sum();
                let info = maps.info.get(&(project, fingerprint))?.clone();
                Some(TopError { fingerprint, count, series, info })
            })
            .collect())
    }
}
