//! Sample events for the suites and for adapters' own tests.

use chrono::{DateTime, TimeDelta, Utc};
use omnibox_core::model::{Event, InboxEvent, OutboxEvent};
use serde_json::json;

/// Builds sample events of one kind for the generic store checks.
pub trait SampleEvent: Event {
    /// An event routed to `route` (outbox topic / inbox source) with ordering or identity
    /// key `key` (outbox partition key / inbox message id), created at `created_at`,
    /// scheduled at `scheduled_at` (default: created), with `max_attempts`.
    fn sample(
        route: &str,
        key: &str,
        created_at: DateTime<Utc>,
        scheduled_at: Option<DateTime<Utc>>,
        max_attempts: u32,
    ) -> Self;
}

/// The consumer group sample inbox events belong to.
pub const SAMPLE_GROUP: &str = "conformance";

impl SampleEvent for OutboxEvent {
    fn sample(
        route: &str,
        key: &str,
        created_at: DateTime<Utc>,
        scheduled_at: Option<DateTime<Utc>>,
        max_attempts: u32,
    ) -> Self {
        let mut b = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", route, key)
            .payload(json!({"key": key, "total": 42}))
            .header("tenant", "acme")
            .created_at(created_at)
            .max_attempts(max_attempts);
        if let Some(at) = scheduled_at {
            b = b.scheduled_at(at);
        }
        match b.build() {
            Ok(e) => e,
            Err(e) => panic!("sample outbox event is invalid: {e}"),
        }
    }
}

impl SampleEvent for InboxEvent {
    fn sample(
        route: &str,
        key: &str,
        created_at: DateTime<Utc>,
        scheduled_at: Option<DateTime<Utc>>,
        max_attempts: u32,
    ) -> Self {
        let mut b = InboxEvent::builder(key, SAMPLE_GROUP, route, "order.placed")
            .payload(json!({"key": key, "total": 42}))
            .created_at(created_at)
            .max_attempts(max_attempts);
        if let Some(at) = scheduled_at {
            b = b.scheduled_at(at);
        }
        match b.build() {
            Ok(e) => e,
            Err(e) => panic!("sample inbox event is invalid: {e}"),
        }
    }
}

/// An outbox event for `topic` / `partition_key` created now, with a `tenant` header and
/// a trace id, for publisher tests.
///
/// ```
/// let e = omnibox_testing::outbox_event("orders", "customer-1");
/// assert_eq!(e.topic, "orders");
/// ```
pub fn outbox_event(topic: &str, partition_key: &str) -> OutboxEvent {
    let b = OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        "order.placed",
        topic,
        partition_key,
    )
    .payload(json!({"order": partition_key, "total": 42, "items": ["a", "b"]}))
    .header("tenant", "acme")
    .trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
    .correlation_id("corr-1");
    match b.build() {
        Ok(e) => e,
        Err(e) => panic!("sample outbox event is invalid: {e}"),
    }
}

/// `now - 10 s`: a creation time safely in the past of any database clock close to ours.
pub(crate) fn past() -> DateTime<Utc> {
    Utc::now() - TimeDelta::seconds(10)
}
