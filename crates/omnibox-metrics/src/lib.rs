//! # omnibox-metrics
//!
//! Metrics for omnibox through the [`metrics`] facade: [`FacadeMetrics`] implements core's
//! [`MetricsSink`](omnibox_core::metrics::MetricsSink), and [`BacklogObserver`] turns a
//! store's backlog into gauges. The library only emits through the facade; which recorder
//! receives the values (Prometheus, StatsD, OpenTelemetry...) is the application's choice.
//! With the `prometheus` feature, `install_prometheus` installs
//! `metrics-exporter-prometheus` and serves the scrape endpoint.
//!
//! An operator answers three questions from these series:
//! - **Is the outbox draining?** `backlog_pending` and `rate(events_completed_total)`.
//! - **How old is the oldest waiting event?** `backlog_oldest_claimable_age_seconds`
//!   (events parked in retry backoff excluded, so a single retrying event does not look like
//!   a stuck relay) beside `backlog_oldest_pending_age_seconds`.
//! - **What is failing and why?** `events_failed_total` by `kind` (`permanent`: an attempt
//!   was counted; `transient`: broker or database trouble, not counted),
//!   `events_dead_lettered_total`, `circuit_state`.
//!
//! A ready Grafana dashboard over these series is in the repository's `dashboards/`.
//!
//! ## Series
//!
//! Names carry the sink's prefix (default `omnibox_`). Labels are bounded: `omnibox_job` (the
//! configured job name), `table` (the configured table name), `route` (the outbox topic
//! or inbox source), `event_type`, and enums — never ids or error strings.
//!
//! | series | type | unit | labels | fed by |
//! |---|---|---|---|---|
//! | `events_claimed_total` | counter | events | omnibox_job | `BatchClaimed` |
//! | `batch_size` | histogram | events | omnibox_job | `BatchClaimed` (non-empty batches) |
//! | `batch_duration_seconds` | histogram | seconds | omnibox_job | `BatchFinished` (claim to settle) |
//! | `events_completed_total` | counter | events | omnibox_job, event_type, route | `Completed` (published / handled) |
//! | `events_failed_total` | counter | events | omnibox_job, event_type, route, kind=`permanent`\|`transient` | `Failed` |
//! | `events_skipped_total` | counter | events | omnibox_job, event_type, reason=`handler`\|`duplicate` | `Skipped` |
//! | `events_dead_lettered_total` | counter | events | omnibox_job, event_type | `DeadLettered` |
//! | `handler_duration_seconds` | histogram | seconds | omnibox_job, event_type | `HandlerDuration`: around the handler (inbox) or the broker call (relay) only |
//! | `leases_released_total` | counter | events | omnibox_job | `Released` |
//! | `leases_lost_total` | counter | events | omnibox_job | `LeaseLost` |
//! | `messages_consumed_total` | counter | messages | omnibox_job | `Consumed` |
//! | `messages_duplicate_total` | counter | messages | omnibox_job, event_type | `Duplicate` |
//! | `messages_acked_total` | counter | messages | omnibox_job | `Acked` |
//! | `messages_nacked_total` | counter | messages | omnibox_job | `Nacked` |
//! | `messages_ack_failed_total` | counter | messages | omnibox_job | `AckFailed` |
//! | `circuit_state` | gauge | 0 closed, 1 half-open, 2 open | omnibox_job | `Circuit` |
//! | `circuit_transitions_total` | counter | transitions | omnibox_job, state=`closed`\|`open`\|`half_open` | `Circuit` |
//! | `stale_leases_released_total` | counter | events | omnibox_job | `StaleReleased` |
//! | `rows_cleaned_total` | counter | rows | omnibox_job | `Cleaned` |
//! | `backlog_pending` | gauge | events | table | `Backlog` |
//! | `backlog_oldest_claimable_age_seconds` | gauge | seconds (0 = none) | table | `Backlog` |
//! | `backlog_oldest_pending_age_seconds` | gauge | seconds (0 = none) | table | `Backlog` |
//! | `backlog_leased` | gauge | events | table | `Backlog` |
//! | `backlog_failed` | gauge | events | table | `Backlog` |
//! | `backlog_dead_letters` | gauge | letters | table | `Backlog` |
//!
//! `handler_duration_seconds` is measured around the handler or broker call alone; omni-box
//! measured from after the handler to the end of the batch. Events
//! completed without handling are counted under `events_skipped_total` with their reason,
//! never as duplicates; `messages_duplicate_total` counts only broker messages the
//! consumer group had already handled.
//!
//! ## Feature flags
//!
//! - `prometheus`: `install_prometheus` / `PrometheusOptions` install
//!   `metrics-exporter-prometheus` as the global recorder and serve the scrape endpoint;
//!   `*_seconds` and `batch_size` histograms are exported with buckets.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod observer;
#[cfg(feature = "prometheus")]
mod prometheus;
mod sink;

pub use error::InvalidPrefix;
pub use observer::{BacklogObserver, DEFAULT_INTERVAL};
#[cfg(feature = "prometheus")]
pub use prometheus::{
    BATCH_SIZE_BUCKETS, DURATION_BUCKETS, PrometheusError, PrometheusHandle, PrometheusOptions,
    install_prometheus,
};
pub use sink::{DEFAULT_PREFIX, FacadeMetrics, JOB_LABEL, circuit_state_value};
