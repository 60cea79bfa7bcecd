use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::error::FailureKind;

fn event(source: &str, event_type: &str, version: Option<&str>) -> InboxEvent {
    let b = InboxEvent::builder("msg-1", "group", source, event_type).payload(json!({"n": 1}));
    match version {
        Some(v) => b.schema_version(v),
        None => b,
    }
    .build()
    .unwrap()
}

/// A connection stand-in that records which handler ran.
#[derive(Default)]
struct Log(Vec<String>);

fn tag(
    name: &'static str,
) -> impl for<'a> Fn(&'a InboxEvent, &'a mut Log, &'a ()) -> BoxFuture<'a, HandlerResult>
+ Send
+ Sync
+ 'static {
    move |_e, log, _s| {
        Box::pin(async move {
            log.0.push(name.to_owned());
            Ok(HandlerOutcome::Completed)
        })
    }
}

async fn run<St: Send + Sync + 'static>(
    router: &Router<Log, St>,
    e: &InboxEvent,
) -> (HandlerResult, Vec<String>) {
    let mut log = Log::default();
    // Through the `Handler` trait, as the runner and the handler step call it.
    let r = Handler::handle(router, e, &mut log).await;
    (r, log.0)
}

#[tokio::test]
async fn routes_by_event_type_and_source() {
    let mut r = Router::<Log>::new();
    r.route("order.placed", "orders", tag("placed"))
        .unwrap()
        .route("order.cancelled", "orders", tag("cancelled"))
        .unwrap()
        .route("order.placed", "legacy-orders", tag("legacy"))
        .unwrap();
    assert_eq!(r.len(), 3);
    let (res, log) = run(&r, &event("orders", "order.placed", None)).await;
    assert_eq!(res.unwrap(), HandlerOutcome::Completed);
    assert_eq!(log, ["placed"]);
    let (_, log) = run(&r, &event("orders", "order.cancelled", None)).await;
    assert_eq!(log, ["cancelled"]);
    let (_, log) = run(&r, &event("legacy-orders", "order.placed", None)).await;
    assert_eq!(log, ["legacy"]);
}

#[tokio::test]
async fn version_specific_entry_wins_and_falls_back_to_versionless() {
    let mut r = Router::<Log>::new();
    r.route("t", "s", tag("any")).unwrap();
    r.route_version("t", "s", "2.0", tag("v2")).unwrap();
    let (_, log) = run(&r, &event("s", "t", Some("2.0"))).await;
    assert_eq!(log, ["v2"]);
    let (_, log) = run(&r, &event("s", "t", Some("1.0"))).await;
    assert_eq!(log, ["any"]);
    let (_, log) = run(&r, &event("s", "t", None)).await;
    assert_eq!(log, ["any"]);
}

#[tokio::test]
async fn versioned_only_entry_does_not_match_other_versions() {
    let mut r = Router::<Log>::new();
    r.route_version("t", "s", "2.0", tag("v2")).unwrap();
    assert!(r.has_route("t", "s", Some("2.0")));
    assert!(!r.has_route("t", "s", Some("1.0")));
    assert!(!r.has_route("t", "s", None));
    let (res, log) = run(&r, &event("s", "t", Some("1.0"))).await;
    let err = res.unwrap_err();
    assert_eq!(err.message, "No handler for source=s event_type=t v=1.0");
    assert!(log.is_empty());
}

#[test]
fn duplicate_registration_is_a_typed_error() {
    let mut r = Router::<Log>::new();
    r.route("t", "s", tag("a")).unwrap();
    r.route_version("t", "s", "1", tag("a1")).unwrap();
    assert_eq!(
        r.route("t", " s ", tag("b")).err(),
        Some(RouterError::AlreadyRegistered {
            event_type: "t".into(),
            source_name: "s".into(),
            schema_version: None,
        })
    );
    let err = r.route_version("t", "s", "1", tag("b1")).err().unwrap();
    assert_eq!(
        err,
        RouterError::AlreadyRegistered {
            event_type: "t".into(),
            source_name: "s".into(),
            schema_version: Some("1".into()),
        }
    );
    assert_eq!(
        err.to_string(),
        "a handler is already registered for source=s event_type=t v=1"
    );
    assert_eq!(r.len(), 2);
}

