//! End-to-end and fault tests for omnibox (not published). The tests live in `tests/`; the
//! `omnibox-e2e-relay` binary is the relay process the SIGKILL test starts and kills; the
//! `omnibox-chaos` binary is the chaos rig (`cargo xtask chaos`), built from [`chaos`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chaos;
pub mod servers;
