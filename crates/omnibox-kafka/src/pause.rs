//! Delayed redelivery on Kafka: a partition paused until a nacked record is due.
//!
//! Kafka has no per-record delay. To honour [`Redelivery::After`] and keep the partition's
//! order, a delayed nack seeks the partition back to the record, **pauses** it, and resumes
//! it when the delay has passed: nothing behind the record is read before it, and other
//! partitions keep flowing. Each pause has a generation, so a resume scheduled by an earlier
//! nack does not cut short a later, longer one. The delay is a lower bound: the record comes
//! back once the partition is resumed and the next fetch returns it.
//!
//! [`Redelivery::After`]: omnibox_core::consumer::Redelivery::After

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;

use crate::consumer::TrackedStreamConsumer;
use crate::context::lock;
use crate::offsets::Tp;

/// Current pause generation per partition.
#[derive(Debug, Default)]
pub(crate) struct Pauses {
    generation: HashMap<Tp, u64>,
}

impl Pauses {
    /// Record a new pause of `tp`; returns its generation.
    pub(crate) fn begin(&mut self, tp: &Tp) -> u64 {
        let g = self.generation.entry(tp.clone()).or_default();
        *g += 1;
        *g
    }

    /// Whether `generation` is still the latest pause of `tp`.
    fn is_current(&self, tp: &Tp, generation: u64) -> bool {
        self.generation.get(tp) == Some(&generation)
    }

    /// Forget `tp` (revoked or newly assigned: librdkafka starts it unpaused).
    pub(crate) fn forget(&mut self, tp: &Tp) {
        self.generation.remove(tp);
    }
}

fn one(tp: &Tp) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition(&tp.0, tp.1);
    tpl
}

/// Pause `tp` on `consumer` (call right after seeking it back); returns the generation to
/// resume with, or `None` when pausing failed (the record then comes back at once).
pub(crate) fn pause(consumer: &TrackedStreamConsumer, tp: &Tp) -> Option<u64> {
    match consumer.pause(&one(tp)) {
        Ok(()) => Some(lock(&consumer.context().pauses).begin(tp)),
        Err(error) => {
            tracing::warn!(topic = %tp.0, partition = tp.1, %error,
                "could not pause the partition: the record is redelivered without its delay");
            None
        }
    }
}

/// After `delay`, resume `tp` unless a later pause replaced this one.
pub(crate) fn resume_after(
    consumer: Arc<TrackedStreamConsumer>,
    tp: Tp,
    generation: u64,
    delay: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let current = lock(&consumer.context().pauses).is_current(&tp, generation);
        if !current {
            return;
        }
        if let Err(error) = consumer.resume(&one(&tp)) {
            // Revoked meanwhile: its new owner starts it unpaused.
            tracing::debug!(topic = %tp.0, partition = tp.1, %error, "resume after a delayed nack failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_pause_supersedes_an_earlier_resume() {
        let mut p = Pauses::default();
        let tp: Tp = ("t".into(), 0);
        let first = p.begin(&tp);
        let second = p.begin(&tp);
        assert!(!p.is_current(&tp, first));
        assert!(p.is_current(&tp, second));
        p.forget(&tp);
        assert!(!p.is_current(&tp, second));
    }
}
