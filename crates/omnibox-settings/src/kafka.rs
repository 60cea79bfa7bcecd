//! `[kafka]`: bootstrap servers and any librdkafka property (TLS, SASL) passed through.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[kafka]`. `properties` are handed to librdkafka as they are, so TLS and SASL are set
/// the way librdkafka documents them (`security.protocol = "ssl"`, `ssl.ca.location`,
/// `sasl.username`, …). `Debug` masks the values of properties whose name mentions a
/// password, secret or key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaSettings {
    /// `host:9092,host2:9092` (no default).
    pub bootstrap_servers: Option<String>,
    /// How long a record may wait in the producer's queue (default 30 s).
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// More librdkafka properties. The relay's producer adds `partitioner =
    /// murmur2_random`, `enable.idempotence = true` and `acks = all` where not set here.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            queue_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("key") && !k.ends_with(".location")
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("queue_timeout", &self.queue_timeout)
            .field("properties", &props)
            .finish()
    }
}

#[cfg(feature = "kafka")]
mod convert {
    use omnibox_kafka::rdkafka::ClientConfig;

    use super::KafkaSettings;

    impl KafkaSettings {
        /// The client configuration: `bootstrap.servers` plus every property.
        pub fn client_config(&self) -> ClientConfig {
            let mut c = ClientConfig::new();
            if let Some(servers) = &self.bootstrap_servers {
                c.set("bootstrap.servers", servers);
            }
            for (k, v) in &self.properties {
                c.set(k, v);
            }
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_secret_properties_only() {
        let mut s = KafkaSettings::default();
        s.properties
            .insert("sasl.password".into(), "hunter2".into());
        s.properties.insert("ssl.key.password".into(), "pw".into());
        s.properties
            .insert("ssl.ca.location".into(), "/etc/ca.pem".into());
        s.properties
            .insert("security.protocol".into(), "ssl".into());
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && !d.contains("\"pw\""), "{d}");
        assert!(d.contains("/etc/ca.pem") && d.contains("ssl"), "{d}");
    }
}
