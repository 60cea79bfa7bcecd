//! Service containers for test runs without configured services (feature `containers`).
//!
//! - **Pinned images** of supported versions: PostgreSQL [`POSTGRES_TAG`] (omnibox needs
//!   PostgreSQL ≥ 13: the claim uses the built-in `gen_random_uuid()`), RabbitMQ
//!   [`RABBITMQ_TAG`], NATS [`NATS_TAG`] (JetStream on), Apache Kafka [`KAFKA_TAG`].
//! - **One per service per test run**, shared by every test process of the run: the
//!   container is named after the run ([`run_id`]: nextest's `NEXTEST_RUN_ID`, else
//!   `OMNIBOX_TEST_RUN`, else the parent process — the `cargo test` or nextest process that
//!   started the test binaries) and started with testcontainers' reuse, so the second
//!   process of the run finds the first one's container instead of starting its own.
//! - **Removed when the run ends**: the process that creates a container also starts a
//!   small watcher (`sh` and the `docker` CLI) that waits for the run's process to exit and
//!   then runs `docker rm -f -v` on it. Without the `docker` CLI the container is left
//!   running and a warning says how to remove it (`docker rm -f <name>`).
//!
//! Without a Docker engine nothing is started: resolution fails with the variable to set.

use std::process::{Command, Stdio};
use std::time::Duration;

use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt, ReuseDirective};
use testcontainers_modules::{kafka, nats, postgres, rabbitmq};
use tokio::sync::OnceCell;

use crate::services::Service;

/// PostgreSQL image tag (the module's default, 11, is too old: the claim needs ≥ 13).
pub const POSTGRES_TAG: &str = "16-alpine";
/// RabbitMQ image tag.
pub const RABBITMQ_TAG: &str = "3.13-management";
/// NATS image tag.
pub const NATS_TAG: &str = "2.10.14";
/// Apache Kafka image tag.
pub const KAFKA_TAG: &str = "3.8.0";
/// The oldest PostgreSQL major omnibox supports.
pub const POSTGRES_MIN_MAJOR: u32 = 13;

/// How long a container may take to start.
const STARTUP: Duration = Duration::from_secs(120);

/// `Ok(())` when a Docker engine looks reachable (`DOCKER_HOST` set or a local socket).
pub(crate) fn docker_available() -> Result<(), String> {
    if std::env::var("DOCKER_HOST").is_ok_and(|v| !v.trim().is_empty()) {
        return Ok(());
    }
    let home_sock = std::env::var("HOME")
        .map(|h| format!("{h}/.docker/run/docker.sock"))
        .unwrap_or_default();
    for sock in ["/var/run/docker.sock", home_sock.as_str()] {
        if !sock.is_empty() && std::path::Path::new(sock).exists() {
            return Ok(());
        }
    }
    Err("DOCKER_HOST is unset and no Docker socket was found".into())
}

/// The identity of this test run: `NEXTEST_RUN_ID`, else `OMNIBOX_TEST_RUN`, else the
/// parent process id. Letters, digits and `-` only (it is part of container names).
pub fn run_id() -> String {
    let raw = std::env::var("NEXTEST_RUN_ID")
        .or_else(|_| std::env::var("OMNIBOX_TEST_RUN"))
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("ppid{}", std::os::unix::process::parent_id()));
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}

/// The container name of `service` in this run.
pub fn container_name(service: &str) -> String {
    format!("omnibox-test-{service}-{}", run_id())
}

/// The run's process, whose exit ends the run (the watcher waits for it).
fn run_owner() -> u32 {
    std::os::unix::process::parent_id()
}

/// Remove `name` once the run's process has exited.
fn remove_when_the_run_ends(name: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 2; done; docker rm -f -v {name} >/dev/null 2>&1",
        pid = run_owner()
    );
    let spawned = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if spawned.is_err() || Command::new("docker").arg("--version").output().is_err() {
        eprintln!(
            "omnibox-testing: cannot watch container {name} (no `sh` or `docker` CLI); \
             remove it after the run with `docker rm -f {name}`"
        );
    }
}

/// A started (or found) container, kept for the process.
struct Running<I: testcontainers::Image> {
    _container: ContainerAsync<I>,
    address: String,
}

async fn run<I>(
    cell: &'static OnceCell<Running<I>>,
    service: &str,
    image: impl Fn() -> testcontainers::ContainerRequest<I>,
    port: u16,
    address: impl FnOnce(u16) -> String,
) -> Result<String, String>
where
    I: testcontainers::Image,
{
    let running = cell
        .get_or_try_init(|| async {
            let name = container_name(service);
            let request = || {
                image()
                    .with_container_name(name.clone())
                    .with_labels([("org.omnibox.test-run", run_id())])
                    .with_reuse(ReuseDirective::Always)
                    .with_startup_timeout(STARTUP)
            };
            // Two processes of the run may race to create it: the loser finds the winner's.
            let container = match request().start().await {
                Ok(c) => c,
                Err(first) => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    request()
                        .start()
                        .await
                        .map_err(|e| format!("{first}; then {e}"))?
                }
            };
            remove_when_the_run_ends(&name);
            let host_port = container
                .get_host_port_ipv4(port)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Running {
                _container: container,
                address: address(host_port),
            })
        })
        .await?;
    Ok(running.address.clone())
}

/// Start (or find) the run's container of `service`; its address.
pub(crate) async fn start(service: Service) -> Result<String, String> {
    match service {
        Service::Postgres => {
            static CELL: OnceCell<Running<postgres::Postgres>> = OnceCell::const_new();
            run(
                &CELL,
                "postgres",
                || postgres::Postgres::default().with_tag(POSTGRES_TAG),
                5432,
                |p| format!("postgres://postgres:postgres@127.0.0.1:{p}/postgres"),
            )
            .await
        }
        Service::Rabbitmq => {
            static CELL: OnceCell<Running<rabbitmq::RabbitMq>> = OnceCell::const_new();
            run(
                &CELL,
                "rabbitmq",
                || rabbitmq::RabbitMq::default().with_tag(RABBITMQ_TAG),
                5672,
                |p| format!("amqp://guest:guest@127.0.0.1:{p}/%2f"),
            )
            .await
        }
        Service::Nats => {
            static CELL: OnceCell<Running<nats::Nats>> = OnceCell::const_new();
            run(
                &CELL,
                "nats",
                || {
                    nats::Nats::default()
                        .with_cmd(&nats::NatsServerCmd::default().with_jetstream())
                        .with_tag(NATS_TAG)
                },
                4222,
                |p| format!("nats://127.0.0.1:{p}"),
            )
            .await
        }
        Service::Kafka => {
            static CELL: OnceCell<Running<kafka::apache::Kafka>> = OnceCell::const_new();
            run(
                &CELL,
                "kafka",
                || kafka::apache::Kafka::default().with_tag(KAFKA_TAG),
                kafka::apache::KAFKA_PORT.as_u16(),
                |p| format!("127.0.0.1:{p}"),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_pinned_to_supported_versions() {
        let major: u32 = POSTGRES_TAG
            .split(['-', '.'])
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        assert!(major >= POSTGRES_MIN_MAJOR, "{POSTGRES_TAG}");
        for tag in [POSTGRES_TAG, RABBITMQ_TAG, NATS_TAG, KAFKA_TAG] {
            assert!(tag != "latest" && !tag.is_empty(), "{tag}");
        }
    }

    #[test]
    fn container_names_are_per_run_and_valid() {
        let name = container_name("postgres");
        assert!(name.starts_with("omnibox-test-postgres-"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert_eq!(name, container_name("postgres"), "stable within a process");
    }
}
