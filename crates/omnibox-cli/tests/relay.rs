//! `omnibox relay` as a real process: configured by a TOML file (plus one environment
//! override), it publishes rows written by the library and rows written by plain SQL (as a
//! service in another language would write them) to RabbitMQ, NATS and Kafka (mock
//! cluster), wakes up on LISTEN/NOTIFY for rows committed while it runs, and on SIGTERM
//! drains and exits 0. An unreachable broker is one line and exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Schema, omnibox, stderr};
use omnibox_postgres::sqlx;

const BEFORE: usize = 40;
const AFTER: usize = 10;

/// Writes a settings file for `s` with `broker_section` and returns its path.
fn config(s: &Schema, broker: Option<&str>, broker_section: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(omnibox_testing::unique_name("cli_relay"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    let text = format!(
        r#"
{broker}
[store]
schema = "{schema}"
notify_channel = "{schema}_wake"

[relay]
workers = 2
batch_size = 25
publish_concurrency = 8
publish_timeout = "5s"
poll_interval = "30s"   # a wake-up within the test's time can only come from NOTIFY
lease_ttl = "60s"

[maintenance]
interval = "1s"

[log]
format = "json"

{broker_section}
"#,
        schema = s.name,
        broker = broker
            .map(|b| format!("broker = \"{b}\""))
            .unwrap_or_default(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An event row inserted with plain SQL, with the columns and values omni-box 0.3.1's
/// SQLAlchemy model writes for a new event (as a Python service sharing the table would).
async fn insert_foreign_row(s: &Schema, topic: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{}\".outbox_events (id, event_type, payload, headers, status, attempts_made, max_attempts, \
           scheduled_at, created_at, updated_at, aggregate_type, aggregate_id, topic, partition_key) \
         VALUES (gen_random_uuid(), 'order.placed', '{{\"from\": \"python\"}}'::jsonb, '{{}}'::jsonb, 'pending', 0, 6, \
           now(), now(), now(), 'order', gen_random_uuid(), $1, 'py-key')",
        s.name
    )))
    .bind(topic)
    .execute(&s.pool)
    .await
    .unwrap();
}

struct Relay(Child);

impl Relay {
    /// Start `omnibox relay --config <cfg>` and wait for its `ready` line.
    fn start(s: &Schema, cfg: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omnibox"));
        for (k, _) in std::env::vars() {
            if k.starts_with("OMNIBOX_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DATABASE_URL", &s.url)
            .envs(env.iter().copied())
            .args(["--config", cfg.to_str().unwrap(), "relay"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start omnibox relay");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let out = child.wait_with_output().unwrap();
            panic!(
                "relay did not start: {line} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self(child)
    }

    /// SIGTERM, then the exit status and stderr (bounded: a relay that does not drain fails).
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET the Prometheus endpoint on `port` (any path answers).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scenario, for any broker: `published` counts the messages on the broker.
async fn relays_and_drains(
    s: &Schema,
    topic: &str,
    cfg: PathBuf,
    env: &[(&str, &str)],
    published: impl AsyncFn() -> usize,
) {
    omnibox(&s.url)
        .args(["--schema", &s.name, "migrate"])
        .assert()
        .success();
    s.enqueue(topic, BEFORE).await;
    insert_foreign_row(s, topic).await;
    let relay = Relay::start(s, &cfg, env);
    let total = (BEFORE + 1) as i64;
    until(
        "the backlog to be published",
        Duration::from_secs(60),
        async || s.count("status = 'completed'").await == total,
    )
    .await;
    // Committed while the relay idles on a 30 s poll: only NOTIFY wakes it in time.
    let woke = Instant::now();
    s.enqueue_notify(topic, AFTER).await;
    let total = (BEFORE + 1 + AFTER) as i64;
    until(
        "events committed later to be published",
        Duration::from_secs(20),
        async || s.count("status = 'completed'").await == total,
    )
    .await;
    assert!(woke.elapsed() < Duration::from_secs(20));
    until(
        "the broker to hold every message",
        Duration::from_secs(30),
        async || published().await == BEFORE + 1 + AFTER,
    )
    .await;
    let (status, err) = relay.terminate();
    assert!(status.success(), "exit {status}: {err}");
    assert!(err.contains("draining"), "{err}");
    assert!(err.contains("relay stopped"), "{err}");
    let first: serde_json::Value =
        serde_json::from_str(err.lines().next().unwrap()).expect("JSON log lines");
    assert!(first.get("level").is_some(), "{first}");
    assert_eq!(
        s.count("locked_at IS NOT NULL").await,
        0,
        "nothing left leased"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_to_rabbitmq_publishes_library_and_foreign_rows_and_drains_on_sigterm() {
    use omnibox_rabbitmq::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use omnibox_rabbitmq::lapin::types::FieldTable;
    use omnibox_rabbitmq::lapin::{Connection, ConnectionProperties};

    let s = Schema::new().await;
    let amqp = omnibox_testing::amqp_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let queue = omnibox_testing::unique_name("cli_orders");
    let conn = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let declare = |passive| QueueDeclareOptions {
        durable: true,
        passive,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), declare(false), FieldTable::default())
        .await
        .unwrap();
    // The URL comes from the environment, overriding the file: settings compose.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &s,
        Some("rabbitmq"),
        &format!(
            "[rabbitmq]\nurl = \"amqp://nobody:wrong@127.0.0.1:1/%2f\"\n\
             [metrics]\nprometheus_listen = \"127.0.0.1:{metrics_port}\"\n"
        ),
    );
    let count = async || {
        let q = ch
            .queue_declare(queue.as_str().into(), declare(true), FieldTable::default())
            .await
            .unwrap();
        let n = q.message_count() as usize;
        if n == BEFORE + 1 + AFTER {
            // While the relay still runs: its Prometheus endpoint reports its work.
            let body = scrape(metrics_port);
            assert!(body.contains("omnibox_"), "{body}");
            assert!(body.contains("outbox_relay"), "the job label: {body}");
        }
        n
    };
    relays_and_drains(
        &s,
        &queue,
        cfg,
        &[("OMNIBOX_RABBITMQ__URL", amqp.as_str())],
        count,
    )
    .await;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_to_nats_publishes_and_drains_on_sigterm() {
    use omnibox_nats::async_nats::{self, jetstream};

    let s = Schema::new().await;
    let url = omnibox_testing::nats_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let subject = omnibox_testing::unique_name("cli_orders");
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = subject.clone();
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg = config(&s, Some("nats"), &format!("[nats]\nurl = \"{url}\"\n"));
    let count = async || {
        let mut st = js.get_stream(&stream).await.unwrap();
        st.info().await.unwrap().state.messages as usize
    };
    relays_and_drains(&s, &subject, cfg, &[], count).await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_to_kafka_publishes_and_drains_on_sigterm() {
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use omnibox_kafka::rdkafka::mocking::MockCluster;

    let s = Schema::new().await;
    let (mock, bootstrap) = match omnibox_testing::kafka_bootstrap().await {
        Ok(b) => (None, b),
        Err(omnibox_testing::ServiceError::UseKafkaMockCluster { .. }) => {
            let m = MockCluster::new(1).unwrap();
            let b = m.bootstrap_servers();
            (Some(m), b)
        }
        Err(e) => panic!("{e}"),
    };
    let topic = omnibox_testing::unique_name("cli_orders");
    if let Some(m) = &mock {
        m.create_topic(&topic, 1, 1).unwrap();
    }
    let cfg = config(
        &s,
        Some("kafka"),
        &format!("[kafka]\nbootstrap_servers = \"{bootstrap}\"\n"),
    );
    let counter: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", omnibox_testing::unique_name("cli_count"))
        .create()
        .unwrap();
    let count = async || {
        counter
            .fetch_watermarks(&topic, 0, Duration::from_secs(5))
            .map(|(low, high)| (high - low) as usize)
            .unwrap_or(0)
    };
    relays_and_drains(&s, &topic, cfg, &[], count).await;
    // A consumer that never subscribed closes at once; the mock cluster goes last.
    drop(counter);
    drop(mock);
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_with_an_unreachable_broker_or_no_broker_exits_1_or_2_with_one_line() {
    let s = Schema::new().await;
    omnibox(&s.url)
        .args(["--schema", &s.name, "migrate"])
        .assert()
        .success();
    let cfg = config(
        &s,
        Some("rabbitmq"),
        "[rabbitmq]\nurl = \"amqp://guest:hunter2@127.0.0.1:1/%2f\"\n",
    );
    let out = omnibox(&s.url)
        .args(["--config", cfg.to_str().unwrap(), "relay"])
        .assert()
        .code(1);
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap_or_default().to_owned();
    assert!(last.contains("cannot connect to RabbitMQ"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let cfg = config(&s, None, "");
    let out = omnibox(&s.url)
        .args(["--config", cfg.to_str().unwrap(), "relay"])
        .assert()
        .code(2);
    assert!(stderr(&out).contains("no broker"), "{}", stderr(&out));
}
