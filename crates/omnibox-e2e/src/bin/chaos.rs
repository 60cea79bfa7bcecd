//! The chaos rig (`cargo xtask chaos`): `omnibox-chaos run` orchestrates a run; the
//! `producer`, `relay` and `inbox` subcommands are the processes it starts, kills, freezes
//! and restarts (their settings come from the environment, see `omnibox_e2e::chaos::RigEnv`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use omnibox_e2e::chaos::orchestrator::{self, RunOptions};
use omnibox_e2e::chaos::{Broker, RigEnv, inbox, producer, relay};

#[derive(Parser)]
#[command(
    name = "omnibox-chaos",
    about = "Chaos rig for omnibox: faults under load, then a ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run the rig: throwaway servers, processes, seeded faults, drain, ledger.
    Run {
        /// rabbitmq, nats or kafka.
        #[arg(long, default_value = "rabbitmq")]
        broker: Broker,
        /// Minutes of load (adds to --seconds).
        #[arg(long, default_value_t = 0)]
        minutes: u64,
        /// Seconds of load (adds to --minutes; 60 when both are 0).
        #[arg(long, default_value_t = 0)]
        seconds: u64,
        /// Seed of the fault schedule (random when absent; always printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Relay processes.
        #[arg(long, default_value_t = 3)]
        relays: usize,
        /// Inbox processes.
        #[arg(long, default_value_t = 3)]
        inboxes: usize,
        /// Ordered lanes (queues, filtered consumers, partitions).
        #[arg(long, default_value_t = 4)]
        lanes: usize,
        /// Business keys.
        #[arg(long, default_value_t = 200)]
        keys: usize,
        /// Business transactions per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Relay and inbox lease, in milliseconds.
        #[arg(long, default_value_t = 3_000)]
        lease_ms: u64,
        /// Longest drain, in seconds.
        #[arg(long, default_value_t = 120)]
        drain_secs: u64,
        /// Partitioned outbox and inbox tables.
        #[arg(long)]
        partitioned: bool,
    },
    /// The producer process (settings from the environment).
    Producer,
    /// A relay process (settings from the environment).
    Relay,
    /// An inbox process (settings from the environment).
    Inbox,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omnibox-chaos: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move { role(cli.command).await });
    // Exit without dropping the runtime: a Kafka consumer's drop can block while it leaves
    // the group, and a child must end promptly after its drain.
    std::process::exit(code)
}

async fn role(role: Role) -> i32 {
    if !matches!(role, Role::Run { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let child = |r: Result<(), String>| match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("omnibox-chaos: {e}");
            1
        }
    };
    match role {
        Role::Producer => child(async { producer::run(RigEnv::from_env()?).await }.await),
        Role::Relay => child(async { relay::run(RigEnv::from_env()?).await }.await),
        Role::Inbox => child(async { inbox::run(RigEnv::from_env()?).await }.await),
        Role::Run {
            broker,
            minutes,
            seconds,
            seed,
            relays,
            inboxes,
            lanes,
            keys,
            rate,
            lease_ms,
            drain_secs,
            partitioned,
        } => {
            let secs = match minutes * 60 + seconds {
                0 => 60,
                s => s,
            };
            let seed = seed.unwrap_or_else(|| fastrand::u64(..));
            let opts = RunOptions {
                broker,
                length: Duration::from_secs(secs),
                seed,
                relays,
                inboxes,
                lanes,
                keys,
                rate,
                lease: Duration::from_millis(lease_ms),
                drain_limit: Duration::from_secs(drain_secs),
                partitioned,
            };
            let tables = if partitioned { " --partitioned" } else { "" };
            let replay = format!(
                "cargo xtask chaos --broker {broker} --seconds {secs} --seed {seed}{tables}"
            );
            match orchestrator::run(opts).await {
                Ok(problems) if problems.is_empty() => {
                    println!(
                        "clean: nothing lost, duplicated, stuck or out of order (seed {seed})"
                    );
                    0
                }
                Ok(problems) => {
                    println!("FAILED ({} problems):", problems.len());
                    for p in &problems {
                        println!("  - {p}");
                    }
                    println!("replay: {replay}");
                    1
                }
                Err(e) => {
                    eprintln!("omnibox-chaos: the rig failed: {e}");
                    eprintln!("replay: {replay}");
                    2
                }
            }
        }
    }
}
