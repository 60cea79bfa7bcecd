//! Field validators shared by every event kind.

use serde_json::Value;

use super::limits::{Limits, TRUNCATION_SUFFIX};
use super::{Headers, Payload};
use crate::error::ValidationError;

/// Strip and check a required text field.
pub fn required(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ValidationError::Blank { field });
    }
    let len = v.chars().count();
    if len > max {
        return Err(ValidationError::TooLong {
            field,
            max,
            actual: len,
        });
    }
    Ok(v.to_owned())
}

/// Strip and check an optional text field (`None` stays `None`; blank is an error).
pub fn optional(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    value.map(|v| required(field, v, max)).transpose()
}

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Check a payload: a non-empty object whose compact JSON fits the limit.
///
/// `serde_json` cannot hold NaN or infinities, so omni-box's NaN check holds by
/// construction.
pub fn payload(value: Value, limits: &Limits) -> Result<Payload, ValidationError> {
    let map = match value {
        Value::Object(map) => map,
        other => {
            return Err(ValidationError::PayloadNotObject {
                found: json_type(&other),
            });
        }
    };
    if map.is_empty() {
        return Err(ValidationError::PayloadEmpty);
    }
    let size = encoded_len(&map)?;
    if size > limits.payload_max_bytes {
        return Err(ValidationError::PayloadTooLarge {
            max: limits.payload_max_bytes,
            actual: size,
        });
    }
    Ok(map)
}

/// Length of the compact JSON encoding, without allocating it.
pub fn encoded_len(map: &Payload) -> Result<usize, ValidationError> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    serde_json::to_writer(&mut c, map)
        .map_err(|e| ValidationError::PayloadNotSerializable(e.to_string()))?;
    Ok(c.0)
}

fn has_control(s: &str, allow_tab: bool) -> bool {
    s.chars()
        .any(|c| ((c as u32) < 32 && !(allow_tab && c == '\t')) || c as u32 == 127)
}

/// Check headers: stripped keys and values, no control characters, length limits, no
/// case-insensitive duplicates, bounded count. An empty map becomes `None`.
pub fn headers(
    input: Option<Headers>,
    limits: &Limits,
) -> Result<Option<Headers>, ValidationError> {
    let Some(input) = input else { return Ok(None) };
    if input.is_empty() {
        return Ok(None);
    }
    let mut out = Headers::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in input {
        let key = k.trim();
        if key.is_empty() {
            return Err(ValidationError::Blank {
                field: "header key",
            });
        }
        if has_control(key, false) {
            return Err(ValidationError::ForbiddenCharacter {
                field: "header key",
                reason: "control character",
            });
        }
        let klen = key.chars().count();
        if klen > limits.header_key_max_len {
            return Err(ValidationError::TooLong {
                field: "header key",
                max: limits.header_key_max_len,
                actual: klen,
            });
        }
        let value = v.trim();
        if value.is_empty() {
            return Err(ValidationError::Blank {
                field: "header value",
            });
        }
        if has_control(value, true) {
            return Err(ValidationError::ForbiddenCharacter {
                field: "header value",
                reason: "control character",
            });
        }
        let vlen = value.chars().count();
        if vlen > limits.header_value_max_len {
            return Err(ValidationError::TooLong {
                field: "header value",
                max: limits.header_value_max_len,
                actual: vlen,
            });
        }
        if !seen.insert(key.to_lowercase()) {
            return Err(ValidationError::DuplicateHeader {
                key: key.to_owned(),
            });
        }
        out.insert(key.to_owned(), value.to_owned());
    }
    if out.len() > limits.headers_max_count {
        return Err(ValidationError::TooManyHeaders {
            max: limits.headers_max_count,
            actual: out.len(),
        });
    }
    Ok(Some(out))
}

/// `s` as text a database text column accepts: NUL characters (which PostgreSQL's `text`
/// refuses) become U+FFFD. Borrowed when there is none.
pub fn without_nul(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `bytes` as text a database text column accepts: invalid UTF-8 and NUL become U+FFFD.
pub fn text_of(bytes: &[u8]) -> String {
    without_nul(&String::from_utf8_lossy(bytes)).into_owned()
}

/// Truncate an error message to at most `max_bytes` UTF-8 bytes, appending the
/// truncation suffix and never splitting a character. Blank input becomes `"unknown error"`.
/// NUL characters become U+FFFD ([`without_nul`]): an error message that quotes the poison
/// it failed on must still be recordable.
pub fn truncate_error(error: &str, max_bytes: usize) -> String {
    let cleaned = without_nul(error);
    let e = cleaned.trim();
    if e.is_empty() {
        return "unknown error".to_owned();
    }
    if e.len() <= max_bytes {
        return e.to_owned();
    }
    let suffix = TRUNCATION_SUFFIX;
    if suffix.len() >= max_bytes {
        return floor_char(e, max_bytes).to_owned();
    }
    let mut s = floor_char(e, max_bytes - suffix.len()).to_owned();
    s.push_str(suffix);
    s
}

fn floor_char(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_rules() {
        let l = Limits::default();
        assert!(payload(json!({"a": 1}), &l).is_ok());
        assert_eq!(payload(json!({}), &l), Err(ValidationError::PayloadEmpty));
        assert_eq!(
            payload(json!([1]), &l),
            Err(ValidationError::PayloadNotObject { found: "array" })
        );
        let big = json!({"a": "x".repeat(100)});
        assert!(matches!(
            payload(big, &Limits::default().payload_max_bytes(50)),
            Err(ValidationError::PayloadTooLarge { max: 50, .. })
        ));
    }

    #[test]
    fn header_rules() {
        let l = Limits::default();
        let h = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Headers>(),
            )
        };
        assert_eq!(headers(h(&[]), &l), Ok(None));
        assert_eq!(
            headers(h(&[(" k ", " v\tw ")]), &l).unwrap().unwrap()["k"],
            "v\tw"
        );
        assert!(matches!(
            headers(h(&[("A", "1"), ("a", "2")]), &l),
            Err(ValidationError::DuplicateHeader { .. })
        ));
        assert!(matches!(
            headers(h(&[("k", "a\u{1}b")]), &l),
            Err(ValidationError::ForbiddenCharacter { .. })
        ));
        assert!(matches!(
            headers(h(&[("k", "  ")]), &l),
            Err(ValidationError::Blank { .. })
        ));
        let long = "x".repeat(65);
        assert!(matches!(
            headers(h(&[(long.as_str(), "v")]), &l),
            Err(ValidationError::TooLong { max: 64, .. })
        ));
        let many: Headers = (0..101).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(matches!(
            headers(Some(many), &l),
            Err(ValidationError::TooManyHeaders {
                max: 100,
                actual: 101
            })
        ));
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let s = "é".repeat(2000);
        let t = truncate_error(&s, 2000);
        assert!(t.len() <= 2000);
        assert!(t.ends_with(TRUNCATION_SUFFIX));
        assert_eq!(truncate_error("  short ", 2000), "short");
        assert_eq!(truncate_error("   ", 2000), "unknown error");
    }
}
