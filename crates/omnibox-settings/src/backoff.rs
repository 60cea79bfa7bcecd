//! Backoff and jitter as settings.

use std::time::Duration;

use omnibox_core::backoff::{Backoff, Jitter};
use serde::{Deserialize, Serialize};

use crate::SettingsError;

/// Randomness of a backoff: `none`, `full` or `equal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JitterSetting {
    /// No randomness.
    None,
    /// Uniform in `[0, delay]`.
    Full,
    /// Uniform in `[delay/2, delay]`.
    #[default]
    Equal,
}

impl From<JitterSetting> for Jitter {
    fn from(j: JitterSetting) -> Self {
        match j {
            JitterSetting::None => Jitter::None,
            JitterSetting::Full => Jitter::Full,
            JitterSetting::Equal => Jitter::Equal,
        }
    }
}

/// Backoff of counted failures: `min(cap, base · 2^attempts)` with jitter (default base
/// 10 s, cap 1 h, equal jitter: [`Backoff::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffSettings {
    /// Delay after the first failure.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    /// Randomness.
    pub jitter: JitterSetting,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
            jitter: JitterSetting::Equal,
        }
    }
}

impl BackoffSettings {
    /// The backoff; `key` names the section in the error (`relay.backoff`).
    pub fn to_backoff(&self, key: &str) -> Result<Backoff, SettingsError> {
        Backoff::new(self.base, self.cap, self.jitter.into())
            .map_err(|e| SettingsError::invalid(&format!("{key}.cap"), "settings", e.to_string()))
    }
}
