//! Test support for omnibox adapters.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
