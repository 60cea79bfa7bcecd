//! The orchestrator (`omnibox-chaos run`): starts a throwaway PostgreSQL cluster and
//! broker, the producer, relay and inbox processes; applies the seeded fault schedule;
//! stops the producer, drains, stops the workers with SIGTERM; prints the ledger. Returns
//! the problems found (empty: a clean run).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnibox_kafka::rdkafka::consumer::{BaseConsumer, Consumer as _};
use omnibox_kafka::rdkafka::mocking::MockCluster;
use omnibox_kafka::rdkafka::producer::DefaultProducerContext;
use omnibox_postgres::PgOutboxStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::process::{Child, Command};

use super::ledger::Ledger;
use super::schedule::{Fault, Planned, Shape, Target, schedule};
use super::{Broker, RigEnv, inbox, world};
use crate::servers::{NatsServer, PgCluster, RabbitNode, close_connections};

/// What a run looks like.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The broker.
    pub broker: Broker,
    /// How long the producer writes (faults stop 5 s before the end).
    pub length: Duration,
    /// The seed of the fault schedule.
    pub seed: u64,
    /// Relay processes.
    pub relays: usize,
    /// Inbox processes.
    pub inboxes: usize,
    /// Ordered lanes.
    pub lanes: usize,
    /// Business keys.
    pub keys: usize,
    /// Business transactions per second.
    pub rate: u32,
    /// Relay and inbox lease.
    pub lease: Duration,
    /// How long the drain may take.
    pub drain_limit: Duration,
    /// Partitioned outbox and inbox tables.
    pub partitioned: bool,
}

/// How long a process has to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// The broker side of a run.
enum BrokerServer {
    Rabbit(Arc<RabbitNode>),
    Nats(Arc<Mutex<NatsServer>>),
    Kafka {
        /// Kept alive for the run (`None`: `KAFKA_BOOTSTRAP_SERVERS`).
        _mock: Option<MockCluster<'static, DefaultProducerContext>>,
        /// A client that reads the group's committed offsets and the partitions' ends.
        offsets: Arc<BaseConsumer>,
    },
}

/// One child process of the rig.
struct Proc {
    name: String,
    role: &'static str,
    child: Option<Child>,
    unexpected_exits: u32,
}

struct Rig {
    exe: PathBuf,
    env: RigEnv,
    dir: PathBuf,
    procs: Vec<Proc>,
    relays: usize,
}

impl Rig {
    fn index(&self, target: Target) -> usize {
        match target {
            Target::Producer => 0,
            Target::Relay(n) => 1 + n,
            Target::Inbox(n) => 1 + self.relays + n,
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let p = &self.procs[i];
        let log_path = self.dir.join(format!("{}.log", p.name));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .arg(p.role)
            .envs(self.env.to_env(&p.name))
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", p.name))?;
        self.procs[i].child = Some(child);
        Ok(())
    }

    async fn signal(&self, i: usize, sig: &str) -> Result<(), String> {
        let Some(pid) = self.procs[i].child.as_ref().and_then(Child::id) else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .await
            .map_err(|e| format!("kill -{sig}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{sig} {pid}: {status}"))
        }
    }

