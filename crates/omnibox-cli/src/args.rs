//! The command line (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// Operate omnibox tables, and run a standalone relay.
///
/// Settings come from `--config` (TOML), `DATABASE_URL` and `OMNIBOX_*` variables (see the
/// omnibox-settings crate); flags win over both.
#[derive(Debug, Parser)]
#[command(name = "omnibox", version, about, long_about = None)]
pub struct Cli {
    /// Settings file (TOML).
    #[arg(long, short = 'c', global = true, env = "OMNIBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (overrides `[database] url` and `DATABASE_URL`).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Schema of the tables (overrides `[store] schema`).
    #[arg(long, global = true)]
    pub schema: Option<String>,
    /// Print exact JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the outbox, inbox and dead-letter tables.
    Migrate {
        /// Print the SQL of every migration instead of running it.
        #[arg(long)]
        dry_run: bool,
        /// Partitioned tables (overrides `[store] partitioned`).
        #[arg(long)]
        partitioned: bool,
    },
    /// Backlog of each table: pending, claimable, oldest claimable age, leased, failed,
    /// dead letters.
    Status {
        /// One row per topic (outbox) and source (inbox).
        #[arg(long)]
        by_topic: bool,
        /// Refresh every this many seconds until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// Look at and act on single events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Dead letters: list, group, show, replay, discard.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Bring a failed event back to pending with a fresh attempt budget.
    Requeue {
        /// The event id.
        id: Uuid,
        #[command(flatten)]
        table: Table,
    },
    /// Run relay workers (and the maintenance worker) until SIGTERM or Ctrl-C: the first
    /// signal drains (in-flight batches finish), the second aborts.
    Relay,
}

/// Which table.
#[derive(Debug, Clone, Copy, Args)]
pub struct Table {
    /// The inbox table instead of the outbox.
    #[arg(long)]
    pub inbox: bool,
}

/// `events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print one event.
    Show {
        /// The event id.
        id: Uuid,
        #[command(flatten)]
        table: Table,
    },
    /// Clear the lease of a pending event, whoever holds it.
    ForceUnlock {
        /// The event id.
        id: Uuid,
        /// Why (recorded in `last_error`).
        #[arg(long, default_value = "released by operator")]
        reason: String,
        #[command(flatten)]
        table: Table,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Cancel pending events that match the filters (all of them with `--all`), in one
    /// transaction: each becomes failed and dead-lettered, so `dead-letters replay`
    /// undoes it. Leased events are left alone and counted.
    Cancel {
        #[command(flatten)]
        filter: EventFilter,
        /// Every pending event of the table.
        #[arg(long)]
        all: bool,
        /// Why (recorded in `last_error` and the dead letter).
        #[arg(long)]
        reason: String,
        /// Count what would be cancelled; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        table: Table,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// Filters of `events cancel`.
#[derive(Debug, Clone, Default, Args)]
pub struct EventFilter {
    /// Outbox topic (repeatable).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Inbox source (repeatable).
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// Event type (repeatable).
    #[arg(long = "event-type")]
    pub event_types: Vec<String>,
    /// Outbox aggregate type (repeatable).
    #[arg(long = "aggregate-type")]
    pub aggregate_types: Vec<String>,
}

impl EventFilter {
    /// No filter given.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.sources.is_empty()
            && self.event_types.is_empty()
            && self.aggregate_types.is_empty()
    }
}

/// `--yes`.
#[derive(Debug, Clone, Copy, Args)]
pub struct Confirm {
    /// Do not ask before changing anything.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `dead-letters …`.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[command(flatten)]
        table: Table,
    },
    /// Letters grouped by error fingerprint, largest group first.
    Groups {
        #[command(flatten)]
        table: Table,
    },
    /// Print one letter, body included.
    Show {
        /// The dead letter id.
        id: Uuid,
        #[command(flatten)]
        table: Table,
    },
    /// Bring the letters' events back to pending with a fresh budget (letters without an
    /// event, e.g. malformed messages, are skipped).
    Replay {
        #[command(flatten)]
        select: Select,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        table: Table,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Delete letters for good (their failed events stay failed).
    Discard {
        #[command(flatten)]
        select: Select,
        /// Count what would be discarded; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        table: Table,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// Which dead letters: ids, a group, a filter, or all.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = true)]
pub struct Select {
    /// These letter ids (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<Uuid>,
    /// Every letter of this error fingerprint (see `dead-letters groups`).
    #[arg(long)]
    pub group: Option<String>,
    /// Letters of this event type (repeatable).
    #[arg(long = "event-type")]
    pub event_types: Vec<String>,
    /// Letters of this topic or source (repeatable).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// Every letter.
    #[arg(long)]
    pub all: bool,
}
