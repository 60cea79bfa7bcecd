//! The outbox relay service: publishes claimed events with a timeout and a concurrency limit.
