//! [`HandlerStep`]: runs user code for each event.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;

use super::{DEFAULT_HANDLER_TIMEOUT, backoff_at, panic_message, secs, transient_at};
use crate::backoff::Backoff;
use crate::error::{FailureKind, StoreError};
use crate::handler::{Handler, HandlerOutcome};
use crate::metrics::Metric;
use crate::model::Event;
use crate::pipeline::{BatchCtx, Step, StepResult};
use crate::store::Savepoints;

/// The error recorded when a handler step runs in a batch without a connection.
pub(crate) const NO_CONNECTION: &str = "the handler needs the batch's connection: run this processor with \
     `process_batch` inside a transaction, not with `process_leased`";

/// Runs a [`Handler`] for each event with the batch's connection (so the handler's writes
/// commit with the event's completion), under a timeout, and turns what happened into the
/// event's verdict:
///
/// | handler | verdict |
/// |---|---|
/// | `Ok(Completed)` | completed |
/// | `Ok(Skipped { .. })` | completed as skipped (never handed out again) |
/// | `Ok(Retry { counted, retry_at, .. })` | failed; counted or not; at `retry_at`, else backoff (counted) or now + 1 s (uncounted) |
/// | `Err(e)`, `e.kind` transient | failed, uncounted, retry at now + 1 s |
/// | `Err(e)`, `e.kind` permanent | failed, counted, backoff |
/// | ran longer than the timeout | failed, counted, backoff: `"Handler execution timed out after 30s"` |
/// | panicked | failed, counted, backoff: `"handler panicked: ..."`; the batch goes on |
/// | no connection in the batch | failed, counted: the processor must run with `process_batch` |
///
/// The backoff ([`Backoff::default`]: base 10 s, cap 1 h, equal jitter) is computed from the
/// attempts made *before* this failure. The step reports
/// [`Metric::HandlerDuration`] measured around the handler call only. It returns
/// [`StepResult::Continue`] (but see the savepoint table).
///
/// # Savepoints: each handler's writes stand or fall alone
///
/// In a batch every handler shares the caller's one transaction. Without isolation, a
/// handler that wrote and then failed would have its partial writes committed together with
/// its failure record (and the retry would apply them again), and in PostgreSQL one failed
/// statement aborts the whole transaction, so the batch's settlement fails, nothing is
/// recorded and the same batch is claimed again and again. With
/// [`HandlerStep::savepoints`] (the [`inbox_processor`](crate::processors::inbox_processor)
/// processors set it) the step takes a savepoint before the handler, **releases** it when the
/// handler completed or skipped, and **rolls back** to it (then releases it) on any
/// failure — `Err`, `Retry`, timeout or panic — so the failure is recorded with none of the
/// handler's writes, and the rest of the batch goes on in a healthy transaction:
///
/// | savepoint operation | verdict |
/// |---|---|
/// | taking the savepoint fails | failed, uncounted, retry at now + 1 s; the handler does not run |
/// | handler succeeded, release fails, rollback to it works | failed, counted, backoff (e.g. the handler swallowed an SQL error, which aborted its writes) |
/// | rolling back to it fails | failed, uncounted, retry at now + 1 s; the batch stops ([`StepResult::StopBatch`]): the transaction is in an unknown state, and the caller must not commit a batch whose result reports no commit |
///
/// The handler must not end the transaction nor release or roll back past the savepoint.
/// A handler that timed out or panicked may leave its connection mid-statement; SQL clients
/// finish that statement before the rollback to the savepoint runs. Without savepoints
/// (a step built by hand with only [`HandlerStep::new`]) nothing of this happens: use it
/// only with handlers that never write through the connection, or that cannot fail after
/// writing.
///
/// ```
/// use omnibox_core::pipeline::steps::HandlerStep;
/// use omnibox_core::{handler_fn, HandlerOutcome, InboxEvent};
///
/// let step = HandlerStep::new(handler_fn(|_e: &InboxEvent, _c: &mut ()| {
///     Box::pin(async { Ok(HandlerOutcome::Completed) })
/// }))
/// .timeout(std::time::Duration::from_secs(5));
/// # let _ = step;
/// ```
#[derive(Debug, Clone)]
pub struct HandlerStep<H, S = NoSavepoints> {
    handler: H,
    timeout: Duration,
    timeout_kind: FailureKind,
    backoff: Backoff,
    savepoints: S,
}

