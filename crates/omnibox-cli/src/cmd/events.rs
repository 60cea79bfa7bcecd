//! `omnibox events …` and `omnibox requeue`.

use omnibox_core::Event;
use omnibox_core::store::Filters;
use omnibox_postgres::sqlx::{Acquire, PgPool};
use omnibox_postgres::{PgEvent, PgEventStore};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::args::{Confirm, EventFilter, EventsCommand, Table};
use crate::confirm::confirm;
use crate::context::Context;
use crate::error::{CliError, CliResult};
use crate::format;

fn db_error(e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("database: {e}"))
}

/// Run an `events` subcommand.
pub async fn run(ctx: &Context, cmd: EventsCommand) -> CliResult {
    let pool = ctx.pool().await?;
    let inbox = match &cmd {
        EventsCommand::Show { table, .. }
        | EventsCommand::ForceUnlock { table, .. }
        | EventsCommand::Cancel { table, .. } => table.inbox,
    };
    if inbox {
        on(ctx, &pool, &ctx.inbox()?, cmd).await
    } else {
        on(ctx, &pool, &ctx.outbox()?, cmd).await
    }
}

async fn on<E: PgEvent + Serialize>(
    ctx: &Context,
    pool: &PgPool,
    store: &PgEventStore<E>,
    cmd: EventsCommand,
) -> CliResult {
    let table = store.names().table.as_str().to_owned();
    let mut conn = pool.acquire().await.map_err(db_error)?;
    match cmd {
        EventsCommand::Show { id, .. } => {
            let Some(e) = store.event(&mut conn, id).await? else {
                return Err(CliError::not_found(format!("no event {id} in {table}")));
            };
            if ctx.json {
                format::json(&e);
            } else {
                show(&e);
            }
            Ok(())
        }
        EventsCommand::ForceUnlock {
            id,
            reason,
            confirm: c,
            ..
        } => {
            let Some(e) = store.event(&mut conn, id).await? else {
                return Err(CliError::not_found(format!("no event {id} in {table}")));
            };
            let Some(holder) = e.common().locked_by.clone() else {
                return Err(CliError::not_found(format!("event {id} is not leased")));
            };
            confirm(c, &format!("release the lease of {holder} on event {id}?"))?;
            if store.force_unlock(&mut conn, id, &reason).await? {
                report(
                    ctx,
                    json!({"id": id, "unlocked": true, "previous_holder": holder}),
                    &format!("event {id}: lease of {holder} released"),
                );
                Ok(())
            } else {
                Err(CliError::not_found(format!(
                    "event {id} is no longer leased"
                )))
            }
        }
        EventsCommand::Cancel {
            filter,
            all,
            reason,
            dry_run,
            confirm: c,
            ..
        } => {
            cancel(
                ctx, &mut conn, store, &table, filter, all, &reason, dry_run, c,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn cancel<E: PgEvent>(
    ctx: &Context,
    conn: &mut omnibox_postgres::sqlx::PgConnection,
    store: &PgEventStore<E>,
    table: &str,
    filter: EventFilter,
    all: bool,
    reason: &str,
    dry_run: bool,
    c: Confirm,
) -> CliResult {
    if filter.is_empty() && !all {
        return Err(CliError::usage(
            "events cancel: give a filter (--topic, --source, --event-type, --aggregate-type) or --all",
        ));
    }
    let filters = Filters::none()
        .topics(filter.topics)
        .sources(filter.sources)
        .event_types(filter.event_types)
        .aggregate_types(filter.aggregate_types);
    // Count inside a transaction that is rolled back: a dry run changes nothing.
    let mut tx = conn.begin().await.map_err(db_error)?;
    let preview = store.cancel_pending(&mut tx, &filters, reason).await?;
    tx.rollback().await.map_err(db_error)?;
    if dry_run {
        report(
            ctx,
            json!({"dry_run": true, "would_cancel": preview.cancelled, "leased": preview.leased}),
            &format!(
                "dry run: would cancel {} pending events of {table} ({} leased, left alone)",
                preview.cancelled, preview.leased
            ),
        );
        return Ok(());
    }
    if preview.cancelled == 0 {
        report(
            ctx,
            json!({"cancelled": 0, "leased": preview.leased}),
            &format!("nothing to cancel ({} leased)", preview.leased),
        );
        return Ok(());
    }
    confirm(
        c,
        &format!("cancel {} pending events of {table}?", preview.cancelled),
    )?;
    let mut tx = conn.begin().await.map_err(db_error)?;
    let done = store.cancel_pending(&mut tx, &filters, reason).await?;
    tx.commit().await.map_err(db_error)?;
    report(
        ctx,
        json!({"cancelled": done.cancelled, "leased": done.leased}),
        &format!(
            "cancelled {} events of {table} ({} leased, left alone); `dead-letters replay` undoes it",
            done.cancelled, done.leased
        ),
    );
    Ok(())
}

/// `omnibox requeue <id>`.
pub async fn requeue(ctx: &Context, id: Uuid, table: Table) -> CliResult {
    let pool = ctx.pool().await?;
    let mut conn = pool.acquire().await.map_err(db_error)?;
    let (done, name) = if table.inbox {
        let s = ctx.inbox()?;
        (
            s.requeue_failed(&mut conn, id).await?,
            s.names().table.as_str().to_owned(),
        )
    } else {
        let s = ctx.outbox()?;
        (
            s.requeue_failed(&mut conn, id).await?,
            s.names().table.as_str().to_owned(),
        )
    };
    if !done {
        return Err(CliError::not_found(format!(
            "event {id} is not a failed event of {name}"
        )));
    }
    report(
        ctx,
        json!({"id": id, "requeued": true}),
        &format!("event {id}: pending again, with a fresh attempt budget"),
    );
    Ok(())
}

fn report(ctx: &Context, value: serde_json::Value, text: &str) {
    if ctx.json {
        format::json(&value);
    } else {
        println!("{text}");
    }
}

fn show<E: Event + Serialize>(e: &E) {
    let c = e.common();
    let mut rows: Vec<Vec<String>> = vec![
        vec!["id".into(), c.id.to_string()],
        vec!["event_type".into(), c.event_type.clone()],
        vec!["route".into(), e.route().to_owned()],
        vec!["status".into(), c.status.to_string()],
        vec![
            "attempts".into(),
            format!("{} of {}", c.attempts_made, c.max_attempts),
        ],
        vec!["created_at".into(), c.created_at.to_rfc3339()],
        vec!["scheduled_at".into(), c.scheduled_at.to_rfc3339()],
    ];
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    rows.push(vec!["locked_by".into(), opt(&c.locked_by)]);
    rows.push(vec![
        "locked_at".into(),
        c.locked_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into()),
    ]);
    rows.push(vec![
        "completed_at".into(),
        c.completed_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into()),
    ]);
    rows.push(vec!["last_error".into(), opt(&c.last_error)]);
    let payload = serde_json::to_string(&c.payload).unwrap_or_default();
    rows.push(vec![
        "payload".into(),
        format!(
            "{} ({})",
            payload.chars().take(200).collect::<String>(),
            format::size(payload.len())
        ),
    ]);
    print!("{}", format::table(&["field", "value"], &rows));
}
