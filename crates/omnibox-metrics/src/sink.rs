//! [`FacadeMetrics`]: core's [`MetricsSink`] mapped onto the `metrics` facade.

use std::sync::Arc;

use metrics::{SharedString, Unit};
use omnibox_core::metrics::{CircuitState, Metric, MetricsSink, SkipReason};

use crate::error::InvalidPrefix;

/// The default metric name prefix.
pub const DEFAULT_PREFIX: &str = "omnibox_";

/// The label carrying the configured job name. Not `job`: Prometheus gives every scraped
/// target a `job` label of its own, and with the default `honor_labels: false` it would
/// rename ours to `exported_job`.
pub const JOB_LABEL: &str = "omnibox_job";

macro_rules! series {
    ($( $field:ident => $suffix:literal, $kind:ident, $unit:expr, $help:literal; )*) => {
        /// Full series names (prefix included), built once.
        #[derive(Debug, Clone)]
        struct Names {
            $( $field: SharedString, )*
        }

        impl Names {
            fn new(prefix: &str) -> Self {
                Self {
                    $( $field: SharedString::from_shared(Arc::from(format!("{prefix}{}", $suffix))), )*
                }
            }

            fn describe(&self) {
                $( series!(@describe $kind, self.$field.clone(), $unit, $help); )*
            }

            fn all(&self) -> Vec<&str> {
                vec![$( &*self.$field, )*]
            }
        }
    };
    (@describe counter, $name:expr, $unit:expr, $help:literal) => {
        metrics::describe_counter!($name, $unit, $help)
    };
    (@describe gauge, $name:expr, $unit:expr, $help:literal) => {
        metrics::describe_gauge!($name, $unit, $help)
    };
    (@describe histogram, $name:expr, $unit:expr, $help:literal) => {
        metrics::describe_histogram!($name, $unit, $help)
    };
}

series! {
    events_claimed => "events_claimed_total", counter, Unit::Count, "Events leased by batch claims.";
    batch_size => "batch_size", histogram, Unit::Count, "Events per non-empty claimed batch.";
    batch_duration => "batch_duration_seconds", histogram, Unit::Seconds, "Wall time of a batch, claim to settle.";
    completed => "events_completed_total", counter, Unit::Count, "Events completed (published by a relay, handled by an inbox job).";
    failed => "events_failed_total", counter, Unit::Count, "Event failures, by kind (permanent: attempt counted; transient: not counted).";
    skipped => "events_skipped_total", counter, Unit::Count, "Events completed without handling, by reason.";
    dead_lettered => "events_dead_lettered_total", counter, Unit::Count, "Events and malformed messages dead-lettered.";
    handler_duration => "handler_duration_seconds", histogram, Unit::Seconds, "Time spent in the handler or the broker call, measured around that call only.";
    leases_released => "leases_released_total", counter, Unit::Count, "Leases given back untouched (shutdown, breaker open, batch stopped).";
    leases_lost => "leases_lost_total", counter, Unit::Count, "Results not applied because the lease was lost.";
    consumed => "messages_consumed_total", counter, Unit::Count, "Broker messages received.";
    duplicates => "messages_duplicate_total", counter, Unit::Count, "Broker messages already handled by this consumer group.";
    acked => "messages_acked_total", counter, Unit::Count, "Broker messages acknowledged.";
    nacked => "messages_nacked_total", counter, Unit::Count, "Broker messages handed back for redelivery.";
    ack_failed => "messages_ack_failed_total", counter, Unit::Count, "Acknowledgements that failed.";
    circuit_state => "circuit_state", gauge, Unit::Count, "Circuit breaker state: 0 closed, 1 half-open, 2 open.";
    circuit_transitions => "circuit_transitions_total", counter, Unit::Count, "Circuit breaker state changes, by new state.";
    stale_released => "stale_leases_released_total", counter, Unit::Count, "Stale leases released by maintenance.";
    cleaned => "rows_cleaned_total", counter, Unit::Count, "Completed rows deleted by retention cleanup.";
    backlog_pending => "backlog_pending", gauge, Unit::Count, "Pending events.";
    backlog_oldest_claimable => "backlog_oldest_claimable_age_seconds", gauge, Unit::Seconds, "Age of the oldest pending event that is due now (retry backoff excluded); 0 when none.";
    backlog_oldest_pending => "backlog_oldest_pending_age_seconds", gauge, Unit::Seconds, "Age of the oldest pending event; 0 when none.";
    backlog_leased => "backlog_leased", gauge, Unit::Count, "Leased events.";
    backlog_failed => "backlog_failed", gauge, Unit::Count, "Failed (terminal) events.";
    backlog_dead_letters => "backlog_dead_letters", gauge, Unit::Count, "Dead letters.";
}

