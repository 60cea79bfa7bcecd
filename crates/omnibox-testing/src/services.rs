//! Where integration tests find their services, and unique names to isolate them.
//!
//! Resolution order for every service: the environment variable, else a container started
//! with testcontainers (kept alive for the whole test process) when a Docker engine is
//! available, else a [`ServiceError`] that names the variable to set and a value that
//! works on a developer machine. A test never skips silently.

use std::sync::atomic::{AtomicU64, Ordering};

use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::{kafka, nats, postgres, rabbitmq};
use tokio::sync::OnceCell;

/// Environment variable with the PostgreSQL URL.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Environment variable with the RabbitMQ URL.
pub const AMQP_URL: &str = "AMQP_URL";
/// Environment variable with the NATS URL.
pub const NATS_URL: &str = "NATS_URL";
/// Environment variable with the Kafka bootstrap servers.
pub const KAFKA_BOOTSTRAP_SERVERS: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// A service could not be found or started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The variable is unset and no Docker engine is available.
    #[error(
        "{service} is not configured: set {env_var} (e.g. {env_var}={example}) or make a Docker \
         engine available for testcontainers ({reason})"
    )]
    NotConfigured {
        /// The service.
        service: &'static str,
        /// The variable to set.
        env_var: &'static str,
        /// A value that works on a developer machine.
        example: &'static str,
        /// Why no container was tried.
        reason: String,
    },
    /// Docker is available but the container did not start.
    #[error(
        "could not start a {service} container: {message}; set {env_var} (e.g. \
         {env_var}={example}) to use a running server instead"
    )]
    ContainerFailed {
        /// The service.
        service: &'static str,
        /// The variable to set.
        env_var: &'static str,
        /// A value that works on a developer machine.
        example: &'static str,
        /// The testcontainers error.
        message: String,
    },
    /// Kafka: the variable is unset and no Docker engine is available. The Kafka crate's
    /// tests then use librdkafka's embedded mock cluster.
    #[error(
        "KAFKA_BOOTSTRAP_SERVERS is unset and no Docker engine is available ({reason}): use the \
         embedded mock cluster (rdkafka::mocking::MockCluster)"
    )]
    UseKafkaMockCluster {
        /// Why no container was tried.
        reason: String,
    },
}

struct Spec {
    service: &'static str,
    env_var: &'static str,
    example: &'static str,
}

const PG: Spec = Spec {
    service: "PostgreSQL",
    env_var: DATABASE_URL,
    example: "postgres://postgres@127.0.0.1:5432/postgres",
};
const AMQP: Spec = Spec {
    service: "RabbitMQ",
    env_var: AMQP_URL,
    example: "amqp://guest:guest@127.0.0.1:5672/%2f",
};
const NATS: Spec = Spec {
    service: "NATS",
    env_var: NATS_URL,
    example: "nats://127.0.0.1:4222",
};
const KAFKA: Spec = Spec {
    service: "Kafka",
    env_var: KAFKA_BOOTSTRAP_SERVERS,
    example: "127.0.0.1:9092",
};

