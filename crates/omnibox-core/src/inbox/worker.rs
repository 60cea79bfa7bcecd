//! [`InboxWorker`]: an [`InboxRunner`] kept running for the life of the process.

use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::consumer::Consumer;
use crate::error::{Error, ValidationError};
use crate::handler::Handler;
use crate::inbox::InboxRunner;
use crate::model::InboxEvent;
use crate::shutdown::Shutdown;
use crate::store::{InboxStore, Transactions};
use crate::worker::Stopped;

/// Default first pause before restarting a consumer that failed to start.
pub const DEFAULT_RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Default longest pause before restarting a consumer that failed to start.
pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs an [`InboxRunner`] until shutdown.
///
/// The runner already consumes in a loop, logging and backing off on storage and receive
/// errors; the worker adds what a long-running service needs around it:
///
/// - a consumer that cannot **start** (broker unreachable at boot, subscription refused)
///   is retried with backoff (0.5 s doubling to 30 s) instead of ending the worker;
/// - **graceful stop** (first [`Shutdown::trigger`]): no new message is received; the
///   message being handled is finished — committed and acknowledged (or handed back) —
///   then the consumer is stopped, which commits what was acknowledged (Kafka offsets) and
///   returns unacknowledged messages to the broker;
/// - **abort** (second trigger): the message in flight is dropped at its next await point;
///   its transaction rolls back and, never acknowledged, it is redelivered.
///
/// ```
/// use omnibox_core::inbox::InboxRunner;
/// use omnibox_core::memory::{MemoryBroker, MemoryDb, MemoryInboxStore};
/// use omnibox_core::worker::{InboxWorker, Stopped};
/// use omnibox_core::Shutdown;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let broker = MemoryBroker::new();
/// let runner = InboxRunner::builder(
///     broker.consumer(["orders"], "billing"),
///     MemoryDb::new(),
///     MemoryInboxStore::new(),
///     "billing",
/// )
/// .build()
/// .unwrap();
/// let mut worker = InboxWorker::builder(runner).build().unwrap();
/// let shutdown = Shutdown::new();
/// shutdown.trigger();
/// assert_eq!(worker.run(&shutdown).await, Stopped::Graceful);
/// # });
/// ```
#[derive(Debug)]
pub struct InboxWorker<C, T, S, H> {
    runner: InboxRunner<C, T, S, H>,
    backoff: Backoff,
}

/// Builds an [`InboxWorker`].
#[derive(Debug)]
#[must_use]
pub struct InboxWorkerBuilder<C, T, S, H> {
    /// The runner, or why building it failed (reported by `build`).
    runner: Result<InboxRunner<C, T, S, H>, Error>,
    min: Duration,
    max: Duration,
    jitter: Jitter,
}

impl<C, T, S, H> InboxWorker<C, T, S, H> {
    /// A worker around `runner`. [`InboxRunnerBuilder::worker`] builds the runner and its
    /// worker in one chain.
    ///
    /// [`InboxRunnerBuilder::worker`]: crate::inbox::InboxRunnerBuilder::worker
    pub fn builder(runner: InboxRunner<C, T, S, H>) -> InboxWorkerBuilder<C, T, S, H> {
        Self::builder_from(Ok(runner))
    }

    /// The builder over a runner that may have failed to build (reported by `build`).
    pub(crate) fn builder_from(
        runner: Result<InboxRunner<C, T, S, H>, Error>,
    ) -> InboxWorkerBuilder<C, T, S, H> {
        InboxWorkerBuilder {
            runner,
            min: DEFAULT_RESTART_BACKOFF_MIN,
            max: DEFAULT_RESTART_BACKOFF_MAX,
            jitter: Jitter::Equal,
        }
    }

    /// The runner.
    pub fn runner(&self) -> &InboxRunner<C, T, S, H> {
        &self.runner
    }

    /// Take the runner back.
    pub fn into_runner(self) -> InboxRunner<C, T, S, H> {
        self.runner
    }
}

impl<C, T, S, H> InboxWorkerBuilder<C, T, S, H> {
    /// Pause before restarting a consumer that failed to start: `min` doubling to `max`.
    pub fn restart_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min = min;
        self.max = max;
        self
    }

    /// Randomness of the restart pause (default [`Jitter::Equal`]).
    pub fn restart_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Check the settings and build.
    pub fn build(self) -> Result<InboxWorker<C, T, S, H>, Error> {
        if self.min.is_zero() || self.max < self.min {
            return Err(ValidationError::OutOfRange {
                field: "restart_backoff",
                reason: "needs 0 < min <= max".into(),
            }
            .into());
        }
        Ok(InboxWorker {
            runner: self.runner?,
            backoff: Backoff::new(self.min, self.max, self.jitter)?,
        })
    }
}

impl<C, T, S, H> InboxWorker<C, T, S, H>
where
    C: Consumer,
    T: Transactions,
    S: InboxStore<Conn = T::Conn>,
    H: Handler<InboxEvent, T::Conn>,
{
    /// Consume until `shutdown` is requested (see the type docs for stop and abort). Takes
    /// a [`Shutdown`] (or `&Shutdown`), or the application's
    /// [`CancellationToken`](crate::CancellationToken).
    pub async fn run(&mut self, shutdown: impl Into<Shutdown>) -> Stopped {
        let shutdown = &shutdown.into();
        let mut failures: u32 = 0;
        let job = format!("inbox:{}", self.runner.consumer_group());
        loop {
            let ran = tokio::select! {
                biased;
                () = shutdown.abort_requested() => {
                    tracing::warn!(job = %job, "inbox worker aborted; the message in flight will be redelivered");
                    return Stopped::Aborted;
                }
                r = self.runner.run(shutdown) => r,
            };
            match ran {
                Ok(()) => return Stopped::Graceful,
                Err(e) if shutdown.is_requested() => {
                    tracing::warn!(job = %job, error = %e, "stopping the consumer failed; unacknowledged messages are redelivered");
                    return Stopped::Graceful;
                }
                Err(e) => {
                    let pause = self.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::error!(job = %job, error = %e, pause_ms = pause.as_millis() as u64, "inbox consumer failed to start; retrying");
                    tokio::select! {
                        biased;
                        () = shutdown.requested() => return Stopped::Graceful,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// [`run`](Self::run), owning the worker: a `'static` future to `tokio::spawn`
    /// (`tokio::spawn(worker.serve(token.clone()))`).
    pub async fn serve(mut self, shutdown: impl Into<Shutdown>) -> Stopped {
        self.run(shutdown).await
    }

    /// [`run`](Self::run) until `signal` completes (any future), then drain gracefully.
    pub async fn run_until(&mut self, signal: impl Future) -> Stopped {
        let shutdown = Shutdown::new();
        crate::worker::until(&shutdown, signal, self.run(&shutdown)).await
    }
}
