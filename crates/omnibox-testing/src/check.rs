//! Assertion helpers of the conformance suites: every failure names the suite and the check.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

/// Where an assertion runs: `suite` / `check`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) suite: &'static str,
    pub(crate) check: &'static str,
}

impl Ctx {
    pub(crate) fn new(suite: &'static str, check: &'static str) -> Self {
        Self { suite, check }
    }

    /// Fail the check.
    #[track_caller]
    pub(crate) fn fail(&self, msg: impl Display) -> ! {
        panic!(
            "{} conformance check `{}` failed: {msg}",
            self.suite, self.check
        )
    }

    /// Fail unless `cond`.
    #[track_caller]
    pub(crate) fn ensure(&self, cond: bool, msg: impl Display) {
        if !cond {
            self.fail(msg);
        }
    }

    /// Fail unless `left == right`.
    #[track_caller]
    pub(crate) fn eq<A: PartialEq<B> + Debug, B: Debug>(&self, left: A, right: B, what: &str) {
        if left != right {
            self.fail(format_args!("{what}: got {left:?}, expected {right:?}"));
        }
    }

    /// Unwrap a result, failing with the error.
    #[track_caller]
    pub(crate) fn ok<T, E: Display>(&self, r: Result<T, E>, what: &str) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(format_args!("{what} returned an error: {e}")),
        }
    }

    /// Await `f` for at most `limit`.
    pub(crate) async fn within<F: Future>(&self, limit: Duration, what: &str, f: F) -> F::Output {
        match tokio::time::timeout(limit, f).await {
            Ok(v) => v,
            Err(_) => self.fail(format_args!("{what} did not finish within {limit:?}")),
        }
    }
}
