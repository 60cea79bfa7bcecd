//! Errors of this crate.

/// A metric name prefix that Prometheus would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid metric prefix {0:?}: it must match ^[a-zA-Z_][a-zA-Z0-9_]*$")]
pub struct InvalidPrefix(pub String);
