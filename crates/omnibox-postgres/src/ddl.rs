//! DDL for the event tables, rendered from validated names. The files in `migrations/` are
//! this output for the default names (a test keeps them in sync).

use crate::config::{TableNames, Tables};

/// One versioned migration of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// The table this migration belongs to (history key).
    pub table: String,
    /// Version, starting at 1, per table.
    pub version: i32,
    /// What it does.
    pub description: &'static str,
    /// The SQL (several statements).
    pub sql: String,
}

/// Every migration for the configured tables, in order: outbox table, outbox dead letters,
/// inbox table, inbox dead letters.
pub fn migrations(tables: &Tables) -> Vec<Migration> {
    let mut out = Vec::new();
    for t in [&tables.outbox, &tables.inbox] {
        out.push(Migration {
            table: t.table.as_str().to_owned(),
            version: 1,
            description: if t.outbox {
                "create the outbox table"
            } else {
                "create the inbox table"
            },
            sql: event_table(t),
        });
        out.push(Migration {
            table: t.table.as_str().to_owned(),
            version: 2,
            description: "create the dead-letter table",
            sql: dead_letter_table(t),
        });
    }
    // Appended after every earlier version, so the shipped files keep their numbers.
    for t in [&tables.outbox, &tables.inbox] {
        out.push(Migration {
            table: t.table.as_str().to_owned(),
            version: 3,
            description: "extend the claim indexes with the claim's sort columns",
            sql: claim_indexes_v3(t),
        });
    }
    for t in [&tables.outbox, &tables.inbox] {
        out.push(Migration {
            table: t.table.as_str().to_owned(),
            version: 4,
            description: "dead letters keep bodies and headers that text and jsonb cannot hold",
            sql: lossless_dead_letters_v4(t),
        });
    }
    out
}

/// Version 4: a body that is not valid UTF-8 or holds a NUL (binary payloads) cannot be kept
/// in `body TEXT`, and a header with a NUL cannot be kept in `headers JSONB`: the exact bytes
/// go to `body_bytes`, the headers as JSON text to `headers_text`. Nullable, so rows written
/// by omni-box (which knows neither column) stay valid.
fn lossless_dead_letters_v4(t: &TableNames) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS body_bytes BYTEA, ADD COLUMN IF NOT EXISTS headers_text TEXT;\n",
        t.dead_letters
    )
}

/// Version 3: the claim orders by `(scheduled_at, created_at, id)` and the outbox's per-key
/// check compares `(created_at, id)`; the v1 indexes stop at `scheduled_at` and
/// `created_at`. Same names and predicates as v1 (what omni-box looks for), more columns.
fn claim_indexes_v3(t: &TableNames) -> String {
    let q = &t.qualified;
    let schema = t.qualified.split('.').next().unwrap_or("\"public\"");
    let fetch = t.object("idx", "pending_fetch");
    let mut sql = format!(
        "DROP INDEX IF EXISTS {schema}.{fetch};
CREATE INDEX {fetch} ON {q} (scheduled_at, created_at, id) WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts;
"
    );
    if t.outbox {
        let order = t.object("idx", "pending_key_order");
        sql.push_str(&format!(
            "DROP INDEX IF EXISTS {schema}.{order};
CREATE INDEX {order} ON {q} (topic, partition_key, created_at, id) WHERE status = 'pending';
"
        ));
    }
    sql
}

