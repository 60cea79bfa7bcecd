//! [`CliError`]: one line for the user and the exit code scripts rely on.

use std::fmt;
use std::process::ExitCode;

use omnibox_settings::redact;

/// Exit code: the command failed (a service unreachable, a statement refused).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or bad settings (clap uses it for usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: what was asked for does not exist or is in no state to act on.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the user declined the confirmation (or none could be asked).
pub const EXIT_ABORTED: u8 = 4;

/// A failure, with its exit code. Its message is printed once, passwords masked.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Exit [`EXIT_FAILED`].
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::new(EXIT_FAILED, message)
    }
    /// Exit [`EXIT_USAGE`].
    pub fn usage(message: impl fmt::Display) -> Self {
        Self::new(EXIT_USAGE, message)
    }
    /// Exit [`EXIT_NOT_FOUND`].
    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::new(EXIT_NOT_FOUND, message)
    }
    /// Exit [`EXIT_ABORTED`].
    pub fn aborted(message: impl fmt::Display) -> Self {
        Self::new(EXIT_ABORTED, message)
    }
    fn new(code: u8, message: impl fmt::Display) -> Self {
        Self {
            code,
            message: redact(&message.to_string()),
        }
    }
    /// The exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<omnibox_core::error::StoreError> for CliError {
    fn from(e: omnibox_core::error::StoreError) -> Self {
        use omnibox_core::error::StoreError as S;
        match e {
            S::InvalidIdentifier { .. } | S::InvalidRequest(_) => Self::usage(e),
            _ => Self::failed(e),
        }
    }
}

impl From<omnibox_settings::SettingsError> for CliError {
    fn from(e: omnibox_settings::SettingsError) -> Self {
        Self::usage(e)
    }
}

/// `Result` of a command.
pub type CliResult<T = ()> = Result<T, CliError>;
