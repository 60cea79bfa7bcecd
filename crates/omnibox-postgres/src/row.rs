//! Turning rows into events and events into bound column arrays.

use chrono::{DateTime, Utc};
use omnibox_core::error::{StoreError, ValidationError};
use omnibox_core::model::{
    Event, EventCommon, EventStatus, Headers, InboxEvent, InboxRecord, Limits, OutboxEvent,
    OutboxRecord, Payload,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column, Row};
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
    fn from_row(row: &PgRow, limits: &Limits) -> Result<Self, StoreError> {
        decode_row(row, limits)
    }
    /// Decode a row of a result set whose columns `layout` has resolved, cloning `blank`
    /// for the fields.
    #[doc(hidden)]
    fn decode(
        row: &PgRow,
        layout: &Layout,
        blank: &Blank,
        limits: &Limits,
    ) -> Result<Self, StoreError>;
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

/// Positions of the event columns in one result set, resolved once by name from its
/// first row (every row of a result set shares the same columns), so that decoding a
/// batch looks each column up by position instead of hashing its name on every row.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    common: [usize; COMMON.len()],
    extra: [usize; MAX_EXTRA],
}

/// The most kind-specific columns a kind has.
const MAX_EXTRA: usize = 4;

// Positions in `COMMON` (checked by a unit test).
const ID: usize = 0;
const EVENT_TYPE: usize = 1;
const PAYLOAD: usize = 2;
const HEADERS: usize = 3;
const TRACE_ID: usize = 4;
const IDEMPOTENCY_KEY: usize = 5;
const CORRELATION_ID: usize = 6;
const CAUSATION_ID: usize = 7;
const SCHEMA_VERSION: usize = 8;
const STATUS: usize = 9;
const ATTEMPTS_MADE: usize = 10;
const MAX_ATTEMPTS: usize = 11;
const LAST_ERROR: usize = 12;
const SCHEDULED_AT: usize = 13;
const COMPLETED_AT: usize = 14;
const LOCKED_AT: usize = 15;
const LOCKED_BY: usize = 16;
const CREATED_AT: usize = 17;

impl Layout {
    /// Resolve the columns of `E` in `row`'s result set.
    pub(crate) fn resolve<E: PgEvent>(row: &PgRow) -> Result<Self, StoreError> {
        let at = |name: &str| -> Result<usize, StoreError> {
            Ok(row.try_column(name).op("decode row")?.ordinal())
        };
        let mut common = [0; COMMON.len()];
        for (slot, (name, _)) in common.iter_mut().zip(COMMON) {
            *slot = at(name)?;
        }
        let mut extra = [0; MAX_EXTRA];
        for (slot, (name, _)) in extra.iter_mut().zip(E::EXTRA) {
            *slot = at(name)?;
        }
        Ok(Self { common, extra })
    }

    fn get<'r, T>(&self, row: &'r PgRow, field: usize) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(self.common[field]).op("decode row")
    }

    fn get_extra<'r, T>(&self, row: &'r PgRow, field: usize) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(self.extra[field]).op("decode row")
    }

    fn u32(&self, row: &PgRow, id: Uuid, field: usize) -> Result<u32, StoreError> {
        let v: i32 = self.get(row, field)?;
        u32::try_from(v).map_err(|_| invalid(id, COMMON[field].0, "must not be negative"))
    }
}

/// A blank [`EventCommon`] that decoding clones and then overwrites field by field (one
/// clone of empty fields is cheaper than [`EventCommon::new`], which draws a fresh
/// UUIDv7 from the OS random source for every row only to have it replaced).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Blank(EventCommon);

impl Blank {
    pub(crate) fn new() -> Self {
        Self(EventCommon::new(
            String::new(),
            Payload::new(),
            DateTime::<Utc>::UNIX_EPOCH,
            1,
        ))
    }
}

fn headers_from(
    id: Uuid,
    headers: Option<serde_json::Value>,
) -> Result<Option<Headers>, StoreError> {
    match headers {
        None | Some(serde_json::Value::Null) => Ok(None),
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
            Ok((!h.is_empty()).then_some(h))
        }
        Some(_) => Err(invalid(id, "headers", "must be a JSON object")),
    }
}

