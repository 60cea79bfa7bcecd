//! `omnibox migrate`.

use omnibox_postgres::{migrate, migration_sql};
use serde_json::json;

use crate::context::Context;
use crate::error::CliResult;
use crate::format;

/// Run (or print, with `dry_run`) the migrations of the configured tables.
pub async fn run(ctx: &mut Context, dry_run: bool, partitioned: bool) -> CliResult {
    if partitioned {
        ctx.settings.store.partitioned = true;
    }
    let config = ctx.store_config();
    if dry_run {
        let all = migration_sql(&config)?;
        if ctx.json {
            let v: Vec<_> = all
                .iter()
                .map(|m| json!({"table": m.table, "version": m.version, "description": m.description, "sql": m.sql}))
                .collect();
            format::json(&v);
        } else {
            for m in &all {
                println!(
                    "-- {} v{}: {}\n{}\n",
                    m.table,
                    m.version,
                    m.description,
                    m.sql.trim_end()
                );
            }
            eprintln!(
                "dry run: nothing applied ({} migrations; those already recorded are skipped by a real run)",
                all.len()
            );
        }
        return Ok(());
    }
    let pool = ctx.pool().await?;
    let applied = migrate(&pool, &config).await?;
    if ctx.json {
        let v: Vec<_> = applied
            .iter()
            .map(|m| json!({"table": m.table, "version": m.version, "description": m.description}))
            .collect();
        format::json(&json!({"schema": config.schema, "applied": v}));
    } else if applied.is_empty() {
        println!("schema {}: up to date", config.schema);
    } else {
        let rows: Vec<Vec<String>> = applied
            .iter()
            .map(|m| {
                vec![
                    m.table.clone(),
                    m.version.to_string(),
                    m.description.to_owned(),
                ]
            })
            .collect();
        print!("{}", format::table(&["table", "version", "applied"], &rows));
        println!(
            "schema {}: {} migrations applied",
            config.schema,
            applied.len()
        );
    }
    Ok(())
}
