//! Where integration tests find their services, and unique names to isolate them.
//!
//! Resolution order for every service: the environment variable, else (with the
//! `containers` feature) a container started with testcontainers when a Docker engine is
//! available — one per service per test run, shared by every test process of the run and
//! removed when the run ends (see [`crate::containers`]) — else a [`ServiceError`] that names
//! the variable to set and a value that works on a developer machine. A test never skips
//! silently.

use std::sync::atomic::{AtomicU64, Ordering};

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

fn not_configured(spec: &Spec, reason: String) -> ServiceError {
    ServiceError::NotConfigured {
        service: spec.service,
        env_var: spec.env_var,
        example: spec.example,
        reason,
    }
}

/// The services a container can be started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Postgres,
    Rabbitmq,
    Nats,
    Kafka,
}

/// Why a container did not give an address.
enum NoContainer {
    /// None was tried (the feature is off, or no Docker engine answers).
    Unavailable(String),
    /// One was tried and failed.
    #[cfg_attr(not(feature = "containers"), allow(dead_code))]
    Failed(String),
}

async fn container(service: Service) -> Result<String, NoContainer> {
    #[cfg(feature = "containers")]
    {
        crate::containers::docker_available().map_err(NoContainer::Unavailable)?;
        crate::containers::start(service)
            .await
            .map_err(NoContainer::Failed)
    }
    #[cfg(not(feature = "containers"))]
    {
        let _ = service;
        Err(NoContainer::Unavailable(
            "omnibox-testing was built without its `containers` feature".into(),
        ))
    }
}

async fn resolve(spec: &Spec, service: Service) -> Result<String, ServiceError> {
    if let Some(value) = from_env(spec.env_var) {
        return Ok(value);
    }
    container(service).await.map_err(|e| match e {
        NoContainer::Unavailable(reason) => not_configured(spec, reason),
        NoContainer::Failed(message) => ServiceError::ContainerFailed {
            service: spec.service,
            env_var: spec.env_var,
            example: spec.example,
            message,
        },
    })
}

/// The PostgreSQL URL: `DATABASE_URL`, else a PostgreSQL container (`containers` feature).
///
/// ```no_run
/// # async fn f() -> Result<(), omnibox_testing::ServiceError> {
/// let url = omnibox_testing::postgres_url().await?;
/// # Ok(()) }
/// ```
pub async fn postgres_url() -> Result<String, ServiceError> {
    resolve(&PG, Service::Postgres).await
}

/// The RabbitMQ URL: `AMQP_URL`, else a RabbitMQ container (`containers` feature).
pub async fn amqp_url() -> Result<String, ServiceError> {
    resolve(&AMQP, Service::Rabbitmq).await
}

/// The NATS URL: `NATS_URL`, else a NATS container with JetStream (`containers` feature).
pub async fn nats_url() -> Result<String, ServiceError> {
    resolve(&NATS, Service::Nats).await
}

/// The Kafka bootstrap servers: `KAFKA_BOOTSTRAP_SERVERS`, else an Apache Kafka container
/// (`containers` feature); when no container can be tried,
/// [`ServiceError::UseKafkaMockCluster`] tells the caller to use the embedded mock cluster.
pub async fn kafka_bootstrap() -> Result<String, ServiceError> {
    match resolve(&KAFKA, Service::Kafka).await {
        Err(ServiceError::NotConfigured { reason, .. }) => {
            Err(ServiceError::UseKafkaMockCluster { reason })
        }
        other => other,
    }
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

    #[cfg(not(feature = "containers"))]
    #[tokio::test]
    async fn without_the_feature_no_container_is_tried_and_the_error_says_why() {
        let Err(NoContainer::Unavailable(reason)) = container(Service::Postgres).await else {
            panic!("a container was tried without the feature");
        };
        let e = not_configured(&PG, reason).to_string();
        assert!(e.contains("set DATABASE_URL"), "{e}");
        assert!(e.contains("`containers` feature"), "{e}");
    }
}
