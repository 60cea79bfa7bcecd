//! The event router: inbox handlers keyed by `(event_type, source)`.
//!
//! A [`Router`] maps each inbox event to one handler, looked up by the event's
//! `event_type` and `source` (the topic / queue / subject it came from, unless the
//! publisher set a `source` header). An entry may be specific to one `schema_version`;
//! an event whose version has no entry of its own falls back to the version-less entry.
//!
//! Handlers are async closures or [`RouteHandler`] implementations. They receive the
//! event, the caller's connection `C` (so their writes commit with the inbox row) and the
//! router's shared state `St` (clients, configuration, caches — anything `Send + Sync`).
//!
//! The router is itself a [`Handler<InboxEvent, C>`](crate::Handler), so it plugs into the
//! inbox runner and the pipeline's handler step like any other handler.
//!
//! When nothing matches, the [`UnmatchedPolicy`] decides: a counted failure by default
//! (the event is retried with backoff and dead-lettered once its attempts are spent, so a
//! forgotten route is visible rather than silently dropped), a skip (the event is completed
//! untouched) or an uncounted retry (for a handler that is about to be deployed).
//!
//! Differences from omni-box's `EventRouter`: version lookups are exact — omni-box also tried
//! migrating the payload to another registered version through its schema registry, which
//! has no counterpart here (do such migrations inside the handler); and every registration
//! names its source explicitly, so the class-attribute-wins surprise of `register_instance`
//! cannot happen.
//!
//! ```
//! use omnibox_core::router::{Router, UnmatchedPolicy};
//! use omnibox_core::{Handler, HandlerOutcome, InboxEvent};
//!
//! /// Shared dependencies, handed to every handler by reference.
//! struct Deps {
//!     tax_rate: f64,
//! }
//!
//! let mut router = Router::<(), Deps>::with_state(Deps { tax_rate: 0.2 })
//!     .unmatched(UnmatchedPolicy::Skip);
//! router
//!     .route("order.placed", "orders", |event, _conn, deps| {
//!         Box::pin(async move {
//!             let total = event.common.payload["total"].as_f64().unwrap_or(0.0);
//!             println!("tax due: {}", total * deps.tax_rate);
//!             Ok(HandlerOutcome::Completed)
//!         })
//!     })
//!     .unwrap()
//!     .route_version("order.placed", "orders", "2", |_event, _conn, _deps| {
//!         Box::pin(async move { Ok(HandlerOutcome::skipped("v2 orders are billed elsewhere")) })
//!     })
//!     .unwrap();
//!
//! let event = InboxEvent::builder("msg-1", "billing", "orders", "order.placed")
//!     .payload(serde_json::json!({"total": 100.0}))
//!     .build()
//!     .unwrap();
//! let outcome = futures_util::FutureExt::now_or_never(router.handle(&event, &mut ()));
//! assert_eq!(outcome.unwrap().unwrap(), HandlerOutcome::Completed);
//!
//! // A second registration of the same key is refused.
//! let again = router.route("order.placed", "orders", |_e, _c, _s| {
//!     Box::pin(async { Ok(HandlerOutcome::Completed) })
//! });
//! assert!(again.is_err());
//! ```

mod handler;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

pub use handler::{DynRouteHandler, FnRoute, RouteHandler, Stateless};

use crate::error::HandlerError;
use crate::handler::{Handler, HandlerOutcome, HandlerResult};
use crate::model::InboxEvent;
use crate::publisher::BoxFuture;

/// What the router answers for an event no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnmatchedPolicy {
    /// A counted failure with the message `No handler for source=… event_type=… v=…`: the
    /// event is retried with backoff and ends dead-lettered after its last attempt (the
    /// omni-box's behaviour).
    #[default]
    Fail,
    /// Complete the event as skipped: it is never handed out again.
    Skip,
    /// An uncounted retry: the event comes back later without spending an attempt, until
    /// a route for it exists.
    Retry,
}

