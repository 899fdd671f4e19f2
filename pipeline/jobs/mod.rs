//! Periodic jobs, run by one [`Scheduler`]: analytics rebuilds, retention, the log store's upkeep
//! (partitions, BRIN summaries), the search index; the wiring adds the usage flush.

pub mod rebuild;
pub mod retention;
pub mod scheduler;
pub mod search;
pub mod upkeep;

pub use scheduler::{Job, Scheduler};
