//! Masking passwords in URLs before they reach an error or a log line.

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`, for every URL in `text`.
/// Text without credentials comes back unchanged.
///
/// ```
/// use omnibox_settings::redact;
/// assert_eq!(
///     redact("cannot connect to postgres://app:s3cret@db:5432/app"),
///     "cannot connect to postgres://app:***@db:5432/app"
/// );
/// assert_eq!(redact("amqp://localhost:5672/%2f"), "amqp://localhost:5672/%2f");
/// ```
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; credentials end at the
        // last '@' inside it.
        let end = tail
            .find(|c: char| {
                c == '/'
                    || c == '?'
                    || c == '#'
                    || c.is_whitespace()
                    || c == '"'
                    || c == '\''
                    || c == '`'
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at_sign) => {
                let userinfo = &authority[..at_sign];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at_sign..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn masks_every_password_and_keeps_the_rest() {
        assert_eq!(
            redact("a amqp://guest:pw@h:5672/%2f and nats://u:p@x:4222 end"),
            "a amqp://guest:***@h:5672/%2f and nats://u:***@x:4222 end"
        );
        assert_eq!(redact("postgres://user@h/db"), "postgres://user@h/db");
        assert_eq!(redact("\"postgres://u:p@h\""), "\"postgres://u:***@h\"");
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("postgres://u:p%40ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("x://"), "x://");
    }
}
