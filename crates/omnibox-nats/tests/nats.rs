//! Against a live NATS server with JetStream (NATS_URL).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use omnibox_core::consumer::{AckHandle, Consumer, Redelivery};
use omnibox_core::model::{Limits, OutboxEvent};
use omnibox_core::{FailureKind, Publisher};
use omnibox_nats::async_nats;
use omnibox_nats::async_nats::jetstream::{self, Context};
use omnibox_nats::{ConsumerOptions, NatsConsumer, NatsPublisher, PublisherOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn nats_url() -> String {
    // NATS_URL, else a testcontainers NATS with JetStream, else a loud error naming NATS_URL.
    omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

/// A fresh stream `OMNIBOX_TEST_<id>` on subjects `<prefix>.>` (deleted by `cleanup`).
struct Fixture {
    js: Context,
    stream: String,
    prefix: String,
}

impl Fixture {
    async fn new(configure: impl FnOnce(&mut jetstream::stream::Config)) -> Self {
        let client = within(async_nats::connect(nats_url().await))
            .await
            .expect("connect to NATS_URL");
        let js = jetstream::new(client);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let stream = format!("OMNIBOX_TEST_{id}");
        let prefix = format!("omnibox-test-{id}");
        let mut config = jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        configure(&mut config);
        within(js.create_stream(config))
            .await
            .expect("create stream");
        Self { js, stream, prefix }
    }

    fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    async fn messages(&self) -> u64 {
        let mut s = self.js.get_stream(&self.stream).await.unwrap();
        s.info().await.unwrap().state.messages
    }

    async fn cleanup(self) {
        within(self.js.delete_stream(&self.stream)).await.unwrap();
    }
}

fn event(topic: &str) -> OutboxEvent {
    OutboxEvent::builder(
        "order",
        uuid::Uuid::now_v7(),
        "order.placed",
        topic,
        "customer-7",
    )
    .payload(json!({"total": 42}))
    .trace_id("trace-1")
    .header(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .build()
    .unwrap()
}

#[tokio::test]
async fn publish_returns_after_ack_with_msg_id_and_metadata_headers() {
    let fx = Fixture::new(|_| {}).await;
    let topic = fx.topic("orders");
    let e = event(&topic);
    within(NatsPublisher::new(fx.js.clone()).publish(&e))
        .await
        .unwrap();

    let stream = fx.js.get_stream(&fx.stream).await.unwrap();
    let raw = within(stream.get_raw_message(1)).await.unwrap();
    assert_eq!(raw.subject.as_str(), topic);
    let h = &raw.headers;
    let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(get("Nats-Msg-Id"), Some(e.common.id.to_string()));
    assert_eq!(get("event_id"), Some(e.common.id.to_string()));
    assert_eq!(get("event_type").as_deref(), Some("order.placed"));
    assert_eq!(get("trace_id").as_deref(), Some("trace-1"));
    assert!(get("traceparent").unwrap().starts_with("00-0af7"));
    let body: serde_json::Value = serde_json::from_slice(&raw.payload).unwrap();
    assert_eq!(body["payload"], json!({"total": 42}));
    fx.cleanup().await;
}

#[tokio::test]
async fn subject_prefix_is_applied() {
    let fx = Fixture::new(|_| {}).await;
    let publisher = NatsPublisher::new(fx.js.clone())
        .with_options(PublisherOptions::default().subject_prefix(fx.prefix.clone()));
    within(publisher.publish(&event("prefixed"))).await.unwrap();
    let stream = fx.js.get_stream(&fx.stream).await.unwrap();
    let raw = within(stream.get_raw_message(1)).await.unwrap();
    assert_eq!(raw.subject.as_str(), fx.topic("prefixed"));
    fx.cleanup().await;
}

#[tokio::test]
async fn republishing_the_same_event_is_a_success_and_stores_one_message() {
    let fx = Fixture::new(|_| {}).await;
    let publisher = NatsPublisher::new(fx.js.clone());
    let e = event(&fx.topic("dup"));
    within(publisher.publish(&e)).await.unwrap();
    // A relay that crashed before recording the first publish sends it again.
    within(publisher.publish(&e)).await.unwrap();
    assert_eq!(fx.messages().await, 1);
    fx.cleanup().await;
}

#[tokio::test]
async fn subject_without_stream_is_permanent() {
    let client = within(async_nats::connect(nats_url().await)).await.unwrap();
    let publisher = NatsPublisher::new(jetstream::new(client));
    let topic = format!("omnibox-test-nostream-{}", uuid::Uuid::new_v4().simple());
    let err = within(publisher.publish(&event(&topic))).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(err.message.contains("no stream"), "{err}");
}

#[tokio::test]
async fn messages_above_the_stream_or_server_limit_are_permanent() {
    let fx = Fixture::new(|c| c.max_message_size = 1024).await;
    let publisher = NatsPublisher::new(fx.js.clone());
    let mut limits = Limits::default();
    limits.payload_max_bytes = 4 * 1024 * 1024;
    let build = |size: usize| {
        OutboxEvent::builder(
            "order",
            uuid::Uuid::now_v7(),
            "order.placed",
            fx.topic("big"),
            "k",
        )
        .payload(json!({"blob": "x".repeat(size)}))
        .build_with(&limits)
        .unwrap()
    };
    // Over the stream's max_msg_size: the server refuses it (JetStream error 10054).
    let err = within(publisher.publish(&build(2048))).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(err.message.contains("10054"), "{err}");
    // Over the server's max_payload (1 MiB by default): refused before sending.
    let err = within(publisher.publish(&build(2 * 1024 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
    assert!(err.message.contains("max payload"), "{err}");
    assert_eq!(fx.messages().await, 0);
    fx.cleanup().await;
}

#[tokio::test]
async fn unreachable_server_is_transient() {
    // A client pointed at a closed port (keeps retrying in the background).
    let client = within(
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1"),
    )
    .await
    .unwrap();
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client);
    let err = within(NatsPublisher::new(js).publish(&event("anywhere")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Transient, "{err}");
}

#[tokio::test]
async fn consumer_parses_and_acks() {
    let fx = Fixture::new(|_| {}).await;
    let topic = fx.topic("consume");
    let e = event(&topic);
    within(NatsPublisher::new(fx.js.clone()).publish(&e))
        .await
        .unwrap();

    let mut consumer = NatsConsumer::new(fx.js.clone(), fx.stream.clone(), "inbox");
    within(consumer.start()).await.unwrap();
    let d = within(consumer.receive()).await.unwrap();
    let m = d.message.as_ref().unwrap();
    assert_eq!(m.message_id, e.common.id.to_string());
    assert_eq!(m.source, topic);
    assert_eq!(m.event_type, "order.placed");
    assert_eq!(m.payload, json!({"total": 42}).as_object().unwrap().clone());
    assert_eq!(m.trace_id.as_deref(), Some("trace-1"));
    assert_eq!(d.ack.delivered(), 1);
    within(d.ack.ack()).await.unwrap();
    within(consumer.stop()).await.unwrap();

    let stream = fx.js.get_stream(&fx.stream).await.unwrap();
    let mut c: jetstream::consumer::PullConsumer = stream.get_consumer("inbox").await.unwrap();
    let info = within(c.info()).await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    fx.cleanup().await;
}

#[tokio::test]
async fn nak_with_delay_redelivers() {
    let fx = Fixture::new(|_| {}).await;
    let e = event(&fx.topic("nak"));
    within(NatsPublisher::new(fx.js.clone()).publish(&e))
        .await
        .unwrap();
    let mut consumer = NatsConsumer::new(fx.js.clone(), fx.stream.clone(), "nak");

    let d = within(consumer.receive()).await.unwrap();
    within(d.ack.nack(Redelivery::After(Duration::from_millis(300))))
        .await
        .unwrap();
    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        e.common.id.to_string()
    );
    assert_eq!(d.ack.delivered(), 2);
    assert!(d.ack.redelivered());
    within(d.ack.nack(Redelivery::Immediate)).await.unwrap();
    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(d.ack.delivered(), 3);
    within(d.ack.ack()).await.unwrap();
    within(consumer.stop()).await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn unacknowledged_message_comes_back_after_ack_wait() {
    let fx = Fixture::new(|_| {}).await;
    let e = event(&fx.topic("ackwait"));
    within(NatsPublisher::new(fx.js.clone()).publish(&e))
        .await
        .unwrap();
    let mut consumer = NatsConsumer::new(fx.js.clone(), fx.stream.clone(), "ackwait")
        .with_options(ConsumerOptions::default().ack_wait(Duration::from_secs(1)));

    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(d.ack.delivered(), 1);
    drop(d); // the handler crashed: no ack, no nak
    let d = within(consumer.receive()).await.unwrap();
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        e.common.id.to_string()
    );
    assert_eq!(d.ack.delivered(), 2);
    within(d.ack.ack()).await.unwrap();
    within(consumer.stop()).await.unwrap();
    fx.cleanup().await;
}

#[tokio::test]
async fn malformed_messages_arrive_as_errors_with_a_working_ack() {
    let fx = Fixture::new(|_| {}).await;
    let subject = fx.topic("raw");
    for body in [&b""[..], b"not json", b"[1,2]"] {
        within(async {
            fx.js
                .publish(subject.clone(), body.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap()
        })
        .await;
    }
    let mut consumer = NatsConsumer::new(fx.js.clone(), fx.stream.clone(), "malformed")
        .with_options(ConsumerOptions::default().ack_wait(Duration::from_secs(1)));
    let mut seen = vec![];
    for seq in 1..=3u64 {
        let d = within(consumer.receive()).await.unwrap();
        let bad = d.message.expect_err("malformed");
        assert_eq!(bad.source, subject);
        assert_eq!(bad.message_id, Some(format!("{}:{seq}", fx.stream)));
        seen.push(bad.body);
        within(d.ack.ack()).await.unwrap();
    }
    assert_eq!(
        seen,
        vec![b"".to_vec(), b"not json".to_vec(), b"[1,2]".to_vec()]
    );
    within(consumer.stop()).await.unwrap();
    let stream = fx.js.get_stream(&fx.stream).await.unwrap();
    let mut c: jetstream::consumer::PullConsumer = stream.get_consumer("malformed").await.unwrap();
    let info = within(c.info()).await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending, info.num_redelivered),
        (0, 0, 0)
    );
    fx.cleanup().await;
}

#[tokio::test]
async fn missing_stream_is_a_permanent_consume_error() {
    let client = within(async_nats::connect(nats_url().await)).await.unwrap();
    let mut consumer = NatsConsumer::new(
        jetstream::new(client),
        format!("OMNIBOX_TEST_MISSING_{}", uuid::Uuid::new_v4().simple()),
        "x",
    );
    let err = within(consumer.start()).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent, "{err}");
}
