//! End-to-end and fault tests for omnibox (not published). The tests live in `tests/`; the
//! `omnibox-e2e-relay` binary is the relay process the SIGKILL test starts and kills.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
