//! `omnibox dead-letters …`.

use omnibox_core::store::DeadLetter;
use omnibox_postgres::sqlx::{Acquire, PgConnection};
use omnibox_postgres::{DeadLetterSelector, PgEvent, PgEventStore};
use serde_json::json;

use crate::args::{Confirm, DeadLettersCommand, Select};
use crate::confirm::confirm;
use crate::context::Context;
use crate::error::{CliError, CliResult};
use crate::format;

/// Ids per replay or discard transaction when letters are chosen by id or filter.
const CHUNK: usize = 500;

fn db_error(e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("database: {e}"))
}

/// Run a `dead-letters` subcommand.
pub async fn run(ctx: &Context, cmd: DeadLettersCommand) -> CliResult {
    let pool = ctx.pool().await?;
    let mut conn = pool.acquire().await.map_err(db_error)?;
    let inbox = match &cmd {
        DeadLettersCommand::List { table, .. }
        | DeadLettersCommand::Groups { table }
        | DeadLettersCommand::Show { table, .. }
        | DeadLettersCommand::Replay { table, .. }
        | DeadLettersCommand::Discard { table, .. } => table.inbox,
    };
    if inbox {
        on(ctx, &mut conn, &ctx.inbox()?, cmd).await
    } else {
        on(ctx, &mut conn, &ctx.outbox()?, cmd).await
    }
}

