//! Store configuration: schema, table names, table layout and operational switches.

use std::time::Duration;

use omnibox_core::error::StoreError;
use omnibox_core::model::Limits;

use crate::ident::Ident;

/// What a successful settlement does with the row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompletionMode {
    /// Keep the row as `completed` with `completed_at` (the reference behaviour; rows are
    /// removed later by retention cleanup). Compatible with a Python omni-box service
    /// sharing the table.
    #[default]
    MarkCompleted,
    /// Delete the row in the settling statement. Less table and index bloat and no
    /// retention job, but no completed history (and an inbox row is its own dedup record:
    /// deleting it lets a redelivered message be processed again, so this mode applies to
    /// the outbox store only; the inbox store always marks completed).
    Delete,
}

/// Configuration shared by [`crate::PgOutboxStore`], [`crate::PgInboxStore`] and
/// [`crate::migrate`]. Names are validated when a store is built (or on `migrate`): a bad
/// name is [`StoreError::InvalidIdentifier`], never SQL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgStoreConfig {
    /// Schema holding the tables (default `public`).
    pub schema: String,
    /// Outbox table (default `outbox_events`, or `outbox_events_partitioned`).
    pub outbox_table: Option<String>,
    /// Inbox table (default `inbox_events`, or `inbox_events_partitioned`).
    pub inbox_table: Option<String>,
    /// Tables are `PARTITION BY RANGE (created_at)` (see [`crate::partition`]).
    pub partitioned: bool,
    /// What completing an outbox event does.
    pub completion: CompletionMode,
    /// `SET LOCAL statement_timeout` for each claim (none by default).
    pub claim_timeout: Option<Duration>,
    /// Commit the relay's claims without waiting for the disk (default `false`); see
    /// [`PgStoreConfig::asynchronous_claims`].
    pub asynchronous_claims: bool,
    /// PgBouncer transaction-pooling mode: no named prepared statements are left on server
    /// connections (`persistent(false)`), and wake-up is poll-only.
    pub pgbouncer: bool,
    /// Channel to `pg_notify` on when events are enqueued (none: no NOTIFY).
    pub notify_channel: Option<String>,
    /// Validation limits for rows read back and errors written.
    pub limits: Limits,
}

impl Default for PgStoreConfig {
    fn default() -> Self {
        Self {
            schema: "public".to_owned(),
            outbox_table: None,
            inbox_table: None,
            partitioned: false,
            completion: CompletionMode::MarkCompleted,
            claim_timeout: None,
            asynchronous_claims: false,
            pgbouncer: false,
            notify_channel: None,
            limits: Limits::default(),
        }
    }
}

impl PgStoreConfig {
    /// The defaults: schema `public`, tables `outbox_events` / `inbox_events`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Name the outbox table.
    pub fn outbox_table(mut self, table: impl Into<String>) -> Self {
        self.outbox_table = Some(table.into());
        self
    }

    /// Name the inbox table.
    pub fn inbox_table(mut self, table: impl Into<String>) -> Self {
        self.inbox_table = Some(table.into());
        self
    }

    /// Use range-partitioned tables.
    pub fn partitioned(mut self, yes: bool) -> Self {
        self.partitioned = yes;
        self
    }

    /// Choose the completion mode.
    pub fn completion(mut self, mode: CompletionMode) -> Self {
        self.completion = mode;
        self
    }

    /// Bound each claim statement with `SET LOCAL statement_timeout`.
    pub fn claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = Some(timeout);
        self
    }

    /// Commit each claim that commits right after it (the relay's leased path,
    /// [`ClaimRequest::exclusive`](omnibox_core::store::ClaimRequest::exclusive)) with
    /// `synchronous_commit = off`, saving one of the two disk flushes of a relay batch.
    /// Default `false`.
    ///
    /// A claim writes only leases (and the failures of leases it took over), so nothing is
    /// lost: a server crash may forget the last claims, and their events are pending again
    /// and are published once more. The first publish of each key's events still reaches
    /// the broker in order. What changes, only after a server crash: another relay may
    /// claim a forgotten event at once instead of after its lease, while the relay that
    /// claimed it may still publish it, so a duplicate of an event can reach the broker
    /// after its key's next events. Consumers that drop duplicates (an omnibox inbox does)
    /// see no difference; turn it on only when every consumer of the topic does.
    /// Tested by `omnibox-e2e/tests/lease_crash.rs`.
    pub fn asynchronous_claims(mut self, yes: bool) -> Self {
        self.asynchronous_claims = yes;
        self
    }

    /// Switch PgBouncer transaction-pooling mode on or off.
    pub fn pgbouncer(mut self, yes: bool) -> Self {
        self.pgbouncer = yes;
        self
    }

    /// NOTIFY `channel` once per enqueue call (so at most once per transaction after
    /// PostgreSQL folds identical notifications).
    pub fn notify_channel(mut self, channel: impl Into<String>) -> Self {
        self.notify_channel = Some(channel.into());
        self
    }

    /// Set the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Resolve and validate every name.
    pub fn tables(&self) -> Result<Tables, StoreError> {
        let schema = Ident::new(self.schema.clone())?;
        let default = |base: &str| {
            if self.partitioned {
                format!("{base}_partitioned")
            } else {
                base.to_owned()
            }
        };
        let outbox = Ident::new(
            self.outbox_table
                .clone()
                .unwrap_or_else(|| default("outbox_events")),
        )?;
        let inbox = Ident::new(
            self.inbox_table
                .clone()
                .unwrap_or_else(|| default("inbox_events")),
        )?;
        let notify = self.notify_channel.clone().map(Ident::new).transpose()?;
        Ok(Tables {
            outbox: TableNames::new(&schema, outbox, self.partitioned, true)?,
            inbox: TableNames::new(&schema, inbox, self.partitioned, false)?,
            history: Ident::new("omnibox_migrations")?,
            schema,
            notify,
        })
    }
}