#[test]
fn blank_key_parts_are_refused() {
    let mut r = Router::<Log>::new();
    assert_eq!(
        r.route(" ", "s", tag("a")).err(),
        Some(RouterError::BlankKey {
            field: "event_type"
        })
    );
    assert_eq!(
        r.route("t", "", tag("a")).err(),
        Some(RouterError::BlankKey { field: "source" })
    );
    assert_eq!(
        r.route_version("t", "s", " ", tag("a")).err(),
        Some(RouterError::BlankKey {
            field: "schema_version"
        })
    );
    assert!(r.is_empty());
}

#[tokio::test]
async fn unmatched_fail_is_a_counted_failure_with_the_reference_message() {
    let r = Router::<Log>::new();
    assert_eq!(r.unmatched_policy(), UnmatchedPolicy::Fail);
    let (res, _) = run(&r, &event("orders", "order.placed", None)).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind, FailureKind::Permanent);
    assert!(err.kind.counts_attempt());
    assert_eq!(
        err.message,
        "No handler for source=orders event_type=order.placed v=none"
    );
}

#[tokio::test]
async fn unmatched_skip_completes_as_skipped() {
    let r = Router::<Log>::new().unmatched(UnmatchedPolicy::Skip);
    let (res, _) = run(&r, &event("orders", "x", Some("3"))).await;
    assert_eq!(
        res.unwrap(),
        HandlerOutcome::Skipped {
            reason: "No handler for source=orders event_type=x v=3".into()
        }
    );
}

#[tokio::test]
async fn unmatched_retry_is_uncounted() {
    let r = Router::<Log>::new().unmatched(UnmatchedPolicy::Retry);
    let (res, _) = run(&r, &event("orders", "x", None)).await;
    assert_eq!(
        res.unwrap(),
        HandlerOutcome::Retry {
            error: "No handler for source=orders event_type=x v=none".into(),
            counted: false,
            retry_at: None,
        }
    );
}

struct Deps {
    calls: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

struct Recorder {
    label: &'static str,
}

impl RouteHandler<Log, Deps> for Recorder {
    async fn handle(&self, event: &InboxEvent, conn: &mut Log, state: &Deps) -> HandlerResult {
        state.calls.fetch_add(1, Ordering::SeqCst);
        state
            .seen
            .lock()
            .unwrap()
            .push(format!("{}:{}", self.label, event.message_id));
        conn.0.push(self.label.to_owned());
        Ok(HandlerOutcome::Completed)
    }
}

#[tokio::test]
async fn trait_handlers_and_closures_share_typed_state() {
    let deps = Deps {
        calls: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    };
    let mut r = Router::<Log, Deps>::with_state(deps);
    r.register("a", "s", Recorder { label: "trait" })
        .unwrap()
        .register_version("a", "s", "2", Recorder { label: "trait-v2" })
        .unwrap()
        .route("b", "s", |_e, conn, deps| {
            Box::pin(async move {
                deps.calls.fetch_add(10, Ordering::SeqCst);
                conn.0.push("closure".into());
                Ok(HandlerOutcome::Completed)
            })
        })
        .unwrap();
    let (_, log) = run(&r, &event("s", "a", None)).await;
    assert_eq!(log, ["trait"]);
    let (_, log) = run(&r, &event("s", "a", Some("2"))).await;
    assert_eq!(log, ["trait-v2"]);
    let (_, log) = run(&r, &event("s", "b", None)).await;
    assert_eq!(log, ["closure"]);
    assert_eq!(r.state().calls.load(Ordering::SeqCst), 12);
    assert_eq!(
        *r.state().seen.lock().unwrap(),
        ["trait:msg-1", "trait-v2:msg-1"]
    );
}

#[tokio::test]
async fn plain_handlers_can_be_registered() {
    let mut r = Router::<Log>::new();
    r.register_handler(
        "t",
        "s",
        crate::handler_fn(|_e: &InboxEvent, log: &mut Log| {
            Box::pin(async move {
                log.0.push("plain".into());
                Ok(HandlerOutcome::skipped("not ours"))
            })
        }),
    )
    .unwrap();
    let (res, log) = run(&r, &event("s", "t", None)).await;
    assert_eq!(res.unwrap(), HandlerOutcome::skipped("not ours"));
    assert_eq!(log, ["plain"]);
}

#[tokio::test]
async fn handler_errors_and_outcomes_pass_through_unchanged() {
    let mut r = Router::<Log>::new();
    r.route("t", "s", |_e, _c, _s| {
        Box::pin(async { Err(HandlerError::transient("db busy")) })
    })
    .unwrap();
    let (res, _) = run(&r, &event("s", "t", None)).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind, FailureKind::Transient);
    assert_eq!(err.message, "db busy");
}

fn strip_env(s: &str) -> String {
    s.trim_start_matches("prod.")
        .trim_start_matches("staging.")
        .to_owned()
}

