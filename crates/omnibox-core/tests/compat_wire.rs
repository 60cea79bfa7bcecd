//! Wire compatibility with the Python library omni-box 0.3.1.
//!
//! The fixtures in `tests/fixtures/` were recorded from the real omni-box 0.3.1 (under
//! CPython 3.12, orjson 3.13) by `tests/fixtures/generate.py`; this test reads only those
//! committed files, so it needs no Python.
//!
//! - Producer side: for each fixed outbox event, our three converters must produce the very
//!   bytes omni-box's `KafkaEventPublisher` sends (`orjson.dumps(converter.convert(event))`)
//!   and the same headers. All bodies are compared byte for byte — floats included: serde_json
//!   and orjson both write the shortest round-trip form with a signed exponent (`1e+21`,
//!   `1e-7`, `1000000000000000.0`), `-0.0` and integers up to `u64::MAX` alike.
//!   Header *order* is not compared: omni-box sends the event's headers then the metadata
//!   headers in dict order, we send them sorted by key; Kafka consumers (ours and
//!   omni-box's) read headers into a map, so order carries no meaning.
//! - Consumer side: for each crafted Kafka record, our `parse_message` + inbox event
//!   construction must accept exactly what omni-box accepts, with equal fields, and refuse
//!   what it refuses — except the deliberate, listed divergences.

// A test crate: a broken fixture should stop the test with its name.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use omnibox_core::InboxEvent;
use omnibox_core::OutboxEvent;
use omnibox_core::envelope::{
    Converter, EnvelopeConverter, MessageOrigin, RawConverter, SchemaVersionedConverter,
    metadata_headers, parse_message,
};
use omnibox_core::model::Headers;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

const OUTBOX_FIXTURE: &str = include_str!("fixtures/wire_outbox.json");
const PARSE_FIXTURE: &str = include_str!("fixtures/wire_parse.json");

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "omni-box")]
    omni_box: String,
}

#[derive(Deserialize)]
struct OutboxFixture {
    meta: Meta,
    cases: Vec<OutboxCase>,
}

