//! Publisher and consumer conformance suites.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use omnibox_core::consumer::{AckHandle, Consumer, Delivery, Redelivery};
use omnibox_core::envelope::metadata_headers;
use omnibox_core::error::ConsumeError;
use omnibox_core::model::{Headers, OutboxEvent};
use omnibox_core::publisher::Publisher;
use serde_json::Value;

use crate::check::Ctx;
use crate::fixtures::outbox_event;

/// A message as a broker holds it: what the read-back closure of
/// [`publisher_conformance`] returns and what the send closure of
/// [`consumer_conformance`] publishes.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RawMessage {
    /// Body bytes.
    pub body: Vec<u8>,
    /// Headers.
    pub headers: Headers,
}

impl RawMessage {
    /// A message from its parts.
    pub fn new(body: impl Into<Vec<u8>>, headers: Headers) -> Self {
        Self {
            body: body.into(),
            headers,
        }
    }
}

const PUB: &str = "publisher";
const CON: &str = "consumer";

/// How long each wait of the suites may take.
const WAIT: Duration = Duration::from_secs(30);

fn payload_of(body: &Value) -> Option<&serde_json::Map<String, Value>> {
    match body.get("payload") {
        Some(Value::Object(p)) => Some(p),
        _ => body.as_object(),
    }
}

/// Check a publisher against its broker: every event published to `topic` arrives with
/// its payload (bare or inside an envelope) and every metadata header
/// ([`metadata_headers`]); `publish_batch` reports one `Ok` per event, in order.
///
/// `read_back(topic, n)` must return the first `n` messages the broker holds on `topic`
/// (e.g. by consuming them), in publish order for messages of one partition key.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use omnibox_core::memory::MemoryBroker;
/// use omnibox_testing::{RawMessage, publisher_conformance};
///
/// let broker = MemoryBroker::new();
/// let reader = broker.clone();
/// publisher_conformance(&broker, "orders", move |topic: String, n: usize| {
///     let reader = reader.clone();
///     async move {
///         reader.published(&topic).into_iter().take(n)
///             .map(|m| RawMessage::new(m.body, m.headers)).collect()
///     }
/// })
/// .await;
/// # });
/// ```
pub async fn publisher_conformance<P, R, RF>(publisher: &P, topic: &str, read_back: R)
where
    P: Publisher,
    R: Fn(String, usize) -> RF,
    RF: Future<Output = Vec<RawMessage>>,
{
    let ctx = Ctx::new(PUB, "publish_then_batch");
    let single = outbox_event(topic, "customer-1");
    ctx.ok(
        ctx.within(WAIT, "publish", publisher.publish(&single))
            .await,
        "publish",
    );
    let batch: Vec<OutboxEvent> = (0..3).map(|_| outbox_event(topic, "customer-1")).collect();
    let outcomes = ctx
        .within(WAIT, "publish_batch", publisher.publish_batch(&batch))
        .await;
    ctx.eq(
        outcomes.len(),
        batch.len(),
        "publish_batch outcomes (one per event)",
    );
    for (i, o) in outcomes.iter().enumerate() {
        if let Err(e) = o {
            ctx.fail(format_args!("publish_batch outcome {i}: {e}"));
        }
    }
    let sent: Vec<&OutboxEvent> = std::iter::once(&single).chain(batch.iter()).collect();
    let got = ctx
        .within(WAIT, "read_back", read_back(topic.to_owned(), sent.len()))
        .await;
    ctx.eq(got.len(), sent.len(), "messages read back");

    let ctx = Ctx::new(PUB, "body_and_headers");
    for msg in &got {
        let body: Value = ctx.ok(serde_json::from_slice(&msg.body), "body is JSON");
        let Some(id) = msg.headers.get("event_id") else {
            ctx.fail(format_args!(
                "message without event_id header: {:?}",
                msg.headers
            ));
        };
        let Some(event) = sent.iter().find(|e| e.common.id.to_string() == *id) else {
            ctx.fail(format_args!("unknown event_id {id}"));
        };
        ctx.eq(
            payload_of(&body),
            Some(&event.common.payload),
            "payload (bare or enveloped)",
        );
        for (k, v) in metadata_headers(event) {
            ctx.eq(msg.headers.get(&k), Some(&v), &format!("header {k}"));
        }
    }
    let ctx = Ctx::new(PUB, "per_key_order");
    let order: Vec<String> = got
        .iter()
        .filter_map(|m| m.headers.get("event_id").cloned())
        .collect();
    let want: Vec<String> = sent.iter().map(|e| e.common.id.to_string()).collect();
    ctx.eq(
        order.iter().collect::<BTreeSet<_>>(),
        want.iter().collect::<BTreeSet<_>>(),
        "every event arrived once",
    );
    ctx.eq(
        &order[..1],
        &want[..1],
        "a published event precedes later ones of its key",
    );
}

/// Options of [`consumer_conformance`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerChecks {
    /// How long to wait for each expected delivery.
    pub receive_timeout: Duration,
    /// How long a consumer must stay quiet to show that nothing is redelivered.
    pub quiet: Duration,
}

impl Default for ConsumerChecks {
    fn default() -> Self {
        Self {
            receive_timeout: Duration::from_secs(30),
            quiet: Duration::from_millis(500),
        }
    }
}

impl ConsumerChecks {
    /// Set the receive timeout.
    pub fn receive_timeout(mut self, d: Duration) -> Self {
        self.receive_timeout = d;
        self
    }

    /// Set the quiet period.
    pub fn quiet(mut self, d: Duration) -> Self {
        self.quiet = d;
        self
    }
}

