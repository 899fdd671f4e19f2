//! One scheduler for every periodic job: analytics rebuilds, retention, partitions, BRIN summaries, usage
//! flushes. A job is a name, a period, a jitter and a function; the scheduler runs it at start and then every
//! period (plus a random part of the jitter, so instances started together do not run in step), logs its
//! failures, and counts its runs, last run and duration in `/metrics`.
//!
//! A job marked `once_across_instances` runs on one instance per period: before each run the instance takes
//! a lease named after the job for the period (Redis `SET NX PX` when shared); another instance that finds
//! the lease taken skips that run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::Rng;
use tokio_util::sync::CancellationToken;

pub use crate::store::JobLease;

type Work = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A periodic job.
#[derive(Clone)]
pub struct Job {
    pub name: &'static str,
    pub every: Duration,
    /// Up to this much is added at random to each wait.
    pub jitter: Duration,
    pub once_across_instances: bool,
    work: Work,
}

impl Job {
    pub(crate) fn new<F, Fut>(name: &'static str, every: Duration, work: F) -> Job
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let work: Work = Arc::new(move || Box::pin(work()));
        Job { name, every: every.max(Duration::from_millis(1)), jitter: every / 10, once_across_instances: false, work }
    }

    /// Runs on one instance per period.
    pub(crate) fn once_across_instances(mut self) -> Job {
        self.once_across_instances = true;
        self
    }

    pub(crate) fn jitter(mut self, jitter: Duration) -> Job {
        self.jitter = jitter;
        self
    }
}

/// The jobs of this instance.
#[derive(Default)]
pub struct Scheduler {
    jobs: Vec<Job>,
    lease: Option<Arc<dyn JobLease>>,
}

impl Scheduler {
    /// `lease` decides the `once_across_instances` jobs; without one (a single instance) they always run.
    pub(crate) fn new(lease: Option<Arc<dyn JobLease>>) -> Scheduler {
        Scheduler { jobs: Vec::new(), lease }
    }

    pub(crate) fn add(&mut self, job: Job) {
        self.jobs.push(job);
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.jobs.iter().map(|j| j.name).collect()
    }

    /// Runs every job until `shutdown`; a run in progress is finished first.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut running = tokio::task::JoinSet::new();
        for job in self.jobs {
            running.spawn(run_job(job, self.lease.clone(), shutdown.clone()));
        }
        while running.join_next().await.is_some() {}
    }
}

async fn run_job(job: Job, lease: Option<Arc<dyn JobLease>>, shutdown: CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let ours = match (&lease, job.once_across_instances) {
            (Some(lease), true) => match lease.take(job.name, job.every).await {
                Ok(ours) => ours,
                Err(error) => {
                    tracing::warn!(job = job.name, %error, "cannot take the job's lease; skipping this run");
                    false
                }
            },
            _ => true,
        };
        if ours {
            let started = Instant::now();
            let result = (job.work)().await;
            crate::metrics::metrics().job_ran(job.name, started.elapsed(), result.is_ok());
            if let Err(error) = result {
                tracing::warn!(job = job.name, %error, "job failed; it runs again next period");
            }
        }
        let jitter =
            if job.jitter.is_zero() { Duration::ZERO } else { rand::rng().random_range(Duration::ZERO..job.jitter) };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(job.every + jitter) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A lease only the first caller per job gets.
    #[derive(Default)]
    struct FirstOnly(std::sync::Mutex<std::collections::HashSet<String>>);

    #[async_trait::async_trait]
    impl JobLease for FirstOnly {
        async fn take(&self, job: &str, _period: Duration) -> Result<bool, String> {
            Ok(self.0.lock().map_err(|e| e.to_string())?.insert(job.to_owned()))
        }
    }

    fn counting(name: &'static str, every: Duration, runs: &Arc<AtomicUsize>) -> Job {
        let runs = runs.clone();
        Job::new(name, every, move || {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .jitter(Duration::ZERO)
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_at_start_and_every_period_until_shutdown() {
        let runs = Arc::new(AtomicUsize::new(0));
        let mut scheduler = Scheduler::new(None);
        scheduler.add(counting("tick", Duration::from_secs(10), &runs));
        let stop = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(stop.clone()));
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "at 0, 10, 20 and 30 s");
        stop.cancel();
        task.await.expect("stopped");
        let text = crate::metrics::metrics().encode();
        assert!(text.contains("ledger_job_runs_total{job=\"tick\",result=\"ok\"} 4"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_once_across_instances_runs_on_one_of_them() {
        let lease: Arc<dyn JobLease> = Arc::new(FirstOnly::default());
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for runs in [&a, &b] {
            let mut scheduler = Scheduler::new(Some(lease.clone()));
            scheduler.add(counting("retention-test", Duration::from_secs(3600), runs).once_across_instances());
            tasks.push(tokio::spawn(scheduler.run(stop.clone())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        for task in tasks {
            task.await.expect("stopped");
        }
        assert_eq!(a.load(Ordering::SeqCst) + b.load(Ordering::SeqCst), 1);
    }
}
