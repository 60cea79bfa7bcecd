//! The wire format, pinned to omni-box 0.3.1's (§8, §9 of the reference). The byte-level
//! comparison with the real Python library lives in `tests/compat_wire.rs`.

use chrono::TimeZone;
use serde_json::json;
use uuid::Uuid;

use super::*;

const ID: &str = "0190f5b2-7c1e-7a3b-9d4e-0000000000aa";
const AGG: &str = "7d9f5b4e-1c2a-4b3d-8e9f-0a1b2c3d4e5f";

fn at(micros: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 0, 53, 3)
        .unwrap()
        .with_nanosecond(micros * 1000)
        .unwrap()
}

fn builder() -> crate::model::OutboxEventBuilder {
    OutboxEvent::builder(
        "order",
        AGG.parse().unwrap(),
        "order.placed",
        "orders",
        "customer-7",
    )
    .id(ID.parse().unwrap())
    .created_at(at(435_990))
    .payload(json!({"b": 1, "a": {"z": [1, 2], "y": null}}))
}

fn text(c: &dyn Converter, e: &OutboxEvent) -> String {
    String::from_utf8(c.encode(e)).unwrap()
}

#[test]
fn raw_converter_sends_the_payload_in_its_key_order() {
    let e = builder().build().unwrap();
    assert_eq!(
        text(&RawConverter, &e),
        r#"{"b":1,"a":{"z":[1,2],"y":null}}"#
    );
}

#[test]
fn schema_versioned_converter_keeps_a_null_version() {
    let e = builder().build().unwrap();
    assert_eq!(
        text(&SchemaVersionedConverter, &e),
        r#"{"schema_version":null,"payload":{"b":1,"a":{"z":[1,2],"y":null}}}"#
    );
    let e = builder().schema_version("2.0").build().unwrap();
    assert_eq!(
        text(&SchemaVersionedConverter, &e),
        r#"{"schema_version":"2.0","payload":{"b":1,"a":{"z":[1,2],"y":null}}}"#
    );
}

#[test]
fn envelope_without_optional_ids() {
    let e = builder().build().unwrap();
    assert_eq!(
        text(&EnvelopeConverter::default(), &e),
        concat!(
            r#"{"schema_version":"1.0.0","event_type":"order.placed","aggregate_type":"order","#,
            r#""aggregate_id":"7d9f5b4e-1c2a-4b3d-8e9f-0a1b2c3d4e5f","#,
            r#""payload":{"b":1,"a":{"z":[1,2],"y":null}},"#,
            r#""timestamp":"2026-11-25T00:53:03.435990+00:00"}"#
        )
    );
}

#[test]
fn envelope_with_every_optional_id_in_reference_order() {
    let e = builder()
        .schema_version("3.1")
        .causation_id("k")
        .correlation_id("c")
        .trace_id("t")
        .build()
        .unwrap();
    let body = EnvelopeConverter::default().body(&e);
    let keys: Vec<_> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "schema_version",
            "event_type",
            "aggregate_type",
            "aggregate_id",
            "payload",
            "timestamp",
            "trace_id",
            "correlation_id",
            "causation_id"
        ]
    );
    assert_eq!(body["schema_version"], "3.1");
    assert!(text(&EnvelopeConverter::default(), &e).ends_with(
        r#""timestamp":"2026-11-25T00:53:03.435990+00:00","trace_id":"t","correlation_id":"c","causation_id":"k"}"#
    ));
}

#[test]
fn envelope_includes_only_the_ids_that_are_set() {
    let e = builder().correlation_id("c").build().unwrap();
    let body = EnvelopeConverter::default().body(&e);
    let o = body.as_object().unwrap();
    assert_eq!(o.get("correlation_id"), Some(&json!("c")));
    assert!(!o.contains_key("trace_id"));
    assert!(!o.contains_key("causation_id"));
    assert_eq!(o.len(), 7);
}

#[test]
fn envelope_default_schema_version_is_configurable() {
    let e = builder().build().unwrap();
    let c = EnvelopeConverter::with_default_schema_version("9.9.9");
    assert_eq!(c.body(&e)["schema_version"], "9.9.9");
    let e = builder().schema_version("1").build().unwrap();
    assert_eq!(c.body(&e)["schema_version"], "1");
}

