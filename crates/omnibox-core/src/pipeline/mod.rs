//! The processing pipeline: a processor that claims a batch, runs a
//! list of steps for each event and settles every event it touched — completed, failed
//! (counted or not), or released — so no lease is left behind.

mod context;
mod fetch;
mod lease;
mod processor;
mod step;
pub mod steps;

pub use context::{BatchCtx, Verdict};
pub use fetch::{FetchStrategy, Optimistic, SkipLockedClaim};
pub use lease::LeaseWatch;
pub use processor::{BatchResult, CommitStrategy, Processor, ProcessorBuilder};
pub use step::{DynStep, Step, StepResult};
