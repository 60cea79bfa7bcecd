//! `omnibox`: operate omnibox tables (migrate, status, events, dead letters, requeue) and
//! run a standalone relay from a settings file. See the crate README.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod cmd;
mod confirm;
mod context;
mod error;
mod format;

use std::process::ExitCode;

use clap::Parser;
use omnibox_settings::LogFormat;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};
use crate::context::Context;
use crate::error::CliResult;

fn init_logs(ctx: &Context) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&ctx.settings.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match ctx.settings.log.format {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}

async fn run(cli: Cli) -> CliResult {
    let mut ctx = Context::load(&cli)?;
    if matches!(cli.command, Command::Relay) {
        init_logs(&ctx);
    }
    match cli.command {
        Command::Migrate {
            dry_run,
            partitioned,
        } => cmd::migrate::run(&mut ctx, dry_run, partitioned).await,
        Command::Status { by_topic, watch } => cmd::status::run(&ctx, by_topic, watch).await,
        Command::Events(c) => cmd::events::run(&ctx, c).await,
        Command::DeadLetters(c) => cmd::dead_letters::run(&ctx, c).await,
        Command::Requeue { id, table } => cmd::events::requeue(&ctx, id, table).await,
        Command::Relay => cmd::relay::run(&ctx).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("omnibox: cannot start the runtime: {e}");
            return ExitCode::from(error::EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omnibox: {e}");
            e.exit_code()
        }
    }
}
