//! The event router: handlers keyed by `(event_type, source)`.