fn from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// `Ok(())` when a Docker engine looks reachable (`DOCKER_HOST` set or a local socket).
fn docker_available() -> Result<(), String> {
    if from_env("DOCKER_HOST").is_some() {
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

fn not_configured(spec: &Spec, reason: String) -> ServiceError {
    ServiceError::NotConfigured {
        service: spec.service,
        env_var: spec.env_var,
        example: spec.example,
        reason,
    }
}

fn failed(spec: &Spec, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::ContainerFailed {
        service: spec.service,
        env_var: spec.env_var,
        example: spec.example,
        message: e.to_string(),
    }
}

/// A started container and the address tests use; kept for the whole process.
struct Running<I: testcontainers::Image> {
    _container: ContainerAsync<I>,
    address: String,
}

async fn start<I, F>(
    cell: &'static OnceCell<Running<I>>,
    spec: &'static Spec,
    image: impl FnOnce() -> testcontainers::ContainerRequest<I>,
    port: u16,
    address: F,
) -> Result<String, ServiceError>
where
    I: testcontainers::Image,
    F: FnOnce(u16) -> String,
{
    let running = cell
        .get_or_try_init(|| async {
            let container = image().start().await.map_err(|e| failed(spec, e))?;
            let host_port = container
                .get_host_port_ipv4(port)
                .await
                .map_err(|e| failed(spec, e))?;
            Ok::<_, ServiceError>(Running {
                _container: container,
                address: address(host_port),
            })
        })
        .await?;
    Ok(running.address.clone())
}

/// The PostgreSQL URL: `DATABASE_URL`, else a `postgres` container.
///
/// ```no_run
/// # async fn f() -> Result<(), omnibox_testing::ServiceError> {
/// let url = omnibox_testing::postgres_url().await?;
/// # Ok(()) }
/// ```
pub async fn postgres_url() -> Result<String, ServiceError> {
    static CELL: OnceCell<Running<postgres::Postgres>> = OnceCell::const_new();
    if let Some(url) = from_env(PG.env_var) {
        return Ok(url);
    }
    docker_available().map_err(|r| not_configured(&PG, r))?;
    start(
        &CELL,
        &PG,
        || postgres::Postgres::default().into(),
        5432,
        |p| format!("postgres://postgres:postgres@127.0.0.1:{p}/postgres"),
    )
    .await
}

/// The RabbitMQ URL: `AMQP_URL`, else a `rabbitmq` container.
pub async fn amqp_url() -> Result<String, ServiceError> {
    static CELL: OnceCell<Running<rabbitmq::RabbitMq>> = OnceCell::const_new();
    if let Some(url) = from_env(AMQP.env_var) {
        return Ok(url);
    }
    docker_available().map_err(|r| not_configured(&AMQP, r))?;
    start(
        &CELL,
        &AMQP,
        || rabbitmq::RabbitMq::default().into(),
        5672,
        |p| format!("amqp://guest:guest@127.0.0.1:{p}/%2f"),
    )
    .await
}

/// The NATS URL: `NATS_URL`, else a `nats` container with JetStream enabled.
pub async fn nats_url() -> Result<String, ServiceError> {
    static CELL: OnceCell<Running<nats::Nats>> = OnceCell::const_new();
    if let Some(url) = from_env(NATS.env_var) {
        return Ok(url);
    }
    docker_available().map_err(|r| not_configured(&NATS, r))?;
    start(
        &CELL,
        &NATS,
        || nats::Nats::default().with_cmd(&nats::NatsServerCmd::default().with_jetstream()),
        4222,
        |p| format!("nats://127.0.0.1:{p}"),
    )
    .await
}

/// The Kafka bootstrap servers: `KAFKA_BOOTSTRAP_SERVERS`, else an Apache Kafka container;
/// without Docker, [`ServiceError::UseKafkaMockCluster`] tells the caller to use the
/// embedded mock cluster.
pub async fn kafka_bootstrap() -> Result<String, ServiceError> {
    static CELL: OnceCell<Running<kafka::apache::Kafka>> = OnceCell::const_new();
    if let Some(servers) = from_env(KAFKA.env_var) {
        return Ok(servers);
    }
    docker_available().map_err(|reason| ServiceError::UseKafkaMockCluster { reason })?;
    start(
        &CELL,
        &KAFKA,
        || kafka::apache::Kafka::default().into(),
        kafka::apache::KAFKA_PORT.as_u16(),
        |p| format!("127.0.0.1:{p}"),
    )
    .await
}

/// A unique lowercase name valid as a PostgreSQL schema, Kafka topic, RabbitMQ queue and
/// NATS stream: `<prefix>_<pid>_<counter>_<random>`, letters, digits and `_` only, starting
/// with a letter, at most 63 characters.
///
/// ```
/// let a = omnibox_testing::unique_name("Orders-Test");
/// let b = omnibox_testing::unique_name("Orders-Test");
/// assert_ne!(a, b);
/// assert!(a.starts_with("orders_test_"));
/// assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
/// ```
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.insert(0, 't');
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    let suffix = format!("_{}_{n}_{}", std::process::id(), &random[..8]);
    p.truncate(63usize.saturating_sub(suffix.len()));
    p + &suffix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_identifiers() {
        let n = unique_name(&"X-".repeat(80));
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with('x'));
        assert!(unique_name("9lives").starts_with("t9lives_"));
    }

    #[test]
    fn errors_name_the_variable() {
        let e = not_configured(&PG, "no docker".into()).to_string();
        assert!(
            e.contains("DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"),
            "{e}"
        );
        let e = ServiceError::UseKafkaMockCluster {
            reason: "no docker".into(),
        }
        .to_string();
        assert!(e.contains("mock cluster"), "{e}");
    }
}
