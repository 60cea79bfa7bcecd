//! RabbitMQ adapter for omnibox (lapin): confirm-mode publisher and manual-ack consumer
#![forbid(unsafe_code)]
#![deny(missing_docs)]
