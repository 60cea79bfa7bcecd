//! Shared test support: a snapshot of the debugging recorder keyed by name and labels.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, Snapshotter};

/// `(series name, sorted labels)`.
pub type SeriesKey = (String, Vec<(String, String)>);

/// Take (and reset) the recorded values.
pub fn snapshot(snapshotter: &Snapshotter) -> BTreeMap<SeriesKey, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _unit, _desc, value)| {
            let key = ck.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

/// A series key from a name and label pairs.
pub fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// A counter's value.
pub fn counter(snap: &BTreeMap<SeriesKey, DebugValue>, name: &str, labels: &[(&str, &str)]) -> u64 {
    match snap.get(&key(name, labels)) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!(
            "{name} {labels:?}: expected a counter, found {other:?}; have {:?}",
            snap.keys().collect::<Vec<_>>()
        ),
    }
}

/// A gauge's value.
pub fn gauge(snap: &BTreeMap<SeriesKey, DebugValue>, name: &str, labels: &[(&str, &str)]) -> f64 {
    match snap.get(&key(name, labels)) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!(
            "{name} {labels:?}: expected a gauge, found {other:?}; have {:?}",
            snap.keys().collect::<Vec<_>>()
        ),
    }
}

/// A histogram's observations.
pub fn histogram(
    snap: &BTreeMap<SeriesKey, DebugValue>,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<f64> {
    match snap.get(&key(name, labels)) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        other => panic!(
            "{name} {labels:?}: expected a histogram, found {other:?}; have {:?}",
            snap.keys().collect::<Vec<_>>()
        ),
    }
}
