//! Partitioned outbox tables (`PARTITION BY RANGE (created_at)`) and the partition helper:
//! create partitions for the coming days, drop partitions past retention (keeping any that
//! still hold pending or failed events).
//!
//! Run: `cargo run -p omnibox-examples --example partitioned` (DATABASE_URL).

use chrono::{TimeDelta, Utc};
use omnibox::OutboxEvent;
use omnibox::postgres::partition::{self, Period};
use omnibox::postgres::sqlx::{self, AssertSqlSafe, Row};
use omnibox_examples::{Demo, OrderPlaced, Result};

#[tokio::main]
async fn main() -> Result {
    let demo = Demo::connect("partitioned", |c| c.partitioned(true)).await?;
    let result = run(&demo).await;
    demo.cleanup().await;
    if result.is_ok() {
        println!("partitioned example finished");
    }
    result
}

async fn run(demo: &Demo) -> Result {
    let names = demo.config.tables()?.outbox;
    println!(
        "1. migrated partitioned table {} (with a catch-all default partition)",
        names.qualified
    );
    let mut conn = demo.pool.acquire().await?;
    let now = Utc::now();

    // Pretend the job already ran 30 days ago: two daily partitions from back then.
    let month_ago = now - TimeDelta::days(30);
    let old = partition::maintain(
        &mut conn,
        &names,
        Period::Day,
        month_ago,
        1,
        TimeDelta::days(7),
    )
    .await?;
    println!("2. maintenance as of 30 days ago created {:?}", old.created);
    // An event still pending in the oldest partition: it must survive retention.
    let stuck = OutboxEvent::message(&OrderPlaced {
        order: uuid::Uuid::now_v7(),
        customer: "customer-1".into(),
        total: 1,
    })
    .created_at(month_ago)
    .build()?;
    demo.outbox.enqueue(&mut conn, &stuck).await?;
    println!("   enqueued a pending event created 30 days ago");

    // Today's run: three days ahead, seven days of retention.
    let report =
        partition::maintain(&mut conn, &names, Period::Day, now, 3, TimeDelta::days(7)).await?;
    println!("3. maintenance today: created {:?}", report.created);
    println!("   dropped (expired and empty): {:?}", report.dropped);
    println!(
        "   kept (expired but still holding pending/failed events): {:?}",
        report.kept
    );

    let fresh = OutboxEvent::message(&OrderPlaced {
        order: uuid::Uuid::now_v7(),
        customer: "customer-2".into(),
        total: 2,
    })
    .build()?;
    demo.outbox.enqueue(&mut conn, &fresh).await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT tableoid::regclass::text AS part, count(*) AS n FROM {} GROUP BY 1 ORDER BY 1",
        names.qualified
    )))
    .fetch_all(&mut *conn)
    .await?;
    println!("4. where the events live:");
    for r in &rows {
        println!(
            "   {}: {} event(s)",
            r.try_get::<String, _>("part")?,
            r.try_get::<i64, _>("n")?
        );
    }
    // Running it again is a no-op.
    let again =
        partition::maintain(&mut conn, &names, Period::Day, now, 3, TimeDelta::days(7)).await?;
    println!(
        "5. second run: created {}, dropped {}, kept {:?} (idempotent)",
        again.created.len(),
        again.dropped.len(),
        again.kept
    );
    if report.created.len() != 4 || report.dropped.len() != 1 || report.kept.len() != 1 {
        return Err(format!("unexpected maintenance report {report:?}").into());
    }
    Ok(())
}
