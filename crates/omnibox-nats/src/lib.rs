//! NATS JetStream adapter for omnibox (async-nats): deduplicating publisher and pull consumer
#![forbid(unsafe_code)]
#![deny(missing_docs)]