/// Registering a route failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// A handler is already registered under this key.
    #[error(
        "a handler is already registered for source={source_name} event_type={event_type} v={}",
        version_label(.schema_version.as_deref())
    )]
    AlreadyRegistered {
        /// The event type.
        event_type: String,
        /// The (normalised) source. (Not called `source`, which would make it the error's
        /// cause.)
        source_name: String,
        /// The schema version, `None` for the version-less entry.
        schema_version: Option<String>,
    },
    /// A key part is blank (after trimming and source normalisation).
    #[error("route key `{field}` must not be blank")]
    BlankKey {
        /// `event_type`, `source` or `schema_version`.
        field: &'static str,
    },
}

fn version_label(v: Option<&str>) -> &str {
    v.unwrap_or("none")
}

type Normalizer = Arc<dyn Fn(&str) -> String + Send + Sync>;
type Boxed<C, St> = Box<dyn DynRouteHandler<C, St>>;

/// The handlers of one `(source, event_type)`.
struct Entry<C, St> {
    any_version: Option<Boxed<C, St>>,
    by_version: BTreeMap<String, Boxed<C, St>>,
}

impl<C, St> Default for Entry<C, St> {
    fn default() -> Self {
        Self {
            any_version: None,
            by_version: BTreeMap::new(),
        }
    }
}

/// Routes inbox events to handlers by `(event_type, source)`, optionally per schema
/// version; see the [module docs](self) for an example.
///
/// `C` is the connection type handlers receive (e.g. `sqlx::PgConnection`); `St` is the
/// shared state (`()` by default).
pub struct Router<C, St = ()> {
    /// source → event_type → handlers.
    routes: BTreeMap<String, BTreeMap<String, Entry<C, St>>>,
    state: St,
    normalizer: Option<Normalizer>,
    unmatched: UnmatchedPolicy,
}

impl<C, St> fmt::Debug for Router<C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self.routes().collect();
        f.debug_struct("Router")
            .field("routes", &keys)
            .field("normalizer", &self.normalizer.is_some())
            .field("unmatched", &self.unmatched)
            .finish_non_exhaustive()
    }
}

impl<C> Router<C, ()> {
    /// A router without shared state.
    pub fn new() -> Self {
        Self::with_state(())
    }
}

impl<C> Default for Router<C, ()> {
    fn default() -> Self {
        Self::new()
    }
}

fn key_part(field: &'static str, value: &str) -> Result<String, RouterError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(RouterError::BlankKey { field });
    }
    Ok(v.to_owned())
}

impl<C, St> Router<C, St> {
    /// A router whose handlers all receive `&state`.
    pub fn with_state(state: St) -> Self {
        Self {
            routes: BTreeMap::new(),
            state,
            normalizer: None,
            unmatched: UnmatchedPolicy::default(),
        }
    }

    /// Choose what happens to events no route matches (default [`UnmatchedPolicy::Fail`]).
    #[must_use]
    pub fn unmatched(mut self, policy: UnmatchedPolicy) -> Self {
        self.unmatched = policy;
        self
    }

    /// Normalise sources, both when registering and when routing (e.g. strip an
    /// environment prefix: `"prod.orders"` → `"orders"`). Routes registered before are
    /// re-keyed; if two of them now collide, [`RouterError::AlreadyRegistered`].
    pub fn source_normalizer(
        mut self,
        normalize: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Result<Self, RouterError> {
        let normalize: Normalizer = Arc::new(normalize);
        let old = std::mem::take(&mut self.routes);
        self.normalizer = Some(normalize);
        for (source, types) in old {
            for (event_type, entry) in types {
                if let Some(h) = entry.any_version {
                    self.insert(&event_type, &source, None, h)?;
                }
                for (v, h) in entry.by_version {
                    self.insert(&event_type, &source, Some(&v), h)?;
                }
            }
        }
        Ok(self)
    }

    /// The shared state.
    pub fn state(&self) -> &St {
        &self.state
    }

    /// The policy for unmatched events.
    pub fn unmatched_policy(&self) -> UnmatchedPolicy {
        self.unmatched
    }

    /// Number of registered handlers.
    pub fn len(&self) -> usize {
        self.routes
            .values()
            .flat_map(BTreeMap::values)
            .map(|e| usize::from(e.any_version.is_some()) + e.by_version.len())
            .sum()
    }

    /// `true` when no handler is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every registered key as `(event_type, source, schema_version)`, sorted by source,
    /// then event type, version-less entry first.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str, Option<&str>)> {
        self.routes.iter().flat_map(|(source, types)| {
            types.iter().flat_map(move |(event_type, entry)| {
                let any = entry
                    .any_version
                    .as_ref()
                    .map(|_| (event_type.as_str(), source.as_str(), None));
                any.into_iter().chain(
                    entry
                        .by_version
                        .keys()
                        .map(move |v| (event_type.as_str(), source.as_str(), Some(v.as_str()))),
                )
            })
        })
    }

