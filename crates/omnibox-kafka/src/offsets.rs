//! Per-partition delivery tracking: which records were handed out, which were acknowledged,
//! and how far the group's offset may be committed without skipping an unacknowledged record.
//!
//! Pure bookkeeping (no client calls), so the rules are tested here step by step:
//! - every delivery gets a token, unique for the life of the consumer; an ack or nack counts
//!   only if its token is still the one recorded for that offset (a record re-read after a
//!   rewind, or a partition revoked and reassigned, gets a new token, so late handles are
//!   ignored);
//! - the commit target is the lowest delivered-but-unacknowledged offset, or one past the
//!   highest delivered offset when nothing is outstanding. Offsets that were never delivered
//!   (transaction markers, compacted records) therefore never stall the commit;
//! - a rewind to `o` forgets every outstanding delivery at or after `o` (they will be read
//!   again) and keeps the ones before it.

use std::collections::{BTreeMap, HashMap};

/// A topic-partition.
pub(crate) type Tp = (String, i32);

#[derive(Debug)]
struct PartitionTrack {
    /// Delivered, not yet acknowledged: offset -> delivery token.
    pending: BTreeMap<i64, u64>,
    /// One past the highest offset delivered since the last rewind.
    high: i64,
    /// The offset last committed (or, before any commit, the first offset delivered: the
    /// group's committed offset is at most that).
    committed: i64,
    /// After a rewind to `o`: `Some(o)` until `o` is read again. A record past `o` read
    /// meanwhile was fetched before the seek (a receive racing the nack): dropped.
    rewound_to: Option<i64>,
}

impl PartitionTrack {
    fn target(&self) -> i64 {
        self.pending
            .first_key_value()
            .map_or(self.high, |(offset, _)| *offset)
    }
}

/// What a rewind took away, to put back if the seek fails.
#[derive(Debug)]
pub(crate) struct Rewound {
    tp: Tp,
    removed: Vec<(i64, u64)>,
    high: i64,
}

/// Delivery tracking for every partition this consumer reads.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    partitions: HashMap<Tp, PartitionTrack>,
    next_token: u64,
}

