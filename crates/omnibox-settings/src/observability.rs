//! `[metrics]` and `[log]`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsSettings {
    /// Serve Prometheus metrics on this address (default none: no endpoint).
    pub prometheus_listen: Option<SocketAddr>,
    /// Prefix of every series (default `omnibox_`).
    pub prefix: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            prometheus_listen: None,
            prefix: "omnibox_".into(),
        }
    }
}

/// Log line format: `text` (default) or `json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]` (read by binaries such as `omnibox relay`; a library leaves logging to the
/// application).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// `tracing` filter directives (default `info`; `RUST_LOG` wins when set).
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[cfg(feature = "prometheus")]
mod convert {
    use omnibox_metrics::{FacadeMetrics, PrometheusOptions};

    use super::MetricsSettings;
    use crate::SettingsError;

    impl MetricsSettings {
        /// The metrics sink with the configured prefix.
        pub fn sink(&self) -> Result<FacadeMetrics, SettingsError> {
            FacadeMetrics::with_prefix(&self.prefix)
                .map_err(|e| SettingsError::invalid("metrics.prefix", "settings", e.to_string()))
        }

        /// Exporter options, when an endpoint is configured.
        pub fn prometheus_options(&self) -> Result<Option<PrometheusOptions>, SettingsError> {
            let Some(listen) = self.prometheus_listen else {
                return Ok(None);
            };
            Ok(Some(PrometheusOptions::new(listen).sink(self.sink()?)))
        }
    }
}
