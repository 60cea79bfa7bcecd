//! Time partitions for the partitioned tables (`PARTITION BY RANGE (created_at)`).
//!
//! [`maintain`] creates the partitions for the coming periods and drops those whose whole
//! range is older than the retention, skipping (and reporting) any that still hold
//! `pending` or `failed` rows. Run it from a periodic job; it is idempotent. Partitions are
//! named `<table>_pYYYYMMDD` (the period's first day, UTC). The catch-all
//! `<table>_default` partition created by [`crate::migrate`] takes rows outside every range.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeDelta, Utc};
use omnibox_core::error::StoreError;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::config::TableNames;
use crate::error::ResultExt;
use crate::ident::Ident;

/// Partition length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Period {
    /// One partition per UTC day.
    Day,
    /// One partition per UTC month.
    Month,
}

impl Period {
    fn start_of(self, d: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => d,
            Period::Month => d.with_day(1).unwrap_or(d),
        }
    }

    fn next(self, d: NaiveDate) -> NaiveDate {
        match self {
            Period::Day => d.checked_add_days(Days::new(1)).unwrap_or(d),
            Period::Month => d.checked_add_months(Months::new(1)).unwrap_or(d),
        }
    }
}

/// What [`maintain`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionReport {
    /// Partitions created.
    pub created: Vec<String>,
    /// Partitions dropped.
    pub dropped: Vec<String>,
    /// Expired partitions kept because they still hold pending or failed rows.
    pub kept: Vec<String>,
}

/// Create partitions covering `now` and the next `ahead` periods; drop partitions whose
/// range ended more than `retention` before `now`. Takes the caller's connection; DDL on a
/// partitioned table takes strong locks, so run it outside busy transactions.
pub async fn maintain(
    conn: &mut PgConnection,
    names: &TableNames,
    period: Period,
    now: DateTime<Utc>,
    ahead: u32,
    retention: TimeDelta,
) -> Result<PartitionReport, StoreError> {
    if !names.partitioned {
        return Err(StoreError::InvalidRequest(format!(
            "{} is not a partitioned table",
            names.qualified
        )));
    }
    let schema = names
        .qualified
        .split('.')
        .next()
        .unwrap_or("\"public\"")
        .to_owned();
    let base = names.table.as_str();
    let mut report = PartitionReport::default();
    let mut start = period.start_of(now.date_naive());
    for _ in 0..=ahead {
        let end = period.next(start);
        let name = Ident::new(format!("{base}_p{}", start.format("%Y%m%d")))?;
        let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL AS e")
            .persistent(false)
            .bind(format!("{schema}.{name}"))
            .fetch_one(&mut *conn)
            .await
            .op("partition maintain")?
            .try_get("e")
            .op("partition maintain")?;
        if !exists {
            let sql = format!(
                "CREATE TABLE {schema}.{name} PARTITION OF {} FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
                names.qualified,
                start.format("%Y-%m-%d"),
                end.format("%Y-%m-%d"),
            );
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .op("partition create")?;
            report.created.push(name.as_str().to_owned());
        }
        start = end;
    }
    // Expired partitions: our naming scheme only.
    let rows = sqlx::query(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1) ORDER BY c.relname",
    )
    .persistent(false)
    .bind(names.qualified.clone())
    .fetch_all(&mut *conn)
    .await
    .op("partition list")?;
    let cutoff = now - retention;
    let prefix = format!("{base}_p");
    for row in rows {
        let name: String = row.try_get("name").op("partition list")?;
        let Some(date) = name
            .strip_prefix(&prefix)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
        else {
            continue;
        };
        let end = period.next(date);
        let Some(end_at) = end.and_hms_opt(0, 0, 0).map(|d| d.and_utc()) else {
            continue;
        };
        if end_at > cutoff {
            continue;
        }
        let ident = Ident::new(name.clone())?;
        let busy: bool = sqlx::query(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {schema}.{ident} WHERE status IN ('pending', 'failed')) AS b"
        )))
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .op("partition check")?
        .try_get("b")
        .op("partition check")?;
        if busy {
            report.kept.push(name);
            continue;
        }
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {schema}.{ident}")))
            .execute(&mut *conn)
            .await
            .op("partition drop")?;
        report.dropped.push(name);
    }
    Ok(report)
}