#[test]
fn envelope_has_no_id_topic_key_or_headers() {
    let e = builder().header("tenant", "acme").build().unwrap();
    let body = EnvelopeConverter::default().body(&e);
    for k in ["id", "event_id", "topic", "partition_key", "headers"] {
        assert!(body.get(k).is_none(), "{k}");
    }
}

#[test]
fn timestamps_follow_python_isoformat() {
    assert_eq!(python_isoformat(at(0)), "2026-11-25T00:53:03+00:00");
    assert_eq!(python_isoformat(at(1)), "2026-11-25T00:53:03.000001+00:00");
    assert_eq!(
        python_isoformat(at(435_990)),
        "2026-11-25T00:53:03.435990+00:00"
    );
    assert_eq!(
        python_isoformat(at(999_999)),
        "2026-11-25T00:53:03.999999+00:00"
    );
    // Sub-microsecond digits are dropped, as Python datetimes have none.
    let t = at(0).with_nanosecond(123_456_789).unwrap();
    assert_eq!(python_isoformat(t), "2026-11-25T00:53:03.123456+00:00");
    let t = at(0).with_nanosecond(999).unwrap();
    assert_eq!(python_isoformat(t), "2026-11-25T00:53:03+00:00");
    let e = builder().created_at(at(0)).build().unwrap();
    assert_eq!(
        EnvelopeConverter::default().body(&e)["timestamp"],
        "2026-11-25T00:53:03+00:00"
    );
}

#[test]
fn unicode_and_escapes_are_written_like_orjson() {
    let e = builder()
        .payload(json!({"s": "é 🎉 \u{0} \u{1f} \u{7f} \u{2028} \" \\ / \n\t\r\u{8}\u{c}"}))
        .build()
        .unwrap();
    assert_eq!(
        text(&RawConverter, &e),
        "{\"s\":\"é 🎉 \\u0000 \\u001f \u{7f} \u{2028} \\\" \\\\ / \\n\\t\\r\\b\\f\"}"
    );
}

#[test]
fn metadata_headers_add_ids_and_set_fields_only() {
    let e = builder().build().unwrap();
    let h = metadata_headers(&e);
    assert_eq!(
        h,
        Headers::from([
            ("event_id".to_owned(), ID.to_owned()),
            ("event_type".to_owned(), "order.placed".to_owned()),
        ])
    );
    let e = builder()
        .schema_version("2")
        .trace_id("t")
        .correlation_id("c")
        .causation_id("k")
        .header("tenant", "acme")
        .build()
        .unwrap();
    let h = metadata_headers(&e);
    assert_eq!(h.len(), 7);
    assert_eq!(h["tenant"], "acme");
    assert_eq!(h["schema_version"], "2");
    assert_eq!(h["trace_id"], "t");
    assert_eq!(h["correlation_id"], "c");
    assert_eq!(h["causation_id"], "k");
    // No message_id or source header: the consumer derives them from event_id and the topic.
    assert!(!h.contains_key(HEADER_MESSAGE_ID));
    assert!(!h.contains_key("source"));
}

#[test]
fn metadata_headers_overwrite_same_named_user_headers() {
    let e = builder()
        .header("event_type", "spoofed")
        .header("event_id", "spoofed")
        .header("trace_id", "user")
        .header("causation_id", "user-cause")
        .header(HEADER_TRACEPARENT, "00-abc-def-01")
        .trace_id("real")
        .build()
        .unwrap();
    let h = metadata_headers(&e);
    assert_eq!(h["event_type"], "order.placed");
    assert_eq!(h["event_id"], ID);
    assert_eq!(h["trace_id"], "real");
    // Not set on the event: the user's header stays.
    assert_eq!(h["causation_id"], "user-cause");
    assert_eq!(h[HEADER_TRACEPARENT], "00-abc-def-01");
}

// ---- parse_message -------------------------------------------------------------------

fn origin() -> MessageOrigin {
    MessageOrigin {
        source: "orders".into(),
        fallback_id: "orders:0:42".into(),
    }
}

