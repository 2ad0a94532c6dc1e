//! The database connection.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::storage::DbOptions;

/// What sits between Gatehouse and PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pooler {
    /// `transaction` when the URL looks like a pooler: a host with Neon's `-pooler` suffix, or
    /// PgBouncer's port 6432; `none` otherwise.
    Auto,
    /// A direct connection, or a pooler in session mode: session state lasts.
    None,
    /// A transaction-mode pooler (PgBouncer, Neon's pooled endpoint, Supabase's Supavisor on
    /// 6543): no LISTEN, no session advisory locks, no session settings.
    Transaction,
}

/// The database connection.
#[derive(Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Database URL: sqlite://path/to/file.db or postgres://user@host/db?sslmode=verify-full.
    /// Its password (user:password@ or ?password=) never reaches a log; production warns about
    /// a PostgreSQL connection that is neither TLS (sslmode=require, verify-ca, verify-full)
    /// nor loopback. It may point at a transaction-mode pooler (see GATEHOUSE_DB_POOLER)
    /// [default: sqlite://<data-dir>/gatehouse.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL's direct address, when DATABASE_URL is a transaction-mode pooler (Prisma's
    /// directUrl; Neon's URL without -pooler): migrations and the revocation LISTEN use it.
    /// Without it, behind a pooler, pending migrations stop the start (run `gatehouse migrate`
    /// against the direct address) and replicas learn of revocations by polling.
    #[arg(long, env = "GATEHOUSE_DATABASE_DIRECT_URL", hide_env_values = true)]
    pub database_direct_url: Option<String>,

    /// What DATABASE_URL connects through: auto, none or transaction.
    #[arg(long, env = "GATEHOUSE_DB_POOLER", value_enum, default_value_t = Pooler::Auto)]
    pub db_pooler: Pooler,

    /// Prepare and cache statements per connection: true or false [default: false behind a
    /// transaction-mode pooler, true otherwise]. Set true behind PgBouncer 1.21+ with
    /// max_prepared_statements (Neon's pooler is one) to save a round trip per statement.
    #[arg(long, env = "GATEHOUSE_DB_PREPARED_STATEMENTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub db_prepared_statements: Option<bool>,

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

    /// Connection settings; PostgreSQL cancels a statement running past 90 % of
    /// `request_timeout`.
    pub fn options(&self, data_dir: &std::path::Path, request_timeout: Duration) -> DbOptions {
        let url = self.url(data_dir);
        let pooler = match self.db_pooler {
            Pooler::Auto => looks_pooled(&url),
            Pooler::None => false,
            Pooler::Transaction => true,
        };
        DbOptions {
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: self.db_acquire_timeout,
            direct_url: self.database_direct_url.clone().filter(|u| !u.is_empty()),
            pooler,
            prepared_statements: self.db_prepared_statements.unwrap_or(!pooler),
            // A little inside the request's own bound: PostgreSQL cancels the statement and
            // the handler answers UNAVAILABLE while it still holds its connection, rather than
            // the request timeout dropping the handler mid-statement (sqlx then has to recover
            // the connection from a half-read answer).
            statement_timeout: Some(request_timeout.mul_f64(0.9)),
            url,
        }
    }
}

/// Whether a PostgreSQL URL names a pooler by convention: Neon's `<endpoint>-pooler.<region>`
/// host, or PgBouncer's default port.
fn looks_pooled(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else { return false };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return false;
    }
    let neon = parsed.host_str().and_then(|h| h.split('.').next()).is_some_and(|first| first.ends_with("-pooler"));
    neon || parsed.port() == Some(6432)
}

#[cfg(test)]
mod tests {
    use super::looks_pooled;

    #[test]
    fn pooler_urls_are_recognised() {
        assert!(looks_pooled(
            "postgres://u:p@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/db?sslmode=require"
        ));
        assert!(looks_pooled("postgres://u@10.0.0.5:6432/db"));
        assert!(!looks_pooled("postgres://u:p@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db"));
        assert!(!looks_pooled("postgres://u@db.internal:5432/db"));
        assert!(!looks_pooled("sqlite://gatehouse.db?mode=rwc"));
    }
}
