//! Where the publisher and the consumer get their connection from, and reconnecting with
//! backoff when the broker closed it, restarted, or stopped answering heartbeats.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use omnibox_core::backoff::{Backoff, Jitter};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The future a connection factory returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Connection, lapin::Error>> + Send>>;

type Factory = dyn Fn() -> ConnectFuture + Send + Sync;
type Hook = dyn Fn(&ConnectionEvent) + Send + Sync;

/// A change of the connection's state, reported to the hook set with
/// [`RabbitConnector::on_event`] (and logged through `tracing`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The first connection was opened.
    Connected,
    /// The connection in use was found closed or failed; it is dropped and a new one is
    /// opened on the next use.
    Lost,
    /// Opening a connection failed; the next try waits `retry_in`.
    ConnectFailed {
        /// Failed tries in a row so far.
        failures: u32,
        /// The wait before the next try.
        retry_in: Duration,
    },
    /// A new connection replaced a lost one.
    Reconnected {
        /// Reconnects since this connector was made (including this one).
        total: u64,
    },
}

/// Hands out the current `lapin::Connection` and, when it has a factory, replaces a lost
/// connection with a new one.
///
/// - [`RabbitConnector::from_uri`]: connect to a URI with your [`ConnectionProperties`]
///   (client properties, `connection_name`, executor settings);
/// - [`RabbitConnector::from_factory`]: your own async closure (TLS with
///   `lapin::Connection::connector` / `connect_uri_with_config`, secrets fetched per connect);
/// - `From<Connection>` / `From<Arc<Connection>>`: a fixed connection you built. It is
///   never replaced: once the broker closes it, every call fails (transient) until the
///   process restarts. Prefer a factory.
///
/// The connection is opened lazily on first use and shared by everything holding a clone
/// of the connector (one connector may serve a publisher and a consumer). Settings
/// (backoff, timeout, hook) belong to a clone: set them before cloning. A connection is
/// checked on every use (`status().connected()`); a lost one is dropped and a new one
/// opened at once. A try gives up after the connect timeout (default 10 s); failed tries
/// wait an exponential backoff with jitter (default 100 ms, doubling, capped at 5 s)
/// before the next. While a try runs or waits, callers wait with it (one try at a time). A
/// failure to connect is always transient: it is never the fault of the message at hand.
///
/// State changes are logged (`warn` lost / failed, `info` reconnected) and reported to the
/// hook of [`RabbitConnector::on_event`]; [`RabbitConnector::reconnects`] counts them.
///
/// ```no_run
/// use omnibox_rabbitmq::{ConnectionEvent, RabbitConnector, RabbitPublisher, lapin};
///
/// let connector = RabbitConnector::from_uri(
///     "amqp://guest:guest@127.0.0.1:5672/%2f",
///     lapin::ConnectionProperties::default().with_connection_name("billing-relay".into()),
/// )
/// .on_event(|event| {
///     if let ConnectionEvent::Reconnected { .. } = event {
///         // e.g. metrics::counter!("rabbitmq_reconnects_total").increment(1);
///     }
/// });
/// let publisher = RabbitPublisher::new(connector.clone());
/// ```
#[derive(Clone)]
pub struct RabbitConnector {
    shared: Arc<Shared>,
    hook: Option<Arc<Hook>>,
    backoff: Backoff,
    connect_timeout: Duration,
}

/// What every clone shares: the factory, the current connection, the reconnect count.
struct Shared {
    factory: Option<Box<Factory>>,
    state: Mutex<State>,
    reconnects: AtomicU64,
}

#[derive(Default)]
struct State {
    current: Option<Arc<Connection>>,
    ever_connected: bool,
    failures: u32,
    next_try: Option<Instant>,
}

impl fmt::Debug for RabbitConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConnector")
            .field("reconnects", &self.reconnects())
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("has_factory", &self.shared.factory.is_some())
            .finish_non_exhaustive()
    }
}

fn default_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        Jitter::Equal,
    )
    .unwrap_or_else(|_| Backoff::immediate())
}

