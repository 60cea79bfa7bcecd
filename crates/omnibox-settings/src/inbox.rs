//! `[inbox]`: the inbox runner (what a consumer does with each delivery).

use std::time::Duration;

use omnibox_core::inbox::{
    AckStrategy, DEFAULT_IDLE_BACKOFF_MAX, DEFAULT_IDLE_BACKOFF_MIN, DEFAULT_PROCESS_TIMEOUT,
    DEFAULT_REDELIVERY_DELAY, InboxRunnerBuilder,
};
use serde::{Deserialize, Serialize};

use crate::SettingsError;
use crate::backoff::BackoffSettings;
use crate::convert::{default_lease, timestamp_offset};

/// When the broker's copy of a message is acknowledged: `exactly_once_inbox` (default),
/// `at_least_once_on_persist`, `at_least_once_on_success` or `at_most_once` (see
/// [`AckStrategy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AckSetting {
    /// [`AckStrategy::ExactlyOnceInbox`].
    #[default]
    ExactlyOnceInbox,
    /// [`AckStrategy::AT_LEAST_ONCE_ON_PERSIST`].
    AtLeastOnceOnPersist,
    /// [`AckStrategy::AT_LEAST_ONCE_ON_SUCCESS`].
    AtLeastOnceOnSuccess,
    /// [`AckStrategy::AtMostOnce`].
    AtMostOnce,
}

impl From<AckSetting> for AckStrategy {
    fn from(a: AckSetting) -> Self {
        match a {
            AckSetting::ExactlyOnceInbox => AckStrategy::ExactlyOnceInbox,
            AckSetting::AtLeastOnceOnPersist => AckStrategy::AT_LEAST_ONCE_ON_PERSIST,
            AckSetting::AtLeastOnceOnSuccess => AckStrategy::AT_LEAST_ONCE_ON_SUCCESS,
            AckSetting::AtMostOnce => AckStrategy::AtMostOnce,
        }
    }
}

/// `[inbox]`. Defaults are those of the inbox runner builder
/// ([`InboxRunner::builder`](omnibox_core::inbox::InboxRunner::builder)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct InboxSettings {
    /// Job name, the `job` metrics label (default `inbox_consumer`).
    pub job_name: String,
    /// The consumer group (no default here: the runner builder takes it as an argument).
    pub consumer_group: Option<String>,
    /// Acknowledgement strategy.
    pub ack_strategy: AckSetting,
    /// Time one message may take to store and handle (default 30 s).
    #[serde(with = "humantime_serde")]
    pub process_timeout: Duration,
    /// Lease of a stored row while it is handled (default 300 s).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Delay before a handed-back message is redelivered, where the broker supports it
    /// (default 1 s).
    #[serde(with = "humantime_serde")]
    pub redelivery_delay: Duration,
    /// First pause when the consumer has nothing (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub idle_backoff_min: Duration,
    /// Longest such pause (default 5 s).
    #[serde(with = "humantime_serde")]
    pub idle_backoff_max: Duration,
    /// Messages stored, handled and committed per transaction (default 1; see
    /// [`InboxRunnerBuilder::batch_size`]).
    pub batch_size: usize,
    /// How long a batch waits for more messages after its first (default 0 s).
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Messages handled at once, in order per broker key (default 1; see
    /// [`InboxRunnerBuilder::concurrency`]); not with `batch_size` above 1.
    pub concurrency: usize,
    /// Backoff of counted handler failures.
    pub backoff: BackoffSettings,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self {
            job_name: "inbox_consumer".into(),
            consumer_group: None,
            ack_strategy: AckSetting::default(),
            process_timeout: DEFAULT_PROCESS_TIMEOUT,
            lease_ttl: default_lease(),
            redelivery_delay: DEFAULT_REDELIVERY_DELAY,
            idle_backoff_min: DEFAULT_IDLE_BACKOFF_MIN,
            idle_backoff_max: DEFAULT_IDLE_BACKOFF_MAX,
            batch_size: 1,
            batch_linger: Duration::ZERO,
            concurrency: 1,
            backoff: BackoffSettings::default(),
        }
    }
}

impl InboxSettings {
    /// Apply these settings to `builder` (the consumer group is the builder's argument;
    /// the handler, metrics and clock are left alone).
    pub fn apply<C, T, S, H>(
        &self,
        builder: InboxRunnerBuilder<C, T, S, H>,
    ) -> Result<InboxRunnerBuilder<C, T, S, H>, SettingsError> {
        Ok(builder
            .job_name(self.job_name.clone())
            .ack_strategy(self.ack_strategy.into())
            .process_timeout(self.process_timeout)
            .lease_ttl(timestamp_offset("inbox.lease_ttl", self.lease_ttl)?)
            .redelivery_delay(self.redelivery_delay)
            .idle_backoff(self.idle_backoff_min, self.idle_backoff_max)
            .batch_size(self.batch_size)
            .batch_linger(self.batch_linger)
            .concurrency(self.concurrency)
            .backoff(self.backoff.to_backoff("inbox.backoff")?))
    }
}
