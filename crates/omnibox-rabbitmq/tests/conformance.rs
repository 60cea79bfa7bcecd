//! The shared publisher and consumer conformance suites against a live RabbitMQ.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use omnibox_rabbitmq::headers::{from_field_table, to_field_table};
use omnibox_rabbitmq::lapin::options::*;
use omnibox_rabbitmq::lapin::types::FieldTable;
use omnibox_rabbitmq::lapin::{BasicProperties, Connection, ConnectionProperties};
use omnibox_rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};
use omnibox_testing::{ConsumerChecks, RawMessage, consumer_conformance, publisher_conformance};

async fn setup(prefix: &str) -> (Arc<Connection>, String) {
    let url = omnibox_testing::amqp_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = Arc::new(
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap(),
    );
    let q = omnibox_testing::unique_name(prefix);
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (conn, q)
}

async fn teardown(conn: Arc<Connection>, q: &str) {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(q.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = conn.close(200, "OK".into()).await;
}

#[tokio::test]
async fn rabbitmq_publisher_conformance() {
    let (conn, q) = setup("rmq_pub_conf").await;
    let publisher = RabbitPublisher::new(conn.clone()).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    let reader = conn.create_channel().await.unwrap();
    publisher_conformance(&publisher, &q, |queue: String, n: usize| {
        let reader = reader.clone();
        async move {
            let mut got = vec![];
            while got.len() < n {
                match reader
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                {
                    Some(m) => got.push(RawMessage::new(
                        m.delivery.data.clone(),
                        from_field_table(m.delivery.properties.headers().as_ref()),
                    )),
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            got
        }
    })
    .await;
    teardown(conn, &q).await;
}

#[tokio::test]
async fn rabbitmq_consumer_conformance() {
    let (conn, q) = setup("rmq_con_conf").await;
    let sender = conn.create_channel().await.unwrap();
    sender
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let (c1, q1, q2) = (conn.clone(), q.clone(), q.clone());
    consumer_conformance(
        move || {
            let (c, q) = (c1.clone(), q1.clone());
            async move { RabbitConsumer::new(c, q) }
        },
        move |m: RawMessage| {
            let (ch, q) = (sender.clone(), q2.clone());
            async move {
                let props =
                    BasicProperties::default().with_headers(to_field_table(&m.headers).unwrap());
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.body,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
        },
        ConsumerChecks::default().receive_timeout(Duration::from_secs(20)),
    )
    .await;
    teardown(conn, &q).await;
}
