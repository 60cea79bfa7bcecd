//! `FacadeMetrics` maps every core measurement onto its documented series; values are read
//! back from `metrics-util`'s debugging recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::TimeDelta;
use common::{counter, gauge, histogram, snapshot};
use metrics_util::debugging::DebuggingRecorder;
use omnibox_core::FailureKind;
use omnibox_core::metrics::{CircuitState, Metric, MetricsSink, SkipReason};
use omnibox_core::store::Backlog;
use omnibox_metrics::{FacadeMetrics, InvalidPrefix};

fn every_metric(backlog: &Backlog) -> Vec<Metric<'_>> {
    vec![
        Metric::BatchClaimed {
            job: "relay",
            size: 3,
        },
        Metric::BatchClaimed {
            job: "relay",
            size: 0,
        },
        Metric::BatchFinished {
            job: "relay",
            duration: Duration::from_millis(1500),
        },
        Metric::Completed {
            job: "relay",
            event_type: "order.placed",
            route: "orders",
        },
        Metric::Completed {
            job: "relay",
            event_type: "order.placed",
            route: "orders",
        },
        Metric::Failed {
            job: "relay",
            event_type: "order.placed",
            route: "orders",
            kind: FailureKind::Transient,
        },
        Metric::Failed {
            job: "relay",
            event_type: "order.placed",
            route: "orders",
            kind: FailureKind::Permanent,
        },
        Metric::Failed {
            job: "relay",
            event_type: "order.placed",
            route: "orders",
            kind: FailureKind::Permanent,
        },
        Metric::Skipped {
            job: "inbox",
            event_type: "order.placed",
            reason: SkipReason::Handler,
        },
        Metric::Skipped {
            job: "inbox",
            event_type: "order.placed",
            reason: SkipReason::Duplicate,
        },
        Metric::DeadLettered {
            job: "inbox",
            event_type: "malformed",
        },
        Metric::Released {
            job: "relay",
            count: 4,
        },
        Metric::LeaseLost {
            job: "relay",
            count: 2,
        },
        Metric::HandlerDuration {
            job: "inbox",
            event_type: "order.placed",
            duration: Duration::from_millis(250),
        },
        Metric::Consumed { job: "inbox" },
        Metric::Duplicate {
            job: "inbox",
            event_type: "order.placed",
        },
        Metric::Acked { job: "inbox" },
        Metric::Nacked { job: "inbox" },
        Metric::AckFailed { job: "inbox" },
        Metric::Circuit {
            job: "relay",
            state: CircuitState::Open,
        },
        Metric::StaleReleased {
            job: "maintenance",
            count: 5,
        },
        Metric::Cleaned {
            job: "maintenance",
            count: 100,
        },
        Metric::Backlog {
            table: "orders_outbox",
            backlog,
        },
    ]
}

fn sample_backlog() -> Backlog {
    let mut b = Backlog::default();
    b.pending = 42;
    b.oldest_claimable_age = Some(TimeDelta::milliseconds(7_500));
    b.oldest_pending_age = Some(TimeDelta::seconds(90));
    b.leased = 3;
    b.failed = 2;
    b.dead_letters = 1;
    b
}

