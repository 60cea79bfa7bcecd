//! Metrics for omnibox through the metrics facade, with an optional Prometheus exporter
#![forbid(unsafe_code)]
#![deny(missing_docs)]
