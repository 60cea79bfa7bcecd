//! The one place that decides whether a Kafka client error is transient (retry later without
//! spending an attempt) or permanent (the broker refused this record: count an attempt).
//!
//! Transient: the environment failed and the same record will go through once it recovers —
//! broker unreachable or all brokers down, local and broker timeouts (`MessageTimedOut`,
//! `RequestTimedOut`), a full local queue (`QueueFull`), leadership and coordinator moves
//! (`NotLeaderForPartition`, `NotCoordinator`, ...), not enough in-sync replicas, throttling,
//! a rebalance in progress, and a delivery future cancelled because the producer went away.
//!
//! Permanent: the broker refused this record or this topic — message too large
//! (`MessageSizeTooLarge`, `InvalidMessageSize`), unknown topic (`UnknownTopicOrPartition`
//! / `UnknownTopic`: librdkafka reports it only after it received metadata that lacks the
//! topic, so the broker *was* reachable — an unreachable broker surfaces as a timeout),
//! invalid topic, authorization failures, invalid or corrupt records, and any error code not
//! listed as transient (the safe default: an unknown failure spends an attempt and eventually
//! dead-letters instead of retrying forever).

use omnibox_core::{ConsumeError, FailureKind, PublishError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Classify a librdkafka error code.
pub fn classify_code(code: RDKafkaErrorCode) -> FailureKind {
    use RDKafkaErrorCode as C;
    let transient = matches!(
        code,
        // Connectivity.
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::NetworkException
            | C::BrokerNotAvailable
            | C::ReplicaNotAvailable
            | C::NodeUpdate
            | C::DestroyBroker
            | C::BrokerDestroy
            | C::WaitCache
            // Timeouts.
            | C::MessageTimedOut
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::TimedOutQueue
            // Local back-pressure.
            | C::QueueFull
            | C::Retry
            | C::InProgress
            | C::PreviousInProgress
            // Leadership, coordinators, replicas.
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::WaitingForCoordinator
            | C::NotController
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::KafkaStorageError
            | C::ReassignmentInProgress
            | C::RebalanceInProgress
            | C::UnknownPartition
            // Purged or interrupted locally (producer closing, flush aborted).
            | C::PurgeQueue
            | C::PurgeInflight
            | C::Interrupted
    );
    if transient {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    }
}

/// Classify a client error (see the module docs for the rules).
pub fn classify(error: &KafkaError) -> FailureKind {
    match error {
        // The delivery future was dropped with the producer: nothing was refused.
        KafkaError::Canceled => FailureKind::Transient,
        KafkaError::ClientCreation(_)
        | KafkaError::ClientConfig(..)
        | KafkaError::Nul(_)
        | KafkaError::Subscription(_) => FailureKind::Permanent,
        other => other
            .rdkafka_error_code()
            .map_or(FailureKind::Permanent, classify_code),
    }
}

/// A [`PublishError`] for a failed produce of `topic`.
pub fn publish_error(topic: &str, error: KafkaError) -> PublishError {
    let message = format!("Kafka produce to `{topic}` failed: {error}");
    let base = match classify(&error) {
        FailureKind::Transient => PublishError::transient(message),
        FailureKind::Permanent => PublishError::permanent(message),
    };
    base.with_source(error)
}

/// A [`ConsumeError`] for a failed consumer operation (`what` names it).
pub fn consume_error(what: &str, error: KafkaError) -> ConsumeError {
    let message = format!("Kafka {what} failed: {error}");
    let base = match classify(&error) {
        FailureKind::Transient => ConsumeError::transient(message),
        FailureKind::Permanent => ConsumeError::permanent(message),
    };
    base.with_source(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectivity_and_timeouts_are_transient() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::NotCoordinator,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotEnoughReplicas,
        ] {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                FailureKind::Transient,
                "{code:?}"
            );
        }
        assert_eq!(classify(&KafkaError::Canceled), FailureKind::Transient);
    }

    #[test]
    fn refusals_are_permanent() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidMessage,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                FailureKind::Permanent,
                "{code:?}"
            );
        }
    }

    #[test]
    fn errors_keep_their_source_and_kind() {
        let e = publish_error(
            "orders",
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
        );
        assert_eq!(e.kind, FailureKind::Transient);
        assert!(e.message.contains("orders"));
        assert!(e.source.is_some());
        let e = consume_error(
            "commit",
            KafkaError::ConsumerCommit(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert_eq!(e.kind, FailureKind::Permanent);
    }
}
