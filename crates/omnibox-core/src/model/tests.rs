//! Construction and validation rules of the models (§2 of the reference).

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

use super::*;
use crate::model::limits::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap()
}

fn ob() -> OutboxEventBuilder {
    OutboxEvent::builder("order", Uuid::nil(), "order.placed", "orders", "key-1")
        .payload(json!({"a": 1}))
        .created_at(t0())
}

fn ib() -> InboxEventBuilder {
    InboxEvent::builder("msg-1", "group", "orders", "order.placed")
        .payload(json!({"a": 1}))
        .created_at(t0())
}

fn s(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

fn too_long(field: &'static str, max: usize) -> ValidationError {
    ValidationError::TooLong {
        field,
        max,
        actual: max + 1,
    }
}

// ---- defaults and stripping ----------------------------------------------------------

#[test]
fn new_events_get_reference_defaults() {
    let e = ob().build().unwrap();
    let c = &e.common;
    assert_eq!(c.status, EventStatus::Pending);
    assert_eq!(c.attempts_made, 0);
    assert_eq!(c.max_attempts, 6);
    assert_eq!(c.created_at, t0());
    assert_eq!(c.scheduled_at, t0());
    assert_eq!(c.headers, None);
    assert_eq!(c.completed_at, None);
    assert!(!c.is_locked());
    assert!(c.can_retry());
    assert_eq!(c.attempts_left(), 6);
    // A time-ordered id.
    assert_eq!(c.id.get_version_num(), 7);
    let id = Uuid::from_u128(42);
    assert_eq!(ob().id(id).build().unwrap().common.id, id);
}

#[test]
fn text_fields_are_stripped() {
    let e = OutboxEvent::builder(" order ", Uuid::nil(), "\tplaced\n", " orders ", " k ")
        .payload(json!({"a": 1}))
        .trace_id(" t ")
        .correlation_id(" c ")
        .causation_id(" k ")
        .idempotency_key(" i ")
        .schema_version(" 1.0 ")
        .build()
        .unwrap();
    assert_eq!(e.aggregate_type, "order");
    assert_eq!(e.common.event_type, "placed");
    assert_eq!(e.topic, "orders");
    assert_eq!(e.partition_key, "k");
    assert_eq!(e.common.trace_id.as_deref(), Some("t"));
    assert_eq!(e.common.correlation_id.as_deref(), Some("c"));
    assert_eq!(e.common.causation_id.as_deref(), Some("k"));
    assert_eq!(e.common.idempotency_key.as_deref(), Some("i"));
    assert_eq!(e.common.schema_version.as_deref(), Some("1.0"));
    let i = InboxEvent::builder(" m ", " g ", " s ", " t ")
        .payload(json!({"a": 1}))
        .build()
        .unwrap();
    assert_eq!(
        (
            i.message_id.as_str(),
            i.consumer_group.as_str(),
            i.source.as_str()
        ),
        ("m", "g", "s")
    );
    assert_eq!(i.common.event_type, "t");
}

#[test]
fn blank_text_fields_are_refused() {
    let blank = |field| Err(ValidationError::Blank { field });
    let b = |at: &str, et: &str, topic: &str, pk: &str| {
        OutboxEvent::builder(at, Uuid::nil(), et, topic, pk)
            .payload(json!({"a": 1}))
            .build()
    };
    assert_eq!(b(" ", "t", "t", "k"), blank("aggregate_type"));
    assert_eq!(b("a", "", "t", "k"), blank("event_type"));
    assert_eq!(b("a", "t", "\n", "k"), blank("topic"));
    assert_eq!(b("a", "t", "t", "  "), blank("partition_key"));
    assert_eq!(ob().trace_id(" ").build(), blank("trace_id"));
    assert_eq!(ob().correlation_id("").build(), blank("correlation_id"));
    assert_eq!(ob().causation_id("\t").build(), blank("causation_id"));
    assert_eq!(ob().idempotency_key(" ").build(), blank("idempotency_key"));
    assert_eq!(ob().schema_version(" ").build(), blank("schema_version"));
    let i = |m: &str, g: &str, s: &str| {
        InboxEvent::builder(m, g, s, "t")
            .payload(json!({"a": 1}))
            .build()
    };
    let iblank = |field| Err(ValidationError::Blank { field });
    assert_eq!(i(" ", "g", "s"), iblank("message_id"));
    assert_eq!(i("m", " ", "s"), iblank("consumer_group"));
    assert_eq!(i("m", "g", " "), iblank("source"));
}

// ---- exact length limits ---------------------------------------------------------------

#[test]
fn length_limits_are_exact_and_count_characters() {
    // (field, limit, builder with a value of n characters)
    type Make = fn(String) -> Result<OutboxEvent, ValidationError>;
    let cases: [(&'static str, usize, Make); 8] = [
        ("event_type", EVENT_TYPE_MAX, |v| {
            OutboxEvent::builder("a", Uuid::nil(), v, "t", "k")
                .payload(json!({"a": 1}))
                .build()
        }),
        ("aggregate_type", AGGREGATE_TYPE_MAX, |v| {
            OutboxEvent::builder(v, Uuid::nil(), "e", "t", "k")
                .payload(json!({"a": 1}))
                .build()
        }),
        ("topic", NAME_MAX, |v| {
            OutboxEvent::builder("a", Uuid::nil(), "e", v, "k")
                .payload(json!({"a": 1}))
                .build()
        }),
        ("partition_key", NAME_MAX, |v| {
            OutboxEvent::builder("a", Uuid::nil(), "e", "t", v)
                .payload(json!({"a": 1}))
                .build()
        }),
        ("trace_id", TRACE_ID_MAX, |v| ob().trace_id(v).build()),
        ("correlation_id", TRACE_ID_MAX, |v| {
            ob().correlation_id(v).build()
        }),
        ("idempotency_key", IDEMPOTENCY_KEY_MAX, |v| {
            ob().idempotency_key(v).build()
        }),
        ("schema_version", SCHEMA_VERSION_MAX, |v| {
            ob().schema_version(v).build()
        }),
    ];
    for (field, max, make) in cases {
        assert!(make(s('x', max)).is_ok(), "{field} at {max}");
        // Multi-byte characters count once.
        assert!(make(s('é', max)).is_ok(), "{field} at {max} chars");
        let err = make(s('x', max + 1)).unwrap_err();
        assert_eq!(err, too_long(field, max));
    }
    assert_eq!(ob().causation_id(s('x', 64)).build().map(|_| ()), Ok(()));
    assert_eq!(
        ob().causation_id(s('x', 65)).build(),
        Err(too_long("causation_id", 64))
    );
    for (field, make) in [
        (
            "message_id",
            (|v| InboxEvent::builder(v, "g", "s", "t")) as fn(String) -> InboxEventBuilder,
        ),
        ("consumer_group", |v| InboxEvent::builder("m", v, "s", "t")),
        ("source", |v| InboxEvent::builder("m", "g", v, "t")),
    ] {
        assert!(make(s('x', 255)).payload(json!({"a": 1})).build().is_ok());
        assert_eq!(
            make(s('x', 256)).payload(json!({"a": 1})).build(),
            Err(too_long(field, 255))
        );
    }
    // Surrounding whitespace does not count.
    assert!(ob().trace_id(format!("  {}  ", s('x', 64))).build().is_ok());
}

// ---- payload -----------------------------------------------------------------------------

#[test]
fn payload_rules() {
    assert_eq!(
        ob().payload(json!({})).build(),
        Err(ValidationError::PayloadEmpty)
    );
    for (v, found) in [
        (json!([1]), "array"),
        (json!("s"), "string"),
        (json!(1), "number"),
        (json!(true), "boolean"),
        (Value::Null, "null"),
    ] {
        assert_eq!(
            ob().payload(v).build(),
            Err(ValidationError::PayloadNotObject { found })
        );
    }
    // No payload given at all.
    assert_eq!(
        OutboxEvent::builder("a", Uuid::nil(), "e", "t", "k").build(),
        Err(ValidationError::PayloadNotObject { found: "null" })
    );
    // Not serialisable: a map with non-string keys.
    let bad: std::collections::BTreeMap<(i32, i32), i32> = [((1, 2), 3)].into();
    assert!(matches!(
        ob().payload(bad).build(),
        Err(ValidationError::PayloadNotSerializable(_))
    ));
    // Any serialisable struct is fine.
    #[derive(serde::Serialize)]
    struct Order {
        id: u32,
    }
    assert_eq!(
        ob().payload(Order { id: 7 })
            .build()
            .unwrap()
            .common
            .payload["id"],
        7
    );
}

#[test]
fn payload_size_limit_is_exact_on_the_compact_encoding() {
    // {"a":"xxx"} is 8 bytes of framing plus the string.
    let limits = Limits::default().payload_max_bytes(20);
    let fits = json!({"a": s('x', 12)});
    assert_eq!(serde_json::to_vec(&fits).unwrap().len(), 20);
    assert!(ob().payload(fits).build_with(&limits).is_ok());
    assert_eq!(
        ob().payload(json!({"a": s('x', 13)})).build_with(&limits),
        Err(ValidationError::PayloadTooLarge {
            max: 20,
            actual: 21
        })
    );
    // Bytes, not characters.
    assert!(matches!(
        ob().payload(json!({"a": s('é', 7)})).build_with(&limits),
        Err(ValidationError::PayloadTooLarge { actual: 22, .. })
    ));
    // The default limit is 1 000 000 bytes.
    assert_eq!(Limits::default().payload_max_bytes, 1_000_000);
    assert!(matches!(
        ob().payload(json!({"a": s('x', 1_000_000)})).build(),
        Err(ValidationError::PayloadTooLarge { max: 1_000_000, .. })
    ));
}

// ---- headers -----------------------------------------------------------------------------

#[test]
fn header_rules_through_the_builder() {
    assert_eq!(ob().build().unwrap().common.headers, None);
    let e = ob().header(" k ", " v\tw ").build().unwrap();
    assert_eq!(e.common.headers.as_ref().unwrap()["k"], "v\tw");
    let err = |r: Result<OutboxEvent, ValidationError>| r.unwrap_err();
    assert_eq!(
        err(ob().header(" ", "v").build()),
        ValidationError::Blank {
            field: "header key"
        }
    );
    assert_eq!(
        err(ob().header("k", " ").build()),
        ValidationError::Blank {
            field: "header value"
        }
    );
    assert!(matches!(
        err(ob().header("k\tx", "v").build()),
        ValidationError::ForbiddenCharacter {
            field: "header key",
            ..
        }
    ));
    assert!(matches!(
        err(ob().header("k", "a\u{7f}").build()),
        ValidationError::ForbiddenCharacter {
            field: "header value",
            ..
        }
    ));
    assert!(matches!(
        err(ob().header("k", "a\nb").build()),
        ValidationError::ForbiddenCharacter { .. }
    ));
    assert!(ob().header(s('k', 64), "v").build().is_ok());
    assert_eq!(
        err(ob().header(s('k', 65), "v").build()),
        too_long("header key", 64)
    );
    assert!(ob().header("k", s('v', 512)).build().is_ok());
    assert_eq!(
        err(ob().header("k", s('v', 513)).build()),
        too_long("header value", 512)
    );
    assert!(matches!(
        err(ob().header("Tenant", "a").header("tenant", "b").build()),
        ValidationError::DuplicateHeader { .. }
    ));
    let many = |n: usize| (0..n).map(|i| (format!("h{i}"), "v".to_owned()));
    assert!(ob().headers(many(100)).build().is_ok());
    assert_eq!(
        err(ob().headers(many(101)).build()),
        ValidationError::TooManyHeaders {
            max: 100,
            actual: 101
        }
    );
    let i = ib().header("tenant", "acme").build().unwrap();
    assert_eq!(i.header("tenant"), Some("acme"));
    assert_eq!(i.header("other"), None);
}

// ---- schedule window -------------------------------------------------------------------

#[test]
fn schedule_window_boundaries() {
    assert!(
        ob().scheduled_at(t0() - TimeDelta::seconds(60))
            .build()
            .is_ok()
    );
    assert_eq!(
        ob().scheduled_at(t0() - TimeDelta::seconds(61)).build(),
        Err(ValidationError::ScheduledTooEarly {
            seconds_before: 61,
            skew: 60
        })
    );
    assert!(
        ob().scheduled_at(t0() + TimeDelta::days(365))
            .build()
            .is_ok()
    );
    assert_eq!(
        ob().scheduled_at(t0() + TimeDelta::days(365) + TimeDelta::seconds(1))
            .build(),
        Err(ValidationError::ScheduledTooFar {
            seconds_after: 365 * 86_400 + 1,
            max: 31_536_000
        })
    );
    let tight = Limits::default()
        .schedule_skew(Duration::ZERO)
        .schedule_max_future(Duration::from_secs(10));
    assert!(ob().scheduled_at(t0()).build_with(&tight).is_ok());
    assert!(
        ob().scheduled_at(t0() - TimeDelta::milliseconds(1))
            .build_with(&tight)
            .is_err()
    );
    assert!(
        ob().scheduled_at(t0() + TimeDelta::seconds(11))
            .build_with(&tight)
            .is_err()
    );
}

#[test]
fn max_attempts_must_be_positive() {
    assert_eq!(
        ob().max_attempts(0).build(),
        Err(ValidationError::OutOfRange {
            field: "max_attempts",
            reason: "must be at least 1".into()
        })
    );
    assert_eq!(ob().max_attempts(1).build().unwrap().common.max_attempts, 1);
    let l = Limits::default().max_attempts(9);
    assert_eq!(ob().build_with(&l).unwrap().common.max_attempts, 9);
    assert!(Limits::default().max_attempts(0).validate().is_err());
}

// ---- from_record ---------------------------------------------------------------------------

fn record() -> OutboxRecord {
    let mut payload = Payload::new();
    payload.insert("a".into(), json!(1));
    OutboxRecord::new(
        EventCommon::new("t".into(), payload, t0(), 3),
        "agg".into(),
        Uuid::nil(),
        "topic".into(),
        "key".into(),
    )
}

fn from(r: OutboxRecord) -> Result<OutboxEvent, ValidationError> {
    OutboxEvent::from_record(r, &Limits::default(), true)
}

#[test]
fn from_record_trusts_the_payload_size_only_when_asked() {
    let mut r = record();
    r.common
        .payload
        .insert("big".into(), json!(s('x', 1_000_001)));
    assert!(OutboxEvent::from_record(r.clone(), &Limits::default(), true).is_ok());
    assert!(matches!(
        OutboxEvent::from_record(r, &Limits::default(), false),
        Err(ValidationError::PayloadTooLarge { .. })
    ));
    let mut r = record();
    r.common.payload.clear();
    assert_eq!(from(r), Err(ValidationError::PayloadEmpty));
}

#[test]
fn from_record_checks_every_invariant() {
    let completion =
        |r: OutboxRecord| matches!(from(r), Err(ValidationError::CompletionInconsistent { .. }));
    let attempts =
        |r: OutboxRecord| matches!(from(r), Err(ValidationError::AttemptsInconsistent { .. }));
    let lock = |r: OutboxRecord| matches!(from(r), Err(ValidationError::LockInconsistent { .. }));

    assert!(from(record()).is_ok());

    let mut r = record();
    r.common.status = EventStatus::Completed;
    assert!(completion(r.clone()), "completed without completed_at");
    r.common.completed_at = Some(t0() - TimeDelta::milliseconds(1500));
    assert!(completion(r.clone()), "completed 1.5 s before creation");
    r.common.completed_at = Some(t0() - TimeDelta::milliseconds(900));
    assert!(from(r.clone()).is_ok(), "within the 1 s tolerance");
    r.common.attempts_made = 3;
    assert!(
        from(r).is_ok(),
        "a completed event may have spent its budget"
    );

    let mut r = record();
    r.common.completed_at = Some(t0());
    assert!(completion(r), "pending with completed_at");

    let mut r = record();
    r.common.attempts_made = 4;
    assert!(attempts(r.clone()), "attempts above the budget");
    r.common.status = EventStatus::Completed;
    r.common.completed_at = Some(t0());
    assert!(attempts(r));

    let mut r = record();
    r.common.status = EventStatus::Failed;
    r.common.attempts_made = 2;
    assert!(attempts(r.clone()), "failed with attempts left");
    r.common.attempts_made = 3;
    assert!(from(r).is_ok());

    let mut r = record();
    r.common.attempts_made = 3;
    assert!(attempts(r), "pending without attempts left");

    let mut r = record();
    r.common.locked_at = Some(t0());
    assert!(lock(r.clone()), "locked_at without locked_by");
    r.common.locked_at = None;
    r.common.locked_by = Some("w".into());
    assert!(lock(r.clone()), "locked_by without locked_at");
    r.common.locked_at = Some(t0());
    assert!(from(r.clone()).is_ok());
    r.common.status = EventStatus::Failed;
    r.common.attempts_made = 3;
    assert!(lock(r), "a failed event cannot be locked");

    let mut r = record();
    r.common.max_attempts = 0;
    assert!(matches!(from(r), Err(ValidationError::OutOfRange { .. })));

    let mut r = record();
    r.common.scheduled_at = t0() + TimeDelta::days(366);
    assert!(matches!(
        from(r),
        Err(ValidationError::ScheduledTooFar { .. })
    ));
}

#[test]
fn from_record_validates_and_strips_fields() {
    let mut r = record();
    r.common.locked_by = Some(s('w', 256));
    r.common.locked_at = Some(t0());
    assert_eq!(from(r), Err(too_long("locked_by", 255)));
    let mut r = record();
    r.topic = " topic ".into();
    assert_eq!(from(r).unwrap().topic, "topic");
    // An over-long stored error is truncated, never refused.
    let mut r = record();
    r.common.last_error = Some(s('e', 5000));
    let e = from(r).unwrap();
    let err = e.common.last_error.as_deref().unwrap();
    assert!(err.len() <= LAST_ERROR_MAX_BYTES);
    assert!(err.ends_with(TRUNCATION_SUFFIX));
}

#[test]
fn records_round_trip_through_serde() {
    let e = ob()
        .header("h", "v")
        .trace_id("t")
        .idempotency_key("i")
        .build()
        .unwrap();
    let text = serde_json::to_string(&e).unwrap();
    let back: OutboxRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, e.record());
    let again = OutboxEvent::from_record(back, &Limits::default(), true).unwrap();
    assert_eq!(again, e);
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["status"], "pending");
    assert_eq!(value["topic"], "orders");
}

