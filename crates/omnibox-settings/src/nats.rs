//! `[nats]`: connection (with TLS and credentials), publisher and consumer options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact;

/// `[nats]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSettings {
    /// `nats://host:4222` (no default; `tls://` or `require_tls` for TLS). `Debug` masks
    /// a password in it.
    pub url: Option<String>,
    /// Subject prefix: events go to `<prefix>.<topic>` (default none).
    pub subject_prefix: Option<String>,
    /// Upper bound on one publish, send to ack (default 30 s).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Require TLS (default `false`).
    pub require_tls: bool,
    /// PEM file of root certificates to trust.
    pub tls_root_certificates: Option<PathBuf>,
    /// PEM client certificate (with `tls_client_key`).
    pub tls_client_cert: Option<PathBuf>,
    /// PEM client key.
    pub tls_client_key: Option<PathBuf>,
    /// A `.creds` file (JWT and seed).
    pub credentials_file: Option<PathBuf>,
    /// `[nats.consumer]`.
    pub consumer: NatsConsumerSettings,
}

/// `[nats.consumer]`: the durable pull consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsConsumerSettings {
    /// Stream to consume (no default).
    pub stream: Option<String>,
    /// Durable consumer name (no default).
    pub durable: Option<String>,
    /// Only subjects matching (default empty: the whole stream).
    pub filter_subject: String,
    /// Redelivery after this long without an ack (default 30 s).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Most deliveries of a message (default -1: unlimited; the inbox dead-letters).
    pub max_deliver: i64,
    /// Most unacknowledged messages (default 1000).
    pub max_ack_pending: i64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: None,
            subject_prefix: None,
            ack_timeout: Duration::from_secs(30),
            require_tls: false,
            tls_root_certificates: None,
            tls_client_cert: None,
            tls_client_key: None,
            credentials_file: None,
            consumer: NatsConsumerSettings::default(),
        }
    }
}

impl Default for NatsConsumerSettings {
    fn default() -> Self {
        Self {
            stream: None,
            durable: None,
            filter_subject: String::new(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1000,
        }
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url.as_deref().map(redact))
            .field("subject_prefix", &self.subject_prefix)
            .field("ack_timeout", &self.ack_timeout)
            .field("require_tls", &self.require_tls)
            .field("tls_root_certificates", &self.tls_root_certificates)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .field("credentials_file", &self.credentials_file)
            .field("consumer", &self.consumer)
            .finish()
    }
}

#[cfg(feature = "nats")]
mod convert {
    use omnibox_nats::async_nats::ConnectOptions;
    use omnibox_nats::{ConsumerOptions, PublisherOptions};

    use super::{NatsConsumerSettings, NatsSettings};

    impl NatsSettings {
        /// The publisher options.
        pub fn publisher_options(&self) -> PublisherOptions {
            let mut o = PublisherOptions::default().ack_timeout(self.ack_timeout);
            if let Some(p) = &self.subject_prefix {
                o = o.subject_prefix(p.clone());
            }
            o
        }

        /// Connection options with the TLS and credential settings passed through.
        pub async fn connect_options(&self) -> std::io::Result<ConnectOptions> {
            let mut o = match &self.credentials_file {
                Some(path) => ConnectOptions::with_credentials_file(path.clone()).await?,
                None => ConnectOptions::new(),
            };
            o = o.require_tls(self.require_tls);
            if let Some(path) = &self.tls_root_certificates {
                o = o.add_root_certificates(path.clone());
            }
            if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
                o = o.add_client_certificate(cert.clone(), key.clone());
            }
            Ok(o)
        }
    }

    impl NatsConsumerSettings {
        /// The consumer options.
        pub fn consumer_options(&self) -> ConsumerOptions {
            ConsumerOptions::default()
                .filter_subject(self.filter_subject.clone())
                .ack_wait(self.ack_wait)
                .max_deliver(self.max_deliver)
                .max_ack_pending(self.max_ack_pending)
        }
    }
}