#[derive(Deserialize)]
struct OutboxCase {
    name: String,
    input: OutboxInput,
    key: String,
    headers: Vec<(String, String)>,
    bodies: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct OutboxInput {
    id: Uuid,
    aggregate_type: String,
    aggregate_id: Uuid,
    event_type: String,
    topic: String,
    partition_key: String,
    payload_json: String,
    headers: Vec<(String, String)>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    schema_version: Option<String>,
    created_at: String,
}

fn outbox_fixture() -> OutboxFixture {
    let f: OutboxFixture = serde_json::from_str(OUTBOX_FIXTURE).expect("wire_outbox.json");
    assert_eq!(f.meta.omni_box, "0.3.1");
    assert!(!f.cases.is_empty());
    f
}

fn build_outbox(input: &OutboxInput) -> OutboxEvent {
    let created_at: DateTime<Utc> = DateTime::parse_from_rfc3339(&input.created_at)
        .expect("created_at")
        .with_timezone(&Utc);
    let payload: Value = serde_json::from_str(&input.payload_json).expect("payload_json");
    let mut b = OutboxEvent::builder(
        input.aggregate_type.clone(),
        input.aggregate_id,
        input.event_type.clone(),
        input.topic.clone(),
        input.partition_key.clone(),
    )
    .id(input.id)
    .created_at(created_at)
    .payload(payload)
    .headers(input.headers.iter().cloned());
    if let Some(v) = &input.trace_id {
        b = b.trace_id(v.clone());
    }
    if let Some(v) = &input.correlation_id {
        b = b.correlation_id(v.clone());
    }
    if let Some(v) = &input.causation_id {
        b = b.causation_id(v.clone());
    }
    if let Some(v) = &input.schema_version {
        b = b.schema_version(v.clone());
    }
    b.build().expect("fixture event is valid")
}

fn converter(name: &str) -> Box<dyn Converter> {
    match name {
        "raw" => Box::new(RawConverter),
        "schema_versioned" => Box::new(SchemaVersionedConverter),
        "envelope" => Box::new(EnvelopeConverter::default()),
        "envelope_default_9" => Box::new(EnvelopeConverter::with_default_schema_version("9.9.9")),
        other => panic!("unknown converter in fixture: {other}"),
    }
}

#[test]
fn converters_produce_omnibox_bodies_byte_for_byte() {
    let fixture = outbox_fixture();
    let mut compared = 0;
    for case in &fixture.cases {
        let event = build_outbox(&case.input);
        assert_eq!(case.bodies.len(), 4, "{}", case.name);
        for (conv, expected) in &case.bodies {
            let ours = String::from_utf8(converter(conv).encode(&event)).expect("utf-8 body");
            assert_eq!(
                ours, *expected,
                "{}/{conv}: body differs from omni-box's",
                case.name
            );
            compared += 1;
        }
    }
    // 6 events x 4 converters, floats with exponents included.
    assert_eq!(compared, 24);
}

#[test]
fn metadata_headers_match_omnibox() {
    let fixture = outbox_fixture();
    for case in &fixture.cases {
        let event = build_outbox(&case.input);
        let theirs: Headers = case.headers.iter().cloned().collect();
        assert_eq!(
            theirs.len(),
            case.headers.len(),
            "{}: unique keys",
            case.name
        );
        assert_eq!(metadata_headers(&event), theirs, "{}", case.name);
        // The Kafka key is the partition key.
        assert_eq!(event.partition_key, case.key);
    }
}

#[test]
fn header_override_case_really_overrides() {
    // Guard against a fixture that would not exercise the overwrite rule.
    let fixture = outbox_fixture();
    let case = fixture
        .cases
        .iter()
        .find(|c| c.name == "header_override")
        .expect("header_override case");
    let h: Headers = case.headers.iter().cloned().collect();
    assert_eq!(h["event_type"], "user.renamed");
    assert_eq!(h["event_id"], case.input.id.to_string());
    assert_eq!(h["trace_id"], "real-trace");
    // No causation id on the event: the user's header travels unchanged.
    assert_eq!(h["causation_id"], "user-cause");
}

#[derive(Deserialize)]
struct ParseFixture {
    meta: Meta,
    consumer_group: String,
    cases: Vec<ParseCase>,
}

#[derive(Deserialize)]
struct ParseCase {
    name: String,
    topic: String,
    partition: i32,
    offset: i64,
    body: Option<String>,
    headers: Option<Vec<(String, String)>>,
    python: PythonResult,
}

#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
enum PythonResult {
    Accepted { inbox: Box<PythonInbox> },
    Rejected { stage: String, error: String },
}

#[derive(Deserialize, Debug)]
struct PythonInbox {
    message_id: String,
    consumer_group: String,
    source: String,
    event_type: String,
    payload: Value,
    headers: Option<Headers>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    schema_version: Option<String>,
}

/// What our side makes of a record.
enum Ours {
    Accepted(Box<InboxEvent>),
    /// `parse_message` refused it (dead-lettered and acknowledged by the runner).
    Malformed(String),
    /// The parsed message does not form a valid inbox event (also dead-lettered).
    Invalid(String),
}

fn run_ours(case: &ParseCase, group: &str) -> Ours {
    // Kafka headers are read into a map, the last duplicate winning (as omni-box does).
    let headers: Headers = case.headers.iter().flatten().cloned().collect();
    // A record without a value reaches the parser as an empty body.
    let body = case.body.as_deref().unwrap_or("").as_bytes();
    let origin = MessageOrigin {
        source: case.topic.clone(),
        fallback_id: format!("{}:{}:{}", case.topic, case.partition, case.offset),
    };
    let msg = match parse_message(body, headers, origin) {
        Ok(m) => m,
        Err(malformed) => {
            assert_eq!(
                malformed.body, body,
                "{}: malformed keeps the body",
                case.name
            );
            return Ours::Malformed(malformed.error.to_string());
        }
    };
    let mut b = InboxEvent::builder(msg.message_id, group, msg.source, msg.event_type)
        .payload(Value::Object(msg.payload))
        .headers(msg.headers);
    if let Some(v) = msg.trace_id {
        b = b.trace_id(v);
    }
    if let Some(v) = msg.correlation_id {
        b = b.correlation_id(v);
    }
    if let Some(v) = msg.causation_id {
        b = b.causation_id(v);
    }
    if let Some(v) = msg.schema_version {
        b = b.schema_version(v);
    }
    match b.build() {
        Ok(e) => Ours::Accepted(Box::new(e)),
        Err(e) => Ours::Invalid(e.to_string()),
    }
}

/// Records omni-box refuses and we accept, on purpose.
///
/// - `envelope_empty_string_metadata`: an envelope whose `schema_version` is `""`. omni-box
///   copies the empty string into the inbox event, whose validation then refuses it, and
///   the record is redelivered forever (its bug 8). Our parser treats a blank metadata
///   field as absent, like a blank header, so the message is processed.
const DELIBERATE_DIVERGENCES: &[&str] = &["envelope_empty_string_metadata"];

#[test]
fn parser_agrees_with_omnibox_consumer() {
    let fixture: ParseFixture = serde_json::from_str(PARSE_FIXTURE).expect("wire_parse.json");
    assert_eq!(fixture.meta.omni_box, "0.3.1");
    let (mut accepted, mut rejected, mut diverged) = (0, 0, 0);
    for case in &fixture.cases {
        let ours = run_ours(case, &fixture.consumer_group);
        if DELIBERATE_DIVERGENCES.contains(&case.name.as_str()) {
            assert!(
                matches!(case.python, PythonResult::Rejected { .. }),
                "{}: omni-box now accepts it; drop the divergence",
                case.name
            );
            let Ours::Accepted(e) = ours else {
                panic!("{}: expected our side to accept", case.name)
            };
            assert_eq!(e.common.schema_version, None, "{}", case.name);
            diverged += 1;
            continue;
        }
        match (&case.python, ours) {
            (PythonResult::Accepted { inbox }, Ours::Accepted(e)) => {
                assert_eq!(e.message_id, inbox.message_id, "{}", case.name);
                assert_eq!(e.consumer_group, inbox.consumer_group, "{}", case.name);
                assert_eq!(e.source, inbox.source, "{}", case.name);
                assert_eq!(e.common.event_type, inbox.event_type, "{}", case.name);
                let payload = Value::Object(e.common.payload.clone());
                assert_eq!(payload, inbox.payload, "{}", case.name);
                let our_keys: Vec<_> = e.common.payload.keys().collect();
                let their_keys: Vec<_> = inbox
                    .payload
                    .as_object()
                    .expect("object payload")
                    .keys()
                    .collect();
                assert_eq!(our_keys, their_keys, "{}: payload key order", case.name);
                assert_eq!(e.common.headers, inbox.headers, "{}", case.name);
                assert_eq!(e.common.trace_id, inbox.trace_id, "{}", case.name);
                assert_eq!(
                    e.common.correlation_id, inbox.correlation_id,
                    "{}",
                    case.name
                );
                assert_eq!(e.common.causation_id, inbox.causation_id, "{}", case.name);
                assert_eq!(
                    e.common.schema_version, inbox.schema_version,
                    "{}",
                    case.name
                );
                accepted += 1;
            }
            (PythonResult::Rejected { stage, error }, Ours::Malformed(ours)) => {
                // Everything omni-box could not even decode, we refuse in the parser too.
                assert!(
                    stage == "decode" || stage == "validation",
                    "{}: unknown stage {stage}",
                    case.name
                );
                assert!(!ours.is_empty() && !error.is_empty());
                rejected += 1;
            }
            (PythonResult::Rejected { stage, .. }, Ours::Invalid(_)) => {
                assert_eq!(
                    stage, "validation",
                    "{}: omni-box refused this while decoding; so must our parser",
                    case.name
                );
                rejected += 1;
            }
            (PythonResult::Accepted { inbox }, Ours::Malformed(err) | Ours::Invalid(err)) => {
                panic!(
                    "{}: omni-box accepts it ({inbox:?}), we refuse: {err}",
                    case.name
                )
            }
            (PythonResult::Rejected { stage, error }, Ours::Accepted(e)) => {
                panic!(
                    "{}: omni-box refuses it at {stage} ({error}), we accept: {e:?}",
                    case.name
                )
            }
        }
    }
    assert_eq!(diverged, DELIBERATE_DIVERGENCES.len());
    // Guard against an emptied fixture.
    assert!(accepted >= 30, "accepted {accepted}");
    assert!(rejected >= 20, "rejected {rejected}");
}

/// The round-trip records carry what our own converters would send: a body omni-box's
/// consumer accepted is one our converter produces, so Python → Rust and Rust → Python
/// both work.
#[test]
fn published_bodies_round_trip_through_our_parser() {
    let fixture = outbox_fixture();
    for case in &fixture.cases {
        let event = build_outbox(&case.input);
        for conv in case.bodies.keys() {
            let c = converter(conv);
            let origin = MessageOrigin {
                source: event.topic.clone(),
                fallback_id: "unused".into(),
            };
            let msg = parse_message(&c.encode(&event), metadata_headers(&event), origin)
                .unwrap_or_else(|m| panic!("{}/{conv}: {:?}", case.name, m.error));
            assert_eq!(msg.message_id, event.common.id.to_string());
            assert_eq!(msg.event_type, event.common.event_type);
            assert_eq!(msg.source, event.topic);
            assert_eq!(msg.payload, event.common.payload, "{}/{conv}", case.name);
            assert_eq!(msg.trace_id, event.common.trace_id, "{}/{conv}", case.name);
            assert_eq!(msg.correlation_id, event.common.correlation_id);
            if conv.starts_with("envelope") && event.common.schema_version.is_none() {
                // The envelope carries its default version; the parser reads it back.
                assert!(msg.schema_version.is_some());
            } else {
                assert_eq!(
                    msg.schema_version, event.common.schema_version,
                    "{}/{conv}",
                    case.name
                );
            }
        }
    }
}
