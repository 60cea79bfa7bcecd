//! How a dead letter maps onto columns PostgreSQL accepts, losslessly.
//!
//! A dead letter exists to keep what could not be processed, so writing it must not fail on
//! the very data that made it one. PostgreSQL's `text` refuses a NUL character and `jsonb`
//! refuses the escape `\u0000`:
//! - the body goes to `body` as text (NUL replaced by U+FFFD) and, when that is not an exact
//!   copy, its exact bytes to `body_bytes`;
//! - headers go to `headers` (jsonb) when jsonb can hold them, else as JSON text (where a NUL
//!   is the six characters `\u0000`) to `headers_text`;
//! - other text fields (type, route, message id, error) get NUL replaced by U+FFFD.

use omnibox_core::model::validate::{text_of, without_nul};
use omnibox_core::store::DeadLetter;

/// The body and header columns of one dead letter.
pub(crate) struct DeadLetterColumns {
    pub body: String,
    pub body_bytes: Option<Vec<u8>>,
    pub headers_jsonb: Option<String>,
    pub headers_text: Option<String>,
}

impl DeadLetterColumns {
    pub(crate) fn of(letter: &DeadLetter) -> Self {
        let original = letter.original_body();
        let body = text_of(original);
        let body_bytes = (body.as_bytes() != original).then(|| original.to_vec());
        let json = letter
            .headers
            .as_ref()
            .map(|h| serde_json::to_string(h).unwrap_or_else(|_| "{}".to_owned()));
        let (headers_jsonb, headers_text) = match json {
            // serde_json writes a NUL as `\u0000`, the one escape jsonb refuses.
            Some(j) if j.contains("\\u0000") => (None, Some(j)),
            other => (other, None),
        };
        Self {
            body,
            body_bytes,
            headers_jsonb,
            headers_text,
        }
    }
}

/// `s` with NUL characters replaced by U+FFFD (a text column refuses NUL).
pub(crate) fn text(s: &str) -> String {
    without_nul(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use omnibox_core::consumer::MalformedMessage;
    use omnibox_core::error::EnvelopeError;

    #[test]
    fn binary_bodies_and_nul_headers_go_to_the_lossless_columns() {
        let mut headers = omnibox_core::model::Headers::new();
        headers.insert("h".into(), "a\0b".into());
        let body = vec![b'{', 0, 0xff, b'}'];
        let m = MalformedMessage::new(
            Some("m1".into()),
            "src",
            body.clone(),
            headers,
            EnvelopeError::InvalidJson("bad".into()),
        );
        let letter = DeadLetter::from_malformed(&m, Utc::now());
        let c = DeadLetterColumns::of(&letter);
        assert!(!c.body.contains('\0'));
        assert_eq!(c.body_bytes.as_deref(), Some(body.as_slice()));
        assert_eq!(c.headers_jsonb, None);
        assert_eq!(c.headers_text.as_deref(), Some(r#"{"h":"a\u0000b"}"#));
    }
}
