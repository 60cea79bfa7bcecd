//! `tracing` spans: a service that uses only `tracing` can group the lines of one relay batch
//! (`omnibox.batch`) and of one inbox message (`omnibox.inbox.message`), with the job name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use omnibox_core::error::FailureKind;
use omnibox_core::inbox::{AckStrategy, InboxRunner};
use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryInboxStore, MemoryOutboxStore};
use omnibox_core::relay::OutboxRelay;
use omnibox_core::store::{InsertEvents, Transactions};
use omnibox_core::{OutboxEvent, Shutdown, WorkerId};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A log event's message and the names (with `job`) of the spans it happened in.
type Seen = (String, Vec<String>);

/// Records every log event as [`Seen`].
#[derive(Clone, Default)]
struct Scopes(Arc<Mutex<Vec<Seen>>>);

struct Job(String);

#[derive(Default)]
struct Text(String, String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.0 = format!("{value:?}"),
            "job" => self.1 = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.0 = value.to_owned(),
            "job" => self.1 = value.to_owned(),
            _ => {}
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Scopes {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut t = Text::default();
        attrs.record(&mut t);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Job(t.1));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut t = Text::default();
        event.record(&mut t);
        let scope = ctx
            .event_scope(event)
            .map(|s| {
                s.from_root()
                    .map(|span| {
                        let job = span
                            .extensions()
                            .get::<Job>()
                            .map(|j| j.0.clone())
                            .unwrap_or_default();
                        format!("{}[{job}]", span.name())
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push((t.0, scope));
    }
}

fn scope_of(scopes: &Scopes, needle: &str) -> Vec<String> {
    let seen = scopes.0.lock().unwrap();
    seen.iter()
        .find(|(m, _)| m.contains(needle))
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| panic!("no event with {needle:?}: {:?}", *seen))
}

#[tokio::test]
async fn relay_batches_and_inbox_messages_have_spans() {
    let scopes = Scopes::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(scopes.clone()));

    // A relay batch whose publish the broker refuses: the warning is inside the batch span.
    let db = MemoryDb::new();
    let store = MemoryOutboxStore::new();
    let broker = MemoryBroker::new();
    let event = OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", "orders", "k")
        .payload(serde_json::json!({ "total": 1 }))
        .build()
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    store.insert(&mut tx, &event).await.unwrap();
    db.commit(tx).await.unwrap();
    broker.fail_next_publishes(1, FailureKind::Permanent);
    let relay = OutboxRelay::builder(store, broker.clone())
        .job_name("orders_relay")
        .build()
        .unwrap();
    relay
        .publish_batch(&db, &WorkerId::new("relay-1").unwrap(), &Shutdown::new())
        .await
        .unwrap();
    assert_eq!(
        scope_of(&scopes, "broker refused the event"),
        vec!["omnibox.batch[orders_relay]".to_owned()]
    );

    // An inbox message that does not parse: the warning is inside the message span.
    broker.push_raw("orders", "{not json", Default::default());
    let mut runner = InboxRunner::builder(
        broker.consumer(["orders"], "loyalty"),
        db.clone(),
        MemoryInboxStore::new(),
        "loyalty",
    )
    .ack_strategy(AckStrategy::ExactlyOnceInbox)
    .job_name("loyalty_inbox")
    .build()
    .unwrap();
    runner.process_one().await.unwrap();
    assert_eq!(
        scope_of(&scopes, "malformed message"),
        vec!["omnibox.inbox.message[loyalty_inbox]".to_owned()]
    );
}
