//! `[relay]`: the outbox relay and its workers.

use std::time::Duration;

use omnibox_core::OutboxEvent;
use omnibox_core::pipeline::steps::{
    CircuitBreakerStep, DEFAULT_FAILURE_THRESHOLD, DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_RECOVERY_TIMEOUT,
};
use omnibox_core::publisher::Publisher;
use omnibox_core::relay::{DEFAULT_BATCH_SIZE, OutboxRelayBuilder};
use omnibox_core::store::{EventStore, Filters};
use omnibox_core::wake::Wakeup;
use omnibox_core::worker::{
    DEFAULT_ERROR_BACKOFF_MAX, DEFAULT_ERROR_BACKOFF_MIN, DEFAULT_POLL_INTERVAL, RelayWorkerBuilder,
};
use serde::{Deserialize, Serialize};

use crate::SettingsError;
use crate::backoff::BackoffSettings;
use crate::convert::{default_lease, invalid, timestamp_offset};

/// `[relay]`: batch, publishing, leases, retries, claim filters, and the worker loop.
/// Defaults are those of [`OutboxRelay::builder`](omnibox_core::relay::OutboxRelay::builder)
/// and [`RelayWorker::builder`](omnibox_core::worker::RelayWorker::builder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RelaySettings {
    /// Job name, the `job` metrics label (default `outbox_relay`).
    pub job_name: String,
    /// Relay workers to run in one process (default 1; used by the `omnibox relay` CLI).
    pub workers: usize,
    /// Prefix of generated worker ids (`<prefix>:<pid>:<random>`; default `relay`).
    pub worker_prefix: String,
    /// Events per claim (default 100).
    pub batch_size: u32,
    /// Time until the broker must acknowledge one publish (default 30 s).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Publishes in flight per batch (default the relay's: 16, or 1 with a circuit
    /// breaker; see `OutboxRelayBuilder::publish_concurrency`).
    pub publish_concurrency: Option<usize>,
    /// Batches in flight at once across workers sharing the relay (default none).
    pub concurrency_limit: Option<usize>,
    /// Lease length (default 300 s).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Safety margin of the lease check before each broker call (default a fifth of the lease).
    #[serde(with = "humantime_serde")]
    pub lease_margin: Option<Duration>,
    /// Backoff of counted publish failures.
    pub backoff: BackoffSettings,
    /// Only these topics (default all).
    pub topics: Vec<String>,
    /// Only these event types (default all).
    pub event_types: Vec<String>,
    /// Only these aggregate types (default all).
    pub aggregate_types: Vec<String>,
    /// Longest wait after an empty claim, the only poll interval (default 1 s).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// First pause after a broker outage or a database error (default 500 ms).
    #[serde(with = "humantime_serde")]
    pub error_backoff_min: Duration,
    /// Longest such pause (default 30 s).
    #[serde(with = "humantime_serde")]
    pub error_backoff_max: Duration,
    /// A circuit breaker in front of the broker (default none).
    pub circuit_breaker: Option<BreakerSettings>,
}

/// `[relay.circuit_breaker]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (default 5).
    pub failure_threshold: u32,
    /// Time the breaker stays open before one probe (default 60 s).
    #[serde(with = "humantime_serde")]
    pub recovery_timeout: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            job_name: "outbox_relay".into(),
            workers: 1,
            worker_prefix: "relay".into(),
            batch_size: DEFAULT_BATCH_SIZE,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            publish_concurrency: None,
            concurrency_limit: None,
            lease_ttl: default_lease(),
            lease_margin: None,
            backoff: BackoffSettings::default(),
            topics: Vec::new(),
            event_types: Vec::new(),
            aggregate_types: Vec::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            error_backoff_min: DEFAULT_ERROR_BACKOFF_MIN,
            error_backoff_max: DEFAULT_ERROR_BACKOFF_MAX,
            circuit_breaker: None,
        }
    }
}

impl RelaySettings {
    /// The claim filters.
    pub fn filters(&self) -> Filters {
        Filters::none()
            .topics(self.topics.iter().cloned())
            .event_types(self.event_types.iter().cloned())
            .aggregate_types(self.aggregate_types.iter().cloned())
    }

    /// Apply the relay's settings to `builder`. Settings a builder call made before are
    /// overwritten; steps, metrics and the clock are left alone.
    pub fn apply<S, P>(
        &self,
        builder: OutboxRelayBuilder<S, P>,
    ) -> Result<OutboxRelayBuilder<S, P>, SettingsError>
    where
        S: EventStore<Event = OutboxEvent>,
        S::Conn: 'static,
        P: Publisher + 'static,
    {
        let mut b = builder
            .job_name(self.job_name.clone())
            .batch_size(self.batch_size)
            .publish_timeout(self.publish_timeout)
            .lease_ttl(timestamp_offset("relay.lease_ttl", self.lease_ttl)?)
            .backoff(self.backoff.to_backoff("relay.backoff")?)
            .filters(self.filters());
        if let Some(n) = self.publish_concurrency {
            b = b.publish_concurrency(n);
        }
        if let Some(n) = self.concurrency_limit {
            b = b.concurrency_limit(n);
        }
        if let Some(m) = self.lease_margin {
            b = b.lease_margin(m);
        }
        if let Some(cb) = &self.circuit_breaker {
            let breaker = CircuitBreakerStep::new(cb.failure_threshold, cb.recovery_timeout)
                .map_err(|e| invalid("relay.circuit_breaker", e))?;
            b = b.circuit_breaker(breaker);
        }
        Ok(b)
    }

    /// Apply the worker loop's settings (poll interval, error backoff) to `builder`.
    pub fn apply_worker<S, P, T, W>(
        &self,
        builder: RelayWorkerBuilder<S, P, T, W>,
    ) -> RelayWorkerBuilder<S, P, T, W>
    where
        S: EventStore,
        W: Wakeup,
    {
        builder
            .poll_interval(self.poll_interval)
            .error_backoff(self.error_backoff_min, self.error_backoff_max)
    }
}