async fn recv<C: Consumer>(ctx: &Ctx, c: &mut C, limit: Duration) -> Delivery<C::Ack> {
    let r: Result<Delivery<C::Ack>, ConsumeError> = ctx.within(limit, "receive", c.receive()).await;
    ctx.ok(r, "receive")
}

/// Check a consumer: ack'd messages are not redelivered, nack'd ones are, unacknowledged
/// deliveries of a stopped consumer go to the next consumer of the group, and malformed
/// messages arrive as `Err(MalformedMessage)` carrying their body.
///
/// `make_consumer()` returns a new consumer of one fresh topic in one consumer group (the
/// same topic and group every time); `send(msg)` publishes raw bytes and headers to that
/// topic. Messages are sent with one key, so brokers keep their order.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use omnibox_core::memory::MemoryBroker;
/// use omnibox_testing::{ConsumerChecks, RawMessage, consumer_conformance};
///
/// let broker = MemoryBroker::new();
/// let (b1, b2) = (broker.clone(), broker.clone());
/// consumer_conformance(
///     move || { let b = b1.clone(); async move { b.consumer(["t"], "g") } },
///     move |m: RawMessage| { let b = b2.clone(); async move { b.push_raw("t", m.body, m.headers); } },
///     ConsumerChecks::default(),
/// )
/// .await;
/// # });
/// ```
pub async fn consumer_conformance<C, M, MF, S, SF>(make_consumer: M, send: S, opts: ConsumerChecks)
where
    C: Consumer,
    M: Fn() -> MF,
    MF: Future<Output = C>,
    S: Fn(RawMessage) -> SF,
    SF: Future<Output = ()>,
{
    let t = opts.receive_timeout;
    let valid = |n: u32| {
        let e = outbox_event("conformance", "k");
        let body = omnibox_core::envelope::Converter::encode(
            &omnibox_core::envelope::EnvelopeConverter::default(),
            &e,
        );
        let mut headers = metadata_headers(&e);
        headers.insert("seq".into(), n.to_string());
        (e, RawMessage::new(body, headers))
    };
    let (e1, m1) = valid(1);
    let (e2, m2) = valid(2);
    let malformed = RawMessage::new(b"{not json".to_vec(), Headers::new());
    send(m1).await;
    send(malformed).await;
    send(m2).await;

    let ctx = Ctx::new(CON, "receive_and_parse");
    let mut c = make_consumer().await;
    ctx.ok(c.start().await, "start");
    let d1 = recv(&ctx, &mut c, t).await;
    let got1 = match &d1.message {
        Ok(m) => m.clone(),
        Err(m) => ctx.fail(format_args!(
            "valid message arrived malformed: {:?}",
            m.error
        )),
    };
    ctx.eq(
        got1.message_id.clone(),
        e1.common.id.to_string(),
        "message_id",
    );
    ctx.eq(
        got1.event_type.clone(),
        e1.common.event_type.clone(),
        "event_type",
    );
    ctx.eq(&got1.payload, &e1.common.payload, "payload");
    ctx.eq(
        got1.trace_id.clone(),
        e1.common.trace_id.clone(),
        "trace_id",
    );

    let ctx = Ctx::new(CON, "malformed_message");
    let dm = recv(&ctx, &mut c, t).await;
    match &dm.message {
        Err(m) => ctx.eq(m.body.clone(), b"{not json".to_vec(), "malformed body"),
        Ok(m) => ctx.fail(format_args!("malformed message parsed: {m:?}")),
    }
    ctx.ok(d1.ack.ack().await, "ack");
    ctx.ok(dm.ack.ack().await, "ack malformed");

    let ctx = Ctx::new(CON, "nack_redelivers");
    let d2 = recv(&ctx, &mut c, t).await;
    let id2 = d2.message.as_ref().map(|m| m.message_id.clone()).ok();
    ctx.eq(
        id2.clone(),
        Some(e2.common.id.to_string()),
        "second message",
    );
    ctx.ok(d2.ack.nack(Redelivery::Immediate).await, "nack");
    let again = recv(&ctx, &mut c, t).await;
    ctx.eq(
        again.message.as_ref().map(|m| m.message_id.clone()).ok(),
        id2,
        "the nacked message comes back",
    );

    let ctx = Ctx::new(CON, "stop_redelivers_unacked");
    ctx.ok(c.stop().await, "stop");
    drop(again);
    drop(c);
    let mut c = make_consumer().await;
    ctx.ok(c.start().await, "start");
    let back = recv(&ctx, &mut c, t).await;
    ctx.eq(
        back.message.as_ref().map(|m| m.message_id.clone()).ok(),
        Some(e2.common.id.to_string()),
        "an unacknowledged message goes to the next consumer of the group",
    );
    ctx.ok(back.ack.ack().await, "ack");

    let ctx = Ctx::new(CON, "acked_not_redelivered");
    let (e3, m3) = valid(3);
    send(m3).await;
    let d3 = recv(&ctx, &mut c, t).await;
    ctx.eq(
        d3.message.as_ref().map(|m| m.message_id.clone()).ok(),
        Some(e3.common.id.to_string()),
        "next message after the acked ones",
    );
    ctx.ok(d3.ack.ack().await, "ack");
    ctx.ok(c.stop().await, "stop");
    drop(c);
    let mut c = make_consumer().await;
    ctx.ok(c.start().await, "start");
    if let Ok(r) = tokio::time::timeout(opts.quiet, c.receive()).await {
        let what = r.map(|d| d.message.map(|m| m.message_id).map_err(|m| m.body));
        ctx.fail(format_args!(
            "an acknowledged message was delivered again: {what:?}"
        ));
    }
    ctx.ok(c.stop().await, "stop");
}
