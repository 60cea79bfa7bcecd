//! What a route runs: the [`RouteHandler`] trait, its object-safe twin and the adapters for
//! closures and plain [`Handler`]s.

use std::future::Future;

use crate::handler::{Handler, HandlerResult};
use crate::model::InboxEvent;
use crate::publisher::BoxFuture;

/// Handles the inbox events of one route, with the caller's connection `C` (so its writes
/// join the inbox transaction) and the router's shared state `St`.
///
/// ```
/// use omnibox_core::router::{RouteHandler, Router};
/// use omnibox_core::{HandlerOutcome, HandlerResult, InboxEvent};
///
/// struct Billing {
///     currency: &'static str,
/// }
///
/// impl RouteHandler<(), ()> for Billing {
///     async fn handle(&self, event: &InboxEvent, _conn: &mut (), _state: &()) -> HandlerResult {
///         println!("bill {} in {}", event.message_id, self.currency);
///         Ok(HandlerOutcome::Completed)
///     }
/// }
///
/// let mut router = Router::<()>::new();
/// router.register("order.placed", "orders", Billing { currency: "EUR" }).unwrap();
/// assert!(router.has_route("order.placed", "orders", None));
/// ```
pub trait RouteHandler<C, St = ()>: Send + Sync + 'static {
    /// Handle one event.
    fn handle(
        &self,
        event: &InboxEvent,
        conn: &mut C,
        state: &St,
    ) -> impl Future<Output = HandlerResult> + Send;
}

/// Object-safe twin of [`RouteHandler`]; every `RouteHandler` is one.
pub trait DynRouteHandler<C, St>: Send + Sync + 'static {
    /// See [`RouteHandler::handle`].
    fn handle_boxed<'a>(
        &'a self,
        event: &'a InboxEvent,
        conn: &'a mut C,
        state: &'a St,
    ) -> BoxFuture<'a, HandlerResult>;
}

impl<C, St, H: RouteHandler<C, St>> DynRouteHandler<C, St> for H {
    fn handle_boxed<'a>(
        &'a self,
        event: &'a InboxEvent,
        conn: &'a mut C,
        state: &'a St,
    ) -> BoxFuture<'a, HandlerResult> {
        Box::pin(self.handle(event, conn, state))
    }
}

/// A route handler made from a closure returning a boxed future (see
/// [`Router::route`](super::Router::route)).
#[derive(Debug, Clone)]
pub struct FnRoute<F>(pub F);

impl<C, St, F> RouteHandler<C, St> for FnRoute<F>
where
    C: Send,
    St: Sync,
    F: for<'a> Fn(&'a InboxEvent, &'a mut C, &'a St) -> BoxFuture<'a, HandlerResult>
        + Send
        + Sync
        + 'static,
{
    async fn handle(&self, event: &InboxEvent, conn: &mut C, state: &St) -> HandlerResult {
        (self.0)(event, conn, state).await
    }
}

/// A plain [`Handler`] used as a route handler: it ignores the router's state (see
/// [`Router::register_handler`](super::Router::register_handler)).
#[derive(Debug, Clone)]
pub struct Stateless<H>(pub H);

impl<C, St, H> RouteHandler<C, St> for Stateless<H>
where
    H: Handler<InboxEvent, C> + 'static,
{
    fn handle(
        &self,
        event: &InboxEvent,
        conn: &mut C,
        _state: &St,
    ) -> impl Future<Output = HandlerResult> + Send {
        self.0.handle(event, conn)
    }
}
