//! Kafka adapter for omnibox (rdkafka): publisher with delivery reports and consumer with per-record acks
#![forbid(unsafe_code)]
#![deny(missing_docs)]