fn event_table(t: &TableNames) -> String {
    let q = &t.qualified;
    let (kind_columns, ck_prefix) = if t.outbox {
        (
            "    aggregate_type VARCHAR(50) NOT NULL,\n    aggregate_id UUID NOT NULL,\n    topic VARCHAR(255) NOT NULL,\n    partition_key VARCHAR(255) NOT NULL,\n",
            &t.prefix,
        )
    } else {
        (
            "    message_id VARCHAR(255) NOT NULL,\n    consumer_group VARCHAR(255) NOT NULL,\n    source VARCHAR(255) NOT NULL,\n",
            &t.prefix,
        )
    };
    let (pk, partition, created_unique) = if t.partitioned {
        (
            "(created_at, id)",
            " PARTITION BY RANGE (created_at)",
            ", created_at",
        )
    } else {
        ("(id)", "", "")
    };
    let mut sql = format!(
        "CREATE TABLE {q} (
    id UUID NOT NULL,
    event_type VARCHAR(100) NOT NULL,
    payload JSONB NOT NULL,
    headers JSONB,
    trace_id VARCHAR(64),
    idempotency_key VARCHAR(128),
    correlation_id VARCHAR(64),
    causation_id VARCHAR(64),
    schema_version VARCHAR(50),
    status VARCHAR(20) NOT NULL,
    attempts_made INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    last_error VARCHAR(2000),
    scheduled_at TIMESTAMP WITH TIME ZONE NOT NULL,
    completed_at TIMESTAMP WITH TIME ZONE,
    locked_at TIMESTAMP WITH TIME ZONE,
    locked_by VARCHAR(255),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT timezone('UTC', now()),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT timezone('UTC', now()),
{kind_columns}    PRIMARY KEY {pk},
    CONSTRAINT ck_{ck_prefix}_attempts_valid CHECK (attempts_made <= max_attempts),
    CONSTRAINT ck_{ck_prefix}_completed_status_consistency CHECK ((status = 'completed' AND completed_at IS NOT NULL) OR (status <> 'completed' AND completed_at IS NULL)),
    CONSTRAINT ck_{ck_prefix}_lock_consistency CHECK ((locked_at IS NULL AND locked_by IS NULL) OR (locked_at IS NOT NULL AND locked_by IS NOT NULL))
){partition};
"
    );
    let idx = |rule: &str| t.object("idx", rule);
    sql.push_str(&format!(
        "CREATE INDEX {} ON {q} (scheduled_at) WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts;
CREATE INDEX {} ON {q} (locked_at) WHERE locked_at IS NOT NULL;
CREATE INDEX {} ON {q} (completed_at) WHERE status = 'completed' AND completed_at IS NOT NULL;
CREATE UNIQUE INDEX {} ON {q} (idempotency_key{created_unique}) WHERE idempotency_key IS NOT NULL;
CREATE INDEX {} ON {q} (created_at);
CREATE INDEX {} ON {q} (updated_at);
",
        idx("pending_fetch"),
        idx("locked_at"),
        idx("completed_cleanup"),
        idx("idempotency_key"),
        idx("created_at"),
        idx("updated_at"),
    ));
    if t.outbox {
        sql.push_str(&format!(
            "CREATE INDEX {} ON {q} (topic, partition_key, created_at) WHERE status = 'pending';\n",
            idx("pending_key_order")
        ));
    } else if t.partitioned {
        sql.push_str(&format!(
            "CREATE UNIQUE INDEX {} ON {q} (message_id, consumer_group, created_at);\nCREATE INDEX {} ON {q} (message_id, consumer_group);\n",
            idx("deduplication"),
            idx("message_consumer"),
        ));
    } else {
        // The reference names this one without the table prefix.
        let name = if t.prefix == "inbox_events" {
            "idx_inbox_deduplication".to_owned()
        } else {
            idx("deduplication")
        };
        sql.push_str(&format!(
            "CREATE UNIQUE INDEX {name} ON {q} (message_id, consumer_group);\n"
        ));
    }
    if t.partitioned {
        // The primary key leads with created_at: lookups by id (settle, try_lock) need
        // their own index. Additive to the reference layout.
        sql.push_str(&format!("CREATE INDEX {} ON {q} (id);\n", idx("id")));
        // A catch-all partition so inserts never fail for lack of a range partition;
        // `partition::maintain` adds the time ranges.
        sql.push_str(&format!(
            "CREATE TABLE {} PARTITION OF {q} DEFAULT;\n",
            default_partition(t)
        ));
    }
    sql
}

/// `"schema"."<table>_default"`.
pub(crate) fn default_partition(t: &TableNames) -> String {
    let schema = t.qualified.split('.').next().unwrap_or("\"public\"");
    format!("{schema}.\"{}_default\"", t.table.as_str())
}

fn dead_letter_table(t: &TableNames) -> String {
    let dl = &t.dead_letters;
    let name = t.dead_letters_name.as_str();
    format!(
        "CREATE TABLE {dl} (
    id UUID PRIMARY KEY,
    event_id UUID,
    kind VARCHAR(10) NOT NULL,
    event_type VARCHAR(100),
    route VARCHAR(255),
    message_id VARCHAR(255),
    body TEXT NOT NULL,
    headers JSONB,
    error TEXT NOT NULL,
    fingerprint VARCHAR(32) NOT NULL GENERATED ALWAYS AS (md5(regexp_replace(error, '[0-9a-fA-F-]{{8,}}|[0-9]+', '#', 'g'))) STORED,
    attempts INTEGER NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT timezone('UTC', now())
);
CREATE INDEX idx_{name}_fingerprint ON {dl} (fingerprint);
CREATE INDEX idx_{name}_event_id ON {dl} (event_id);
"
    )
}

/// The history table (ours, never `_sqlx_migrations`).
pub(crate) fn history_table(tables: &Tables) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
    table_name VARCHAR(63) NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, version)
)",
        tables.history_qualified()
    )
}