impl RabbitConnector {
    fn build(factory: Option<Box<Factory>>, current: Option<Arc<Connection>>) -> Self {
        let ever_connected = current.is_some();
        Self {
            shared: Arc::new(Shared {
                factory,
                state: Mutex::new(State {
                    current,
                    ever_connected,
                    ..State::default()
                }),
                reconnects: AtomicU64::new(0),
            }),
            hook: None,
            backoff: default_backoff(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Connect (and reconnect) to `uri` with `properties`.
    pub fn from_uri(uri: impl Into<String>, properties: ConnectionProperties) -> Self {
        let uri: Arc<str> = uri.into().into();
        Self::from_factory(move || {
            let uri = uri.clone();
            let properties = properties.clone();
            async move { Connection::connect(&uri, properties).await }
        })
    }

    /// Connect (and reconnect) by calling `factory`.
    pub fn from_factory<F, Fut>(factory: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Connection, lapin::Error>> + Send + 'static,
    {
        let factory: Box<Factory> = Box::new(move || Box::pin(factory()));
        Self::build(Some(factory), None)
    }

    /// Replace the reconnect backoff (only used with a factory). The `n`-th failed try in
    /// a row waits `backoff.delay(n - 1)` before the next.
    #[must_use]
    pub fn with_backoff(self, backoff: Backoff) -> Self {
        Self { backoff, ..self }
    }

    /// Give up a connect try after `timeout` (default 10 s; counts as a failed try).
    #[must_use]
    pub fn with_connect_timeout(self, timeout: Duration) -> Self {
        Self {
            connect_timeout: timeout,
            ..self
        }
    }

    /// Call `hook` on every [`ConnectionEvent`] (keep it cheap: it runs inline).
    #[must_use]
    pub fn on_event(self, hook: impl Fn(&ConnectionEvent) + Send + Sync + 'static) -> Self {
        Self {
            hook: Some(Arc::new(hook)),
            ..self
        }
    }

    /// Whether a lost connection is replaced (the connector has a factory).
    pub fn reconnects_enabled(&self) -> bool {
        self.shared.factory.is_some()
    }

    /// Lost connections replaced so far.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(hook) = &self.hook {
            hook(&event);
        }
    }

    /// The connection to open channels on: the current one while it is connected, else a
    /// new one from the factory (waiting out the backoff of earlier failed tries).
    ///
    /// Without a factory, the fixed connection is returned whatever its state (opening a
    /// channel on a closed one fails with a transient error).
    pub async fn connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        let mut state = self.shared.state.lock().await;
        let Some(factory) = &self.shared.factory else {
            return state.current.clone().ok_or_else(|| {
                lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into()
            });
        };
        if let Some(current) = &state.current {
            let status = current.status();
            if status.connected() {
                return Ok(current.clone());
            }
            tracing::warn!(
                status = ?status,
                "RabbitMQ connection lost; reconnecting"
            );
            state.current = None;
            self.emit(ConnectionEvent::Lost);
        }
        if let Some(at) = state.next_try {
            tokio::time::sleep_until(at).await;
        }
        let timeout = self.connect_timeout;
        let attempt = tokio::time::timeout(timeout, factory())
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("RabbitMQ connect did not finish within {timeout:?}"),
                )
                .into())
            });
        match attempt {
            Ok(connection) => {
                let connection = Arc::new(connection);
                state.current = Some(connection.clone());
                state.failures = 0;
                state.next_try = None;
                if state.ever_connected {
                    let total = self.shared.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::info!(total, "RabbitMQ reconnected");
                    self.emit(ConnectionEvent::Reconnected { total });
                } else {
                    state.ever_connected = true;
                    tracing::debug!("RabbitMQ connected");
                    self.emit(ConnectionEvent::Connected);
                }
                Ok(connection)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let retry_in = self.backoff.delay(state.failures - 1);
                state.next_try = Some(Instant::now() + retry_in);
                tracing::warn!(
                    error = %e,
                    failures = state.failures,
                    ?retry_in,
                    "RabbitMQ connect failed"
                );
                self.emit(ConnectionEvent::ConnectFailed {
                    failures: state.failures,
                    retry_in,
                });
                Err(e)
            }
        }
    }
}

impl From<Connection> for RabbitConnector {
    /// A fixed connection: never replaced (see [`RabbitConnector`]).
    fn from(connection: Connection) -> Self {
        Self::build(None, Some(Arc::new(connection)))
    }
}

impl From<Arc<Connection>> for RabbitConnector {
    /// A fixed shared connection: never replaced (see [`RabbitConnector`]).
    fn from(connection: Arc<Connection>) -> Self {
        Self::build(None, Some(connection))
    }
}
