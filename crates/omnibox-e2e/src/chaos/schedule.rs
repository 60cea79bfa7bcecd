//! The fault schedule: a pure function of the seed, the run's length and the broker, so a
//! seed replays the same faults at the same offsets against the same targets.

use std::fmt;
use std::time::Duration;

use super::Broker;

/// Which process a process fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The producer writing business rows and their events.
    Producer,
    /// Relay process `n` (0-based).
    Relay(usize),
    /// Inbox worker process `n` (0-based).
    Inbox(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Producer => f.write_str("producer"),
            Target::Relay(n) => write!(f, "relay-{n}"),
            Target::Inbox(n) => write!(f, "inbox-{n}"),
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the process, start a new one after `restart_after`.
    Kill {
        /// The process.
        target: Target,
        /// How long it stays dead.
        restart_after: Duration,
    },
    /// SIGSTOP the process for `hold` (longer than the lease), then SIGCONT.
    Stop {
        /// The process.
        target: Target,
        /// How long it stays frozen.
        hold: Duration,
    },
    /// `pg_terminate_backend` on every connection of the rig's processes.
    TerminateBackends,
    /// The broker closes every connection of the rig's processes (RabbitMQ only).
    CloseBrokerConnections,
    /// The broker node restarts (RabbitMQ `stop_app`/`start_app`; NATS server restart).
    RestartBroker {
        /// How long the broker stays down.
        down: Duration,
    },
    /// The throwaway PostgreSQL cluster restarts (`pg_ctl stop -m fast`, then start).
    RestartPostgres,
    /// `count` poison events written in one transaction; the handler always refuses them.
    PoisonBurst {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill {
                target,
                restart_after,
            } => write!(f, "SIGKILL {target}, restart after {restart_after:?}"),
            Fault::Stop { target, hold } => write!(f, "SIGSTOP {target} for {hold:?}"),
            Fault::TerminateBackends => f.write_str("pg_terminate_backend on every rig connection"),
            Fault::CloseBrokerConnections => f.write_str("broker closes every rig connection"),
            Fault::RestartBroker { down } => write!(f, "broker restart ({down:?} down)"),
            Fault::RestartPostgres => f.write_str("PostgreSQL restart"),
            Fault::PoisonBurst { count } => write!(f, "burst of {count} poison events"),
        }
    }
}

/// A fault at an offset from the start of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// When, from the start of the load.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// The shape of a run the schedule is drawn for.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The broker (decides which broker faults exist).
    pub broker: Broker,
    /// How long the load runs.
    pub length: Duration,
    /// Relay processes.
    pub relays: usize,
    /// Inbox worker processes.
    pub inboxes: usize,
    /// The relays' and inboxes' lease (a SIGSTOP holds longer than this).
    pub lease: Duration,
}

/// Draw the schedule for `seed`: a fault every 2–5 s from the third second until 5 s
/// before the end, each kind in turn weighted, targets and durations drawn from the seed.
pub fn schedule(seed: u64, shape: Shape) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kinds: Vec<(u32, u8)> = vec![(4, 0), (3, 1), (1, 2), (1, 5), (1, 6)];
    match shape.broker {
        Broker::Rabbitmq => kinds.extend([(1, 3), (1, 4)]),
        Broker::Nats => kinds.push((1, 4)),
        // The mock cluster runs inside the rig: no connection close, no restart.
        Broker::Kafka => {}
    }
    let total: u32 = kinds.iter().map(|(w, _)| w).sum();
    let mut out = Vec::new();
    let mut at = Duration::from_secs(3);
    let end = shape.length.saturating_sub(Duration::from_secs(5));
    while at < end {
        let mut pick = rng.u32(0..total);
        let kind = kinds
            .iter()
            .find(|(w, _)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map_or(0, |(_, k)| *k);
        let fault = match kind {
            0 => Fault::Kill {
                target: target(&mut rng, &shape),
                restart_after: Duration::from_millis(rng.u64(200..2_000)),
            },
            1 => Fault::Stop {
                target: target(&mut rng, &shape),
                hold: shape.lease + Duration::from_millis(rng.u64(500..2_500)),
            },
            2 => Fault::TerminateBackends,
            3 => Fault::CloseBrokerConnections,
            4 => Fault::RestartBroker {
                down: Duration::from_millis(rng.u64(500..2_000)),
            },
            5 => Fault::RestartPostgres,
            _ => Fault::PoisonBurst {
                count: rng.usize(3..12),
            },
        };
        out.push(Planned { at, fault });
        at += Duration::from_millis(rng.u64(2_000..5_000));
    }
    out
}

fn target(rng: &mut fastrand::Rng, shape: &Shape) -> Target {
    match rng.u32(0..10) {
        0 => Target::Producer,
        1..=5 => Target::Relay(rng.usize(0..shape.relays.max(1))),
        _ => Target::Inbox(rng.usize(0..shape.inboxes.max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(broker: Broker) -> Shape {
        Shape {
            broker,
            length: Duration::from_secs(600),
            relays: 3,
            inboxes: 3,
            lease: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_seed_replays_the_same_schedule_and_another_seed_does_not() {
        let a = schedule(42, shape(Broker::Rabbitmq));
        assert_eq!(a, schedule(42, shape(Broker::Rabbitmq)));
        assert_ne!(a, schedule(43, shape(Broker::Rabbitmq)));
        assert!(a.len() > 100, "{}", a.len());
    }

    #[test]
    fn every_fault_kind_occurs_and_stops_outlast_the_lease() {
        let s = schedule(7, shape(Broker::Rabbitmq));
        let has = |f: fn(&Fault) -> bool| s.iter().any(|p| f(&p.fault));
        assert!(has(|f| matches!(f, Fault::Kill { .. })));
        assert!(has(|f| matches!(f, Fault::Stop { .. })));
        assert!(has(|f| matches!(f, Fault::TerminateBackends)));
        assert!(has(|f| matches!(f, Fault::CloseBrokerConnections)));
        assert!(has(|f| matches!(f, Fault::RestartBroker { .. })));
        assert!(has(|f| matches!(f, Fault::RestartPostgres)));
        assert!(has(|f| matches!(f, Fault::PoisonBurst { .. })));
        for p in &s {
            if let Fault::Stop { hold, .. } = p.fault {
                assert!(hold > Duration::from_secs(3));
            }
        }
    }

    #[test]
    fn kafka_mock_has_no_broker_faults() {
        let s = schedule(7, shape(Broker::Kafka));
        assert!(!s.iter().any(|p| matches!(
            p.fault,
            Fault::CloseBrokerConnections | Fault::RestartBroker { .. }
        )));
    }
}
