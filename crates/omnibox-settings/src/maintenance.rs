//! `[maintenance]`: stale-lease release and retention cleanup.

use std::time::Duration;

use omnibox_core::maintenance::DEFAULT_CLEANUP_BATCH_SIZE;
use omnibox_core::worker::MaintenanceWorkerBuilder;
use omnibox_core::worker::maintenance::{
    DEFAULT_CLEANUP_ITERATIONS, DEFAULT_INTERVAL, DEFAULT_STALE_AFTER, DEFAULT_STALE_BATCH,
};
use serde::{Deserialize, Serialize};

use crate::SettingsError;
use crate::convert::timestamp_offset;

/// `[maintenance]`. Defaults are those of
/// [`MaintenanceWorker::builder`](omnibox_core::worker::MaintenanceWorker::builder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MaintenanceSettings {
    /// Run the maintenance worker beside the relay (default `true`; used by the CLI).
    pub enabled: bool,
    /// Time between rounds (default 60 s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Age after which a lease is stale and released (default 10 min).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Rows per release transaction (default 500).
    pub stale_batch: u32,
    /// Delete completed events older than this (default none: keep them).
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Rows per cleanup transaction (default 1000).
    pub cleanup_batch: u32,
    /// Cleanup transactions per round at most (default 100).
    pub cleanup_iterations: u32,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: DEFAULT_INTERVAL,
            stale_after: DEFAULT_STALE_AFTER
                .to_std()
                .unwrap_or(Duration::from_secs(600)),
            stale_batch: DEFAULT_STALE_BATCH,
            retention: None,
            cleanup_batch: DEFAULT_CLEANUP_BATCH_SIZE,
            cleanup_iterations: DEFAULT_CLEANUP_ITERATIONS,
        }
    }
}

impl MaintenanceSettings {
    /// Apply these settings to `builder`.
    pub fn apply<S, T>(
        &self,
        builder: MaintenanceWorkerBuilder<S, T>,
    ) -> Result<MaintenanceWorkerBuilder<S, T>, SettingsError> {
        let mut b = builder
            .interval(self.interval)
            .stale_after(timestamp_offset(
                "maintenance.stale_after",
                self.stale_after,
            )?)
            .stale_batch(self.stale_batch)
            .cleanup_batches(self.cleanup_batch, self.cleanup_iterations);
        if let Some(r) = self.retention {
            b = b.retention(timestamp_offset("maintenance.retention", r)?);
        }
        Ok(b)
    }
}
