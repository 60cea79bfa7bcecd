//! Worker identity.

use std::fmt;

use super::limits::NAME_MAX;
use crate::error::ValidationError;

/// A validated worker id: trimmed, 1–255 characters of `[A-Za-z0-9.-/:]`.
///
/// omni-box normalised the id only when claiming and compared raw strings everywhere else,
/// so a padded id locked rows it could never complete. Here the id is checked
/// once, at construction, and every store call takes this type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(String);

impl WorkerId {
    /// Validate a worker id.
    pub fn new(id: impl AsRef<str>) -> Result<Self, ValidationError> {
        let id = id.as_ref().trim();
        if id.is_empty() {
            return Err(ValidationError::Blank { field: "worker_id" });
        }
        let len = id.chars().count();
        if len > NAME_MAX {
            return Err(ValidationError::TooLong {
                field: "worker_id",
                max: NAME_MAX,
                actual: len,
            });
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '/' | ':'))
        {
            return Err(ValidationError::ForbiddenCharacter {
                field: "worker_id",
                reason: "only ASCII letters, digits and . - / : are allowed",
            });
        }
        Ok(Self(id.to_owned()))
    }

    /// A unique id for this process: `<prefix>:<pid>:<random>`.
    pub fn generate(prefix: &str) -> Result<Self, ValidationError> {
        Self::new(format!(
            "{prefix}:{}:{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug10_worker_ids_are_normalised_once() {
        assert_eq!(WorkerId::new("  relay-1 ").unwrap().as_str(), "relay-1");
        assert!(WorkerId::new("a b").is_err());
        assert!(WorkerId::new("a_b").is_err());
        assert!(WorkerId::new("").is_err());
        assert!(WorkerId::new("x".repeat(256)).is_err());
        assert!(WorkerId::generate("relay").is_ok());
    }
}
