//! The one place where async-nats errors are classified as transient or permanent.
//!
//! | error | kind |
//! |---|---|
//! | publish ack timed out, broken pipe (connection lost), too many acks pending | transient |
//! | request timed out, client disconnected, missing heartbeats, pull request failed | transient |
//! | JetStream API errors with status 503 (JetStream temporarily unavailable), 408, 409 (request limits) | transient |
//! | no stream for the subject (`no responders` on publish), stream or consumer not found | permanent |
//! | message larger than the server's `max_payload` (client check) or the stream's `max_msg_size` (error 10054) | permanent |
//! | not authorised (permissions violation), invalid subject or header | permanent |
//! | other JetStream API errors (bad configuration...) | permanent |

use async_nats::jetstream;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::ConsumerErrorKind;
use omnibox_core::{ConsumeError, FailureKind, PublishError};

/// Classify a JetStream API error by its HTTP-like status code.
pub fn classify_api_error(err: &jetstream::Error) -> FailureKind {
    match err.code() {
        408 | 409 | 503 => FailureKind::Transient,
        _ => FailureKind::Permanent,
    }
}

/// Classify a JetStream publish error.
pub fn classify_publish(err: &jetstream::context::PublishError) -> FailureKind {
    match err.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => FailureKind::Transient,
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => FailureKind::Permanent,
        // `Other` wraps a JetStream API error (e.g. 10054 message too large), a failure to
        // hand the message to the connection task (client gone), or an unreadable ack.
        _ => {
            match std::error::Error::source(err).and_then(|s| s.downcast_ref::<jetstream::Error>())
            {
                Some(api) => classify_api_error(api),
                None => FailureKind::Transient,
            }
        }
    }
}

fn kinded<E>(
    kind: FailureKind,
    message: String,
    transient: fn(String) -> E,
    permanent: fn(String) -> E,
) -> E {
    match kind {
        FailureKind::Transient => transient(message),
        FailureKind::Permanent => permanent(message),
    }
}

/// Turn a JetStream publish error into a classified [`PublishError`].
pub fn publish_error(subject: &str, err: jetstream::context::PublishError) -> PublishError {
    let kind = classify_publish(&err);
    let detail = match std::error::Error::source(&err) {
        Some(s) => format!("{err}: {s}"),
        None => err.to_string(),
    };
    kinded(
        kind,
        format!("NATS JetStream publish to `{subject}`: {detail}"),
        PublishError::transient,
        PublishError::permanent,
    )
    .with_source(err)
}

/// Turn a get-stream error into a classified [`ConsumeError`].
pub fn get_stream_error(stream: &str, err: jetstream::context::GetStreamError) -> ConsumeError {
    let kind = match err.kind() {
        GetStreamErrorKind::Request => FailureKind::Transient,
        GetStreamErrorKind::JetStream(api) => classify_api_error(&api),
        _ => FailureKind::Permanent,
    };
    kinded(
        kind,
        format!("NATS JetStream stream `{stream}`: {err}"),
        ConsumeError::transient,
        ConsumeError::permanent,
    )
    .with_source(err)
}

/// Turn a consumer create/lookup error into a classified [`ConsumeError`].
pub fn consumer_error(name: &str, err: jetstream::stream::ConsumerError) -> ConsumeError {
    let kind = match err.kind() {
        ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => FailureKind::Transient,
        ConsumerErrorKind::JetStream(api) => classify_api_error(&api),
        _ => FailureKind::Permanent,
    };
    kinded(
        kind,
        format!("NATS JetStream consumer `{name}`: {err}"),
        ConsumeError::transient,
        ConsumeError::permanent,
    )
    .with_source(err)
}

/// Turn an error of the message stream into a classified [`ConsumeError`].
pub fn messages_error(name: &str, err: jetstream::consumer::pull::MessagesError) -> ConsumeError {
    use jetstream::consumer::pull::MessagesErrorKind as K;
    let kind = match err.kind() {
        K::ConsumerDeleted | K::PushBasedConsumer => FailureKind::Permanent,
        _ => FailureKind::Transient,
    };
    kinded(
        kind,
        format!("NATS JetStream consumer `{name}`: {err}"),
        ConsumeError::transient,
        ConsumeError::permanent,
    )
    .with_source(err)
}

/// Turn an error of opening the message stream into a classified [`ConsumeError`]
/// (transient: the pull request could not be sent).
pub fn stream_error(name: &str, err: jetstream::consumer::StreamError) -> ConsumeError {
    ConsumeError::transient(format!("NATS JetStream consumer `{name}`: {err}")).with_source(err)
}

/// An acknowledgement could not be sent or confirmed (transient: the connection failed or
/// the server did not answer; the message is redelivered after `ack_wait`).
pub fn ack_error(what: &str, err: async_nats::Error) -> ConsumeError {
    ConsumeError::transient(format!("NATS JetStream {what}: {err}")).with_source(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn publish_kinds_are_classified() {
        use jetstream::context::PublishError as E;
        for k in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            assert_eq!(classify_publish(&E::new(k)), FailureKind::Transient);
        }
        for k in [
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::MaxPayloadExceeded,
        ] {
            assert_eq!(classify_publish(&E::new(k)), FailureKind::Permanent);
        }
    }

    #[test]
    fn api_errors_are_classified_by_status() {
        let api = |code: u16, err_code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": code, "err_code": err_code, "description": "x"
            }))
            .unwrap()
        };
        assert_eq!(classify_api_error(&api(503, 10008)), FailureKind::Transient);
        assert_eq!(classify_api_error(&api(400, 10054)), FailureKind::Permanent);
        assert_eq!(classify_api_error(&api(404, 10059)), FailureKind::Permanent);
        let wrapped =
            jetstream::context::PublishError::with_source(PublishErrorKind::Other, api(503, 10008));
        assert_eq!(classify_publish(&wrapped), FailureKind::Transient);
        let wrapped =
            jetstream::context::PublishError::with_source(PublishErrorKind::Other, api(400, 10054));
        assert_eq!(classify_publish(&wrapped), FailureKind::Permanent);
    }
}
