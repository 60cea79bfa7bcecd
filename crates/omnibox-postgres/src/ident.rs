//! Validated SQL identifiers: the only way a configured name reaches SQL text.

use std::fmt;

use omnibox_core::error::StoreError;

/// The longest identifier PostgreSQL keeps without truncating (NAMEDATALEN - 1).
pub const MAX_IDENT_LEN: usize = 63;

/// A schema, table or index name matching `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, always written
/// to SQL double-quoted. Anything else (spaces, quotes, `;`, a dot) is a
/// [`StoreError::InvalidIdentifier`], never SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

impl Ident {
    /// Validate `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > MAX_IDENT_LEN {
            Some("must be at most 63 bytes")
        } else if !name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            Some("must start with an ASCII letter or `_`")
        } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Some("may contain only ASCII letters, digits and `_`")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(StoreError::InvalidIdentifier { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The bare name (for use as a bound string value, e.g. in `hashtext`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A derived name (`<self><suffix>` or `<prefix><self><suffix>`), validated again so a
    /// long base name cannot be silently truncated by PostgreSQL.
    pub fn derive(&self, prefix: &str, suffix: &str) -> Result<Self, StoreError> {
        Self::new(format!("{prefix}{}{suffix}", self.0))
    }

    /// The name double-quoted for SQL text.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_and_quoted() {
        assert_eq!(
            Ident::new("outbox_events").unwrap().to_string(),
            "\"outbox_events\""
        );
        assert!(Ident::new("_x9").is_ok());
        for bad in [
            "",
            "x; DROP TABLE y",
            "9abc",
            "a.b",
            "a\"b",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(Ident::new(bad), Err(StoreError::InvalidIdentifier { .. })),
                "{bad:?} accepted"
            );
        }
        let long = Ident::new("x".repeat(60)).unwrap();
        assert!(long.derive("", "_dead_letters").is_err());
    }
}
