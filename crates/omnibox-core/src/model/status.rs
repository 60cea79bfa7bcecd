//! The event status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an event is in its life. Wire and column values are lowercase, as in omni-box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Waiting to be processed (possibly leased, possibly in retry backoff).
    Pending,
    /// Processed; terminal.
    Completed,
    /// Spent every attempt; terminal until an operator requeues it.
    Failed,
}

impl EventStatus {
    /// The column / wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Completed => "completed",
            EventStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown status string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for EventStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(EventStatus::Pending),
            "completed" => Ok(EventStatus::Completed),
            "failed" => Ok(EventStatus::Failed),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}