#[test]
fn inbox_helpers() {
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct P {
        a: u32,
    }
    let e = ib().build().unwrap();
    assert_eq!(e.payload_as::<P>().unwrap(), P { a: 1 });
    assert!(e.payload_as::<Vec<u8>>().is_err());
    assert_eq!(e.route(), "orders");
    assert_eq!(e.ordering_key(), None);
    let o = ob().build().unwrap();
    assert_eq!(o.ordering_key(), Some(("orders", "key-1")));
    assert_eq!(o.route(), "orders");
    assert_eq!(OutboxEvent::KIND.as_str(), "outbox");
    assert_eq!(InboxEvent::KIND.as_str(), "inbox");
}

// ---- status and worker ids ------------------------------------------------------------------

#[test]
fn status_wire_values() {
    for (s, v) in [
        (EventStatus::Pending, "pending"),
        (EventStatus::Completed, "completed"),
        (EventStatus::Failed, "failed"),
    ] {
        assert_eq!(s.as_str(), v);
        assert_eq!(s.to_string(), v);
        assert_eq!(v.parse::<EventStatus>().unwrap(), s);
        assert_eq!(serde_json::to_value(s).unwrap(), json!(v));
    }
    assert_eq!(
        "PENDING".parse::<EventStatus>(),
        Err(UnknownStatus("PENDING".into()))
    );
}

#[test]
fn worker_id_rules() {
    assert_eq!(
        WorkerId::new(" relay-1.eu/a:9 ").unwrap().as_str(),
        "relay-1.eu/a:9"
    );
    assert_eq!(
        WorkerId::new("   "),
        Err(ValidationError::Blank { field: "worker_id" })
    );
    assert!(WorkerId::new(s('w', 255)).is_ok());
    assert_eq!(WorkerId::new(s('w', 256)), Err(too_long("worker_id", 255)));
    for bad in ["a b", "a_b", "é", "a\tb", "a@b"] {
        assert!(
            matches!(
                WorkerId::new(bad),
                Err(ValidationError::ForbiddenCharacter { .. })
            ),
            "{bad:?}"
        );
    }
    let g = WorkerId::generate("relay").unwrap();
    let parts: Vec<_> = g.as_str().split(':').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "relay");
    assert_eq!(parts[1], std::process::id().to_string());
    assert_eq!(parts[2].len(), 8);
    assert_eq!(g.to_string(), g.as_str());
    assert!(WorkerId::generate("bad prefix").is_err());
}