    /// The sources that have at least one route (normalised).
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// `true` when an event with these fields would find a handler (the version-specific
    /// entry, or the version-less fallback). `source` is normalised first.
    pub fn has_route(&self, event_type: &str, source: &str, schema_version: Option<&str>) -> bool {
        self.lookup(event_type, &self.normalize(source), schema_version)
            .is_some()
    }

    /// Register a closure for every version of `(event_type, source)`.
    ///
    /// The closure receives the event, the connection and the shared state, and returns a
    /// boxed future: `|event, conn, state| Box::pin(async move { … })`.
    pub fn route<F>(
        &mut self,
        event_type: &str,
        source: &str,
        f: F,
    ) -> Result<&mut Self, RouterError>
    where
        F: for<'a> Fn(&'a InboxEvent, &'a mut C, &'a St) -> BoxFuture<'a, HandlerResult>
            + Send
            + Sync
            + 'static,
        C: Send + 'static,
        St: Send + Sync + 'static,
    {
        self.insert(event_type, source, None, Box::new(FnRoute(f)))?;
        Ok(self)
    }

    /// Register a closure for one schema version of `(event_type, source)`; it takes
    /// precedence over the version-less entry for events of that version.
    pub fn route_version<F>(
        &mut self,
        event_type: &str,
        source: &str,
        schema_version: &str,
        f: F,
    ) -> Result<&mut Self, RouterError>
    where
        F: for<'a> Fn(&'a InboxEvent, &'a mut C, &'a St) -> BoxFuture<'a, HandlerResult>
            + Send
            + Sync
            + 'static,
        C: Send + 'static,
        St: Send + Sync + 'static,
    {
        self.insert(
            event_type,
            source,
            Some(schema_version),
            Box::new(FnRoute(f)),
        )?;
        Ok(self)
    }

    /// Register a [`RouteHandler`] for every version of `(event_type, source)`.
    pub fn register(
        &mut self,
        event_type: &str,
        source: &str,
        handler: impl RouteHandler<C, St>,
    ) -> Result<&mut Self, RouterError>
    where
        C: Send + 'static,
        St: Send + Sync + 'static,
    {
        self.insert(event_type, source, None, Box::new(handler))?;
        Ok(self)
    }

    /// Register a [`RouteHandler`] for one schema version of `(event_type, source)`.
    pub fn register_version(
        &mut self,
        event_type: &str,
        source: &str,
        schema_version: &str,
        handler: impl RouteHandler<C, St>,
    ) -> Result<&mut Self, RouterError>
    where
        C: Send + 'static,
        St: Send + Sync + 'static,
    {
        self.insert(event_type, source, Some(schema_version), Box::new(handler))?;
        Ok(self)
    }

    /// Register a plain [`Handler`] (which does not see the shared state) for every
    /// version of `(event_type, source)`.
    pub fn register_handler(
        &mut self,
        event_type: &str,
        source: &str,
        handler: impl Handler<InboxEvent, C> + 'static,
    ) -> Result<&mut Self, RouterError>
    where
        C: Send + 'static,
        St: Send + Sync + 'static,
    {
        self.insert(event_type, source, None, Box::new(Stateless(handler)))?;
        Ok(self)
    }

    /// Register a typed [`MessageHandler`](crate::message::MessageHandler) of `M` for every
    /// version of `(M::EVENT_TYPE, source)`: the payload arrives decoded, and a payload
    /// that does not decode is a counted failure (see [`crate::message`]).
    pub fn register_message<M>(
        &mut self,
        source: &str,
        handler: impl crate::message::MessageHandler<M, C> + 'static,
    ) -> Result<&mut Self, RouterError>
    where
        M: crate::message::Message + 'static,
        C: Send + 'static,
        St: Send + Sync + 'static,
    {
        self.register_handler(
            M::EVENT_TYPE,
            source,
            crate::message::typed::<M, _>(handler),
        )
    }

    fn normalize(&self, source: &str) -> String {
        match &self.normalizer {
            Some(n) => n(source),
            None => source.to_owned(),
        }
    }

    fn insert(
        &mut self,
        event_type: &str,
        source: &str,
        schema_version: Option<&str>,
        handler: Boxed<C, St>,
    ) -> Result<(), RouterError> {
        let event_type = key_part("event_type", event_type)?;
        let source = key_part("source", &self.normalize(source.trim()))?;
        let version = schema_version
            .map(|v| key_part("schema_version", v))
            .transpose()?;
        let entry = self
            .routes
            .entry(source.clone())
            .or_default()
            .entry(event_type.clone())
            .or_default();
        let taken = match &version {
            None => entry.any_version.is_some(),
            Some(v) => entry.by_version.contains_key(v),
        };
        if taken {
            return Err(RouterError::AlreadyRegistered {
                event_type,
                source_name: source,
                schema_version: version,
            });
        }
        match version {
            None => entry.any_version = Some(handler),
            Some(v) => {
                entry.by_version.insert(v, handler);
            }
        }
        Ok(())
    }

    fn lookup(
        &self,
        event_type: &str,
        source: &str,
        schema_version: Option<&str>,
    ) -> Option<&dyn DynRouteHandler<C, St>> {
        let entry = self.routes.get(source)?.get(event_type)?;
        schema_version
            .and_then(|v| entry.by_version.get(v))
            .or(entry.any_version.as_ref())
            .map(Box::as_ref)
    }
}

