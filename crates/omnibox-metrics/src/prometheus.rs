//! Prometheus exporter helper (feature `prometheus`): installs
//! `metrics-exporter-prometheus` as the global recorder and serves the scrape endpoint over
//! HTTP.

use std::net::SocketAddr;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::sink::FacadeMetrics;

/// Default buckets of omnibox's `*_seconds` histograms (5 ms to 60 s).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Default buckets of the `batch_size` histogram.
pub const BATCH_SIZE_BUCKETS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Installing the exporter failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrometheusError {
    /// Not called inside a Tokio runtime (the HTTP listener runs on it).
    #[error("install_prometheus must be called inside a Tokio runtime")]
    NoRuntime,
    /// The exporter could not be built (address in use, bad buckets...).
    #[error("building the Prometheus exporter failed: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    /// A global recorder is already installed.
    #[error("a global metrics recorder is already installed")]
    RecorderAlreadySet,
}

/// Exporter settings: where to listen, histogram buckets, the sink's prefix (for the
/// `# HELP` lines).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrometheusOptions {
    /// Listen address of the scrape endpoint (any path answers).
    pub listen: SocketAddr,
    /// Buckets of omnibox's `*_seconds` histograms (`batch_duration_seconds`,
    /// `handler_duration_seconds`; no other series).
    pub duration_buckets: Vec<f64>,
    /// Buckets of omnibox's `batch_size` histogram.
    pub batch_size_buckets: Vec<f64>,
    /// The sink whose series get described (`# HELP`, units).
    pub sink: FacadeMetrics,
}

impl PrometheusOptions {
    /// Listen on `listen`, default buckets, default sink.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            duration_buckets: DURATION_BUCKETS.to_vec(),
            batch_size_buckets: BATCH_SIZE_BUCKETS.to_vec(),
            sink: FacadeMetrics::new(),
        }
    }

    /// Buckets of the `*_seconds` histograms.
    #[must_use]
    pub fn duration_buckets(mut self, buckets: &[f64]) -> Self {
        self.duration_buckets = buckets.to_vec();
        self
    }

    /// Buckets of the `batch_size` histogram.
    #[must_use]
    pub fn batch_size_buckets(mut self, buckets: &[f64]) -> Self {
        self.batch_size_buckets = buckets.to_vec();
        self
    }

    /// Describe the series of this sink (use the sink you hand to omnibox).
    #[must_use]
    pub fn sink(mut self, sink: FacadeMetrics) -> Self {
        self.sink = sink;
        self
    }

    /// Install the global recorder and serve `/metrics` on the current Tokio runtime.
    /// Histograms are exported as Prometheus histograms (buckets), so dashboards can use
    /// `histogram_quantile`.
    pub fn install(self) -> Result<PrometheusHandle, PrometheusError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| PrometheusError::NoRuntime)?;
        // Buckets for omnibox's own histograms only (full names): the application's other
        // `*_seconds` histograms keep the exporter's defaults or their own settings.
        let mut builder = PrometheusBuilder::new().with_http_listener(self.listen);
        for name in self.sink.duration_histograms() {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), &self.duration_buckets)?;
        }
        for name in self.sink.size_histograms() {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), &self.batch_size_buckets)?;
        }
        let (recorder, exporter) = {
            let _entered = runtime.enter();
            builder.build()?
        };
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| PrometheusError::RecorderAlreadySet)?;
        let listen = self.listen;
        runtime.spawn(async move {
            if let Err(e) = exporter.await {
                tracing::error!(%listen, error = ?e, "the Prometheus scrape endpoint stopped");
            }
        });
        self.sink.describe();
        tracing::info!(%listen, "serving Prometheus metrics");
        Ok(handle)
    }
}

/// Install the Prometheus recorder globally and serve the scrape endpoint on `listen`, with
/// default buckets and the default sink's descriptions. Call inside a Tokio runtime, once
/// per process.
///
/// ```no_run
/// # async fn run() -> Result<(), omnibox_metrics::PrometheusError> {
/// let handle = omnibox_metrics::install_prometheus(([0, 0, 0, 0], 9000).into())?;
/// // `handle.render()` gives the same text the endpoint serves.
/// # let _ = handle; Ok(()) }
/// ```
pub fn install_prometheus(listen: SocketAddr) -> Result<PrometheusHandle, PrometheusError> {
    PrometheusOptions::new(listen).install()
}
