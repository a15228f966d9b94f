//! Jobs: the durable [`Queue`](queue::Queue), what a [`Handler`](handler::Handler)
//! sees and returns, retry [`Backoff`](backoff::Backoff), and the
//! [`Worker`](worker::Worker) that runs handlers for chosen job kinds.

pub mod backoff;
pub mod handler;
pub mod queue;
mod queue_stats;
pub mod worker;
