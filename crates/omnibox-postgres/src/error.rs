//! The one place that classifies sqlx errors as core [`StoreError`]s.
//!
//! Connection, I/O, TLS and pool failures are `Connection` (transient); a cancelled
//! statement (`57014`, e.g. `statement_timeout`) and a session ended by
//! `idle_in_transaction_session_timeout` or `transaction_timeout` (`25P03`, `25P04`) are
//! `Timeout` (transient); class `23`
//! (integrity constraint violation) is `Integrity`, except NOT NULL and CHECK violations
//! (`23502`, `23514`), which like class `22` (data exception: a `\u0000` in jsonb, a NUL
//! byte in text, a value too long) are `Data` (permanent: the same value is refused on
//! every retry); serialization failures, deadlocks and
//! unavailable locks (`40001`, `40P01`, `55P03`) are `Contention` (transient); class `53`
//! (insufficient resources, e.g. too many connections) is `Connection`; everything else is
//! `Other`. Messages
//! never contain the connection string: sqlx's configuration errors are reduced to their
//! kind.

use omnibox_core::error::{HandlerError, StoreError};

/// A SQL error of a handler as the [`HandlerError`] it should be: an outage, a timeout or
/// a deadlock is transient (retried, no attempt spent); refused data or a constraint is
/// counted (it spends an attempt and ends as a dead letter). The source error is kept.
/// The easy way to do it right in a handler: `query.execute(&mut *conn).await.map_err(handler_error)?`.
///
/// ```
/// use omnibox_core::FailureKind;
/// use omnibox_postgres::handler_error;
///
/// let lost = handler_error(sqlx::Error::PoolTimedOut);
/// assert_eq!(lost.kind, FailureKind::Transient);
/// let refused = handler_error(sqlx::Error::RowNotFound);
/// assert_eq!(refused.kind, FailureKind::Permanent);
/// ```
pub fn handler_error(err: sqlx::Error) -> HandlerError {
    HandlerError::from(classify("handler", err))
}

/// Classify a sqlx error raised by `operation`.
pub fn classify(operation: &'static str, err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Connection {
            message: format!("{operation}: {}", describe(&err)),
            source: Some(Box::new(err)),
        },
        sqlx::Error::Configuration(_) => StoreError::Connection {
            // The configuration error may quote the URL; keep only its kind.
            message: format!("{operation}: invalid connection configuration"),
            source: None,
        },
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!("{operation}: {} (SQLSTATE {code})", db.message());
            // query cancelled (statement_timeout), idle-in-transaction or transaction
            // timeout: the session's own bounds, transient
            if code == "57014" || code == "25P03" || code == "25P04" {
                StoreError::Timeout {
                    message,
                    source: Some(Box::new(err)),
                }
            } else if code == "40001" || code == "40P01" || code == "55P03" {
                // serialization failure, deadlock detected, lock not available
                StoreError::Contention {
                    message,
                    source: Some(Box::new(err)),
                }
            } else if code.starts_with("22") || code == "23502" || code == "23514" {
                // data exception (a `\u0000` in jsonb, a NUL in text, a value too long),
                // NOT NULL or CHECK violation: the same data is refused every time
                StoreError::Data {
                    message,
                    source: Some(Box::new(err)),
                }
            } else if code.starts_with("23") {
                StoreError::Integrity {
                    message,
                    source: Some(Box::new(err)),
                }
            } else if code.starts_with("08")
                || code.starts_with("53")
                || code == "57P01"
                || code == "57P02"
                || code == "57P03"
            {
                // connection exceptions, admin/crash shutdown, cannot connect now
                StoreError::Connection {
                    message,
                    source: Some(Box::new(err)),
                }
            } else {
                StoreError::Other {
                    operation,
                    message,
                    source: Some(Box::new(err)),
                }
            }
        }
        _ => StoreError::Other {
            operation,
            message: describe(&err),
            source: Some(Box::new(err)),
        },
    }
}

fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(e) => format!("i/o error: {}", e.kind()),
        sqlx::Error::Tls(_) => "TLS error".to_owned(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a pooled connection".to_owned(),
        sqlx::Error::PoolClosed => "the pool is closed".to_owned(),
        sqlx::Error::WorkerCrashed => "the connection worker crashed".to_owned(),
        sqlx::Error::Protocol(_) => "protocol error".to_owned(),
        sqlx::Error::ColumnNotFound(c) => format!("column {c} not found"),
        sqlx::Error::ColumnDecode { index, .. } => format!("cannot decode column {index}"),
        sqlx::Error::RowNotFound => "no row returned".to_owned(),
        other => format!("{other}"),
    }
}

/// Extension to classify a `Result<T, sqlx::Error>` in place.
pub(crate) trait ResultExt<T> {
    /// Map the error through [`classify`].
    fn op(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn op(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| classify(operation, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnibox_core::error::FailureKind;

    #[test]
    fn pool_and_io_errors_are_transient_connection_errors() {
        let e = classify("claim", sqlx::Error::PoolTimedOut);
        assert!(matches!(e, StoreError::Connection { .. }));
        assert_eq!(e.kind(), FailureKind::Transient);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(
            classify("claim", sqlx::Error::Io(io)),
            StoreError::Connection { .. }
        ));
    }

    #[test]
    fn configuration_errors_never_echo_the_url() {
        let e = classify(
            "connect",
            sqlx::Error::Configuration("bad url postgres://user:secret@host/db".into()),
        );
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
