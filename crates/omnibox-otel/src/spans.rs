//! The span registry shared by [`crate::OtelStep`], [`crate::TracedPublisher`] and
//! [`crate::TracedHandler`]: step hooks cannot hold a span guard across awaits, so the open
//! spans live here, keyed by event id (and by a batch's first event id).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use omnibox_core::FailureKind;
use omnibox_core::pipeline::Verdict;
use opentelemetry::trace::{Link, SpanBuilder, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use uuid::Uuid;

use crate::messaging::{ERROR_TYPE, MessagingEvent, OMNIBOX_OUTCOME};

pub(crate) struct Spans<T> {
    pub(crate) tracer: T,
    pub(crate) system: String,
    events: Mutex<HashMap<Uuid, Context>>,
    /// Event id -> its batch span.
    batches: Mutex<HashMap<Uuid, Context>>,
}

impl<T> Spans<T>
where
    T: Tracer + Send + Sync,
    T::Span: Send + Sync + 'static,
{
    pub(crate) fn new(tracer: T, system: String) -> Self {
        Self {
            tracer,
            system,
            events: Mutex::new(HashMap::new()),
            batches: Mutex::new(HashMap::new()),
        }
    }

    /// Start an event span: child of the producer context stored with the event when there
    /// is one (linked to the batch span), else child of `fallback`.
    pub(crate) fn start_event<E: MessagingEvent>(&self, event: &E, fallback: &Context) -> Context {
        let remote = event.remote_parent();
        let mut builder = SpanBuilder::from_name(event.span_name())
            .with_kind(event.span_kind())
            .with_attributes(event.attributes(&self.system));
        let parent = if remote.has_active_span() {
            if fallback.has_active_span() {
                builder = builder.with_links(vec![Link::with_context(
                    fallback.span().span_context().clone(),
                )]);
            }
            remote
        } else {
            fallback.clone()
        };
        let span = self.tracer.build_with_context(builder, &parent);
        parent.with_span(span)
    }

    pub(crate) fn open_event(&self, id: Uuid, cx: Context) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, cx);
    }

    pub(crate) fn event(&self, id: Uuid) -> Option<Context> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    pub(crate) fn close_event(&self, id: Uuid) -> Option<Context> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
    }

    /// Remember `cx` as the batch span of every event in `ids`.
    pub(crate) fn open_batch(&self, ids: impl IntoIterator<Item = Uuid>, cx: &Context) {
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            batches.insert(id, cx.clone());
        }
    }

    /// The batch span of an event.
    pub(crate) fn batch(&self, id: Uuid) -> Option<Context> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Forget the batch of `ids`; returns its span context.
    pub(crate) fn close_batch(&self, ids: impl IntoIterator<Item = Uuid>) -> Option<Context> {
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for id in ids {
            if let Some(cx) = batches.remove(&id) {
                found.get_or_insert(cx);
            }
        }
        found
    }
}

/// Mark a span failed: status error with the message, `error.type` = the failure kind.
pub(crate) fn record_failure(cx: &Context, message: &str, kind: FailureKind) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(ERROR_TYPE, kind.as_str()));
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", kind.as_str()),
            KeyValue::new("exception.message", message.to_owned()),
        ],
    );
    span.set_status(Status::error(message.to_owned()));
}

/// Record the pipeline's verdict on an event span.
pub(crate) fn record_verdict(cx: &Context, verdict: Option<&Verdict>) {
    let outcome = match verdict {
        Some(Verdict::Completed) => "completed",
        Some(Verdict::Skipped { .. }) => "skipped",
        Some(Verdict::Failed { error, kind, .. }) => {
            record_failure(cx, error, *kind);
            "failed"
        }
        Some(Verdict::Released) | None => "released",
    };
    cx.span()
        .set_attribute(KeyValue::new(OMNIBOX_OUTCOME, outcome));
}
