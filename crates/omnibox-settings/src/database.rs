//! `[database]`: where PostgreSQL is and how many connections to open.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact;

/// `[database]`. `url` may also come from `DATABASE_URL` (see
/// [`Loader::database_url_env`](crate::Loader::database_url_env)).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db` (no default: required by anything that
    /// connects). Never printed unmasked: `Debug` and errors mask the password.
    pub url: Option<String>,
    /// Most connections in the pool (default 8).
    pub max_connections: u32,
    /// How long to wait for a connection from the pool (default 30 s).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(redact))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    /// The URL with its password masked, for messages.
    pub fn display_url(&self) -> String {
        self.url
            .as_deref()
            .map(redact)
            .unwrap_or_else(|| "(not set)".into())
    }
}
