//! The ledger: what was committed, published and handled, read from the run's tables (and
//! the broker's own count of messages left), and the problems it shows.

use std::fmt;

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::world;

/// The counts a run ends with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Business rows committed (each with its event).
    pub committed: i64,
    /// Their outbox rows completed (published and confirmed by the broker).
    pub published: i64,
    /// Distinct business steps whose effect committed.
    pub handled: i64,
    /// Committed steps without an effect.
    pub lost: i64,
    /// Effects beyond the first of a step.
    pub duplicates: i64,
    /// Outbox rows pending or under a lease.
    pub stuck_outbox: i64,
    /// Inbox rows pending or under a lease.
    pub stuck_inbox: i64,
    /// Times the handler saw a sequence number other than the next one for its key.
    pub order_violations: i64,
    /// Poison events written.
    pub poison: i64,
    /// Poison events dead-lettered by the inbox.
    pub poison_dead_lettered: i64,
    /// Dead letters that are not poison (outbox or inbox).
    pub other_dead_letters: i64,
    /// The errors of those, up to five distinct ones.
    pub other_reasons: Vec<String>,
    /// The error a poison dead letter carries (one sample).
    pub poison_reason: Option<String>,
    /// Messages the broker still holds after the drain (`None`: not measured).
    pub left_on_broker: Option<i64>,
    /// Attempts spent by outbox rows (failed publishes, leases taken over): how hard the
    /// faults hit the relays (informational).
    pub outbox_attempts: i64,
    /// Attempts spent by inbox rows (informational).
    pub inbox_attempts: i64,
}

impl Ledger {
    /// Read the ledger of `schema`.
    pub async fn read(pool: &PgPool, schema: &str, partitioned: bool) -> Result<Self, sqlx::Error> {
        let (outbox, inbox) =
            world::stores(schema, partitioned).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let ob = outbox.names().qualified.clone();
        let ob_dl = outbox.names().dead_letters.clone();
        let ib = inbox.names().qualified.clone();
        let ib_dl = inbox.names().dead_letters.clone();
        let s = schema;
        // One snapshot: counts read at different moments would disagree with each other.
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let tx = &mut *tx;
        let other = format!(
            "SELECT error FROM {ob_dl} UNION ALL SELECT d.error FROM {ib_dl} d \
             WHERE NOT EXISTS (SELECT 1 FROM {s}.poison p WHERE p.event_id::text = d.message_id)"
        );
        Ok(Self {
            committed: count(tx, format!("SELECT count(*) FROM {s}.business")).await?,
            published: count(
                tx,
                format!(
                    "SELECT count(*) FROM {s}.business b JOIN {ob} o ON o.id = b.event_id \
                 WHERE o.status = 'completed'"
                ),
            )
            .await?,
            handled: count(
                tx,
                format!("SELECT count(*) FROM (SELECT DISTINCT key, seq FROM {s}.effects) e"),
            )
            .await?,
            lost: count(
                tx,
                format!(
                    "SELECT count(*) FROM {s}.business b WHERE NOT EXISTS \
                 (SELECT 1 FROM {s}.effects e WHERE e.key = b.key AND e.seq = b.seq)"
                ),
            )
            .await?,
            duplicates: count(
                tx,
                format!(
                    "SELECT coalesce(sum(n - 1), 0)::bigint FROM \
                 (SELECT count(*) AS n FROM {s}.effects GROUP BY key, seq) e"
                ),
            )
            .await?,
            stuck_outbox: count(
                tx,
                format!(
                    "SELECT count(*) FROM {ob} WHERE status = 'pending' OR locked_at IS NOT NULL"
                ),
            )
            .await?,
            stuck_inbox: count(
                tx,
                format!(
                    "SELECT count(*) FROM {ib} WHERE status = 'pending' OR locked_at IS NOT NULL"
                ),
            )
            .await?,
            order_violations: count(tx, format!("SELECT count(*) FROM {s}.violations")).await?,
            poison: count(tx, format!("SELECT count(*) FROM {s}.poison")).await?,
            poison_dead_lettered: count(
                tx,
                format!(
                    "SELECT count(*) FROM {s}.poison p WHERE EXISTS \
                 (SELECT 1 FROM {ib_dl} d WHERE d.message_id = p.event_id::text)"
                ),
            )
            .await?,
            other_dead_letters: count(tx, format!("SELECT count(*) FROM ({other}) o")).await?,
            other_reasons: sqlx::query(AssertSqlSafe(format!(
                "SELECT DISTINCT left(error, 200) FROM ({other}) o LIMIT 5"
            )))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect(),
            poison_reason: sqlx::query(AssertSqlSafe(format!(
                "SELECT left(d.error, 200) FROM {ib_dl} d JOIN {s}.poison p \
                 ON d.message_id = p.event_id::text LIMIT 1"
            )))
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0)),
            left_on_broker: None,
            outbox_attempts: count(
                tx,
                format!("SELECT coalesce(sum(attempts_made), 0)::bigint FROM {ob}"),
            )
            .await?,
            inbox_attempts: count(
                tx,
                format!("SELECT coalesce(sum(attempts_made), 0)::bigint FROM {ib}"),
            )
            .await?,
        })
    }

    /// Whether the drain is over: nothing lost or stuck, every poison event dead-lettered.
    pub fn drained(&self) -> bool {
        self.lost == 0
            && self.stuck_outbox == 0
            && self.stuck_inbox == 0
            && self.poison_dead_lettered == self.poison
    }

    /// Every broken promise the ledger shows (empty: a clean run).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.committed == 0 {
            p.push("nothing was committed: the producer never ran".to_owned());
        }
        if self.lost > 0 {
            p.push(format!("{} committed events never handled", self.lost));
        }
        if self.handled != self.committed {
            p.push(format!(
                "{} of {} committed events handled",
                self.handled, self.committed
            ));
        }
        if self.published != self.committed {
            p.push(format!(
                "{} of {} committed events published",
                self.published, self.committed
            ));
        }
        if self.duplicates > 0 {
            p.push(format!("{} duplicate effects", self.duplicates));
        }
        if self.stuck_outbox + self.stuck_inbox > 0 {
            p.push(format!(
                "{} outbox and {} inbox rows pending or leased after the drain",
                self.stuck_outbox, self.stuck_inbox
            ));
        }
        if self.order_violations > 0 {
            p.push(format!(
                "{} per-key order violations",
                self.order_violations
            ));
        }
        if self.poison_dead_lettered != self.poison {
            p.push(format!(
                "{} of {} poison events dead-lettered",
                self.poison_dead_lettered, self.poison
            ));
        }
        if self.other_dead_letters > 0 {
            p.push(format!(
                "{} dead letters that are not poison: {}",
                self.other_dead_letters,
                self.other_reasons.join(" | ")
            ));
        }
        if let Some(n) = self.left_on_broker.filter(|n| *n > 0) {
            p.push(format!("{n} messages left on the broker after the drain"));
        }
        p
    }
}