/// Every validated name the stores and migrations use.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Tables {
    /// The schema.
    pub schema: Ident,
    /// Outbox table names.
    pub outbox: TableNames,
    /// Inbox table names.
    pub inbox: TableNames,
    /// Our migration-history table (in `schema`; never `_sqlx_migrations`).
    pub history: Ident,
    /// NOTIFY channel.
    pub notify: Option<Ident>,
}

impl Tables {
    /// `"schema"."omnibox_migrations"`.
    pub fn history_qualified(&self) -> String {
        format!("{}.{}", self.schema, self.history)
    }
}

/// Names derived from one event table.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TableNames {
    /// The table.
    pub table: Ident,
    /// `"schema"."table"`.
    pub qualified: String,
    /// Its dead-letter table, `"schema"."<table>_dead_letters"`.
    pub dead_letters: String,
    /// The bare dead-letter table name.
    pub dead_letters_name: Ident,
    /// Prefix of constraint and index names (`outbox_events`, or `outbox_events_p` for
    /// `outbox_events_partitioned`, as in the reference).
    pub prefix: String,
    /// Partitioned layout.
    pub partitioned: bool,
    /// Outbox (`true`) or inbox.
    pub outbox: bool,
}

impl TableNames {
    fn new(
        schema: &Ident,
        table: Ident,
        partitioned: bool,
        outbox: bool,
    ) -> Result<Self, StoreError> {
        let prefix = match table.as_str().strip_suffix("_partitioned") {
            Some(base) => format!("{base}_p"),
            None => table.as_str().to_owned(),
        };
        // Every derived name must fit in 63 bytes.
        for suffix in [
            "_pending_key_order",
            "_completed_cleanup",
            "_message_consumer",
        ] {
            Ident::new(format!("idx_{prefix}{suffix}"))?;
        }
        let dl = table.derive("", "_dead_letters")?;
        Ident::new(format!("idx_{}_fingerprint", dl.as_str()))?;
        if partitioned {
            table.derive("", "_default")?;
            table.derive("", "_p20000101")?;
        }
        Ok(Self {
            qualified: format!("{schema}.{table}"),
            dead_letters: format!("{schema}.{dl}"),
            dead_letters_name: dl,
            table,
            prefix,
            partitioned,
            outbox,
        })
    }

    /// Index or constraint name `<kind>_<prefix>_<rule>`.
    pub fn object(&self, kind: &str, rule: &str) -> String {
        format!("{kind}_{}_{rule}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_partitioned_names_match_the_reference() {
        let t = PgStoreConfig::new().tables().unwrap();
        assert_eq!(t.outbox.qualified, "\"public\".\"outbox_events\"");
        assert_eq!(t.outbox.prefix, "outbox_events");
        let p = PgStoreConfig::new().partitioned(true).tables().unwrap();
        assert_eq!(p.outbox.table.as_str(), "outbox_events_partitioned");
        assert_eq!(p.outbox.prefix, "outbox_events_p");
        assert_eq!(p.inbox.prefix, "inbox_events_p");
    }

    #[test]
    fn hostile_names_are_typed_errors() {
        for cfg in [
            PgStoreConfig::new().outbox_table("x; DROP TABLE y"),
            PgStoreConfig::new().schema("public\"; --"),
            PgStoreConfig::new().inbox_table("x".repeat(50)),
            PgStoreConfig::new().notify_channel("a b"),
        ] {
            assert!(matches!(
                cfg.tables(),
                Err(StoreError::InvalidIdentifier { .. })
            ));
        }
    }
}
