//! Lanes: several deliveries handled at once, one at a time per order key.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{AckSlot, InboxRunner};
use crate::consumer::{Consumer, Delivery};
use crate::handler::Handler;
use crate::model::InboxEvent;
use crate::shutdown::Shutdown;
use crate::store::{InboxStore, Transactions};

/// One lane: deliveries whose keys hash here, handled one at a time in arrival order.
struct Lane<A> {
    /// The order key of the delivery being handled (or rested after); `None`: idle.
    busy: Option<String>,
    /// Received behind the one being handled.
    waiting: VecDeque<Delivery<A>>,
    /// Pause after the next delivery that is not acknowledged.
    pause: Duration,
}

/// What a lane does next.
enum Job<A> {
    /// Handle this delivery.
    Handle(Box<Delivery<A>>),
    /// Pause after a delivery that was handed back.
    Rest(Duration),
}

/// The lane of an order key.
pub(crate) fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    // The remainder is below `lanes`, which is a usize.
    usize::try_from(h.finish() % lanes as u64).unwrap_or(0)
}

impl<C, T, S, H> InboxRunner<C, T, S, H>
where
    C: Consumer,
    T: Transactions,
    S: InboxStore<Conn = T::Conn>,
    H: Handler<InboxEvent, T::Conn>,
{
    /// [`InboxRunner::run`]'s loop with a concurrency above 1: receive while fewer than
    /// `2 × n` deliveries are held, handle up to `n` at once (one per lane), and on shutdown
    /// stop receiving and finish what is held.
    pub(super) async fn run_lanes(&mut self, shutdown: &Shutdown) {
        let core = &self.core;
        let consumer = &mut self.consumer;
        let (idle_min, idle_max) = (core.cfg.idle_min, core.cfg.idle_max);
        let n = core.cfg.concurrency;
        let cap = n.saturating_mul(2);
        let mut lanes: Vec<Lane<C::Ack>> = (0..n)
            .map(|_| Lane {
                busy: None,
                waiting: VecDeque::new(),
                pause: idle_min,
            })
            .collect();
        // A lane's work: handle a delivery (`Some(acked)`), or rest after one that was
        // handed back (`None`). One closure, so every future has the same type.
        let work = |lane: usize, job: Job<C::Ack>| async move {
            match job {
                Job::Handle(delivery) => (lane, Some(core.handle_logged(*delivery).await)),
                Job::Rest(pause) => {
                    tokio::select! {
                        biased;
                        () = shutdown.requested() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    (lane, None)
                }
            }
        };
        let mut running = FuturesUnordered::new();
        let mut held = 0usize;
        let mut receive_pause = idle_min;
        let mut resume_receiving: Option<tokio::time::Instant> = None;
        let mut stopping = false;
        loop {
            if stopping && running.is_empty() {
                break;
            }
            let receiving = !stopping && held < cap && resume_receiving.is_none();
            let resume_at = resume_receiving.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                () = shutdown.requested(), if !stopping => stopping = true,
                Some((i, handled)) = running.next() => {
                    let lane: &mut Lane<C::Ack> = &mut lanes[i];
                    match handled {
                        Some(true) => {
                            held -= 1;
                            lane.pause = idle_min;
                        }
                        Some(false) => {
                            held -= 1;
                            // Nothing of this key may overtake the one handed back: what
                            // waits behind it goes back too, before the lane rests.
                            let key = lane.busy.as_deref().unwrap_or_default();
                            let (behind, others): (VecDeque<_>, VecDeque<_>) =
                                lane.waiting.drain(..).partition(|d| d.ordering() == key);
                            lane.waiting = others;
                            for delivery in behind {
                                held -= 1;
                                let mut slot = AckSlot(Some(delivery.ack));
                                core.nack_after_error(&mut slot).await;
                            }
                            running.push(work(i, Job::Rest(lane.pause)));
                            lane.pause = lane.pause.saturating_mul(2).min(idle_max);
                            continue;
                        }
                        None => {}
                    }
                    lane.busy = None;
                    if let Some(next) = lane.waiting.pop_front() {
                        lane.busy = Some(next.ordering().to_owned());
                        running.push(work(i, Job::Handle(Box::new(next))));
                    }
                }
                received = consumer.receive(), if receiving => match received {
                    Ok(delivery) => {
                        held += 1;
                        receive_pause = idle_min;
                        let i = lane_of(delivery.ordering(), n);
                        let lane = &mut lanes[i];
                        if lane.busy.is_none() {
                            lane.busy = Some(delivery.ordering().to_owned());
                            running.push(work(i, Job::Handle(Box::new(delivery))));
                        } else {
                            lane.waiting.push_back(delivery);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %core.cfg.job, error = %e, "receiving a message failed");
                        resume_receiving = Some(tokio::time::Instant::now() + receive_pause);
                        receive_pause = receive_pause.saturating_mul(2).min(idle_max);
                    }
                },
                () = tokio::time::sleep_until(resume_at), if resume_receiving.is_some() => {
                    resume_receiving = None;
                }
                else => break,
            }
        }
    }
}
