//! OpenTelemetry spans and W3C trace-context propagation for omnibox
#![forbid(unsafe_code)]
#![deny(missing_docs)]
