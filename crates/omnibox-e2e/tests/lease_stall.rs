//! A relay frozen past its lease must not publish the events it no longer owns (issue 9
//! §4). Two relay processes drain one outbox into one RabbitMQ queue; relay A is frozen
//! with SIGSTOP while it holds leases (1 s lease, 3 s stall), relay B takes them over and
//! goes on, then A is resumed with SIGCONT. At the broker, each key's events arrive first
//! in order; at most the one event that was inside A's broker call when it froze arrives
//! again late (a copy an inbox drops); no delivered event is recorded failed or
//! dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::{LIMIT, Pg, bounded, rabbit, until};
use omnibox_core::model::EventStatus;
use omnibox_rabbitmq::lapin::options::BasicGetOptions;
use sqlx::Row;

const N: usize = 1_500;
const KEYS: usize = 20;
/// Batches of 10 (half the keys, so both relays get some), published one at a time, 1 s
/// lease, and a publish timeout (10 s) longer than the stall: a call in flight when the
/// relay froze completes normally when it resumes (its confirm is waiting), so the relay
/// goes on with the rest of its batch — which only the lease check stops. A 20 ms step in
/// front of the broker keeps a batch between broker calls nearly all the time, so the
/// freeze lands there (with unsent events in the batch) rather than in the settle or inside
/// a broker call (the window no relay-side check can close: a message handed to the client
/// before the freeze may reach the broker after it).
const SETTINGS: [&str; 5] = ["10", "1", "1", "10000", "20"];
const STALL: Duration = Duration::from_secs(3);

struct Relay(tokio::process::Child);

impl Relay {
    fn spawn(db_url: &str, amqp: &str, schema: &str, worker: &str) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnibox-e2e-relay"))
            .args([schema, worker])
            .args(SETTINGS)
            .env("DATABASE_URL", db_url)
            .env("AMQP_URL", amqp)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the relay process");
        Self(child)
    }

    fn signal(&self, sig: &str) {
        let pid = self.0.id().expect("running");
        omnibox_e2e::servers::signal(pid, sig).unwrap_or_else(|e| panic!("{e}"));
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.0.try_wait().unwrap() {
            panic!("the relay process exited on its own: {status:?}");
        }
    }

    /// SIGTERM (graceful: a batch in flight finishes) and wait for the exit.
    async fn stop(mut self) {
        self.signal("TERM");
        let status = bounded("relay exit", LIMIT, self.0.wait()).await.unwrap();
        assert!(status.success(), "{status:?}");
    }
}

async fn leased_by(pg: &Pg, worker: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}.outbox_events WHERE locked_by = $1",
        pg.schema
    )))
    .bind(worker)
    .fetch_one(&pg.pool)
    .await
    .map(|r| r.get(0))
    .unwrap()
}

async fn scalar(pg: &Pg, sql: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(sql.replace("{s}", &pg.schema)))
        .fetch_one(&pg.pool)
        .await
        .map(|r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_frozen_past_its_lease_does_not_publish_what_it_no_longer_owns() {
    common::init_tracing();
    let db_url = common::database_url().await;
    let amqp = rabbit::url().await;
    let pg = Pg::new(&db_url, "e2e_stall").await;
    let admin = rabbit::connect(&amqp).await;
    let queue = omnibox_testing::unique_name("e2e_stall");
    rabbit::declare(&admin, &queue).await;
    // Event `i` has key `k{i % KEYS}`: within a key, `i` grows in creation order.
    pg.enqueue_chunked(&queue, N, KEYS, "order.placed", 2_000)
        .await;
    pg.analyze_outbox().await;

    let mut a = Relay::spawn(&db_url, &amqp, &pg.schema, "relay-a");
    let mut b = Relay::spawn(&db_url, &amqp, &pg.schema, "relay-b");
    until("both relays publishing", LIMIT, async || {
        a.assert_running();
        b.assert_running();
        pg.outbox_count(EventStatus::Completed).await >= 300
    })
    .await;
    // Freeze A while it holds leases (between batches it holds none: try again).
    let mut held = 0;
    for _ in 0..200 {
        a.signal("STOP");
        held = leased_by(&pg, "relay-a").await;
        if held > 0 {
            break;
        }
        a.signal("CONT");
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    assert!(held > 0, "relay A never caught holding a lease");
    let done_at_stop = pg.outbox_count(EventStatus::Completed).await;
    // The stall is the fault itself: A stays frozen well past its 1 s lease while B
    // takes its events over.
    tokio::time::sleep(STALL).await;
    let taken_over = leased_by(&pg, "relay-a").await;
    a.signal("CONT");
    until("drained", LIMIT, async || {
        a.assert_running();
        b.assert_running();
        pg.outbox_count(EventStatus::Completed).await == N as i64
    })
    .await;
    // Graceful stops: whatever A still had in flight reaches the broker before we read it.
    a.stop().await;
    b.stop().await;

    // Read the queue in broker order.
    let ch = admin.create_channel().await.unwrap();
    let mut per_key: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut received = 0usize;
    while let Some(m) = bounded(
        "basic.get",
        LIMIT,
        ch.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .unwrap()
    {
        let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        let payload = body.get("payload").unwrap_or(&body);
        let i = payload["i"].as_i64().unwrap_or_else(|| panic!("{body}"));
        per_key.entry(i % KEYS as i64).or_default().push(i);
        received += 1;
    }
    let mut violations = Vec::new();
    let mut late_duplicates = Vec::new();
    let mut missing = 0;
    for k in 0..KEYS as i64 {
        let seen = per_key.remove(&k).unwrap_or_default();
        let mut delivered = std::collections::HashSet::new();
        let mut highest = i64::MIN;
        for &i in &seen {
            if i < highest {
                if delivered.contains(&i) {
                    // Already delivered in order: an inbox drops this copy.
                    late_duplicates.push(format!("key k{k}: {i} again after {highest}"));
                } else {
                    violations.push(format!("key k{k}: first {i} after {highest}"));
                }
            }
            delivered.insert(i);
            highest = highest.max(i);
        }
        let want = (0..N as i64).filter(|i| i % KEYS as i64 == k).count();
        let mut distinct = seen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        missing += want - distinct.len();
    }
    let failed = pg.outbox_count(EventStatus::Failed).await;
    let letters = scalar(&pg, "SELECT count(*) FROM {s}.outbox_events_dead_letters").await;
    let takeovers = scalar(
        &pg,
        "SELECT count(*) FROM {s}.outbox_events WHERE last_error LIKE 'lease expired%'",
    )
    .await;
    eprintln!(
        "lease stall: A frozen holding {held} leases at {done_at_stop} of {N} completed \
         ({taken_over} still its after {STALL:?}); {takeovers} takeovers; {received} \
         messages for {N} events ({} duplicates)",
        received - N
    );
    assert!(
        violations.is_empty(),
        "per-key order broken at the broker ({} times): {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    // The one window no relay-side check closes: the event inside the broker call when A
    // froze (publish concurrency 1: at most one) reaches the broker after its successor, as
    // a copy of an event B already delivered. Without the lease check A publishes every
    // unsent event of its batch late (2 of 2 runs failed here).
    assert!(
        late_duplicates.len() <= 1,
        "A published events it no longer owned: {late_duplicates:?}"
    );
    assert_eq!(missing, 0, "every event reached the broker");
    assert_eq!(
        (failed, letters),
        (0, 0),
        "no delivered event failed or dead-lettered"
    );
    assert!(takeovers > 0, "B took over A's expired leases");
    assert_eq!(pg.outbox_leased().await, 0);
    rabbit::delete(&admin, &queue).await;
    pg.drop_schema().await;
}