/// How a [`HandlerStep`] isolates one handler's writes within the batch's transaction:
/// [`NoSavepoints`] (nothing, the default) or any store implementing [`Savepoints`] for the
/// batch's connection type `C`.
pub trait HandlerSavepoints<C>: Send + Sync {
    /// Take the savepoint before the handler runs.
    fn savepoint(&self, conn: &mut C) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Undo the handler's writes after it failed.
    fn rollback_to_savepoint(
        &self,
        conn: &mut C,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Keep the handler's writes after it succeeded.
    fn release_savepoint(
        &self,
        conn: &mut C,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// No savepoints: the handler's writes are not isolated from the rest of the batch (each
/// operation is a no-op that succeeds). Costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoSavepoints;

impl<C: Send> HandlerSavepoints<C> for NoSavepoints {
    fn savepoint(&self, _conn: &mut C) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }
    fn rollback_to_savepoint(
        &self,
        _conn: &mut C,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }
    fn release_savepoint(
        &self,
        _conn: &mut C,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }
}

impl<S: Savepoints> HandlerSavepoints<S::Conn> for S {
    fn savepoint(&self, conn: &mut S::Conn) -> impl Future<Output = Result<(), StoreError>> + Send {
        Savepoints::savepoint(self, conn)
    }
    fn rollback_to_savepoint(
        &self,
        conn: &mut S::Conn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        Savepoints::rollback_to_savepoint(self, conn)
    }
    fn release_savepoint(
        &self,
        conn: &mut S::Conn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        Savepoints::release_savepoint(self, conn)
    }
}

impl<H> HandlerStep<H> {
    /// A step with a 30 s timeout, the default backoff and no savepoints.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            timeout: DEFAULT_HANDLER_TIMEOUT,
            timeout_kind: FailureKind::Permanent,
            backoff: Backoff::default(),
            savepoints: NoSavepoints,
        }
    }
}

impl<H, S> HandlerStep<H, S> {
    /// Run each handler inside a savepoint of `store` (see the [type docs](HandlerStep)),
    /// so a failed handler's writes are rolled back while its failure is recorded.
    ///
    /// ```
    /// use omnibox_core::memory::{MemoryConn, MemoryInboxStore};
    /// use omnibox_core::pipeline::steps::HandlerStep;
    /// use omnibox_core::{handler_fn, HandlerOutcome, InboxEvent};
    ///
    /// let step = HandlerStep::new(handler_fn(|_e: &InboxEvent, conn: &mut MemoryConn| {
    ///     Box::pin(async move {
    ///         conn.put("seen", serde_json::json!(true)).await;
    ///         Ok(HandlerOutcome::Completed)
    ///     })
    /// }))
    /// .savepoints(MemoryInboxStore::new());
    /// # let _ = step;
    /// ```
    pub fn savepoints<S2>(self, store: S2) -> HandlerStep<H, S2> {
        HandlerStep {
            handler: self.handler,
            timeout: self.timeout,
            timeout_kind: self.timeout_kind,
            backoff: self.backoff,
            savepoints: store,
        }
    }

    /// How long the handler may run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What a handler call cut off by the timeout counts as (default
    /// [`FailureKind::Permanent`]: an attempt is spent and the backoff applies).
    /// [`FailureKind::Transient`] when a timeout means a slow downstream: the event is
    /// retried shortly without spending an attempt.
    pub fn timeout_kind(mut self, kind: FailureKind) -> Self {
        self.timeout_kind = kind;
        self
    }

