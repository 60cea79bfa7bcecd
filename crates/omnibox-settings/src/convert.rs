//! Conversions shared by the sections.

use std::time::Duration;

use chrono::TimeDelta;

use crate::SettingsError;

/// A lease or age the stores can turn into a timestamp offset; `key` names it in the error.
pub(crate) fn timestamp_offset(key: &str, d: Duration) -> Result<Duration, SettingsError> {
    TimeDelta::from_std(d)
        .map(|_| d)
        .map_err(|_| SettingsError::invalid(key, "settings", "duration is too long"))
}

/// A validation error from a builder, attributed to a section.
pub(crate) fn invalid(section: &str, e: impl std::fmt::Display) -> SettingsError {
    SettingsError::invalid(section, "settings", e.to_string())
}

/// The stores' default lease ([`omnibox_core::domain::DEFAULT_LEASE_TTL`]) as a `Duration`.
pub(crate) fn default_lease() -> Duration {
    omnibox_core::domain::DEFAULT_LEASE_TTL
        .to_std()
        .unwrap_or(Duration::from_secs(300))
}
