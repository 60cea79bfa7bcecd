//! omnibox string headers <-> AMQP field tables.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use omnibox_core::PublishError;
use omnibox_core::model::Headers;

/// Headers as an AMQP field table; every value is a long string (`S`).
pub fn to_field_table(headers: &Headers) -> Result<FieldTable, PublishError> {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        let key = ShortString::try_new(k.as_str()).map_err(|e| {
            PublishError::permanent(format!("header key `{k}` is not a valid AMQP short string"))
                .with_source(e)
        })?;
        table.insert(key, AMQPValue::LongString(LongString::from(v.as_bytes())));
    }
    Ok(table)
}

/// Decode a received field table: strings as UTF-8 (lossy), numbers, booleans and
/// timestamps as their decimal text; empty values, void, arrays and nested tables are
/// dropped (they have no single string form).
pub fn from_field_table(table: Option<&FieldTable>) -> Headers {
    let mut headers = Headers::new();
    let Some(table) = table else {
        return headers;
    };
    for (k, v) in table {
        if let Some(text) = value_text(v).filter(|t| !t.is_empty()) {
            headers.insert(k.as_str().to_owned(), text);
        }
    }
    headers
}

fn value_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::Void => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_as_long_strings() {
        let mut h = Headers::new();
        h.insert("event_id".into(), "abc".into());
        h.insert("tenant".into(), "ünï".into());
        let table = to_field_table(&h).unwrap();
        assert!(
            table
                .inner()
                .values()
                .all(|v| matches!(v, AMQPValue::LongString(_)))
        );
        assert_eq!(from_field_table(Some(&table)), h);
    }

    #[test]
    fn foreign_values_decode_or_drop() {
        let mut t = FieldTable::default();
        t.insert("n".into(), AMQPValue::LongInt(7));
        t.insert("b".into(), AMQPValue::Boolean(true));
        t.insert("empty".into(), AMQPValue::LongString("".into()));
        t.insert(
            "nested".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        let h = from_field_table(Some(&t));
        assert_eq!(h.get("n").map(String::as_str), Some("7"));
        assert_eq!(h.get("b").map(String::as_str), Some("true"));
        assert!(!h.contains_key("empty") && !h.contains_key("nested"));
    }
}