impl<C, St> Router<C, St>
where
    C: Send + 'static,
    St: Send + Sync + 'static,
{
    /// Route one event: run the matching handler, or apply the [`UnmatchedPolicy`].
    pub async fn dispatch(&self, event: &InboxEvent, conn: &mut C) -> HandlerResult {
        let source = self.normalize(&event.source);
        let event_type = event.common.event_type.as_str();
        let version = event.common.schema_version.as_deref();
        match self.lookup(event_type, &source, version) {
            Some(handler) => handler.handle_boxed(event, conn, &self.state).await,
            None => {
                let message = format!(
                    "No handler for source={source} event_type={event_type} v={}",
                    version_label(version)
                );
                tracing::warn!(
                    event_id = %event.common.id,
                    policy = ?self.unmatched,
                    "{message}"
                );
                match self.unmatched {
                    UnmatchedPolicy::Fail => Err(HandlerError::permanent(message)),
                    UnmatchedPolicy::Skip => Ok(HandlerOutcome::skipped(message)),
                    UnmatchedPolicy::Retry => Ok(HandlerOutcome::Retry {
                        error: message,
                        counted: false,
                        retry_at: None,
                    }),
                }
            }
        }
    }
}

impl<C, St> Handler<InboxEvent, C> for Router<C, St>
where
    C: Send + 'static,
    St: Send + Sync + 'static,
{
    fn handle(
        &self,
        event: &InboxEvent,
        conn: &mut C,
    ) -> impl Future<Output = HandlerResult> + Send {
        self.dispatch(event, conn)
    }
}
