//! Turning rows into events and events into bound column arrays.

use chrono::{DateTime, Utc};
use omnibox_core::error::{StoreError, ValidationError};
use omnibox_core::model::{
    Event, EventCommon, EventStatus, Headers, InboxEvent, InboxRecord, Limits, OutboxEvent,
    OutboxRecord,
};
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use uuid::Uuid;

use crate::config::{TableNames, Tables};
use crate::error::ResultExt;

/// A bound query.
pub(crate) type PgQuery<'q> = Query<'q, sqlx::Postgres, PgArguments>;

mod sealed {
    pub trait Sealed {}
    impl Sealed for omnibox_core::model::OutboxEvent {}
    impl Sealed for omnibox_core::model::InboxEvent {}
}

/// An event kind this crate can store ([`OutboxEvent`] or [`InboxEvent`]). Sealed.
pub trait PgEvent: Event + sealed::Sealed {
    /// Kind-specific columns with their array types, in insert order.
    #[doc(hidden)]
    const EXTRA: &'static [(&'static str, &'static str)];
    /// The column holding the route (`topic` / `source`).
    #[doc(hidden)]
    const ROUTE: &'static str;
    /// The table names of this kind.
    #[doc(hidden)]
    fn names(tables: &Tables) -> &TableNames;
    /// Decode a row.
    #[doc(hidden)]
    fn from_row(row: &PgRow, limits: &Limits) -> Result<Self, StoreError>;
    /// Bind the kind-specific column arrays.
    #[doc(hidden)]
    fn bind_extra<'q>(q: PgQuery<'q>, events: &[Self]) -> PgQuery<'q>;
}

fn invalid(id: Uuid, field: &'static str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidRow {
        id,
        source: ValidationError::OutOfRange {
            field,
            reason: reason.into(),
        },
    }
}

fn u32_col(row: &PgRow, id: Uuid, name: &'static str) -> Result<u32, StoreError> {
    let v: i32 = row.try_get(name).op("decode row")?;
    u32::try_from(v).map_err(|_| invalid(id, name, "must not be negative"))
}

fn common_from_row(row: &PgRow) -> Result<EventCommon, StoreError> {
    let id: Uuid = row.try_get("id").op("decode row")?;
    let payload = match row
        .try_get::<serde_json::Value, _>("payload")
        .op("decode row")?
    {
        serde_json::Value::Object(m) => m,
        _ => {
            return Err(StoreError::InvalidRow {
                id,
                source: ValidationError::PayloadNotObject {
                    found: "non-object JSON",
                },
            });
        }
    };
    let headers: Option<serde_json::Value> = row.try_get("headers").op("decode row")?;
    let headers = match headers {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(m)) => {
            let mut h = Headers::new();
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) => {
                        h.insert(k, s);
                    }
                    _ => return Err(invalid(id, "headers", "header values must be strings")),
                }
            }
            (!h.is_empty()).then_some(h)
        }
        Some(_) => return Err(invalid(id, "headers", "must be a JSON object")),
    };
    let status: String = row.try_get("status").op("decode row")?;
    let status: EventStatus = status
        .parse()
        .map_err(|e: omnibox_core::model::UnknownStatus| invalid(id, "status", e.to_string()))?;
    let created_at: DateTime<Utc> = row.try_get("created_at").op("decode row")?;
    let mut c = EventCommon::new(
        row.try_get("event_type").op("decode row")?,
        payload,
        created_at,
        u32_col(row, id, "max_attempts")?,
    );
    c.id = id;
    c.headers = headers;
    c.trace_id = row.try_get("trace_id").op("decode row")?;
    c.idempotency_key = row.try_get("idempotency_key").op("decode row")?;
    c.correlation_id = row.try_get("correlation_id").op("decode row")?;
    c.causation_id = row.try_get("causation_id").op("decode row")?;
    c.schema_version = row.try_get("schema_version").op("decode row")?;
    c.status = status;
    c.attempts_made = u32_col(row, id, "attempts_made")?;
    c.last_error = row.try_get("last_error").op("decode row")?;
    c.scheduled_at = row.try_get("scheduled_at").op("decode row")?;
    c.completed_at = row.try_get("completed_at").op("decode row")?;
    c.locked_at = row.try_get("locked_at").op("decode row")?;
    c.locked_by = row.try_get("locked_by").op("decode row")?;
    Ok(c)
}

