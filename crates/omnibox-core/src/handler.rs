//! Handlers: user code that processes one event, and what it may answer.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::error::HandlerError;
use crate::publisher::BoxFuture;

/// What a handler decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerOutcome {
    /// Done: the event is completed.
    Completed,
    /// Deliberately not handled (not for us, obsolete): the event is completed as skipped,
    /// so it is never handed out again. (omni-box left skipped rows locked and pending.)
    Skipped {
        /// Why (logged; not stored).
        reason: String,
    },
    /// Try again later.
    Retry {
        /// Stored as `last_error`.
        error: String,
        /// Spend an attempt.
        counted: bool,
        /// When; `None` uses the pipeline's backoff for counted retries and one second for
        /// uncounted ones.
        retry_at: Option<DateTime<Utc>>,
    },
}

impl HandlerOutcome {
    /// Skip with a reason.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::Skipped {
            reason: reason.into(),
        }
    }

    /// A counted retry with the pipeline's backoff.
    pub fn retry(error: impl Into<String>) -> Self {
        Self::Retry {
            error: error.into(),
            counted: true,
            retry_at: None,
        }
    }
}

/// A handler's answer.
pub type HandlerResult = Result<HandlerOutcome, HandlerError>;

/// Processes one event of type `E` with the caller's connection `C` (so its writes join the
/// transaction that completes the event).
///
/// ```
/// use omnibox_core::{Handler, HandlerOutcome, HandlerResult, InboxEvent};
///
/// struct CountOrders;
/// impl<C: Send> Handler<InboxEvent, C> for CountOrders {
///     async fn handle(&self, event: &InboxEvent, _conn: &mut C) -> HandlerResult {
///         let total: u64 = event.common.payload["total"].as_u64().unwrap_or(0);
///         if total == 0 {
///             return Ok(HandlerOutcome::skipped("empty order"));
///         }
///         Ok(HandlerOutcome::Completed)
///     }
/// }
/// ```
pub trait Handler<E, C>: Send + Sync {
    /// Handle the event.
    fn handle(&self, event: &E, conn: &mut C) -> impl Future<Output = HandlerResult> + Send;
}

/// Object-safe twin of [`Handler`].
pub trait DynHandler<E, C>: Send + Sync {
    /// See [`Handler::handle`].
    fn handle_boxed<'a>(&'a self, event: &'a E, conn: &'a mut C) -> BoxFuture<'a, HandlerResult>;
}

impl<E, C, H: Handler<E, C>> DynHandler<E, C> for H {
    fn handle_boxed<'a>(&'a self, event: &'a E, conn: &'a mut C) -> BoxFuture<'a, HandlerResult> {
        Box::pin(self.handle(event, conn))
    }
}

impl<E: Sync, C: Send> Handler<E, C> for Box<dyn DynHandler<E, C>> {
    async fn handle(&self, event: &E, conn: &mut C) -> HandlerResult {
        self.as_ref().handle_boxed(event, conn).await
    }
}

impl<E, C, H: Handler<E, C>> Handler<E, C> for std::sync::Arc<H> {
    fn handle(&self, event: &E, conn: &mut C) -> impl Future<Output = HandlerResult> + Send {
        self.as_ref().handle(event, conn)
    }
}

/// A handler from a closure returning a boxed future.
///
/// ```
/// use omnibox_core::{handler_fn, HandlerOutcome, InboxEvent};
/// let h = handler_fn(|event: &InboxEvent, _conn: &mut ()| {
///     let kind = event.common.event_type.clone();
///     Box::pin(async move {
///         println!("got {kind}");
///         Ok(HandlerOutcome::Completed)
///     })
/// });
/// # let _ = h;
/// ```
pub fn handler_fn<E, C, F>(f: F) -> FnHandler<F>
where
    F: for<'a> Fn(&'a E, &'a mut C) -> BoxFuture<'a, HandlerResult> + Send + Sync,
{
    FnHandler(f)
}

/// See [`handler_fn`].
#[derive(Debug, Clone)]
pub struct FnHandler<F>(F);

impl<E, C, F> Handler<E, C> for FnHandler<F>
where
    E: Sync,
    C: Send,
    F: for<'a> Fn(&'a E, &'a mut C) -> BoxFuture<'a, HandlerResult> + Send + Sync,
{
    async fn handle(&self, event: &E, conn: &mut C) -> HandlerResult {
        (self.0)(event, conn).await
    }
}
