//! Publishing outbox events to JetStream with server-side deduplication.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use omnibox_core::envelope::{Converter, EnvelopeConverter, metadata_headers};
use omnibox_core::{OutboxEvent, PublishError, Publisher};

use crate::error::publish_error;

/// The JetStream header that carries the deduplication id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Publisher settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublisherOptions {
    /// Prefix for subjects: `"<prefix>.<topic>"` (default none: subject = topic).
    pub subject_prefix: Option<String>,
    /// Upper bound on one publish, from send to ack (default 30 s); a timeout is
    /// transient. The context's own ack timeout applies inside it.
    pub ack_timeout: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            subject_prefix: None,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl PublisherOptions {
    /// Set the subject prefix.
    #[must_use]
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = Some(prefix.into());
        self
    }
    /// Set the ack timeout.
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }
}

/// Publishes outbox events to JetStream and returns only after the publish ack.
///
/// - subject: the topic (optionally prefixed, see [`PublisherOptions::subject_prefix`]);
/// - body: the converter's JSON (default [`EnvelopeConverter`]);
/// - headers: [`metadata_headers`] plus `Nats-Msg-Id` = event id.
///
/// `Nats-Msg-Id` lets the stream drop a re-publish of the same event within its
/// `duplicate_window` (a relay that crashed after the ack and before recording it
/// publishes again). Such a duplicate ack (`duplicate: true`) is reported as success.
///
/// ## Stream setup
/// Create the stream yourself, with subjects covering your topics and a duplicate window
/// longer than the longest time a relay may take to retry (lease TTL plus backoff), e.g.:
///
/// ```no_run
/// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// js.get_or_create_stream(async_nats::jetstream::stream::Config {
///     name: "ORDERS".into(),
///     subjects: vec!["orders.>".into()],
///     duplicate_window: Duration::from_secs(15 * 60),
///     ..Default::default()
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// Deduplication holds only inside the window; later re-publishes are stored again and
/// the inbox deduplicates them by `message_id` (= event id).
///
/// ```no_run
/// # async fn demo(event: omnibox_core::OutboxEvent) -> Result<(), Box<dyn std::error::Error>> {
/// use omnibox_core::Publisher;
/// use omnibox_nats::{NatsPublisher, async_nats};
///
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let publisher = NatsPublisher::new(async_nats::jetstream::new(client));
/// publisher.publish(&event).await?; // returns after the JetStream ack
/// # Ok(()) }
/// ```
pub struct NatsPublisher {
    context: Context,
    converter: Arc<dyn Converter>,
    options: PublisherOptions,
}

impl std::fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl NatsPublisher {
    /// A publisher on a JetStream context you built (`async_nats::jetstream::new(client)`).
    pub fn new(context: Context) -> Self {
        Self {
            context,
            converter: Arc::new(EnvelopeConverter::default()),
            options: PublisherOptions::default(),
        }
    }

    /// Replace the options.
    #[must_use]
    pub fn with_options(mut self, options: PublisherOptions) -> Self {
        self.options = options;
        self
    }

    /// Replace the body converter.
    #[must_use]
    pub fn with_converter(mut self, converter: impl Converter + 'static) -> Self {
        self.converter = Arc::new(converter);
        self
    }

    /// The options.
    pub fn options(&self) -> &PublisherOptions {
        &self.options
    }

    /// The subject an event is published to.
    pub fn subject_for(&self, event: &OutboxEvent) -> String {
        match &self.options.subject_prefix {
            Some(prefix) => format!("{prefix}.{}", event.topic),
            None => event.topic.clone(),
        }
    }
}

/// A subject that may be published to: non-empty tokens without whitespace or wildcards.
fn check_subject(subject: &str) -> Result<(), PublishError> {
    let bad_token = subject
        .split('.')
        .any(|t| t.is_empty() || t == "*" || t == ">");
    if bad_token || subject.chars().any(char::is_whitespace) {
        return Err(PublishError::permanent(format!(
            "`{subject}` is not a valid NATS subject to publish to"
        )));
    }
    Ok(())
}

fn nats_headers(event: &OutboxEvent) -> Result<HeaderMap, PublishError> {
    let mut map = HeaderMap::new();
    let mut put = |k: &str, v: &str| -> Result<(), PublishError> {
        let name = HeaderName::from_str(k).map_err(|e| {
            PublishError::permanent(format!("header name `{k}` is not valid in NATS"))
                .with_source(e)
        })?;
        let value = HeaderValue::from_str(v).map_err(|e| {
            PublishError::permanent(format!("header `{k}` has a value not valid in NATS"))
                .with_source(e)
        })?;
        map.insert(name, value);
        Ok(())
    };
    for (k, v) in metadata_headers(event) {
        put(&k, &v)?;
    }
    put(MSG_ID_HEADER, &event.common.id.to_string())?;
    Ok(map)
}

impl Publisher for NatsPublisher {
    async fn publish(&self, event: &OutboxEvent) -> Result<(), PublishError> {
        let subject = self.subject_for(event);
        check_subject(&subject)?;
        let headers = nats_headers(event)?;
        let body = self.converter.encode(event);
        let send = async {
            let ack = self
                .context
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|e| publish_error(&subject, e))?
                .await
                .map_err(|e| publish_error(&subject, e))?;
            if ack.duplicate {
                tracing::debug!(
                    event_id = %event.common.id,
                    stream = %ack.stream,
                    sequence = ack.sequence,
                    "JetStream dropped a duplicate publish (already stored)"
                );
            }
            Ok(())
        };
        let timeout = self.options.ack_timeout;
        tokio::time::timeout(timeout, send).await.map_err(|_| {
            PublishError::transient(format!(
                "NATS JetStream publish to `{subject}`: no ack within {timeout:?}"
            ))
        })?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("orders.created").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
    }
}