async fn count(conn: &mut PgConnection, sql: String) -> Result<i64, sqlx::Error> {
    sqlx::query(AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .map(|r| r.get::<i64, _>(0))
}

impl fmt::Display for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let poison = format!("{} of {}", self.poison_dead_lettered, self.poison);
        let left = self
            .left_on_broker
            .map_or_else(|| "not measured".to_owned(), |n| n.to_string());
        let rows: [(&str, String); 12] = [
            ("committed", self.committed.to_string()),
            ("published", self.published.to_string()),
            ("handled", self.handled.to_string()),
            ("lost", self.lost.to_string()),
            ("duplicate effects", self.duplicates.to_string()),
            (
                "stuck (outbox + inbox)",
                format!("{} + {}", self.stuck_outbox, self.stuck_inbox),
            ),
            ("order violations", self.order_violations.to_string()),
            ("poison dead-lettered", poison),
            (
                "poison dead-letter reason",
                self.poison_reason.clone().unwrap_or_else(|| "-".into()),
            ),
            ("other dead letters", self.other_dead_letters.to_string()),
            ("left on the broker", left),
            (
                "attempts spent (outbox / inbox)",
                format!("{} / {}", self.outbox_attempts, self.inbox_attempts),
            ),
        ];
        writeln!(f, "| ledger | count |")?;
        writeln!(f, "|---|---|")?;
        for (name, value) in rows {
            writeln!(f, "| {name} | {value} |")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Ledger {
        Ledger {
            committed: 10,
            published: 10,
            handled: 10,
            poison: 2,
            poison_dead_lettered: 2,
            left_on_broker: Some(0),
            ..Ledger::default()
        }
    }

    #[test]
    fn a_clean_ledger_has_no_problems_and_each_broken_promise_is_one() {
        assert!(clean().problems().is_empty());
        assert!(clean().drained());
        type Breaks = fn(&mut Ledger);
        let broken: [(&str, Breaks); 8] = [
            ("never handled", |l| {
                l.lost = 1;
                l.handled = 9;
            }),
            ("published", |l| l.published = 9),
            ("duplicate", |l| l.duplicates = 1),
            ("pending or leased", |l| l.stuck_inbox = 1),
            ("order", |l| l.order_violations = 1),
            ("poison", |l| l.poison_dead_lettered = 1),
            ("not poison", |l| l.other_dead_letters = 1),
            ("left on the broker", |l| l.left_on_broker = Some(3)),
        ];
        for (needle, breaks) in broken {
            let mut l = clean();
            breaks(&mut l);
            let problems = l.problems();
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
        assert!(
            !Ledger::default().problems().is_empty(),
            "an empty run fails"
        );
    }
}