/// The numeric value of a circuit state on the `circuit_state` gauge.
pub fn circuit_state_value(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
    }
}

fn skip_reason(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::Handler => "handler",
        SkipReason::Duplicate => "duplicate",
    }
}

/// A [`MetricsSink`] that records through the `metrics` facade, into whatever recorder the
/// application installed (Prometheus, StatsD, OpenTelemetry, a test recorder...).
///
/// Every series and its labels are listed in the [crate docs](crate#series). Labels are
/// bounded: job names, tables, topics/sources and event types the application configured,
/// and enums — never ids or error strings.
///
/// ```
/// use std::sync::Arc;
/// use omnibox_core::metrics::{Metric, MetricsSink};
/// use omnibox_metrics::FacadeMetrics;
///
/// let sink = Arc::new(FacadeMetrics::new());
/// // hand `sink` to a processor builder (`.metrics(sink.clone())`), a relay, a runner...
/// sink.record(&Metric::Consumed { job: "billing-inbox" });
/// ```
#[derive(Debug, Clone)]
pub struct FacadeMetrics {
    prefix: Arc<str>,
    names: Names,
}

impl Default for FacadeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl FacadeMetrics {
    /// A sink with the default prefix [`DEFAULT_PREFIX`] (`omnibox_`).
    pub fn new() -> Self {
        Self {
            prefix: Arc::from(DEFAULT_PREFIX),
            names: Names::new(DEFAULT_PREFIX),
        }
    }