fn common_from_row(row: &PgRow, l: &Layout, blank: &Blank) -> Result<EventCommon, StoreError> {
    let id: Uuid = l.get(row, ID)?;
    let payload = match l.get::<serde_json::Value>(row, PAYLOAD)? {
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
    let headers = headers_from(id, l.get(row, HEADERS)?)?;
    let status: EventStatus = l
        .get::<&str>(row, STATUS)?
        .parse()
        .map_err(|e: omnibox_core::model::UnknownStatus| invalid(id, "status", e.to_string()))?;
    // Every field is assigned below; the blank only saves building a fresh value.
    let mut c = blank.0.clone();
    c.id = id;
    c.event_type = l.get(row, EVENT_TYPE)?;
    c.payload = payload;
    c.headers = headers;
    c.trace_id = l.get(row, TRACE_ID)?;
    c.idempotency_key = l.get(row, IDEMPOTENCY_KEY)?;
    c.correlation_id = l.get(row, CORRELATION_ID)?;
    c.causation_id = l.get(row, CAUSATION_ID)?;
    c.schema_version = l.get(row, SCHEMA_VERSION)?;
    c.status = status;
    c.attempts_made = l.u32(row, id, ATTEMPTS_MADE)?;
    c.max_attempts = l.u32(row, id, MAX_ATTEMPTS)?;
    c.last_error = l.get(row, LAST_ERROR)?;
    c.created_at = l.get(row, CREATED_AT)?;
    c.scheduled_at = l.get(row, SCHEDULED_AT)?;
    c.completed_at = l.get(row, COMPLETED_AT)?;
    c.locked_at = l.get(row, LOCKED_AT)?;
    c.locked_by = l.get(row, LOCKED_BY)?;
    Ok(c)
}

/// The limits a store reads rows with: its own limits without the write-side policies.
///
/// Validation on the way in protects producers and brokers from what a writer should not
/// send; the reader's job is to hand on what the table already holds. So a row is read with
/// the header count and length caps and the schedule window lifted (a writer with wider
/// limits, such as a 600-character header against the default 512, or an omni-box writer
/// configured differently, wrote it legitimately, and refusing it would wedge its key).
/// What still rejects a row is what makes it truly unusable: a payload that is not a JSON
/// object, a header value that is not a string or holds control characters, a blank topic
/// or key, an unknown status, or inconsistent attempt and lease columns. The payload size
/// is never re-checked on reads.
pub(crate) fn read_limits(limits: &Limits) -> Limits {
    let mut read = limits.clone();
    read.headers_max_count = usize::MAX;
    read.header_key_max_len = usize::MAX;
    read.header_value_max_len = usize::MAX;
    read.schedule_skew = chrono::TimeDelta::MAX;
    read.schedule_max_future = chrono::TimeDelta::MAX;
    read
}

/// A row of a result set that does not form a valid event.
#[derive(Debug)]
pub(crate) struct Undecodable {
    /// The row's id.
    pub id: Uuid,
    /// Its lease token (`locked_at`), when it has one.
    pub lease: Option<DateTime<Utc>>,
    /// Why it cannot be decoded ([`StoreError::InvalidRow`]).
    pub error: StoreError,
}

/// Decode every row of one result set on its own: rows whose data violates an event rule
/// ([`StoreError::InvalidRow`]) are returned apart, in result order, so that one bad row
/// does not fail the others. Any other error (a missing column, a column of the wrong
/// type: the table, not a row, is wrong) fails the whole result set.
pub(crate) fn decode_each<E: PgEvent>(
    rows: &[PgRow],
    limits: &Limits,
) -> Result<(Vec<E>, Vec<Undecodable>), StoreError> {
    let Some(first) = rows.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let layout = Layout::resolve::<E>(first)?;
    let blank = Blank::new();
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match E::decode(row, &layout, &blank, limits) {
            Ok(e) => good.push(e),
            Err(error @ StoreError::InvalidRow { .. }) => bad.push(Undecodable {
                id: layout.get(row, ID)?,
                lease: layout.get(row, LOCKED_AT)?,
                error,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((good, bad))
}

/// Decode every row of one result set.
pub(crate) fn decode_rows<E: PgEvent>(
    rows: &[PgRow],
    limits: &Limits,
) -> Result<Vec<E>, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let layout = Layout::resolve::<E>(first)?;
    let blank = Blank::new();
    rows.iter()
        .map(|r| E::decode(r, &layout, &blank, limits))
        .collect()
}

/// Decode one row.
pub(crate) fn decode_row<E: PgEvent>(row: &PgRow, limits: &Limits) -> Result<E, StoreError> {
    E::decode(row, &Layout::resolve::<E>(row)?, &Blank::new(), limits)
}

/// The columns every event statement returns, in a fixed order (`COMMON` then the kind's
/// `EXTRA`), each prefixed with `alias.` when one is given.
pub(crate) fn column_list(extra: &[(&str, &str)], alias: &str) -> String {
    COMMON
        .iter()
        .chain(extra)
        .map(|(n, _)| {
            if alias.is_empty() {
                (*n).to_owned()
            } else {
                format!("{alias}.{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
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

    fn decode(
        row: &PgRow,
        layout: &Layout,
        blank: &Blank,
        limits: &Limits,
    ) -> Result<Self, StoreError> {
        let common = common_from_row(row, layout, blank)?;
        let id = common.id;
        let record = OutboxRecord::new(
            common,
            layout.get_extra(row, 0)?,
            layout.get_extra(row, 1)?,
            layout.get_extra(row, 2)?,
            layout.get_extra(row, 3)?,
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

    fn decode(
        row: &PgRow,
        layout: &Layout,
        blank: &Blank,
        limits: &Limits,
    ) -> Result<Self, StoreError> {
        let common = common_from_row(row, layout, blank)?;
        let id = common.id;
        let record = InboxRecord::new(
            common,
            layout.get_extra(row, 0)?,
            layout.get_extra(row, 1)?,
            layout.get_extra(row, 2)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_positions_name_the_common_columns() {
        let named = [
            (ID, "id"),
            (EVENT_TYPE, "event_type"),
            (PAYLOAD, "payload"),
            (HEADERS, "headers"),
            (TRACE_ID, "trace_id"),
            (IDEMPOTENCY_KEY, "idempotency_key"),
            (CORRELATION_ID, "correlation_id"),
            (CAUSATION_ID, "causation_id"),
            (SCHEMA_VERSION, "schema_version"),
            (STATUS, "status"),
            (ATTEMPTS_MADE, "attempts_made"),
            (MAX_ATTEMPTS, "max_attempts"),
            (LAST_ERROR, "last_error"),
            (SCHEDULED_AT, "scheduled_at"),
            (COMPLETED_AT, "completed_at"),
            (LOCKED_AT, "locked_at"),
            (LOCKED_BY, "locked_by"),
            (CREATED_AT, "created_at"),
        ];
        assert_eq!(named.len(), COMMON.len());
        for (at, name) in named {
            assert_eq!(COMMON[at].0, name);
        }
        assert!(OutboxEvent::EXTRA.len() <= MAX_EXTRA);
        assert!(InboxEvent::EXTRA.len() <= MAX_EXTRA);
    }

    #[test]
    fn column_lists_follow_decode_order() {
        let plain = column_list(OutboxEvent::EXTRA, "");
        assert!(plain.starts_with("id, event_type, payload, headers, "));
        assert!(plain.ends_with("created_at, aggregate_type, aggregate_id, topic, partition_key"));
        assert!(!plain.contains("updated_at"));
        let aliased = column_list(InboxEvent::EXTRA, "t");
        assert!(aliased.starts_with("t.id, t.event_type, "));
        assert!(aliased.ends_with("t.message_id, t.consumer_group, t.source"));
    }
}
