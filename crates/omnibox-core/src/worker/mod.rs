//! Long-running workers: relay, inbox and maintenance loops with graceful shutdown.
//!
//! The services ([`OutboxRelay`](crate::relay::OutboxRelay),
//! [`InboxRunner`](crate::inbox::InboxRunner), [`Maintenance`](crate::maintenance::Maintenance))
//! do one batch or one message per call; a worker loops them for the life of the process:
//!
//! - [`RelayWorker`]: claim → publish → settle, again at once while there is work, waiting
//!   on a [`Wakeup`](crate::wake::Wakeup) (notification or poll interval) when the outbox
//!   is empty, backing off exponentially while the broker or the database is down. It
//!   never exits on an error.
//! - [`InboxWorker`]: runs an `InboxRunner` until shutdown and restarts it (with backoff)
//!   when its consumer cannot start.
//! - [`MaintenanceWorker`]: releases stale leases and deletes old completed events on a
//!   schedule.
//!
//! Several workers — in one process (one [`WorkerId`](crate::WorkerId) each) or in many
//! processes — share the same tables safely: claims skip rows another worker holds, and
//! every settlement is fenced by its lease.
//!
//! # Shutdown
//!
//! Every worker takes a [`Shutdown`]. The **first** trigger is graceful:
//! stop claiming (and receiving), let the batch or message in flight finish — a relay batch
//! settles every event it claimed (published ones complete, the rest are released with no
//! attempt spent), an inbox message is handled, committed and acknowledged — stop the
//! consumer, and return. Publishers resolve only after the broker acknowledged each
//! message, so there is no producer buffer left to flush. The **second** trigger aborts:
//! work in flight is dropped at its next await point. An aborted relay batch leaves its
//! leases to expire; the next claim after `lease_ttl` (or
//! [`MaintenanceWorker`]'s stale-lease release) takes them over and **counts one attempt**
//! per event, and events already published are published again (at least once). An
//! aborted inbox message is rolled back and, not being acknowledged, redelivered.
//!
//! The core has no signal handling; wire signals in your binary (the `omnibox-e2e-relay`
//! binary does, for SIGTERM and Ctrl-C). Forward each signal to one trigger:
//!
//! ```
//! use omnibox_core::Shutdown;
//!
//! /// Trigger `shutdown` once per signal: the first stops gracefully, the second aborts.
//! async fn forward_signals(shutdown: Shutdown, mut next_signal: impl AsyncFnMut() -> bool) {
//!     while next_signal().await {
//!         shutdown.trigger();
//!     }
//! }
//! // In a binary with tokio's `signal` feature:
//! // tokio::spawn(forward_signals(shutdown.clone(), async || tokio::signal::ctrl_c().await.is_ok()));
//! // let summary = relay_worker.run(&shutdown).await;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let shutdown = Shutdown::new();
//! let mut signals = 2;
//! forward_signals(shutdown.clone(), async || { signals -= 1; signals >= 0 }).await;
//! assert!(shutdown.is_abort_requested());
//! # });
//! ```

use crate::shutdown::Shutdown;

/// The inbox worker and its defaults (in `inbox/worker.rs`, beside the runner).
pub mod inbox {
    pub use crate::inbox::worker::*;
}
/// The maintenance worker and its defaults (in `maintenance/worker.rs`).
pub mod maintenance {
    pub use crate::maintenance::worker::*;
}
/// The relay worker and its defaults (in `relay/worker.rs`, beside the relay).
pub mod relay {
    pub use crate::relay::worker::*;
}

pub use inbox::{
    DEFAULT_RESTART_BACKOFF_MAX, DEFAULT_RESTART_BACKOFF_MIN, InboxWorker, InboxWorkerBuilder,
};
pub use maintenance::{MaintenanceSummary, MaintenanceWorker, MaintenanceWorkerBuilder};
pub use relay::{
    DEFAULT_ERROR_BACKOFF_MAX, DEFAULT_ERROR_BACKOFF_MIN, DEFAULT_POLL_INTERVAL, RelaySummary,
    RelayWorker, RelayWorkerBuilder,
};

/// Drive `run` (which watches `shutdown`) and trigger `shutdown` once `signal` completes.
pub(crate) async fn until<T>(
    shutdown: &Shutdown,
    signal: impl Future,
    run: impl Future<Output = T>,
) -> T {
    let mut run = std::pin::pin!(run);
    tokio::select! {
        out = &mut run => return out,
        _ = signal => shutdown.trigger(),
    }
    run.await
}

/// How a worker's `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stopped {
    /// Graceful: work in flight finished (or was released).
    #[default]
    Graceful,
    /// Aborted by a second shutdown request: work in flight was dropped.
    Aborted,
}

#[cfg(test)]
mod tests;