async fn on<E: PgEvent>(
    ctx: &Context,
    conn: &mut PgConnection,
    store: &PgEventStore<E>,
    cmd: DeadLettersCommand,
) -> CliResult {
    let table = store.names().dead_letters_name.as_str().to_owned();
    match cmd {
        DeadLettersCommand::List { limit, offset, .. } => {
            let letters = store.list_dead_letters(conn, limit, offset).await?;
            if ctx.json {
                format::json(&letters);
            } else if letters.is_empty() {
                println!("{table}: no dead letters");
            } else {
                let now = chrono::Utc::now();
                let rows: Vec<Vec<String>> = letters
                    .iter()
                    .map(|l| {
                        vec![
                            l.id.to_string(),
                            format::age(Some(now - l.created_at)),
                            l.event_type.clone().unwrap_or_else(|| "-".into()),
                            l.route.clone().unwrap_or_else(|| "-".into()),
                            l.attempts.to_string(),
                            one_line(&l.error, 80),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    format::table(
                        &["id", "age", "event type", "route", "attempts", "error"],
                        &rows
                    )
                );
            }
            Ok(())
        }
        DeadLettersCommand::Groups { .. } => {
            let groups = store.dead_letter_groups(conn).await?;
            if ctx.json {
                let v: Vec<_> = groups
                    .iter()
                    .map(|g| json!({"fingerprint": g.fingerprint, "count": g.count, "sample_error": g.sample_error, "first_at": g.first_at, "last_at": g.last_at}))
                    .collect();
                format::json(&v);
            } else if groups.is_empty() {
                println!("{table}: no dead letters");
            } else {
                let now = chrono::Utc::now();
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.fingerprint.clone(),
                            g.count.to_string(),
                            format::age(Some(now - g.last_at)),
                            one_line(&g.sample_error, 80),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    format::table(&["group", "letters", "newest", "sample error"], &rows)
                );
            }
            Ok(())
        }
        DeadLettersCommand::Show { id, .. } => {
            let Some(letter) = store.dead_letter_by_id(conn, id).await? else {
                return Err(CliError::not_found(format!(
                    "no dead letter {id} in {table}"
                )));
            };
            if ctx.json {
                format::json(&letter);
            } else {
                let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                let rows = vec![
                    vec!["id".into(), letter.id.to_string()],
                    vec![
                        "event_id".into(),
                        letter
                            .event_id
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ],
                    vec!["kind".into(), letter.kind.clone()],
                    vec!["event_type".into(), opt(&letter.event_type)],
                    vec!["route".into(), opt(&letter.route)],
                    vec!["message_id".into(), opt(&letter.message_id)],
                    vec!["attempts".into(), letter.attempts.to_string()],
                    vec!["created_at".into(), letter.created_at.to_rfc3339()],
                    vec!["error".into(), one_line(&letter.error, 400)],
                    vec![
                        "body size".into(),
                        format::size(letter.original_body().len()),
                    ],
                ];
                print!("{}", format::table(&["field", "value"], &rows));
                println!("body:\n{}", letter.body);
            }
            Ok(())
        }
        DeadLettersCommand::Replay {
            select,
            dry_run,
            confirm: c,
            ..
        } => act(ctx, conn, store, &table, select, dry_run, c, Action::Replay).await,
        DeadLettersCommand::Discard {
            select,
            dry_run,
            confirm: c,
            ..
        } => {
            act(
                ctx,
                conn,
                store,
                &table,
                select,
                dry_run,
                c,
                Action::Discard,
            )
            .await
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

async fn all_letters<E: PgEvent>(
    store: &PgEventStore<E>,
    conn: &mut PgConnection,
) -> CliResult<Vec<DeadLetter>> {
    let mut out = Vec::new();
    loop {
        let page = store
            .list_dead_letters(conn, 1000, out.len() as u64)
            .await?;
        let n = page.len();
        out.extend(page);
        if n < 1000 {
            return Ok(out);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Discard,
}

/// What a selection resolves to: one selector, or ids to work through in chunks.
async fn resolve<E: PgEvent>(
    store: &PgEventStore<E>,
    conn: &mut PgConnection,
    s: Select,
) -> CliResult<Vec<DeadLetterSelector>> {
    let by_filter = !s.event_types.is_empty() || !s.routes.is_empty();
    let kinds = [!s.ids.is_empty(), s.group.is_some(), by_filter, s.all];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(CliError::usage(
            "choose one of: --id …, --group <fingerprint>, --event-type/--route filters, --all",
        ));
    }
    if s.all {
        return Ok(vec![DeadLetterSelector::All]);
    }
    if let Some(g) = s.group {
        return Ok(vec![DeadLetterSelector::Fingerprint(g)]);
    }
    let ids = if by_filter {
        all_letters(store, conn)
            .await?
            .into_iter()
            .filter(|l| {
                s.event_types.is_empty()
                    || l.event_type
                        .as_ref()
                        .is_some_and(|t| s.event_types.contains(t))
            })
            .filter(|l| {
                s.routes.is_empty() || l.route.as_ref().is_some_and(|r| s.routes.contains(r))
            })
            .map(|l| l.id)
            .collect()
    } else {
        s.ids
    };
    Ok(ids
        .chunks(CHUNK)
        .map(|c| DeadLetterSelector::Ids(c.to_vec()))
        .collect())
}

/// `(changed, skipped)` of one selector, in the caller's transaction.
async fn apply<E: PgEvent>(
    store: &PgEventStore<E>,
    conn: &mut PgConnection,
    sel: &DeadLetterSelector,
    action: Action,
) -> CliResult<(u64, u64)> {
    Ok(match action {
        Action::Replay => {
            let r = store.replay_dead_letters(conn, sel).await?;
            (r.replayed, r.skipped)
        }
        Action::Discard => (store.discard_dead_letters(conn, sel).await?, 0),
    })
}

#[allow(clippy::too_many_arguments)]
async fn act<E: PgEvent>(
    ctx: &Context,
    conn: &mut PgConnection,
    store: &PgEventStore<E>,
    table: &str,
    select: Select,
    dry_run: bool,
    c: Confirm,
    action: Action,
) -> CliResult {
    let selectors = resolve(store, conn, select).await?;
    let verb = match action {
        Action::Replay => "replay",
        Action::Discard => "discard",
    };
    // The exact count: the same statements in a transaction that is rolled back.
    let (mut would, mut would_skip) = (0, 0);
    {
        let mut tx = conn.begin().await.map_err(db_error)?;
        for sel in &selectors {
            let (n, s) = apply(store, &mut tx, sel, action).await?;
            would += n;
            would_skip += s;
        }
        tx.rollback().await.map_err(db_error)?;
    }
    if dry_run {
        if ctx.json {
            format::json(
                &json!({"dry_run": true, "action": verb, "would_change": would, "would_skip": would_skip}),
            );
        } else {
            println!(
                "dry run: would {verb} {would} dead letters of {table} ({would_skip} skipped)"
            );
        }
        return Ok(());
    }
    if would == 0 {
        if ctx.json {
            format::json(&json!({"action": verb, "changed": 0, "skipped": would_skip}));
        } else {
            println!("nothing to {verb} ({would_skip} skipped)");
        }
        return Ok(());
    }
    confirm(c, &format!("{verb} {would} dead letters of {table}?"))?;
    let (mut done, mut skipped) = (0, 0);
    let total = selectors.len();
    for (i, sel) in selectors.iter().enumerate() {
        let mut tx = conn.begin().await.map_err(db_error)?;
        let (n, s) = apply(store, &mut tx, sel, action).await?;
        tx.commit().await.map_err(db_error)?;
        done += n;
        skipped += s;
        if total > 1 {
            eprintln!("{verb}: {done}/{would} ({} of {total} batches)", i + 1);
        }
    }
    if ctx.json {
        format::json(&json!({"action": verb, "changed": done, "skipped": skipped}));
    } else {
        let past = match action {
            Action::Replay => "replayed",
            Action::Discard => "discarded",
        };
        println!("{past} {done} dead letters of {table} ({skipped} skipped)");
    }
    Ok(())
}
