//! # omnibox
//!
//! Transactional outbox and inbox for Rust services. This facade re-exports the core and,
//! behind cargo features, the adapters.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use omnibox_core as core;
pub use omnibox_core::*;