#[test]
fn every_metric_variant_maps_to_its_documented_series() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::new();
    let backlog = sample_backlog();
    metrics::with_local_recorder(&recorder, || {
        for m in every_metric(&backlog) {
            sink.record(&m);
        }
    });
    let s = snapshot(&snapshotter);

    let relay = [("omnibox_job", "relay")];
    assert_eq!(counter(&s, "omnibox_events_claimed_total", &relay), 3);
    // empty polls do not dilute the batch size distribution
    assert_eq!(histogram(&s, "omnibox_batch_size", &relay), vec![3.0]);
    assert_eq!(
        histogram(&s, "omnibox_batch_duration_seconds", &relay),
        vec![1.5]
    );
    let ev = [
        ("omnibox_job", "relay"),
        ("event_type", "order.placed"),
        ("route", "orders"),
    ];
    assert_eq!(counter(&s, "omnibox_events_completed_total", &ev), 2);
    let failed = |kind| {
        counter(
            &s,
            "omnibox_events_failed_total",
            &[
                ("omnibox_job", "relay"),
                ("event_type", "order.placed"),
                ("route", "orders"),
                ("kind", kind),
            ],
        )
    };
    assert_eq!(failed("transient"), 1);
    assert_eq!(failed("permanent"), 2);
    let skipped = |reason| {
        counter(
            &s,
            "omnibox_events_skipped_total",
            &[
                ("omnibox_job", "inbox"),
                ("event_type", "order.placed"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(skipped("handler"), 1);
    assert_eq!(skipped("duplicate"), 1);
    assert_eq!(
        counter(
            &s,
            "omnibox_events_dead_lettered_total",
            &[("omnibox_job", "inbox"), ("event_type", "malformed")]
        ),
        1
    );
    assert_eq!(counter(&s, "omnibox_leases_released_total", &relay), 4);
    assert_eq!(counter(&s, "omnibox_leases_lost_total", &relay), 2);
    assert_eq!(
        histogram(
            &s,
            "omnibox_handler_duration_seconds",
            &[("omnibox_job", "inbox"), ("event_type", "order.placed")]
        ),
        vec![0.25]
    );
    let inbox = [("omnibox_job", "inbox")];
    assert_eq!(counter(&s, "omnibox_messages_consumed_total", &inbox), 1);
    assert_eq!(
        counter(
            &s,
            "omnibox_messages_duplicate_total",
            &[("omnibox_job", "inbox"), ("event_type", "order.placed")]
        ),
        1
    );
    assert_eq!(counter(&s, "omnibox_messages_acked_total", &inbox), 1);
    assert_eq!(counter(&s, "omnibox_messages_nacked_total", &inbox), 1);
    assert_eq!(counter(&s, "omnibox_messages_ack_failed_total", &inbox), 1);
    assert_eq!(gauge(&s, "omnibox_circuit_state", &relay), 2.0);
    assert_eq!(
        counter(
            &s,
            "omnibox_circuit_transitions_total",
            &[("omnibox_job", "relay"), ("state", "open")]
        ),
        1
    );
    let maint = [("omnibox_job", "maintenance")];
    assert_eq!(
        counter(&s, "omnibox_stale_leases_released_total", &maint),
        5
    );
    assert_eq!(counter(&s, "omnibox_rows_cleaned_total", &maint), 100);
    let table = [("table", "orders_outbox")];
    assert_eq!(gauge(&s, "omnibox_backlog_pending", &table), 42.0);
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_claimable_age_seconds", &table),
        7.5
    );
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_pending_age_seconds", &table),
        90.0
    );
    assert_eq!(gauge(&s, "omnibox_backlog_leased", &table), 3.0);
    assert_eq!(gauge(&s, "omnibox_backlog_failed", &table), 2.0);
    assert_eq!(gauge(&s, "omnibox_backlog_dead_letters", &table), 1.0);

    // Every documented series was emitted, and nothing else.
    let emitted: BTreeSet<&str> = s.keys().map(|(name, _)| name.as_str()).collect();
    let documented: BTreeSet<&str> = sink.series_names().into_iter().collect();
    assert_eq!(emitted, documented);

    // Labels are bounded: only these keys ever appear.
    let allowed: BTreeSet<&str> = [
        "omnibox_job",
        "event_type",
        "route",
        "kind",
        "reason",
        "state",
        "table",
    ]
    .into_iter()
    .collect();
    for (_, labels) in s.keys() {
        for (k, _) in labels {
            assert!(allowed.contains(k.as_str()), "unexpected label {k}");
        }
    }
}

#[test]
fn bug_04_handler_duration_is_the_measured_call_not_the_batch() {
    // The reference's histogram measured from after the handler to the batch end. Here the
    // histogram holds exactly the durations the steps measured around the handler / broker
    // call, independent of the batch's wall time.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::new();
    metrics::with_local_recorder(&recorder, || {
        sink.record(&Metric::BatchClaimed {
            job: "relay",
            size: 2,
        });
        sink.record(&Metric::HandlerDuration {
            job: "relay",
            event_type: "a",
            duration: Duration::from_millis(20),
        });
        sink.record(&Metric::HandlerDuration {
            job: "relay",
            event_type: "a",
            duration: Duration::from_millis(30),
        });
        sink.record(&Metric::BatchFinished {
            job: "relay",
            duration: Duration::from_secs(9),
        });
    });
    let s = snapshot(&snapshotter);
    assert_eq!(
        histogram(
            &s,
            "omnibox_handler_duration_seconds",
            &[("omnibox_job", "relay"), ("event_type", "a")]
        ),
        vec![0.02, 0.03]
    );
    assert_eq!(
        histogram(
            &s,
            "omnibox_batch_duration_seconds",
            &[("omnibox_job", "relay")]
        ),
        vec![9.0]
    );
}

#[test]
fn bug_04_skipped_events_are_not_counted_as_duplicates() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::new();
    metrics::with_local_recorder(&recorder, || {
        sink.record(&Metric::Skipped {
            job: "inbox",
            event_type: "a",
            reason: SkipReason::Handler,
        });
        sink.record(&Metric::Released {
            job: "inbox",
            count: 3,
        });
    });
    let s = snapshot(&snapshotter);
    assert!(
        s.keys()
            .all(|(name, _)| name != "omnibox_messages_duplicate_total")
    );
    assert_eq!(
        counter(
            &s,
            "omnibox_events_skipped_total",
            &[
                ("omnibox_job", "inbox"),
                ("event_type", "a"),
                ("reason", "handler")
            ]
        ),
        1
    );
    // shutdown leftovers are released leases, not skips or duplicates
    assert_eq!(
        counter(
            &s,
            "omnibox_leases_released_total",
            &[("omnibox_job", "inbox")]
        ),
        3
    );
}

