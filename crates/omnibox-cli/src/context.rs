//! Settings and connections shared by the commands.

use std::time::Duration;

use omnibox_postgres::sqlx::postgres::PgPoolOptions;
use omnibox_postgres::sqlx::{Connection, PgConnection, PgPool};
use omnibox_postgres::{PgInboxStore, PgOutboxStore, PgStoreConfig};
use omnibox_settings::{Loader, Settings};

use crate::args::Cli;
use crate::error::{CliError, CliResult};

/// Loaded settings with the command-line overrides applied.
pub struct Context {
    /// The settings.
    pub settings: Settings,
    /// Print JSON.
    pub json: bool,
}

impl Context {
    /// Load the settings file (if any) and the environment, then apply the flags.
    pub fn load(cli: &Cli) -> CliResult<Self> {
        let mut loader = Loader::new();
        if let Some(path) = &cli.config {
            loader = loader.file(path);
        }
        let mut settings = loader.load()?;
        if let Some(url) = &cli.database_url {
            settings.database.url = Some(url.clone());
        }
        if let Some(schema) = &cli.schema {
            settings.store.schema = schema.clone();
        }
        Ok(Self {
            settings,
            json: cli.json,
        })
    }

    /// The store configuration.
    pub fn store_config(&self) -> PgStoreConfig {
        self.settings.store.to_config()
    }

    /// A pool, checked by connecting once.
    pub async fn pool(&self) -> CliResult<PgPool> {
        let db = &self.settings.database;
        let url = db.url.as_deref().ok_or_else(|| {
            CliError::usage(
                "no database URL: pass --database-url, set DATABASE_URL or `[database] url`",
            )
        })?;
        let unreachable = |e: &dyn std::fmt::Display| {
            CliError::failed(format!(
                "cannot connect to PostgreSQL at {}: {e} (is it running? check --database-url / DATABASE_URL)",
                db.display_url()
            ))
        };
        // One plain attempt first: the pool retries a refused connection until its acquire
        // timeout, and an operator should hear about a wrong URL at once.
        let first = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url))
            .await
            .map_err(|_| unreachable(&"no answer within 10 s"))?
            .map_err(|e| unreachable(&e))?;
        let _ = first.close().await;
        PgPoolOptions::new()
            .max_connections(db.max_connections)
            .acquire_timeout(db.acquire_timeout)
            .connect(url)
            .await
            .map_err(|e| unreachable(&e))
    }

    /// The outbox store.
    pub fn outbox(&self) -> CliResult<PgOutboxStore> {
        Ok(PgOutboxStore::new(&self.store_config())?)
    }

    /// The inbox store.
    pub fn inbox(&self) -> CliResult<PgInboxStore> {
        Ok(PgInboxStore::new(&self.store_config())?)
    }
}
