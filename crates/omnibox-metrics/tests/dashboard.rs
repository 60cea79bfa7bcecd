//! The Grafana dashboard in `dashboards/` queries only series this crate emits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use omnibox_metrics::FacadeMetrics;

#[test]
fn dashboard_queries_only_documented_series() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboards/omnibox.json");
    let text = std::fs::read_to_string(path).unwrap();
    let sink = FacadeMetrics::new();
    let known: BTreeSet<&str> = sink.series_names().into_iter().collect();
    let mut used = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("omnibox_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // `omnibox_job` is the job label, not a series.
        if end > "omnibox_".len() && &tail[..end] != omnibox_metrics::JOB_LABEL {
            used.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    assert!(
        used.len() >= 10,
        "dashboard queries too few series: {used:?}"
    );
    for name in &used {
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(known.contains(base), "dashboard uses unknown series {name}");
    }
    for must in [
        "omnibox_backlog_pending",
        "omnibox_backlog_oldest_claimable_age_seconds",
        "omnibox_events_completed_total",
        "omnibox_events_failed_total",
        "omnibox_backlog_dead_letters",
        "omnibox_handler_duration_seconds_bucket",
        "omnibox_circuit_state",
    ] {
        assert!(used.contains(must), "dashboard lacks {must}");
    }
    // Panels group and filter by omnibox's label, never Prometheus's own `job`.
    let without_ours = text.replace(omnibox_metrics::JOB_LABEL, "");
    for bare in ["by (job)", "job=~", "{{job}}", ", job)"] {
        assert!(
            !without_ours.contains(bare),
            "dashboard uses the bare `job` label: {bare}"
        );
    }
    assert!(
        text.contains("omnibox_job=~"),
        "the $job variable filters omnibox_job"
    );
}
