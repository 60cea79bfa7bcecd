//! `RabbitConnector` against a live RabbitMQ (AMQP_URL): a connection closed by the broker
//! is replaced, failed connects are transient and backed off, a fixed connection is never
//! replaced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omnibox_core::backoff::{Backoff, Jitter};
use omnibox_core::consumer::{AckHandle, Consumer};
use omnibox_core::model::OutboxEvent;
use omnibox_core::{FailureKind, Publisher};
use omnibox_rabbitmq::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use omnibox_rabbitmq::lapin::types::FieldTable;
use omnibox_rabbitmq::lapin::{Connection, ConnectionProperties};
use omnibox_rabbitmq::{
    ConnectionEvent, PublisherOptions, RabbitConnector, RabbitConsumer, RabbitPublisher,
    RoutingMode,
};

const WAIT: Duration = Duration::from_secs(20);

async fn amqp_url() -> String {
    omnibox_testing::amqp_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn unique(prefix: &str) -> String {
    format!("omnibox-test-{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn event(queue: &str) -> OutboxEvent {
    OutboxEvent::builder("order", uuid::Uuid::now_v7(), "order.placed", queue, "k1")
        .payload(serde_json::json!({ "n": 1 }))
        .build()
        .unwrap()
}

fn recorder() -> (
    Arc<Mutex<Vec<ConnectionEvent>>>,
    impl Fn(&ConnectionEvent) + Send + Sync,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e: &ConnectionEvent| {
        sink.lock().unwrap().push(e.clone())
    })
}

/// Close (broker side) the connections named `connection_name`; returns how many.
fn close_connections(connection_name: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let needle = format!("\"{connection_name}\"");
    let pids: Vec<&str> = list
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for pid in &pids {
        let status = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "omnibox reconnect test"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    pids.len()
}

async fn declare(url: &str, queue: &str) -> Connection {
    let admin = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = admin.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    admin
}

async fn delete(admin: &Connection, queue: &str) {
    let ch = admin.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

/// Retry `publish` (transient failures only) until it succeeds, bounded by `WAIT`.
async fn publish_until_ok(publisher: &RabbitPublisher, event: &OutboxEvent) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut transient = 0;
    loop {
        match publisher.publish(event).await {
            Ok(()) => return transient,
            Err(e) => {
                assert_eq!(e.kind, FailureKind::Transient, "{e}");
                transient += 1;
                assert!(tokio::time::Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_consumer_replace_a_connection_the_broker_closed() {
    let url = amqp_url().await;
    let queue = unique("reconnect");
    let admin = declare(&url, &queue).await;
    let name = unique("conn");
    let (events, hook) = recorder();
    let connector = RabbitConnector::from_uri(
        url.as_str(),
        ConnectionProperties::default().with_connection_name(name.as_str().into()),
    )
    .on_event(hook);
    // One connector (one connection) shared by the publisher and the consumer.
    let publisher = RabbitPublisher::new(connector.clone()).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    let mut consumer = RabbitConsumer::new(connector.clone(), queue.as_str());
    let first = event(&queue);
    publisher.publish(&first).await.unwrap();
    let d = tokio::time::timeout(WAIT, consumer.receive())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        first.common.id.to_string()
    );
    d.ack.ack().await.unwrap();

    assert_eq!(close_connections(&name), 1);

    let second = event(&queue);
    publish_until_ok(&publisher, &second).await;
    // The consumer reports the lost subscription once, then subscribes on the new connection.
    let deadline = tokio::time::Instant::now() + WAIT;
    let d = loop {
        match tokio::time::timeout(WAIT, consumer.receive())
            .await
            .unwrap()
        {
            Ok(d) => break d,
            Err(e) => {
                assert_eq!(e.kind, FailureKind::Transient, "{e}");
                assert!(tokio::time::Instant::now() < deadline, "still failing: {e}");
            }
        }
    };
    assert_eq!(
        d.message.as_ref().unwrap().message_id,
        second.common.id.to_string()
    );
    d.ack.ack().await.unwrap();
    consumer.stop().await.unwrap();

    assert_eq!(connector.reconnects(), 1);
    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ConnectionEvent::Connected,
            ConnectionEvent::Lost,
            ConnectionEvent::Reconnected { total: 1 },
        ]
    );
    delete(&admin, &queue).await;
}

#[tokio::test]
async fn failed_connects_are_transient_and_backed_off() {
    // Wrong credentials: lapin's error is permanent in itself, but a failed connect is
    // never the message's fault, so the publish fails as transient.
    let url = amqp_url()
        .await
        .replacen("guest:guest", "guest:wrong-password", 1);
    let (events, hook) = recorder();
    let connector = RabbitConnector::from_uri(url, ConnectionProperties::default())
        .with_backoff(
            Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(40),
                Jitter::None,
            )
            .unwrap(),
        )
        .on_event(hook);
    let publisher = RabbitPublisher::new(connector.clone());
    let queue = unique("noauth");
    for _ in 0..3 {
        let err = publisher.publish(&event(&queue)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Transient, "{err}");
    }
    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ConnectionEvent::ConnectFailed {
                failures: 1,
                retry_in: Duration::from_millis(20)
            },
            ConnectionEvent::ConnectFailed {
                failures: 2,
                retry_in: Duration::from_millis(40)
            },
            ConnectionEvent::ConnectFailed {
                failures: 3,
                retry_in: Duration::from_millis(40)
            },
        ]
    );
    assert_eq!(connector.reconnects(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_connection_is_never_replaced() {
    let url = amqp_url().await;
    let name = unique("fixed");
    let conn = Connection::connect(
        &url,
        ConnectionProperties::default().with_connection_name(name.as_str().into()),
    )
    .await
    .unwrap();
    let publisher = RabbitPublisher::new(conn).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    assert!(!publisher.connector().reconnects_enabled());
    assert_eq!(close_connections(&name), 1);
    let queue = unique("fixed");
    // Poll until the client saw the close; from then on every publish fails (transient).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match publisher.publish(&event(&queue)).await {
            Err(e) => {
                assert_eq!(e.kind, FailureKind::Transient, "{e}");
                break;
            }
            Ok(()) => assert!(tokio::time::Instant::now() < deadline, "close not seen"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let err = publisher.publish(&event(&queue)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Transient, "{err}");
    }
    assert_eq!(publisher.connector().reconnects(), 0);
}

#[tokio::test]
async fn a_connect_that_hangs_times_out_as_a_failed_try() {
    let (events, hook) = recorder();
    let connector = RabbitConnector::from_factory(std::future::pending)
        .with_connect_timeout(Duration::from_millis(50))
        .with_backoff(
            Backoff::new(
                Duration::from_millis(10),
                Duration::from_millis(10),
                Jitter::None,
            )
            .unwrap(),
        )
        .on_event(hook);
    let mut consumer = RabbitConsumer::new(connector.clone(), "omnibox-never-declared");
    let err = tokio::time::timeout(WAIT, consumer.receive())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Transient, "{err}");
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert_eq!(
        events.lock().unwrap().clone(),
        vec![ConnectionEvent::ConnectFailed {
            failures: 1,
            retry_in: Duration::from_millis(10)
        }]
    );
}