impl Tracker {
    /// Record a delivery; returns its token.
    pub(crate) fn delivered(&mut self, tp: &Tp, offset: i64) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        let track = self
            .partitions
            .entry(tp.clone())
            .or_insert_with(|| PartitionTrack {
                pending: BTreeMap::new(),
                high: offset,
                committed: offset,
                rewound_to: None,
            });
        if track.rewound_to == Some(offset) {
            track.rewound_to = None;
        }
        track.pending.insert(offset, token);
        track.high = track.high.max(offset + 1);
        token
    }

    /// Whether a record read now at `offset` was fetched before a rewind of its partition
    /// that has not been read again yet: it must be dropped (the rewind reads it again).
    pub(crate) fn fetched_before_rewind(&self, tp: &Tp, offset: i64) -> bool {
        self.partitions
            .get(tp)
            .and_then(|t| t.rewound_to)
            .is_some_and(|o| offset != o)
    }

    /// Acknowledge a delivery. `false` when the handle is stale (ignored).
    pub(crate) fn ack(&mut self, tp: &Tp, offset: i64, token: u64) -> bool {
        let Some(track) = self.partitions.get_mut(tp) else {
            return false;
        };
        if track.pending.get(&offset) != Some(&token) {
            return false;
        }
        track.pending.remove(&offset);
        true
    }

    /// Start a rewind to `offset` (the caller then seeks). `None` when the handle is stale.
    pub(crate) fn rewind(&mut self, tp: &Tp, offset: i64, token: u64) -> Option<Rewound> {
        let track = self.partitions.get_mut(tp)?;
        if track.pending.get(&offset) != Some(&token) {
            return None;
        }
        let removed: Vec<(i64, u64)> = track.pending.split_off(&offset).into_iter().collect();
        let high = track.high;
        track.high = offset;
        track.rewound_to = Some(offset);
        Some(Rewound {
            tp: tp.clone(),
            removed,
            high,
        })
    }

    /// Undo a rewind whose seek failed: the records stay outstanding (the nacked one is
    /// never acknowledged, so the commit stops before it until the partition is reassigned
    /// or the consumer restarts, and it is redelivered then).
    pub(crate) fn undo_rewind(&mut self, rewound: Rewound) {
        if let Some(track) = self.partitions.get_mut(&rewound.tp) {
            track.pending.extend(rewound.removed);
            track.rewound_to = None;
            track.high = track.high.max(rewound.high);
        }
    }

    /// The offset to commit for `tp`, when it is past the last commit.
    #[cfg(test)]
    pub(crate) fn commit_target(&self, tp: &Tp) -> Option<i64> {
        let track = self.partitions.get(tp)?;
        let target = track.target();
        (target > track.committed).then_some(target)
    }

    /// Every partition's commit target that is past its last commit.
    pub(crate) fn commit_targets(&self) -> Vec<(Tp, i64)> {
        let mut out: Vec<(Tp, i64)> = self
            .partitions
            .iter()
            .filter_map(|(tp, t)| {
                let target = t.target();
                (target > t.committed).then(|| (tp.clone(), target))
            })
            .collect();
        out.sort();
        out
    }

    /// Record a successful commit.
    pub(crate) fn committed(&mut self, tp: &Tp, offset: i64) {
        if let Some(track) = self.partitions.get_mut(tp) {
            track.committed = track.committed.max(offset);
        }
    }

    /// Forget a partition (revoked, or the consumer stopped): its handles become no-ops.
    pub(crate) fn forget(&mut self, tp: &Tp) {
        self.partitions.remove(tp);
    }

    /// Forget every partition.
    pub(crate) fn clear(&mut self) {
        self.partitions.clear();
    }

    /// Whether `tp` is tracked.
    pub(crate) fn tracks(&self, tp: &Tp) -> bool {
        self.partitions.contains_key(tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_fetched_before_a_rewind_is_dropped_until_the_rewound_offset_is_read() {
        let mut t = Tracker::default();
        let k: Vec<u64> = (0..6).map(|o| t.delivered(&tp(), o)).collect();
        assert!(!t.fetched_before_rewind(&tp(), 6));
        assert!(t.rewind(&tp(), 3, k[3]).is_some());
        // Offset 6 was fetched before the seek and comes out after it: dropped.
        assert!(t.fetched_before_rewind(&tp(), 6));
        assert!(
            !t.fetched_before_rewind(&tp(), 3),
            "the rewound offset itself is read"
        );
        t.delivered(&tp(), 3);
        assert!(
            !t.fetched_before_rewind(&tp(), 4),
            "read again from 3 on: in order"
        );
        // A failed seek puts everything back and drops nothing.
        let k4 = t.delivered(&tp(), 4);
        let undo = t.rewind(&tp(), 4, k4).unwrap();
        t.undo_rewind(undo);
        assert!(!t.fetched_before_rewind(&tp(), 5));
    }

    fn tp() -> Tp {
        ("t".to_owned(), 0)
    }

    #[test]
    fn commit_stops_before_the_first_unacknowledged_offset() {
        let mut t = Tracker::default();
        let tokens: Vec<u64> = (0..4).map(|o| t.delivered(&tp(), o)).collect();
        assert_eq!(t.commit_target(&tp()), None);
        assert!(t.ack(&tp(), 0, tokens[0]));
        assert!(t.ack(&tp(), 2, tokens[2]));
        assert_eq!(t.commit_target(&tp()), Some(1));
        t.committed(&tp(), 1);
        assert_eq!(t.commit_target(&tp()), None);
        assert!(t.ack(&tp(), 1, tokens[1]));
        assert_eq!(t.commit_target(&tp()), Some(3));
        assert!(t.ack(&tp(), 3, tokens[3]));
        assert_eq!(t.commit_targets(), vec![(tp(), 4)]);
    }

    #[test]
    fn gaps_in_offsets_do_not_stall_the_commit() {
        let mut t = Tracker::default();
        let a = t.delivered(&tp(), 10);
        let b = t.delivered(&tp(), 13);
        assert!(t.ack(&tp(), 10, a));
        assert_eq!(t.commit_target(&tp()), Some(13));
        assert!(t.ack(&tp(), 13, b));
        assert_eq!(t.commit_target(&tp()), Some(14));
    }

    #[test]
    fn rewind_forgets_later_deliveries_and_their_acks() {
        let mut t = Tracker::default();
        let k: Vec<u64> = (0..4).map(|o| t.delivered(&tp(), o)).collect();
        assert!(t.ack(&tp(), 0, k[0]));
        let r = t.rewind(&tp(), 1, k[1]);
        assert!(r.is_some());
        // Acks of records after the rewind point are discarded: they will be read again.
        assert!(!t.ack(&tp(), 2, k[2]));
        assert_eq!(t.commit_target(&tp()), Some(1));
        // The re-read gets new tokens; the old handle of the nacked record is spent.
        let k1 = t.delivered(&tp(), 1);
        let k2 = t.delivered(&tp(), 2);
        assert!(!t.ack(&tp(), 1, k[1]));
        assert!(t.ack(&tp(), 1, k1));
        assert!(t.ack(&tp(), 2, k2));
        assert_eq!(t.commit_target(&tp()), Some(3));
    }

    #[test]
    fn rewind_keeps_earlier_outstanding_records() {
        let mut t = Tracker::default();
        let k: Vec<u64> = (0..3).map(|o| t.delivered(&tp(), o)).collect();
        assert!(t.rewind(&tp(), 2, k[2]).is_some());
        assert!(t.ack(&tp(), 1, k[1]));
        assert_eq!(
            t.commit_target(&tp()),
            None,
            "offset 0 is still outstanding"
        );
        assert!(t.ack(&tp(), 0, k[0]));
        assert_eq!(
            t.commit_target(&tp()),
            Some(2),
            "never past the rewound record"
        );
    }

    #[test]
    fn a_failed_seek_is_undone_without_skipping() {
        let mut t = Tracker::default();
        let k: Vec<u64> = (0..3).map(|o| t.delivered(&tp(), o)).collect();
        let r = t.rewind(&tp(), 1, k[1]);
        t.undo_rewind(r.unwrap_or_else(|| panic!("fresh handle")));
        assert!(t.ack(&tp(), 0, k[0]));
        assert!(t.ack(&tp(), 2, k[2]));
        assert_eq!(t.commit_target(&tp()), Some(1));
    }

    #[test]
    fn stale_handles_are_ignored() {
        let mut t = Tracker::default();
        let k = t.delivered(&tp(), 0);
        assert!(t.rewind(&tp(), 0, k + 1).is_none());
        assert!(!t.ack(&tp(), 0, k + 1));
        t.forget(&tp());
        assert!(!t.tracks(&tp()));
        assert!(!t.ack(&tp(), 0, k), "revoked partition: late ack ignored");
        // Reassigned: fresh state, fresh tokens.
        let k2 = t.delivered(&tp(), 0);
        assert_ne!(k, k2);
        assert!(!t.ack(&tp(), 0, k));
        assert!(t.ack(&tp(), 0, k2));
        t.clear();
        assert!(t.commit_targets().is_empty());
    }
}