fn hdrs(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(body: serde_json::Value, pairs: &[(&str, &str)]) -> IncomingMessage {
    parse_message(body.to_string().as_bytes(), hdrs(pairs), origin()).unwrap()
}

fn malformed(body: &[u8], pairs: &[(&str, &str)]) -> MalformedMessage {
    parse_message(body, hdrs(pairs), origin()).unwrap_err()
}

#[test]
fn message_id_prefers_message_id_then_event_id_then_fallback() {
    let b = json!({"a": 1});
    let m = parse(b.clone(), &[("event_id", "e"), ("message_id", "m")]);
    assert_eq!(m.message_id, "m");
    assert_eq!(parse(b.clone(), &[("event_id", "e")]).message_id, "e");
    assert_eq!(parse(b.clone(), &[]).message_id, "orders:0:42");
    // A blank header counts as absent.
    let m = parse(b, &[("message_id", " "), ("event_id", "e")]);
    assert_eq!(m.message_id, "e");
}

#[test]
fn event_type_prefers_header_then_body_then_topic() {
    let m = parse(
        json!({"event_type": "body", "a": 1}),
        &[("event_type", "hdr")],
    );
    assert_eq!(m.event_type, "hdr");
    assert_eq!(
        parse(json!({"event_type": "body", "a": 1}), &[]).event_type,
        "body"
    );
    assert_eq!(
        parse(json!({"event_type": "  ", "a": 1}), &[]).event_type,
        "orders"
    );
    assert_eq!(
        parse(json!({"event_type": 7, "a": 1}), &[]).event_type,
        "orders"
    );
    assert_eq!(parse(json!({"a": 1}), &[]).event_type, "orders");
    // The body's event_type is read before envelope unwrapping.
    let m = parse(
        json!({"event_type": "env", "payload": {"event_type": "inner"}}),
        &[],
    );
    assert_eq!(m.event_type, "env");
}

#[test]
fn source_prefers_source_then_source_service_then_topic() {
    let b = json!({"a": 1});
    let m = parse(b.clone(), &[("source", "s"), ("source_service", "ss")]);
    assert_eq!(m.source, "s");
    assert_eq!(parse(b.clone(), &[("source_service", "ss")]).source, "ss");
    assert_eq!(parse(b, &[]).source, "orders");
}

#[test]
fn a_plain_object_is_the_payload_and_metadata_comes_from_headers_only() {
    let m = parse(
        json!({"trace_id": "in-body", "schema_version": "9", "x": 1}),
        &[("correlation_id", "c")],
    );
    assert_eq!(
        serde_json::Value::Object(m.payload.clone()),
        json!({"trace_id": "in-body", "schema_version": "9", "x": 1})
    );
    assert_eq!(m.trace_id, None);
    assert_eq!(m.schema_version, None);
    assert_eq!(m.correlation_id.as_deref(), Some("c"));
    // Every header is kept.
    assert_eq!(m.headers, hdrs(&[("correlation_id", "c")]));
}

#[test]
fn an_envelope_is_unwrapped_with_headers_beating_body_metadata() {
    let body = json!({
        "schema_version": "3",
        "event_type": "t",
        "payload": {"a": 1},
        "trace_id": "tb",
        "correlation_id": "cb",
        "causation_id": null,
    });
    let m = parse(body.clone(), &[("schema_version", "4"), ("trace_id", "th")]);
    assert_eq!(serde_json::Value::Object(m.payload), json!({"a": 1}));
    assert_eq!(m.schema_version.as_deref(), Some("4"));
    assert_eq!(m.trace_id.as_deref(), Some("th"));
    assert_eq!(m.correlation_id.as_deref(), Some("cb"));
    assert_eq!(m.causation_id, None);
    // Without headers, everything comes from the body.
    let m = parse(body, &[]);
    assert_eq!(m.schema_version.as_deref(), Some("3"));
    assert_eq!(m.trace_id.as_deref(), Some("tb"));
    // A blank header falls back to the body, like an absent one.
    let m = parse(
        json!({"payload": {"a": 1}, "trace_id": "tb"}),
        &[("trace_id", " ")],
    );
    assert_eq!(m.trace_id.as_deref(), Some("tb"));
}

#[test]
fn what_our_converters_send_parses_back() {
    let e = builder()
        .schema_version("2")
        .trace_id("t")
        .correlation_id("c")
        .causation_id("k")
        .build()
        .unwrap();
    let converters: [&dyn Converter; 3] = [
        &RawConverter,
        &SchemaVersionedConverter,
        &EnvelopeConverter::default(),
    ];
    for c in converters {
        let m = parse_message(&c.encode(&e), metadata_headers(&e), origin()).unwrap();
        assert_eq!(m.message_id, ID);
        assert_eq!(m.event_type, "order.placed");
        assert_eq!(m.payload, e.common.payload);
        assert_eq!(m.schema_version.as_deref(), Some("2"));
        assert_eq!(m.trace_id.as_deref(), Some("t"));
        assert_eq!(m.correlation_id.as_deref(), Some("c"));
        assert_eq!(m.causation_id.as_deref(), Some("k"));
        assert_eq!(Uuid::parse_str(&m.message_id).unwrap(), e.common.id);
    }
}

#[test]
fn malformed_messages_keep_body_headers_and_ids() {
    let cases: [(&[u8], EnvelopeError); 8] = [
        (b"", EnvelopeError::EmptyBody),
        (b" \n\t", EnvelopeError::EmptyBody),
        (b"[1,2]", EnvelopeError::NotAnObject { found: "array" }),
        (b"\"text\"", EnvelopeError::NotAnObject { found: "string" }),
        (b"42", EnvelopeError::NotAnObject { found: "number" }),
        (b"null", EnvelopeError::NotAnObject { found: "null" }),
        (
            br#"{"payload":[1]}"#,
            EnvelopeError::NotAnObject { found: "array" },
        ),
        (
            br#"{"payload":{"a":1},"trace_id":5}"#,
            EnvelopeError::FieldNotString { field: "trace_id" },
        ),
    ];
    for (body, expected) in cases {
        let m = malformed(body, &[("event_id", "e-1"), ("tenant", "acme")]);
        assert_eq!(m.error, expected, "{}", String::from_utf8_lossy(body));
        assert_eq!(m.body, body);
        assert_eq!(m.message_id.as_deref(), Some("e-1"));
        assert_eq!(m.source, "orders");
        assert_eq!(m.headers, hdrs(&[("event_id", "e-1"), ("tenant", "acme")]));
    }
}

#[test]
fn more_malformed_shapes() {
    let m = malformed(b"{not json", &[]);
    assert!(
        matches!(m.error, EnvelopeError::InvalidJson(_)),
        "{:?}",
        m.error
    );
    // No id header: the broker's fallback id identifies the message.
    assert_eq!(m.message_id.as_deref(), Some("orders:0:42"));
    assert_eq!(m.body, b"{not json");
    for body in [
        &br#"{"payload":null}"#[..],
        br#"{"payload":"s"}"#,
        br#"{"payload":true}"#,
    ] {
        assert!(matches!(
            malformed(body, &[]).error,
            EnvelopeError::NotAnObject { .. }
        ));
    }
    for field in ["schema_version", "correlation_id", "causation_id"] {
        let body = format!(r#"{{"payload":{{"a":1}},"{field}":{{"x":1}}}}"#);
        assert_eq!(
            malformed(body.as_bytes(), &[]).error,
            EnvelopeError::FieldNotString {
                field: match field {
                    "schema_version" => HEADER_SCHEMA_VERSION,
                    "correlation_id" => HEADER_CORRELATION_ID,
                    _ => HEADER_CAUSATION_ID,
                }
            }
        );
    }
    // A non-string field the header already provides is not looked at.
    let m = parse_message(
        br#"{"payload":{"a":1},"trace_id":5}"#,
        hdrs(&[("trace_id", "t")]),
        origin(),
    )
    .unwrap();
    assert_eq!(m.trace_id.as_deref(), Some("t"));
}

#[test]
fn an_empty_object_parses_and_is_refused_later_by_validation() {
    // The parser only checks shape; the inbox event's payload rule refuses `{}`.
    let m = parse(json!({}), &[]);
    assert!(m.payload.is_empty());
    let built = crate::model::InboxEvent::builder(m.message_id, "g", m.source, m.event_type)
        .payload(serde_json::Value::Object(m.payload))
        .build();
    assert_eq!(
        built.unwrap_err(),
        crate::error::ValidationError::PayloadEmpty
    );
}