#[test]
fn absent_ages_read_as_zero_and_gauges_follow_the_latest_reading() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::new();
    let first = sample_backlog();
    let empty = Backlog::default();
    metrics::with_local_recorder(&recorder, || {
        sink.record(&Metric::Backlog {
            table: "inbox",
            backlog: &first,
        });
        sink.record(&Metric::Backlog {
            table: "inbox",
            backlog: &empty,
        });
    });
    let s = snapshot(&snapshotter);
    let t = [("table", "inbox")];
    assert_eq!(gauge(&s, "omnibox_backlog_pending", &t), 0.0);
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_claimable_age_seconds", &t),
        0.0
    );
    assert_eq!(
        gauge(&s, "omnibox_backlog_oldest_pending_age_seconds", &t),
        0.0
    );
}

#[test]
fn circuit_gauge_encodes_each_state() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::new();
    for (state, value) in [
        (CircuitState::Open, 2.0),
        (CircuitState::HalfOpen, 1.0),
        (CircuitState::Closed, 0.0),
    ] {
        metrics::with_local_recorder(&recorder, || {
            sink.record(&Metric::Circuit {
                job: "relay",
                state,
            })
        });
        let s = snapshot(&snapshotter);
        assert_eq!(
            gauge(&s, "omnibox_circuit_state", &[("omnibox_job", "relay")]),
            value
        );
        assert_eq!(
            counter(
                &s,
                "omnibox_circuit_transitions_total",
                &[("omnibox_job", "relay"), ("state", state.as_str())]
            ),
            1
        );
    }
}

#[test]
fn custom_prefix_names_every_series_and_bad_prefixes_are_refused() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::with_prefix("shop_").unwrap();
    assert_eq!(sink.prefix(), "shop_");
    metrics::with_local_recorder(&recorder, || sink.record(&Metric::Consumed { job: "in" }));
    let s = snapshot(&snapshotter);
    assert_eq!(
        counter(&s, "shop_messages_consumed_total", &[("omnibox_job", "in")]),
        1
    );
    assert!(sink.series_names().iter().all(|n| n.starts_with("shop_")));

    assert!(FacadeMetrics::with_prefix("").is_ok());
    assert_eq!(
        FacadeMetrics::with_prefix("1abc").unwrap_err(),
        InvalidPrefix("1abc".into())
    );
    assert!(FacadeMetrics::with_prefix("shop-outbox").is_err());
    assert!(FacadeMetrics::with_prefix("a b").is_err());
}

#[test]
fn describe_registers_units_and_help_for_every_series() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sink = FacadeMetrics::new();
    let backlog = sample_backlog();
    metrics::with_local_recorder(&recorder, || {
        sink.describe();
        for m in every_metric(&backlog) {
            sink.record(&m);
        }
    });
    for (ck, unit, desc, _) in snapshotter.snapshot().into_vec() {
        let name = ck.key().name().to_owned();
        assert!(
            desc.is_some_and(|d| !d.is_empty()),
            "{name} has no description"
        );
        let expected = if name.ends_with("_seconds") {
            metrics::Unit::Seconds
        } else {
            metrics::Unit::Count
        };
        assert_eq!(unit, Some(expected), "{name}");
    }
}
