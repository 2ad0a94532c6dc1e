//! The database connection.

use std::time::Duration;

use clap::Args;

use crate::storage::DbOptions;

/// The database connection.
#[derive(Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Database URL: sqlite://path/to/file.db or postgres://user@host/db?sslmode=verify-full.
    /// Its password (user:password@ or ?password=) never reaches a log; production warns about
    /// a PostgreSQL connection that is neither TLS (sslmode=require, verify-ca, verify-full)
    /// nor loopback [default: sqlite://<data-dir>/gatehouse.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Largest number of pooled database connections.
    #[arg(long, env = "GATEHOUSE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a query waits for a database connection before failing with UNAVAILABLE.
    #[arg(long, env = "GATEHOUSE_DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
}

impl DatabaseArgs {
    /// The effective URL: as configured, or a SQLite file in `data_dir`.
    pub fn url(&self, data_dir: &std::path::Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("gatehouse.db").display()))
    }

    /// Connection settings.
    pub fn options(&self, data_dir: &std::path::Path) -> DbOptions {
        DbOptions {
            url: self.url(data_dir),
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: self.db_acquire_timeout,
        }
    }
}