    async fn kill(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, "KILL").await?;
        if let Some(mut child) = self.procs[i].child.take() {
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Restart every process that exited by itself (a crash: counted as a problem).
    fn reap(&mut self, log: &mut Vec<String>) -> Result<(), String> {
        for i in 0..self.procs.len() {
            let exited = match self.procs[i].child.as_mut() {
                Some(c) => c.try_wait().map_err(|e| e.to_string())?,
                None => None,
            };
            if let Some(status) = exited {
                let p = &mut self.procs[i];
                p.unexpected_exits += 1;
                log.push(format!("{} exited by itself ({status}); restarted", p.name));
                eprintln!("  !! {} exited by itself ({status}); restarting", p.name);
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// SIGTERM the processes `range`, wait for each; SIGKILL those still running after
    /// [`STOP_LIMIT`]. Returns the names of those that did not stop in time.
    async fn stop(&mut self, range: std::ops::Range<usize>) -> Result<Vec<String>, String> {
        for i in range.clone() {
            self.signal(i, "TERM").await?;
        }
        let deadline = tokio::time::Instant::now() + STOP_LIMIT;
        let mut late = Vec::new();
        for i in range {
            let Some(mut child) = self.procs[i].child.take() else {
                continue;
            };
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => late.push(format!("{} exited with {status}", self.procs[i].name)),
                Ok(Err(e)) => late.push(format!("{}: {e}", self.procs[i].name)),
                Err(_) => {
                    let _ = child.kill().await;
                    late.push(format!(
                        "{} did not stop within {STOP_LIMIT:?} of SIGTERM",
                        self.procs[i].name
                    ));
                }
            }
        }
        Ok(late)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task: {e}"))?
}

/// Run the rig; the returned list is empty for a clean ledger.
pub async fn run(opts: RunOptions) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let plan = schedule(
        opts.seed,
        Shape {
            broker: opts.broker,
            length: opts.length,
            relays: opts.relays,
            inboxes: opts.inboxes,
            lease: opts.lease,
        },
    );
    let base = omnibox_testing::unique_name("chaos");
    let dir = std::env::temp_dir().join(&base);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    println!(
        "chaos: broker {}, {} tables, {:?} of load, seed {}, {} faults planned; logs in {}",
        opts.broker,
        if opts.partitioned {
            "partitioned"
        } else {
            "plain"
        },
        opts.length,
        opts.seed,
        plan.len(),
        dir.display()
    );

    if let Ok(v) = std::env::var(inbox::SABOTAGE) {
        println!(
            "chaos: {}={v}: the handler is sabotaged, this run must fail",
            inbox::SABOTAGE
        );
    }
    let pg = Arc::new(blocking(PgCluster::create).await?);
    let (broker, broker_url) = start_broker(opts.broker, &base, opts.lanes).await?;
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(
            PgConnectOptions::from_str(&pg.url())
                .map_err(|e| e.to_string())?
                .application_name("orchestrator"),
        )
        .await
        .map_err(|e| format!("connect to the throwaway cluster: {e}"))?;
    let schema = "chaos".to_owned();
    world::create(&pool, &schema, opts.partitioned).await?;
    let (outbox, _) = world::stores(&schema, opts.partitioned)?;

    let env = RigEnv {
        database_url: pg.url(),
        schema: schema.clone(),
        broker: opts.broker,
        broker_url,
        base: base.clone(),
        lanes: opts.lanes,
        keys: opts.keys,
        rate: opts.rate,
        lease: opts.lease,
        partitioned: opts.partitioned,
        name: String::new(),
    };
    let topics: Vec<String> = (0..opts.lanes).map(|l| env.topic(l)).collect();
    let proc = |name: String, role: &'static str| Proc {
        name,
        role,
        child: None,
        unexpected_exits: 0,
    };
    let mut procs = vec![proc("chaos-producer".into(), "producer")];
    procs.extend((0..opts.relays).map(|n| proc(format!("chaos-relay-{n}"), "relay")));
    procs.extend((0..opts.inboxes).map(|n| proc(format!("chaos-inbox-{n}"), "inbox")));
    let mut rig = Rig {
        exe: std::env::current_exe().map_err(|e| e.to_string())?,
        env,
        dir: dir.clone(),
        procs,
        relays: opts.relays,
    };
    for i in 0..rig.procs.len() {
        rig.spawn(i)?;
    }

    // The load, with the faults.
    let t0 = tokio::time::Instant::now();
    let mut events = Vec::new();
    let mut applied: BTreeMap<&'static str, usize> = BTreeMap::new();
    for Planned { at, fault } in &plan {
        while tokio::time::Instant::now() < t0 + *at {
            rig.reap(&mut events)?;
            tokio::time::sleep_until(
                (t0 + *at).min(tokio::time::Instant::now() + Duration::from_millis(250)),
            )
            .await;
        }
        println!("  [{:>6.1}s] {fault}", t0.elapsed().as_secs_f64());
        apply(
            &mut rig, fault, &pg, &broker, &pool, &outbox, &schema, &topics,
        )
        .await
        .map_err(|e| format!("applying `{fault}`: {e}"))?;
        *applied.entry(kind(fault)).or_default() += 1;
    }
    while t0.elapsed() < opts.length {
        rig.reap(&mut events)?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Stop the load, drain.
    let mut late = rig.stop(0..1).await?;
    println!(
        "  [{:>6.1}s] producer stopped; draining",
        t0.elapsed().as_secs_f64()
    );
    let drain_started = Instant::now();
    let mut ledger;
    loop {
        rig.reap(&mut events)?;
        ledger = read_ledger(&pool, &schema, opts.partitioned).await;
        let left = left_on_broker(&broker, &base, opts.lanes).await;
        if let (Ok(l), Ok(left)) = (&mut ledger, left) {
            l.left_on_broker = left;
            if l.drained() && left.unwrap_or(0) == 0 {
                break;
            }
        }
        if drain_started.elapsed() > opts.drain_limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain = drain_started.elapsed();
    let n = rig.procs.len();
    late.extend(rig.stop(1..n).await?);
    // The final ledger, read after every worker stopped (a duplicate in flight at the end
    // of the drain counts); RabbitMQ now counts the consumers' unacknowledged messages as
    // ready.
    let mut ledger = match read_ledger(&pool, &schema, opts.partitioned).await {
        Ok(last) => last,
        Err(e) => ledger.map_err(|_| e)?,
    };
    ledger.left_on_broker = left_on_broker(&broker, &base, opts.lanes).await?;

    let mut problems = ledger.problems();
    problems.extend(late);
    for p in &rig.procs {
        if p.unexpected_exits > 0 {
            problems.push(format!(
                "{} exited by itself {} times (see {}/{}.log)",
                p.name,
                p.unexpected_exits,
                dir.display(),
                p.name
            ));
        }
    }
    if !ledger.drained() {
        problems.push(format!(
            "the drain did not finish within {:?}",
            opts.drain_limit
        ));
    }
    let faults: Vec<String> = applied.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!();
    println!(
        "chaos ledger: broker {}, {} tables, seed {}, {:?} of load + {:.1}s drain, {} faults ({}), wall {:.0}s",
        opts.broker,
        if opts.partitioned {
            "partitioned"
        } else {
            "plain"
        },
        opts.seed,
        opts.length,
        drain.as_secs_f64(),
        plan.len(),
        faults.join(", "),
        started.elapsed().as_secs_f64()
    );
    print!("{ledger}");
    for e in &events {
        println!("note: {e}");
    }
    pool.close().await;
    if let BrokerServer::Kafka { offsets, .. } = &broker {
        // Dropping a client that fetched committed offsets can block in librdkafka's close:
        // the process exits right after the run instead.
        std::mem::forget(offsets.clone());
    }
    drop(broker);
    drop(pg);
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("logs kept in {}", dir.display());
    }
    Ok(problems)
}

fn kind(f: &Fault) -> &'static str {
    match f {
        Fault::Kill { .. } => "SIGKILL",
        Fault::Stop { .. } => "SIGSTOP",
        Fault::TerminateBackends => "pg_terminate_backend",
        Fault::CloseBrokerConnections => "broker close",
        Fault::RestartBroker { .. } => "broker restart",
        Fault::RestartPostgres => "PostgreSQL restart",
        Fault::PoisonBurst { .. } => "poison burst",
    }
}

async fn read_ledger(pool: &PgPool, schema: &str, partitioned: bool) -> Result<Ledger, String> {
    Ledger::read(pool, schema, partitioned)
        .await
        .map_err(|e| format!("read the ledger: {e}"))
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    rig: &mut Rig,
    fault: &Fault,
    pg: &Arc<PgCluster>,
    broker: &BrokerServer,
    pool: &PgPool,
    outbox: &PgOutboxStore,
    schema: &str,
    topics: &[String],
) -> Result<(), String> {
    match fault {
        Fault::Kill {
            target,
            restart_after,
        } => {
            let i = rig.index(*target);
            rig.kill(i).await?;
            tokio::time::sleep(*restart_after).await;
            rig.spawn(i)
        }
        Fault::Stop { target, hold } => {
            let i = rig.index(*target);
            rig.signal(i, "STOP").await?;
            tokio::time::sleep(*hold).await;
            rig.signal(i, "CONT").await
        }
        Fault::TerminateBackends => {
            let n: i64 = retry(async || {
                sqlx::query(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name LIKE 'chaos-%'",
                )
                .fetch_one(pool)
                .await
                .map(|r| r.get(0))
                .map_err(|e| e.to_string())
            })
            .await?;
            println!("             terminated {n} backends");
            Ok(())
        }
        Fault::CloseBrokerConnections => match broker {
            BrokerServer::Rabbit(node) => {
                let node = node.clone();
                let n = blocking(move || close_connections(Some(node.node()), "chaos-")).await?;
                println!("             closed {n} connections");
                Ok(())
            }
            _ => Ok(()),
        },
        Fault::RestartBroker { down } => match broker {
            BrokerServer::Rabbit(node) => {
                let n = node.clone();
                blocking(move || n.ctl(&["stop_app"]).map(drop)).await?;
                tokio::time::sleep(*down).await;
                let n = node.clone();
                blocking(move || n.ctl(&["start_app"]).map(drop)).await
            }
            BrokerServer::Nats(server) => {
                let s = server.clone();
                blocking(move || {
                    s.lock().map_err(|e| e.to_string())?.kill();
                    Ok(())
                })
                .await?;
                tokio::time::sleep(*down).await;
                let s = server.clone();
                blocking(move || s.lock().map_err(|e| e.to_string())?.restart()).await
            }
            BrokerServer::Kafka { .. } => Ok(()),
        },
        Fault::RestartPostgres => {
            let c = pg.clone();
            blocking(move || {
                c.stop("fast")?;
                std::thread::sleep(Duration::from_millis(500));
                c.start()
            })
            .await
        }
        Fault::PoisonBurst { count } => {
            retry(async || world::poison_burst(pool, outbox, schema, topics, *count).await).await
        }
    }
}

/// Retry an orchestrator statement a few times (the cluster may have just restarted).
async fn retry<T>(mut f: impl AsyncFnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

async fn start_broker(
    broker: Broker,
    base: &str,
    lanes: usize,
) -> Result<(BrokerServer, String), String> {
    match broker {
        Broker::Rabbitmq => {
            let node = Arc::new(blocking(RabbitNode::start).await?);
            let url = node.url();
            declare_queues(&url, base, lanes).await?;
            Ok((BrokerServer::Rabbit(node), url))
        }
        Broker::Nats => {
            let server = blocking(NatsServer::start).await?;
            let url = server.url();
            create_stream(&url, base).await?;
            Ok((BrokerServer::Nats(Arc::new(Mutex::new(server))), url))
        }
        Broker::Kafka => {
            let (mock, bootstrap) = match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
                Ok(bootstrap) => {
                    create_kafka_topic(&bootstrap, base, lanes).await?;
                    (None, bootstrap)
                }
                Err(_) => {
                    let mock =
                        MockCluster::new(1).map_err(|e| format!("Kafka mock cluster: {e}"))?;
                    mock.create_topic(base, lanes as i32, 1)
                        .map_err(|e| format!("create topic {base}: {e}"))?;
                    let bootstrap = mock.bootstrap_servers();
                    (Some(mock), bootstrap)
                }
            };
            // Never subscribes: it only asks for the group's offsets and the partitions' ends.
            let offsets: BaseConsumer = omnibox_kafka::rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", inbox::GROUP)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| format!("Kafka offsets client: {e}"))?;
            Ok((
                BrokerServer::Kafka {
                    _mock: mock,
                    offsets: Arc::new(offsets),
                },
                bootstrap,
            ))
        }
    }
}

/// One durable queue per lane with a single active consumer: the inbox processes all
/// subscribe, the broker hands each queue to one of them at a time (in order), and to the
/// next when that one's connection dies.
async fn declare_queues(url: &str, base: &str, lanes: usize) -> Result<(), String> {
    use omnibox_rabbitmq::lapin;
    use omnibox_rabbitmq::lapin::options::QueueDeclareOptions;
    use omnibox_rabbitmq::lapin::types::{AMQPValue, FieldTable};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("connect to RabbitMQ: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    for lane in 0..lanes {
        let queue = format!("{base}.{lane}");
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args.clone(),
        )
        .await
        .map_err(|e| format!("declare {queue}: {e}"))?;
    }
    let _ = conn.close(200, "OK".into()).await;
    Ok(())
}

async fn nats_js(url: &str) -> Result<omnibox_nats::async_nats::jetstream::Context, String> {
    let client = omnibox_nats::async_nats::ConnectOptions::new()
        .name("orchestrator")
        .connect(url)
        .await
        .map_err(|e| format!("connect to NATS: {e}"))?;
    Ok(omnibox_nats::async_nats::jetstream::new(client))
}

/// One file-backed stream with a subject per lane (the inbox processes create one durable
/// consumer per lane, filtered to its subject, one message in flight at a time).
async fn create_stream(url: &str, base: &str) -> Result<(), String> {
    use omnibox_nats::async_nats::jetstream::stream;
    nats_js(url)
        .await?
        .create_stream(stream::Config {
            name: base.to_owned(),
            subjects: vec![format!("{base}.*")],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| format!("create stream {base}: {e}"))
}

async fn create_kafka_topic(bootstrap: &str, topic: &str, lanes: usize) -> Result<(), String> {
    use omnibox_kafka::rdkafka::ClientConfig;
    use omnibox_kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use omnibox_kafka::rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| format!("Kafka admin client: {e}"))?;
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                lanes as i32,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .map_err(|e| format!("create topic {topic}: {e}"))?;
    for r in results {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// Messages the broker still holds for the consumers: RabbitMQ ready + unacknowledged per
/// lane queue; NATS pending + unacknowledged per lane consumer; Kafka records past the
/// group's committed offsets.
async fn left_on_broker(
    broker: &BrokerServer,
    base: &str,
    lanes: usize,
) -> Result<Option<i64>, String> {
    match broker {
        BrokerServer::Rabbit(node) => {
            let node = node.clone();
            let out =
                blocking(move || node.ctl(&["-q", "list_queues", "name", "messages"])).await?;
            let prefix = format!("{base}.");
            Ok(Some(
                out.lines()
                    .filter(|l| l.starts_with(&prefix))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
                    .sum(),
            ))
        }
        BrokerServer::Nats(server) => {
            let url = server.lock().map_err(|e| e.to_string())?.url();
            let js = nats_js(&url).await?;
            let stream = js
                .get_stream(base)
                .await
                .map_err(|e| format!("get stream {base}: {e}"))?;
            let mut left = 0i64;
            for lane in 0..lanes {
                let info = stream
                    .consumer_info(inbox::nats_durable(lane))
                    .await
                    .map_err(|e| format!("consumer info: {e}"))?;
                left += info.num_pending as i64 + info.num_ack_pending as i64;
            }
            Ok(Some(left))
        }
        BrokerServer::Kafka { offsets, .. } => {
            let (offsets, topic) = (offsets.clone(), base.to_owned());
            blocking(move || kafka_lag(&offsets, &topic, lanes))
                .await
                .map(Some)
        }
    }
}

/// Records of `topic` not yet committed by the inbox group: per partition, its end minus
/// the group's committed offset (all of it when nothing is committed).
fn kafka_lag(client: &BaseConsumer, topic: &str, partitions: usize) -> Result<i64, String> {
    use omnibox_kafka::rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition(topic, p);
    }
    let committed = client
        .committed_offsets(tpl, timeout)
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = client
            .fetch_watermarks(topic, e.partition(), timeout)
            .map_err(|e| format!("watermarks: {e}"))?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}
