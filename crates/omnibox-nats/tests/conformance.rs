//! The shared publisher and consumer conformance suites against a live NATS JetStream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::Duration;

use omnibox_core::model::Headers;
use omnibox_nats::async_nats::jetstream::{self, Context};
use omnibox_nats::async_nats::{self, HeaderMap, HeaderName, HeaderValue};
use omnibox_nats::{ConsumerOptions, NatsConsumer, NatsPublisher};
use omnibox_testing::{ConsumerChecks, RawMessage, consumer_conformance, publisher_conformance};

async fn setup(prefix: &str) -> (Context, String, String) {
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let name = omnibox_testing::unique_name(prefix);
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{name}.>")],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let subject = format!("{name}.orders");
    (js, name, subject)
}

fn decode(map: &HeaderMap) -> Headers {
    map.iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.last()?.as_str().to_owned())))
        .collect()
}

#[tokio::test]
async fn nats_publisher_conformance() {
    let (js, stream, subject) = setup("nats_pub_conf").await;
    let publisher = NatsPublisher::new(js.clone());
    let s = js.get_stream(&stream).await.unwrap();
    publisher_conformance(&publisher, &subject, |_subject: String, n: usize| {
        let s = s.clone();
        async move {
            let mut got = vec![];
            for seq in 1..=n as u64 {
                let raw = s.get_raw_message(seq).await.unwrap();
                got.push(RawMessage::new(raw.payload.to_vec(), decode(&raw.headers)));
            }
            got
        }
    })
    .await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn nats_consumer_conformance() {
    let (js, stream, subject) = setup("nats_con_conf").await;
    let (js1, js2, stream1) = (js.clone(), js.clone(), stream.clone());
    consumer_conformance(
        move || {
            let (js, stream) = (js1.clone(), stream1.clone());
            async move {
                // A short ack_wait: a stopped consumer's unacknowledged messages come back soon.
                NatsConsumer::new(js, stream, "conformance")
                    .with_options(ConsumerOptions::default().ack_wait(Duration::from_secs(2)))
            }
        },
        move |m: RawMessage| {
            let (js, subject) = (js2.clone(), subject.clone());
            async move {
                let mut headers = HeaderMap::new();
                for (k, v) in &m.headers {
                    headers.insert(
                        HeaderName::from_str(k).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    );
                }
                js.publish_with_headers(subject, headers, m.body.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        },
        ConsumerChecks::default().receive_timeout(Duration::from_secs(20)),
    )
    .await;
    js.delete_stream(&stream).await.unwrap();
}
