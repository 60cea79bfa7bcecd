//! The `prometheus` feature: install the exporter, record through `FacadeMetrics`, scrape
//! `/metrics` over plain HTTP and find the series. (One test: the recorder is global.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use omnibox_core::FailureKind;
use omnibox_core::metrics::{Metric, MetricsSink};
use omnibox_core::store::Backlog;
use omnibox_metrics::{FacadeMetrics, PrometheusError, PrometheusOptions, install_prometheus};

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200"),
        "unexpected response: {raw}"
    );
    raw
}

/// The value of the sample line `name{...}` whose labels include every pair in `labels`.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())
            .flatten()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_over_http_finds_the_series() {
    let addr = free_port();
    let sink = Arc::new(FacadeMetrics::new());
    let handle = PrometheusOptions::new(addr)
        .sink((*sink).clone())
        .install()
        .unwrap();

    sink.record(&Metric::Completed {
        job: "relay",
        event_type: "order.placed",
        route: "orders",
    });
    sink.record(&Metric::Completed {
        job: "relay",
        event_type: "order.placed",
        route: "orders",
    });
    sink.record(&Metric::Failed {
        job: "relay",
        event_type: "order.placed",
        route: "orders",
        kind: FailureKind::Transient,
    });
    sink.record(&Metric::HandlerDuration {
        job: "relay",
        event_type: "order.placed",
        duration: Duration::from_millis(30),
    });
    // The application's own histograms, named like omnibox's, are not re-bucketed.
    metrics::histogram!("app_request_seconds").record(0.2);
    metrics::histogram!("app_batch_size").record(3.0);
    let mut b = Backlog::default();
    b.pending = 17;
    b.oldest_claimable_age = Some(TimeDelta::seconds(4));
    sink.record(&Metric::Backlog {
        table: "orders_outbox",
        backlog: &b,
    });

    let body = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    let ev = [
        ("omnibox_job", "relay"),
        ("event_type", "order.placed"),
        ("route", "orders"),
    ];
    assert_eq!(
        sample(&body, "omnibox_events_completed_total", &ev),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "omnibox_events_failed_total",
            &[
                ("omnibox_job", "relay"),
                ("route", "orders"),
                ("kind", "transient")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "omnibox_backlog_pending",
            &[("table", "orders_outbox")]
        ),
        Some(17.0)
    );
    assert_eq!(
        sample(
            &body,
            "omnibox_backlog_oldest_claimable_age_seconds",
            &[("table", "orders_outbox")]
        ),
        Some(4.0)
    );
    // exported as a real histogram (buckets), so dashboards can use histogram_quantile
    let lbl = [("omnibox_job", "relay"), ("event_type", "order.placed")];
    assert_eq!(
        sample(
            &body,
            "omnibox_handler_duration_seconds_bucket",
            &[lbl[0], lbl[1], ("le", "0.05")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "omnibox_handler_duration_seconds_bucket",
            &[lbl[0], lbl[1], ("le", "0.025")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "omnibox_handler_duration_seconds_count", &lbl),
        Some(1.0)
    );
    assert!(body.contains("# HELP omnibox_backlog_pending"), "{body}");
    assert!(
        body.contains("# TYPE omnibox_handler_duration_seconds histogram"),
        "{body}"
    );
    // omnibox's label is not Prometheus's own `job` target label
    assert!(
        !body
            .lines()
            .any(|l| l.contains("{job=") || l.contains(",job=")),
        "{body}"
    );
    // buckets apply to omnibox's histograms only: the application's keep the exporter's
    // default rendering (a summary) instead of omnibox's buckets
    assert!(
        body.contains("# TYPE app_request_seconds summary"),
        "{body}"
    );
    assert!(!body.contains("app_request_seconds_bucket"), "{body}");
    assert!(!body.contains("app_batch_size_bucket"), "{body}");
    // the handle renders the same series
    assert!(handle.render().contains("omnibox_backlog_pending"));

    // a second install is refused, not silently ignored
    let again = install_prometheus(free_port());
    assert!(
        matches!(again, Err(PrometheusError::RecorderAlreadySet)),
        "{again:?}"
    );
}
