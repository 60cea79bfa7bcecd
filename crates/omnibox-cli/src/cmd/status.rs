//! `omnibox status`.

use std::time::Duration;

use omnibox_postgres::Status;
use omnibox_postgres::sqlx::PgPool;
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::CliResult;
use crate::format;

fn to_json(s: &Status) -> Value {
    json!({
        "pending": s.pending,
        "claimable": s.claimable,
        "oldest_claimable_age_seconds": s.oldest_claimable_age.map(|a| a.num_milliseconds() as f64 / 1000.0),
        "leased": s.leased,
        "failed": s.failed,
        "completed": s.completed,
        "dead_letters": s.dead_letters,
    })
}

fn row(name: &str, s: &Status, with_dl: bool) -> Vec<String> {
    vec![
        name.to_owned(),
        s.pending.to_string(),
        s.claimable.to_string(),
        format::age(s.oldest_claimable_age),
        s.leased.to_string(),
        s.failed.to_string(),
        s.completed.to_string(),
        if with_dl {
            s.dead_letters.to_string()
        } else {
            "-".into()
        },
    ]
}

const HEADER: [&str; 8] = [
    "table",
    "pending",
    "claimable",
    "oldest",
    "leased",
    "failed",
    "completed",
    "dead letters",
];

async fn once(ctx: &Context, pool: &PgPool, by_topic: bool) -> CliResult {
    let outbox = ctx.outbox()?;
    let inbox = ctx.inbox()?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| crate::error::CliError::failed(format!("cannot get a connection: {e}")))?;
    let o = outbox.status(&mut conn).await?;
    let i = inbox.status(&mut conn).await?;
    let (ot, it) = (
        outbox.names().table.as_str().to_owned(),
        inbox.names().table.as_str().to_owned(),
    );
    let routes = if by_topic {
        Some((
            outbox.status_by_route(&mut conn).await?,
            inbox.status_by_route(&mut conn).await?,
        ))
    } else {
        None
    };
    if ctx.json {
        let mut v = json!({
            "schema": ctx.settings.store.schema,
            "outbox": {"table": ot, "totals": to_json(&o)},
            "inbox": {"table": it, "totals": to_json(&i)},
        });
        if let Some((ro, ri)) = &routes {
            let per = |list: &[Status]| -> Value {
                list.iter()
                    .map(|s| (s.route.clone(), to_json(s)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            v["outbox"]["topics"] = per(ro);
            v["inbox"]["sources"] = per(ri);
        }
        format::json(&v);
        return Ok(());
    }
    let mut rows = vec![row(&ot, &o, true), row(&it, &i, true)];
    if let Some((ro, ri)) = &routes {
        rows.extend(
            ro.iter()
                .map(|s| row(&format!("  {ot} / {}", s.route), s, false)),
        );
        rows.extend(
            ri.iter()
                .map(|s| row(&format!("  {it} / {}", s.route), s, false)),
        );
    }
    print!("{}", format::table(&HEADER, &rows));
    Ok(())
}

/// Print the status once, or every `watch` seconds until Ctrl-C.
pub async fn run(ctx: &Context, by_topic: bool, watch: Option<u64>) -> CliResult {
    let pool = ctx.pool().await?;
    let Some(every) = watch else {
        return once(ctx, &pool, by_topic).await;
    };
    loop {
        if !ctx.json {
            println!("{}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"));
        }
        once(ctx, &pool, by_topic).await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        if !ctx.json {
            println!();
        }
    }
}
