//! The one place where lapin errors are classified as transient or permanent.
//!
//! | lapin error | kind |
//! |---|---|
//! | I/O (refused, reset, broken pipe), missing heartbeat, runtime shut down | transient |
//! | connection or channel not open / closing / closed | transient |
//! | channel limit reached | transient |
//! | AMQP 320 connection-forced, 505 unexpected-frame, 506 resource-error (flow control, memory or disk alarm), 541 internal-error, 504 channel-error | transient |
//! | a publisher confirm that did not come in time | transient |
//! | opening a connection (any error) | transient |
//! | AMQP 311 content-too-large, 406 precondition-failed (e.g. `message size ... is larger than configured max size`) | permanent |
//! | AMQP 404 not-found (unknown exchange or queue) | permanent |
//! | AMQP 403 access-refused, 530 not-allowed, 402 invalid-path | permanent |
//! | AMQP 312 no-route (`basic.return` of a mandatory message) | permanent |
//! | broker `nack` of a publish | permanent |
//! | other AMQP codes, frame (de)serialisation, authentication, protocol version | permanent |

use lapin::ErrorKind;
use omnibox_core::{ConsumeError, FailureKind, PublishError};

/// AMQP reply code for an unroutable mandatory message.
pub const NO_ROUTE: u16 = 312;

/// Classify a lapin error.
pub fn classify(err: &lapin::Error) -> FailureKind {
    match err.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::MissingHeartbeatError
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::ChannelsLimitReached => FailureKind::Transient,
        ErrorKind::ProtocolError(amqp) => classify_reply_code(amqp.get_id()),
        _ => FailureKind::Permanent,
    }
}

/// Classify an AMQP reply code (from a channel/connection close or a `basic.return`).
pub fn classify_reply_code(code: u16) -> FailureKind {
    match code {
        // connection-forced, channel-error, unexpected-frame, resource-error, internal-error
        320 | 504 | 505 | 506 | 541 => FailureKind::Transient,
        _ => FailureKind::Permanent,
    }
}

/// Whether the error closed the channel it happened on (so the channel must be reopened).
pub(crate) fn closes_channel(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ProtocolError(_)
            | ErrorKind::InvalidChannelState(..)
            | ErrorKind::InvalidChannel(_)
    )
}

/// Turn a lapin error into a classified [`PublishError`].
pub fn publish_error(context: &str, err: lapin::Error) -> PublishError {
    let message = format!("RabbitMQ {context}: {err}");
    match classify(&err) {
        FailureKind::Transient => PublishError::transient(message),
        FailureKind::Permanent => PublishError::permanent(message),
    }
    .with_source(err)
}

/// Turn a lapin error into a classified [`ConsumeError`].
pub fn consume_error(context: &str, err: lapin::Error) -> ConsumeError {
    let message = format!("RabbitMQ {context}: {err}");
    match classify(&err) {
        FailureKind::Transient => ConsumeError::transient(message),
        FailureKind::Permanent => ConsumeError::permanent(message),
    }
    .with_source(err)
}

/// Opening a connection failed: always transient (whatever lapin's error, e.g. refused
/// credentials after a broker restart, it is not the fault of the message at hand).
pub(crate) fn connect_publish_error(err: lapin::Error) -> PublishError {
    PublishError::transient(format!("RabbitMQ connect: {err}")).with_source(err)
}

/// Opening a connection failed: always transient (see [`connect_publish_error`]).
pub(crate) fn connect_consume_error(err: lapin::Error) -> ConsumeError {
    ConsumeError::transient(format!("RabbitMQ connect: {err}")).with_source(err)
}

/// The publish confirm did not arrive in time (transient: flow control or a slow broker).
pub(crate) fn confirm_timeout(timeout: std::time::Duration) -> PublishError {
    PublishError::transient(format!(
        "RabbitMQ publisher confirm not received within {timeout:?}"
    ))
}

/// A mandatory message came back with `basic.return`.
pub(crate) fn returned(code: u16, text: &str, exchange: &str, routing_key: &str) -> PublishError {
    let message = format!(
        "RabbitMQ returned the message ({code} {text}): exchange `{exchange}`, routing key `{routing_key}`"
    );
    match classify_reply_code(code) {
        FailureKind::Transient => PublishError::transient(message),
        FailureKind::Permanent => PublishError::permanent(message),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_are_classified() {
        for code in [311, 312, 403, 404, 406, 530] {
            assert_eq!(classify_reply_code(code), FailureKind::Permanent, "{code}");
        }
        for code in [320, 504, 505, 506, 541] {
            assert_eq!(classify_reply_code(code), FailureKind::Transient, "{code}");
        }
    }

    #[test]
    fn io_errors_are_transient() {
        let err: lapin::Error =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(classify(&err), FailureKind::Transient);
        assert_eq!(publish_error("connect", err).kind, FailureKind::Transient);
    }
}
