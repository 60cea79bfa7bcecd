//! [`SettingsError`]: what went wrong, which key, and where the value came from.

use std::fmt;

/// Loading settings failed. Each problem names the key (`relay.batch_size`) and where its
/// value came from (`relay.toml line 4`, `environment variable OMNIBOX_RELAY__BATCH_SIZE`);
/// passwords in URLs are masked in every message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The settings file could not be read (missing file, no permission).
    #[error("cannot read settings file {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// One or more keys are unknown or hold values of the wrong type or range.
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Dotted key (`relay.batch_size`); empty for the document itself.
    pub key: String,
    /// Where the value came from (`relay.toml line 4`, `environment variable …`).
    pub origin: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{} (in {})", self.message, self.origin)
        } else {
            write!(f, "`{}`: {} (in {})", self.key, self.message, self.origin)
        }
    }
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    format!("invalid settings: {}", lines.join("; "))
}

impl SettingsError {
    /// The problems of an [`Invalid`](Self::Invalid) error (empty otherwise).
    pub fn problems(&self) -> &[Problem] {
        match self {
            SettingsError::Invalid(p) => p,
            SettingsError::Read { .. } => &[],
        }
    }

    pub(crate) fn invalid(key: &str, origin: &str, message: impl Into<String>) -> Self {
        SettingsError::Invalid(vec![Problem {
            key: key.to_owned(),
            origin: origin.to_owned(),
            message: message.into(),
        }])
    }
}