    /// A sink whose series start with `prefix` (may be empty). The prefix must match
    /// `^[a-zA-Z_][a-zA-Z0-9_]*$` (Prometheus' rule for metric names); include the
    /// separator yourself (`"shop_outbox_"`).
    pub fn with_prefix(prefix: &str) -> Result<Self, InvalidPrefix> {
        let valid = prefix.is_empty()
            || prefix
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid {
            return Err(InvalidPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: Arc::from(prefix),
            names: Names::new(prefix),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every series name this sink can emit (prefix included).
    pub fn series_names(&self) -> Vec<&str> {
        self.names.all()
    }

    /// This sink's histograms measured in seconds (prefix included).
    pub fn duration_histograms(&self) -> [&str; 2] {
        [&self.names.batch_duration, &self.names.handler_duration]
    }

    /// This sink's histograms of event counts (prefix included).
    pub fn size_histograms(&self) -> [&str; 1] {
        [&self.names.batch_size]
    }

    /// Register each series' unit and help text with the installed recorder (Prometheus
    /// renders them as `# HELP` lines). Call it once, after installing the recorder.
    pub fn describe(&self) {
        self.names.describe();
    }
}

impl MetricsSink for FacadeMetrics {
    fn record(&self, metric: &Metric<'_>) {
        let n = &self.names;
        match *metric {
            Metric::BatchClaimed { job, size } => {
                let job = job.to_owned();
                metrics::counter!(n.events_claimed.clone(), JOB_LABEL => job.clone())
                    .increment(size as u64);
                if size > 0 {
                    metrics::histogram!(n.batch_size.clone(), JOB_LABEL => job).record(size as f64);
                }
            }
            Metric::BatchFinished { job, duration } => {
                metrics::histogram!(n.batch_duration.clone(), JOB_LABEL => job.to_owned())
                    .record(duration.as_secs_f64());
            }
            Metric::Completed {
                job,
                event_type,
                route,
            } => metrics::counter!(
                n.completed.clone(),
                JOB_LABEL => job.to_owned(),
                "event_type" => event_type.to_owned(),
                "route" => route.to_owned(),
            )
            .increment(1),
            Metric::Failed {
                job,
                event_type,
                route,
                kind,
            } => metrics::counter!(
                n.failed.clone(),
                JOB_LABEL => job.to_owned(),
                "event_type" => event_type.to_owned(),
                "route" => route.to_owned(),
                "kind" => kind.as_str(),
            )
            .increment(1),
            Metric::Skipped {
                job,
                event_type,
                reason,
            } => metrics::counter!(
                n.skipped.clone(),
                JOB_LABEL => job.to_owned(),
                "event_type" => event_type.to_owned(),
                "reason" => skip_reason(reason),
            )
            .increment(1),
            Metric::DeadLettered { job, event_type } => metrics::counter!(
                n.dead_lettered.clone(),
                JOB_LABEL => job.to_owned(),
                "event_type" => event_type.to_owned(),
            )
            .increment(1),
            Metric::Released { job, count } => {
                metrics::counter!(n.leases_released.clone(), JOB_LABEL => job.to_owned())
                    .increment(count);
            }
            Metric::LeaseLost { job, count } => {
                metrics::counter!(n.leases_lost.clone(), JOB_LABEL => job.to_owned())
                    .increment(count);
            }
            Metric::HandlerDuration {
                job,
                event_type,
                duration,
            } => metrics::histogram!(
                n.handler_duration.clone(),
                JOB_LABEL => job.to_owned(),
                "event_type" => event_type.to_owned(),
            )
            .record(duration.as_secs_f64()),
            Metric::Consumed { job } => {
                metrics::counter!(n.consumed.clone(), JOB_LABEL => job.to_owned()).increment(1);
            }
            Metric::Duplicate { job, event_type } => metrics::counter!(
                n.duplicates.clone(),
                JOB_LABEL => job.to_owned(),
                "event_type" => event_type.to_owned(),
            )
            .increment(1),
            Metric::Acked { job } => {
                metrics::counter!(n.acked.clone(), JOB_LABEL => job.to_owned()).increment(1);
            }
            Metric::Nacked { job } => {
                metrics::counter!(n.nacked.clone(), JOB_LABEL => job.to_owned()).increment(1);
            }
            Metric::AckFailed { job } => {
                metrics::counter!(n.ack_failed.clone(), JOB_LABEL => job.to_owned()).increment(1);
            }
            Metric::Circuit { job, state } => {
                let job = job.to_owned();
                metrics::gauge!(n.circuit_state.clone(), JOB_LABEL => job.clone())
                    .set(circuit_state_value(state));
                metrics::counter!(
                    n.circuit_transitions.clone(),
                    JOB_LABEL => job,
                    "state" => state.as_str(),
                )
                .increment(1);
            }
            Metric::StaleReleased { job, count } => {
                metrics::counter!(n.stale_released.clone(), JOB_LABEL => job.to_owned())
                    .increment(count);
            }
            Metric::Cleaned { job, count } => {
                metrics::counter!(n.cleaned.clone(), JOB_LABEL => job.to_owned()).increment(count);
            }
            Metric::Backlog { table, backlog } => {
                let age = |a: Option<chrono::TimeDelta>| {
                    a.map_or(0.0, |d| d.num_milliseconds().max(0) as f64 / 1000.0)
                };
                let t = table.to_owned();
                metrics::gauge!(n.backlog_pending.clone(), "table" => t.clone())
                    .set(backlog.pending as f64);
                metrics::gauge!(n.backlog_oldest_claimable.clone(), "table" => t.clone())
                    .set(age(backlog.oldest_claimable_age));
                metrics::gauge!(n.backlog_oldest_pending.clone(), "table" => t.clone())
                    .set(age(backlog.oldest_pending_age));
                metrics::gauge!(n.backlog_leased.clone(), "table" => t.clone())
                    .set(backlog.leased as f64);
                metrics::gauge!(n.backlog_failed.clone(), "table" => t.clone())
                    .set(backlog.failed as f64);
                metrics::gauge!(n.backlog_dead_letters.clone(), "table" => t)
                    .set(backlog.dead_letters as f64);
            }
            // A measurement added to core later: ignored until this crate maps it.
            _ => {}
        }
    }
}