    /// Backoff for counted failures without an explicit retry time.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

/// What the handler call decided, before it is written to the batch context.
enum Outcome {
    Complete,
    Skip(String),
    Fail {
        error: String,
        kind: FailureKind,
        at: DateTime<Utc>,
    },
}

/// What happened to the savepoint after the handler ran.
enum Isolation {
    /// Released after a success, or rolled back after a failure.
    Done,
    /// The handler succeeded but releasing failed; rolling back worked.
    ReleaseFailed(StoreError),
    /// Rolling back failed: the transaction's content is unknown.
    RollbackFailed(String),
}

impl<E, C, H, S> Step<E, C> for HandlerStep<H, S>
where
    E: Event,
    C: Send,
    H: Handler<E, C>,
    S: HandlerSavepoints<C>,
{
    async fn execute(&self, event: &E, ctx: &mut BatchCtx<'_, E, C>) -> StepResult {
        let id = event.id();
        let attempts = event.common().attempts_made;
        let Some(conn) = ctx.conn() else {
            let at = backoff_at(ctx.now(), &self.backoff, attempts);
            tracing::error!(job = %ctx.job(), event_id = %id, "{NO_CONNECTION}");
            ctx.fail(id, NO_CONNECTION, FailureKind::Permanent, Some(at));
            return StepResult::Continue;
        };
        if let Err(e) = self.savepoints.savepoint(conn).await {
            let msg = format!("could not take a savepoint before the handler: {e}");
            tracing::warn!(job = %ctx.job(), event_id = %id, "{msg}");
            let at = transient_at(ctx.now());
            ctx.fail(id, msg, FailureKind::Transient, Some(at));
            return StepResult::Continue;
        }
        let started = tokio::time::Instant::now();
        let ran = tokio::time::timeout(
            self.timeout,
            AssertUnwindSafe(self.handler.handle(event, conn)).catch_unwind(),
        )
        .await;
        let duration = started.elapsed();
        let succeeded = matches!(
            ran,
            Ok(Ok(Ok(
                HandlerOutcome::Completed | HandlerOutcome::Skipped { .. }
            )))
        );
        let isolation = if succeeded {
            match self.savepoints.release_savepoint(conn).await {
                Ok(()) => Isolation::Done,
                Err(release) => match self.savepoints.rollback_to_savepoint(conn).await {
                    Ok(()) => Isolation::ReleaseFailed(release),
                    Err(rollback) => Isolation::RollbackFailed(format!(
                        "the handler succeeded but its savepoint could not be released \
                         ({release}) nor rolled back ({rollback})"
                    )),
                },
            }
        } else {
            match self.savepoints.rollback_to_savepoint(conn).await {
                Ok(()) => {
                    // Rolling back keeps the savepoint: drop it too, so failed handlers do
                    // not pile up nested savepoints (subtransactions) in the transaction.
                    if let Err(e) = self.savepoints.release_savepoint(conn).await {
                        tracing::warn!(event_id = %id, error = %e, "releasing the rolled-back savepoint failed");
                    }
                    Isolation::Done
                }
                Err(rollback) => Isolation::RollbackFailed(format!(
                    "the handler failed and its writes could not be rolled back: {rollback}"
                )),
            }
        };
        ctx.metrics().record(&Metric::HandlerDuration {
            job: ctx.job(),
            event_type: &event.common().event_type,
            duration,
        });
        let now = ctx.now();
        let outcome = match isolation {
            Isolation::Done => self.outcome(ran, now, attempts, ctx.job(), id),
            Isolation::ReleaseFailed(e) => {
                let error = format!(
                    "the handler succeeded but its writes could not be kept \
                     (release savepoint failed: {e}); they were rolled back"
                );
                tracing::warn!(job = %ctx.job(), event_id = %id, "{error}");
                Outcome::Fail {
                    error,
                    kind: FailureKind::Permanent,
                    at: backoff_at(now, &self.backoff, attempts),
                }
            }
            Isolation::RollbackFailed(error) => {
                tracing::error!(job = %ctx.job(), event_id = %id, "{error}; stopping the batch");
                ctx.fail(id, error, FailureKind::Transient, Some(transient_at(now)));
                return StepResult::StopBatch;
            }
        };
        match outcome {
            Outcome::Complete => ctx.complete(id),
            Outcome::Skip(reason) => ctx.skip(id, reason),
            Outcome::Fail { error, kind, at } => ctx.fail(id, error, kind, Some(at)),
        }
        StepResult::Continue
    }
}

type Ran = Result<
    Result<crate::handler::HandlerResult, Box<dyn std::any::Any + Send>>,
    tokio::time::error::Elapsed,
>;

impl<H, S> HandlerStep<H, S> {
    /// Map what the handler call returned to an outcome (the table in the type docs).
    fn outcome(
        &self,
        ran: Ran,
        now: DateTime<Utc>,
        attempts: u32,
        job: &str,
        id: uuid::Uuid,
    ) -> Outcome {
        match ran {
            Ok(Ok(Ok(HandlerOutcome::Completed))) => Outcome::Complete,
            Ok(Ok(Ok(HandlerOutcome::Skipped { reason }))) => Outcome::Skip(reason),
            Ok(Ok(Ok(HandlerOutcome::Retry {
                error,
                counted,
                retry_at,
            }))) => {
                let (kind, default_at) = if counted {
                    (
                        FailureKind::Permanent,
                        backoff_at(now, &self.backoff, attempts),
                    )
                } else {
                    (FailureKind::Transient, transient_at(now))
                };
                Outcome::Fail {
                    error,
                    kind,
                    at: retry_at.unwrap_or(default_at),
                }
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(job = %job, event_id = %id, kind = e.kind.as_str(), error = %e.message, "handler failed");
                let at = match e.kind {
                    FailureKind::Transient => transient_at(now),
                    FailureKind::Permanent => backoff_at(now, &self.backoff, attempts),
                };
                Outcome::Fail {
                    error: e.message,
                    kind: e.kind,
                    at,
                }
            }
            Ok(Err(panic)) => {
                let error = format!("handler panicked: {}", panic_message(panic.as_ref()));
                tracing::error!(job = %job, event_id = %id, "{error}");
                Outcome::Fail {
                    error,
                    kind: FailureKind::Permanent,
                    at: backoff_at(now, &self.backoff, attempts),
                }
            }
            Err(_elapsed) => {
                let error = format!("Handler execution timed out after {}", secs(self.timeout));
                tracing::warn!(job = %job, event_id = %id, kind = %self.timeout_kind.as_str(), "{error}");
                let at = match self.timeout_kind {
                    FailureKind::Transient => transient_at(now),
                    FailureKind::Permanent => backoff_at(now, &self.backoff, attempts),
                };
                Outcome::Fail {
                    error,
                    kind: self.timeout_kind,
                    at,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
