//! The step seam: a small trait of our own (not tower's `Service`), because a step needs to
//! say "continue", "skip the rest for this event" or "stop the batch", needs batch and event
//! hooks, and needs the caller's transaction through a borrowed context.

use std::future::Future;

use super::context::BatchCtx;
use crate::publisher::BoxFuture;

/// What the pipeline does after a step ran for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    /// Run the next step.
    Continue,
    /// Skip the remaining steps for this event.
    SkipEvent,
    /// Stop the batch: this event and every later one without a verdict is released
    /// (lease given back, no attempt spent).
    StopBatch,
}

/// One stage of the per-event pipeline, with optional hooks.
///
/// A custom step takes a few lines:
///
/// ```
/// use omnibox_core::pipeline::{BatchCtx, Step, StepResult};
/// use omnibox_core::{Event, OutboxEvent};
///
/// /// Refuses events of a blocked type (completed as skipped, never published).
/// struct BlockType(&'static str);
///
/// impl<C: Send> Step<OutboxEvent, C> for BlockType {
///     async fn execute(&self, event: &OutboxEvent, ctx: &mut BatchCtx<'_, OutboxEvent, C>) -> StepResult {
///         if event.common.event_type == self.0 {
///             ctx.skip(event.id(), "blocked type");
///             return StepResult::SkipEvent;
///         }
///         StepResult::Continue
///     }
/// }
/// ```
pub trait Step<E, C>: Send + Sync {
    /// Before the first event of a batch.
    fn on_batch_start(
        &self,
        events: &[E],
        ctx: &mut BatchCtx<'_, E, C>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (events, ctx);
        async {}
    }

    /// Before the steps run for an event.
    fn on_event_start(
        &self,
        event: &E,
        ctx: &mut BatchCtx<'_, E, C>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (event, ctx);
        async {}
    }

    /// Process the event.
    fn execute(
        &self,
        event: &E,
        ctx: &mut BatchCtx<'_, E, C>,
    ) -> impl Future<Output = StepResult> + Send;

    /// After the steps ran for an event (always, whatever they returned).
    fn on_event_end(
        &self,
        event: &E,
        ctx: &mut BatchCtx<'_, E, C>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (event, ctx);
        async {}
    }

    /// After the last event of a batch (always).
    fn on_batch_end(
        &self,
        events: &[E],
        ctx: &mut BatchCtx<'_, E, C>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (events, ctx);
        async {}
    }
}

/// Object-safe twin of [`Step`]; the pipeline stores `Box<dyn DynStep<E, C>>`.
#[allow(missing_docs)]
pub trait DynStep<E, C>: Send + Sync {
    fn on_batch_start_boxed<'a, 'c>(
        &'a self,
        events: &'a [E],
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()>;
    fn on_event_start_boxed<'a, 'c>(
        &'a self,
        event: &'a E,
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()>;
    fn execute_boxed<'a, 'c>(
        &'a self,
        event: &'a E,
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, StepResult>;
    fn on_event_end_boxed<'a, 'c>(
        &'a self,
        event: &'a E,
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()>;
    fn on_batch_end_boxed<'a, 'c>(
        &'a self,
        events: &'a [E],
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()>;
}

impl<E, C, S> DynStep<E, C> for S
where
    S: Step<E, C>,
{
    fn on_batch_start_boxed<'a, 'c>(
        &'a self,
        events: &'a [E],
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.on_batch_start(events, ctx))
    }
    fn on_event_start_boxed<'a, 'c>(
        &'a self,
        event: &'a E,
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.on_event_start(event, ctx))
    }
    fn execute_boxed<'a, 'c>(
        &'a self,
        event: &'a E,
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, StepResult> {
        Box::pin(self.execute(event, ctx))
    }
    fn on_event_end_boxed<'a, 'c>(
        &'a self,
        event: &'a E,
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.on_event_end(event, ctx))
    }
    fn on_batch_end_boxed<'a, 'c>(
        &'a self,
        events: &'a [E],
        ctx: &'a mut BatchCtx<'c, E, C>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.on_batch_end(events, ctx))
    }
}
