//! The consumer context: rebalance callbacks that keep the per-partition delivery tracking
//! right when partitions move between consumers.

use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use crate::offsets::{Tp, Tracker};

/// The [`ConsumerContext`] a [`KafkaConsumer`](crate::KafkaConsumer) needs: build your
/// `StreamConsumer` with it (`config.create_with_context(KafkaConsumerContext::default())`).
///
/// On a revoke it commits what is contiguously acknowledged for the partitions being taken
/// away, then forgets them, so acknowledgements that arrive later for those records are
/// ignored (the new owner reads them again: at-least-once). On an assign it starts the
/// partitions from a clean state, unpaused (a delayed nack's pause ends with a rebalance:
/// the record's delay is then cut short, never extended forever).
#[derive(Debug, Default)]
pub struct KafkaConsumerContext {
    pub(crate) tracker: Mutex<Tracker>,
    /// Serialises commits so committed offsets only move forward.
    pub(crate) commit_lock: Mutex<()>,
    /// Partitions paused by a delayed nack (`pause.rs`).
    pub(crate) pauses: Mutex<crate::pause::Pauses>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KafkaConsumerContext {
    /// A fresh context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commit, for the partitions `keep` selects, what is contiguously acknowledged and not
    /// yet committed. Returns the partitions committed.
    pub(crate) fn commit_tracked<K: Consumer<Self>>(
        &self,
        consumer: &K,
        mode: CommitMode,
        keep: impl Fn(&Tp) -> bool,
    ) -> KafkaResult<Vec<(Tp, i64)>> {
        // A rebalance callback must not wait for an acknowledgement's commit in flight
        // (that commit may itself wait for the rebalance): it goes ahead unserialised.
        let _serial = match mode {
            CommitMode::Sync => Some(lock(&self.commit_lock)),
            CommitMode::Async => self.commit_lock.try_lock().ok(),
        };
        let targets: Vec<(Tp, i64)> = lock(&self.tracker)
            .commit_targets()
            .into_iter()
            .filter(|(tp, _)| keep(tp))
            .collect();
        if targets.is_empty() {
            return Ok(targets);
        }
        let mut tpl = TopicPartitionList::with_capacity(targets.len());
        for ((topic, partition), offset) in &targets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        consumer.commit(&tpl, mode)?;
        let mut tracker = lock(&self.tracker);
        for (tp, offset) in &targets {
            tracker.committed(tp, *offset);
        }
        Ok(targets)
    }
}

impl ClientContext for KafkaConsumerContext {}

fn partitions(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for KafkaConsumerContext {
    fn pre_rebalance(&self, base_consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions(tpl);
                // Asynchronous: this runs inside the consumer's poll; librdkafka sends the
                // commit before it completes the unassignment.
                match self
                    .commit_tracked(base_consumer, CommitMode::Async, |tp| revoked.contains(tp))
                {
                    Ok(done) => tracing::debug!(?done, "committed acknowledged offsets on revoke"),
                    Err(error) => tracing::warn!(
                        %error,
                        "could not commit acknowledged offsets on revoke; the new owner re-reads them"
                    ),
                }
                let mut tracker = lock(&self.tracker);
                let mut pauses = lock(&self.pauses);
                for tp in &revoked {
                    tracker.forget(tp);
                    pauses.forget(tp);
                }
                // librdkafka keeps an application pause across revoke and assign, and the
                // resume scheduled by a delayed nack is dropped with the pause generation:
                // lift the pause now, or the partition stays paused when it comes back.
                resume(base_consumer, tpl, "revoked");
            }
            Rebalance::Assign(tpl) => {
                let mut tracker = lock(&self.tracker);
                let mut pauses = lock(&self.pauses);
                for tp in partitions(tpl) {
                    tracker.forget(&tp);
                    pauses.forget(&tp);
                }
            }
            Rebalance::Error(error) => tracing::warn!(%error, "Kafka rebalance error"),
        }
    }

    fn post_rebalance(&self, base_consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // A new owner starts every partition unpaused, from the committed offset (a
            // pause left from an earlier ownership in this process would hold it forever).
            resume(base_consumer, tpl, "assigned");
        }
    }
}

/// Resume `tpl` (a no-op for partitions that are not paused).
fn resume(consumer: &BaseConsumer<KafkaConsumerContext>, tpl: &TopicPartitionList, what: &str) {
    if tpl.count() == 0 {
        return;
    }
    if let Err(error) = consumer.resume(tpl) {
        tracing::warn!(%error, "could not resume the {what} partitions");
    }
}
