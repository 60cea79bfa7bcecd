//! Running the migrations from Rust, with history in our own table.

use omnibox_core::error::StoreError;
use sqlx::{AssertSqlSafe, PgPool};

use crate::config::PgStoreConfig;
use crate::ddl::{self, Migration};
use crate::error::ResultExt;

/// Create or upgrade the configured outbox, inbox and dead-letter tables.
///
/// Runs in one transaction under an advisory lock (concurrent callers wait, then see the
/// work done). History is kept in `<schema>.omnibox_migrations`, so the application's own
/// `_sqlx_migrations` table is never touched. Returns the migrations applied now.
///
/// **Tables created elsewhere.** When version 1 of an event table is not in the history but
/// a table of that name already exists with the omni-box columns (created by omni-box's own
/// migrations, which are column-compatible), it is adopted: version 1 is recorded as done
/// without running, and the later versions (dead letters, indexes) apply as usual. A table
/// of that name without those columns is left alone and the `CREATE TABLE` fails.
pub async fn migrate(pool: &PgPool, config: &PgStoreConfig) -> Result<Vec<Migration>, StoreError> {
    let tables = config.tables()?;
    let mut tx = pool.begin().await.op("migrate")?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('omnibox_migrations'))")
        .persistent(false)
        .execute(&mut *tx)
        .await
        .op("migrate")?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        tables.schema
    )))
    .execute(&mut *tx)
    .await
    .op("migrate")?;
    sqlx::raw_sql(AssertSqlSafe(ddl::history_table(&tables)))
        .execute(&mut *tx)
        .await
        .op("migrate")?;
    let select = format!(
        "SELECT 1 FROM {} WHERE table_name = $1 AND version = $2",
        tables.history_qualified()
    );
    let insert = format!(
        "INSERT INTO {} (table_name, version, description) VALUES ($1, $2, $3)",
        tables.history_qualified()
    );
    let mut applied = Vec::new();
    for m in ddl::migrations(&tables) {
        let done = sqlx::query(AssertSqlSafe(select.clone()))
            .persistent(false)
            .bind(&m.table)
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await
            .op("migrate")?
            .is_some();
        if done {
            continue;
        }
        if m.version == 1 && adoptable(&mut tx, &tables.schema, &m.table).await? {
            sqlx::query(AssertSqlSafe(insert.clone()))
                .persistent(false)
                .bind(&m.table)
                .bind(m.version)
                .bind("adopted an existing table (created by omni-box or by hand)")
                .execute(&mut *tx)
                .await
                .op("migrate")?;
            tracing::info!(table = %m.table, "migrate: adopted an existing event table as version 1");
            continue;
        }
        sqlx::raw_sql(AssertSqlSafe(m.sql.clone()))
            .execute(&mut *tx)
            .await
            .op("migrate")?;
        sqlx::query(AssertSqlSafe(insert.clone()))
            .persistent(false)
            .bind(&m.table)
            .bind(m.version)
            .bind(m.description)
            .execute(&mut *tx)
            .await
            .op("migrate")?;
        applied.push(m);
    }
    tx.commit().await.op("migrate")?;
    Ok(applied)
}

/// Columns an existing table must have to be adopted as version 1.
const EVENT_COLUMNS: &[&str] = &[
    "id",
    "event_type",
    "payload",
    "status",
    "attempts_made",
    "max_attempts",
    "scheduled_at",
    "locked_at",
    "locked_by",
    "created_at",
];

async fn adoptable(
    tx: &mut sqlx::PgConnection,
    schema: &crate::ident::Ident,
    table: &str,
) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 AND column_name = ANY($3::text[])",
    )
    .persistent(false)
    .bind(schema.as_str())
    .bind(table)
    .bind(EVENT_COLUMNS)
    .fetch_one(&mut *tx)
    .await
    .op("migrate")?;
    Ok(usize::try_from(n).unwrap_or(0) == EVENT_COLUMNS.len())
}

/// The SQL `migrate` would apply for `config` on an empty schema, for users who hand DDL
/// to their own migration tool.
pub fn migration_sql(config: &PgStoreConfig) -> Result<Vec<Migration>, StoreError> {
    Ok(ddl::migrations(&config.tables()?))
}
