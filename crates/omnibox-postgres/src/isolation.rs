//! Isolation levels: what the library's own transactions run at, and the check that keeps a
//! caller's transaction from breaking partitioned-table dedup.
//!
//! Plain tables dedup with a unique index, which is correct at every isolation level (a
//! concurrent duplicate waits for the first writer, then conflicts). Partitioned tables
//! cannot have a unique index on the dedup key across partitions; they dedup with a
//! transaction-level advisory lock on the key followed by `INSERT … WHERE NOT EXISTS`. That
//! is correct only at READ COMMITTED, where the insert's snapshot is taken after the lock
//! was granted and so sees a row the previous holder committed. At REPEATABLE READ or
//! SERIALIZABLE the snapshot is the transaction's first one, taken before the lock, and
//! both writers insert.

use omnibox_core::error::StoreError;

/// How [`PgDatabase`](crate::PgDatabase) begins its transactions: explicitly at READ
/// COMMITTED, whatever the pool's or the role's `default_transaction_isolation` says.
pub(crate) const BEGIN_READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// The value of `transaction_isolation` at which lock-then-check dedup is correct.
const READ_COMMITTED: &str = "read committed";

/// Refuse a keyed insert into the partitioned `table` when the transaction runs above READ
/// COMMITTED (`level` is `current_setting('transaction_isolation')`). READ UNCOMMITTED
/// behaves as READ COMMITTED in PostgreSQL and is accepted.
pub(crate) fn check_keyed_insert(table: &str, level: &str) -> Result<(), StoreError> {
    if level == READ_COMMITTED || level == "read uncommitted" {
        Ok(())
    } else {
        Err(StoreError::UnsupportedIsolation {
            table: table.to_owned(),
            level: level.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_committed_passes() {
        assert!(check_keyed_insert("s.t", "read committed").is_ok());
        assert!(check_keyed_insert("s.t", "read uncommitted").is_ok());
        for level in ["repeatable read", "serializable"] {
            let err = check_keyed_insert("s.t", level).unwrap_err();
            assert!(matches!(err, StoreError::UnsupportedIsolation { .. }));
            let text = err.to_string();
            assert!(
                text.contains(level) && text.contains("READ COMMITTED"),
                "{text}"
            );
        }
    }
}