#[tokio::test]
async fn source_normalizer_applies_on_registration_and_dispatch() {
    let mut r = Router::<Log>::new().source_normalizer(strip_env).unwrap();
    r.route("t", "prod.orders", tag("orders")).unwrap();
    assert_eq!(r.sources().collect::<Vec<_>>(), ["orders"]);
    assert!(r.has_route("t", "staging.orders", None));
    let (_, log) = run(&r, &event("staging.orders", "t", None)).await;
    assert_eq!(log, ["orders"]);
    // The unmatched message names the normalised source that was looked up.
    let (res, _) = run(&r, &event("prod.payments", "t", None)).await;
    assert_eq!(
        res.unwrap_err().message,
        "No handler for source=payments event_type=t v=none"
    );
    // Duplicates are detected after normalisation.
    assert!(matches!(
        r.route("t", "staging.orders", tag("again")),
        Err(RouterError::AlreadyRegistered { .. })
    ));
}

#[test]
fn late_normalizer_rekeys_and_detects_collisions() {
    let mut r = Router::<Log>::new();
    r.route("t", "prod.orders", tag("a")).unwrap();
    r.route_version("t", "prod.orders", "2", tag("a2")).unwrap();
    let r = r.source_normalizer(strip_env).unwrap();
    assert_eq!(
        r.routes().collect::<Vec<_>>(),
        [("t", "orders", None), ("t", "orders", Some("2"))]
    );

    let mut r = Router::<Log>::new();
    r.route("t", "prod.orders", tag("a")).unwrap();
    r.route("t", "staging.orders", tag("b")).unwrap();
    assert_eq!(
        r.source_normalizer(strip_env).err(),
        Some(RouterError::AlreadyRegistered {
            event_type: "t".into(),
            source_name: "orders".into(),
            schema_version: None,
        })
    );
}

#[test]
fn routes_are_listed_in_a_stable_order_and_debug_shows_them() {
    let mut r = Router::<Log>::new();
    r.route("b", "s2", tag("x")).unwrap();
    r.route_version("a", "s1", "1", tag("x")).unwrap();
    r.route("a", "s1", tag("x")).unwrap();
    assert_eq!(
        r.routes().collect::<Vec<_>>(),
        [("a", "s1", None), ("a", "s1", Some("1")), ("b", "s2", None)]
    );
    let dbg = format!("{r:?}");
    assert!(dbg.contains("\"s2\""), "{dbg}");
}

/// The router is a `Handler` and a `DynHandler`, so it fits wherever a handler does.
#[test]
fn router_is_a_send_sync_handler() {
    fn assert_handler<H: Handler<InboxEvent, Log> + 'static>(_: &H) {}
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let r = Router::<Log, Deps>::with_state(Deps {
        calls: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    assert_handler(&r);
    assert_send_sync(&r);
    let boxed: Box<dyn crate::DynHandler<InboxEvent, Log>> = Box::new(r);
    assert_handler(&boxed);
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Counted {
    n: i64,
}

impl crate::message::Message for Counted {
    const EVENT_TYPE: &'static str = "counted";
    const AGGREGATE_TYPE: &'static str = "counter";
    const TOPIC: &'static str = "orders";
    fn aggregate_id(&self) -> uuid::Uuid {
        uuid::Uuid::nil()
    }
}

struct LogCounted;

impl crate::message::MessageHandler<Counted, Log> for LogCounted {
    async fn handle(&self, m: Counted, _e: &InboxEvent, log: &mut Log) -> HandlerResult {
        log.0.push(format!("counted {}", m.n));
        Ok(HandlerOutcome::Completed)
    }
}

#[tokio::test]
async fn a_typed_route_gets_the_payload_decoded_and_a_bad_one_is_a_counted_failure() {
    let mut router: Router<Log> = Router::new();
    router
        .register_message::<Counted>("orders", LogCounted)
        .unwrap();
    assert!(router.has_route("counted", "orders", None));
    let (r, log) = run(&router, &event("orders", "counted", None)).await;
    assert_eq!(r.unwrap(), HandlerOutcome::Completed);
    assert_eq!(log, vec!["counted 1".to_owned()]);
    let bad = InboxEvent::builder("msg-2", "group", "orders", "counted")
        .payload(json!({"n": "one"}))
        .build()
        .unwrap();
    let (r, log) = run(&router, &bad).await;
    assert_eq!(r.unwrap_err().kind, FailureKind::Permanent);
    assert!(log.is_empty());
}