impl PgEvent for OutboxEvent {
    const EXTRA: &'static [(&'static str, &'static str)] = &[
        ("aggregate_type", "text[]"),
        ("aggregate_id", "uuid[]"),
        ("topic", "text[]"),
        ("partition_key", "text[]"),
    ];
    const ROUTE: &'static str = "topic";

    fn names(tables: &Tables) -> &TableNames {
        &tables.outbox
    }

    fn from_row(row: &PgRow, limits: &Limits) -> Result<Self, StoreError> {
        let common = common_from_row(row)?;
        let id = common.id;
        let record = OutboxRecord::new(
            common,
            row.try_get("aggregate_type").op("decode row")?,
            row.try_get("aggregate_id").op("decode row")?,
            row.try_get("topic").op("decode row")?,
            row.try_get("partition_key").op("decode row")?,
        );
        OutboxEvent::from_record(record, limits, true)
            .map_err(|source| StoreError::InvalidRow { id, source })
    }

    fn bind_extra<'q>(q: PgQuery<'q>, events: &[Self]) -> PgQuery<'q> {
        q.bind(
            events
                .iter()
                .map(|e| e.aggregate_type.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.aggregate_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.topic.clone()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.partition_key.clone())
                .collect::<Vec<_>>(),
        )
    }
}

impl PgEvent for InboxEvent {
    const EXTRA: &'static [(&'static str, &'static str)] = &[
        ("message_id", "text[]"),
        ("consumer_group", "text[]"),
        ("source", "text[]"),
    ];
    const ROUTE: &'static str = "source";

    fn names(tables: &Tables) -> &TableNames {
        &tables.inbox
    }

    fn from_row(row: &PgRow, limits: &Limits) -> Result<Self, StoreError> {
        let common = common_from_row(row)?;
        let id = common.id;
        let record = InboxRecord::new(
            common,
            row.try_get("message_id").op("decode row")?,
            row.try_get("consumer_group").op("decode row")?,
            row.try_get("source").op("decode row")?,
        );
        InboxEvent::from_record(record, limits, true)
            .map_err(|source| StoreError::InvalidRow { id, source })
    }

    fn bind_extra<'q>(q: PgQuery<'q>, events: &[Self]) -> PgQuery<'q> {
        q.bind(
            events
                .iter()
                .map(|e| e.message_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.consumer_group.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.source.clone()).collect::<Vec<_>>())
    }
}

/// Common columns in insert order, with their array types.
pub(crate) const COMMON: &[(&str, &str)] = &[
    ("id", "uuid[]"),
    ("event_type", "text[]"),
    ("payload", "text[]"),
    ("headers", "text[]"),
    ("trace_id", "text[]"),
    ("idempotency_key", "text[]"),
    ("correlation_id", "text[]"),
    ("causation_id", "text[]"),
    ("schema_version", "text[]"),
    ("status", "text[]"),
    ("attempts_made", "int4[]"),
    ("max_attempts", "int4[]"),
    ("last_error", "text[]"),
    ("scheduled_at", "timestamptz[]"),
    ("completed_at", "timestamptz[]"),
    ("locked_at", "timestamptz[]"),
    ("locked_by", "text[]"),
    ("created_at", "timestamptz[]"),
];

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Bind the common column arrays.
pub(crate) fn bind_common<'q, E: Event>(q: PgQuery<'q>, events: &[E]) -> PgQuery<'q> {
    let c = || events.iter().map(|e| e.common());
    let headers = |h: &Option<Headers>| {
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| serde_json::to_string(h).unwrap_or_else(|_| "{}".to_owned()))
    };
    q.bind(c().map(|c| c.id).collect::<Vec<_>>())
        .bind(c().map(|c| c.event_type.clone()).collect::<Vec<_>>())
        .bind(
            c().map(|c| serde_json::Value::Object(c.payload.clone()).to_string())
                .collect::<Vec<_>>(),
        )
        .bind(c().map(|c| headers(&c.headers)).collect::<Vec<_>>())
        .bind(c().map(|c| c.trace_id.clone()).collect::<Vec<_>>())
        .bind(c().map(|c| c.idempotency_key.clone()).collect::<Vec<_>>())
        .bind(c().map(|c| c.correlation_id.clone()).collect::<Vec<_>>())
        .bind(c().map(|c| c.causation_id.clone()).collect::<Vec<_>>())
        .bind(c().map(|c| c.schema_version.clone()).collect::<Vec<_>>())
        .bind(
            c().map(|c| c.status.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(c().map(|c| to_i32(c.attempts_made)).collect::<Vec<_>>())
        .bind(c().map(|c| to_i32(c.max_attempts)).collect::<Vec<_>>())
        .bind(c().map(|c| c.last_error.clone()).collect::<Vec<_>>())
        .bind(c().map(|c| c.scheduled_at).collect::<Vec<_>>())
        .bind(c().map(|c| c.completed_at).collect::<Vec<_>>())
        .bind(c().map(|c| c.locked_at).collect::<Vec<_>>())
        .bind(c().map(|c| c.locked_by.clone()).collect::<Vec<_>>())
        .bind(c().map(|c| c.created_at).collect::<Vec<_>>())
}
