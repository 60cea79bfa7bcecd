//! [`SiblingDedupStep`]: complete duplicates of an already completed inbox message.

use super::{REASON_DUPLICATE_SIBLING, backoff_at, transient_at};
use crate::backoff::Backoff;
use crate::error::FailureKind;
use crate::model::{Event, InboxEvent};
use crate::pipeline::{BatchCtx, Step, StepResult};
use crate::store::InboxLookup;

/// Inbox step: when another event with the same `(message_id, consumer_group)` already
/// completed (possible in partitioned tables, whose unique index includes `created_at`),
/// this event is **completed** as skipped with reason `"duplicate_sibling"` and the handler
/// does not run. (omni-box left such rows locked and pending.)
///
/// It needs the batch's connection (`process_batch`); without one, or when the lookup
/// fails, the event fails (transient store errors uncounted, retried in 1 s) and the handler
/// does not run. Disabled, it passes every event on.
#[derive(Debug, Clone)]
pub struct SiblingDedupStep<S> {
    store: S,
    enabled: bool,
    backoff: Backoff,
}

impl<S> SiblingDedupStep<S> {
    /// An enabled step over `store`.
    pub fn new(store: S) -> Self {
        Self {
            store,
            enabled: true,
            backoff: Backoff::default(),
        }
    }

    /// Turn the check on or off.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Backoff for counted failures of the lookup.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

impl<S: InboxLookup> Step<InboxEvent, S::Conn> for SiblingDedupStep<S> {
    async fn execute(
        &self,
        event: &InboxEvent,
        ctx: &mut BatchCtx<'_, InboxEvent, S::Conn>,
    ) -> StepResult {
        // A store whose unique index on `(message_id, consumer_group)` rules out siblings
        // (plain tables) needs no query.
        if !self.enabled || self.store.dedup_key_is_unique() {
            return StepResult::Continue;
        }
        let id = event.id();
        let attempts = event.common.attempts_made;
        let Some(conn) = ctx.conn() else {
            let at = backoff_at(ctx.now(), &self.backoff, attempts);
            ctx.fail(
                id,
                "the sibling check needs the batch's connection: run this processor with `process_batch`",
                FailureKind::Permanent,
                Some(at),
            );
            return StepResult::SkipEvent;
        };
        let found = self
            .store
            .has_completed_sibling(conn, &event.message_id, &event.consumer_group, id)
            .await;
        match found {
            Ok(true) => {
                tracing::info!(job = %ctx.job(), event_id = %id, message_id = %event.message_id, "duplicate of a completed sibling; completing it");
                ctx.skip(id, REASON_DUPLICATE_SIBLING);
                StepResult::SkipEvent
            }
            Ok(false) => StepResult::Continue,
            Err(e) => {
                let kind = e.kind();
                let now = ctx.now();
                let at = match kind {
                    FailureKind::Transient => transient_at(now),
                    FailureKind::Permanent => backoff_at(now, &self.backoff, attempts),
                };
                ctx.fail(id, format!("sibling check failed: {e}"), kind, Some(at));
                StepResult::SkipEvent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use uuid::Uuid;

    use super::*;
    use crate::error::StoreError;
    use crate::pipeline::Verdict;
    use crate::pipeline::steps::test_support::{Fixture, drive, failed, inbox};
    use crate::store::EventStore;

    /// Message ids with a completed sibling; `"broken"` makes the lookup fail.
    struct Lookup(HashSet<&'static str>);
    impl EventStore for Lookup {
        type Event = InboxEvent;
        type Conn = ();
    }
    impl InboxLookup for Lookup {
        async fn find_message(
            &self,
            _c: &mut (),
            _m: &str,
            _g: &str,
        ) -> Result<Option<InboxEvent>, StoreError> {
            Ok(None)
        }
        async fn has_completed_sibling(
            &self,
            _c: &mut (),
            message_id: &str,
            _g: &str,
            _exclude: Uuid,
        ) -> Result<bool, StoreError> {
            if message_id == "broken" {
                return Err(StoreError::Connection {
                    message: "reset".into(),
                    source: None,
                });
            }
            Ok(self.0.contains(message_id))
        }
    }

    struct Handle;
    impl Step<InboxEvent, ()> for Handle {
        async fn execute(
            &self,
            e: &InboxEvent,
            ctx: &mut BatchCtx<'_, InboxEvent, ()>,
        ) -> StepResult {
            ctx.complete(e.id());
            StepResult::Continue
        }
    }

    #[tokio::test]
    async fn bug3_duplicate_siblings_are_completed_not_left_locked() {
        let fx = Fixture::new();
        let step = SiblingDedupStep::new(Lookup(["dup"].into()));
        let mut conn = ();
        let mut ctx = fx.ctx(Some(&mut conn));
        let v = drive(
            &[&step, &Handle],
            &[inbox("dup"), inbox("new"), inbox("broken")],
            &mut ctx,
        )
        .await;
        assert_eq!(
            v[0],
            Verdict::Skipped {
                reason: REASON_DUPLICATE_SIBLING.into()
            }
        );
        assert_eq!(v[1], Verdict::Completed);
        assert_eq!(failed(&v[2]).1, FailureKind::Transient);
    }

    /// Claims its dedup key is unique and fails every lookup: the step must not ask.
    struct UniqueKey;
    impl EventStore for UniqueKey {
        type Event = InboxEvent;
        type Conn = ();
    }
    impl InboxLookup for UniqueKey {
        async fn find_message(
            &self,
            _c: &mut (),
            _m: &str,
            _g: &str,
        ) -> Result<Option<InboxEvent>, StoreError> {
            Ok(None)
        }
        async fn has_completed_sibling(
            &self,
            _c: &mut (),
            _m: &str,
            _g: &str,
            _exclude: Uuid,
        ) -> Result<bool, StoreError> {
            Err(StoreError::InvalidRequest(
                "asked a store whose key is unique".into(),
            ))
        }
        fn dedup_key_is_unique(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_unique_dedup_key_needs_no_sibling_query() {
        let fx = Fixture::new();
        let step = SiblingDedupStep::new(UniqueKey);
        let mut conn = ();
        let mut ctx = fx.ctx(Some(&mut conn));
        let v = drive(&[&step, &Handle], &[inbox("m")], &mut ctx).await;
        assert_eq!(v[0], Verdict::Completed);
    }

    #[tokio::test]
    async fn disabled_passes_everything() {
        let fx = Fixture::new();
        let step = SiblingDedupStep::new(Lookup(["dup"].into())).enabled(false);
        let mut ctx = fx.ctx::<InboxEvent, ()>(None);
        let v = drive(&[&step, &Handle], &[inbox("dup")], &mut ctx).await;
        assert_eq!(v[0], Verdict::Completed);
    }

    #[tokio::test]
    async fn without_a_connection_the_event_fails_and_is_not_handled() {
        let fx = Fixture::new();
        let step = SiblingDedupStep::new(Lookup(HashSet::new()));
        let mut ctx = fx.ctx::<InboxEvent, ()>(None);
        let v = drive(&[&step, &Handle], &[inbox("m")], &mut ctx).await;
        assert_eq!(failed(&v[0]).1, FailureKind::Permanent);
    }
}
