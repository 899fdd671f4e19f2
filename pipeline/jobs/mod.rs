//! Periodic jobs: analytics rebuilds and retention (and, registered by the wiring, the jobs of other
//! layers), run by one scheduler.

pub mod rebuild;
pub mod retention;
