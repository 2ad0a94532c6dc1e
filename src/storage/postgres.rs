//! PostgreSQL: the production backend, shared by any number of stateless replicas.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
};

use super::{
    DbOptions, PoolStats, Store, StoreError, classify,
    sql::{Backend, impl_queries},
};

/// The channel on which every replica announces new revocations.
const REVOCATION_CHANNEL: &str = "gatehouse_revocations";

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    max_connections: u32,
    /// A one-connection pool of its own for the revocation listener: a listener holds its
    /// connection for good, and one taken from `pool` would make `pool.close()` wait forever.
    listener_pool: PgPool,
    /// Listens for revocations from other replicas; opened lazily and reopened after a failure.
    listener: tokio::sync::Mutex<Option<PgListener>>,
}

impl Backend for PgStore {
    type Db = sqlx::Postgres;
}

impl PgStore {
    /// Connects and migrates (the migrator takes an advisory lock, so replicas starting
    /// together apply each migration once).
    pub async fn connect(opts: &DbOptions) -> Result<Self, StoreError> {
        let connect = connect_options(&opts.url)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // A ping per checkout would double the round trips of GetSession. A connection that
            // died is discarded on its first error, which surfaces as UNAVAILABLE, never as OK.
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
            .map_err(classify)?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Other(e.into()))?;
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(connect);
        Ok(Self { pool, max_connections: opts.max_connections, listener_pool, listener: tokio::sync::Mutex::new(None) })
    }

    /// Announces new revocations to every replica when the transaction commits.
    async fn notify_revocations(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')").bind(REVOCATION_CHANNEL).execute(&mut **tx).await.map_err(classify)?;
        Ok(())
    }
}

/// The query parameters sqlx reads from a PostgreSQL URL (`sqlx-postgres` `options/parse.rs`).
const KNOWN_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Parses a PostgreSQL URL. Parameters sqlx does not know are dropped here, before sqlx sees
/// them: sqlx ignores them anyway, but logs each with its value, and libpq's `sslpassword`
/// is a secret. Our own warning names the parameter only.
fn connect_options(raw: &str) -> Result<PgConnectOptions, StoreError> {
    let config = |why: &str| StoreError::Other(sqlx::Error::Configuration(why.to_owned().into()));
    let mut url = url::Url::parse(raw).map_err(|e| config(&format!("DATABASE_URL does not parse: {e}")))?;
    type Pairs = Vec<(String, String)>;
    let (known, unknown): (Pairs, Pairs) = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| KNOWN_PARAMS.contains(&k.as_str()) || k.starts_with("options["));
    if !unknown.is_empty() {
        for (key, _) in &unknown {
            tracing::warn!(%key, "DATABASE_URL: ignoring a connection parameter this client does not support");
        }
        if known.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(known);
        }
    }
    PgConnectOptions::from_str(url.as_str()).map_err(StoreError::Other)
}

/// Where a PostgreSQL connection goes in the clear: the host, when it is neither loopback
/// (nor a Unix socket) nor TLS (`sslmode=require`, `verify-ca` or `verify-full`, from the
/// URL or `PGSSLMODE`). sqlx's default, `prefer`, falls back to plaintext without a word and
/// verifies nothing, so it counts as clear.
pub(super) fn plaintext_remote_host(raw: &str) -> Option<String> {
    use sqlx::postgres::PgSslMode;
    let options = connect_options(raw).ok()?;
    if options.get_socket().is_some() {
        return None;
    }
    if matches!(options.get_ssl_mode(), PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull) {
        return None;
    }
    let host = options.get_host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_owned())
}

#[async_trait]
impl Store for PgStore {
    /// Healthy means the database takes a write: a read-only standby or a full disk answers
    /// reads but refuses every change.
    async fn ping(&self) -> Result<(), StoreError> {
        probe_write(&self.pool).await
    }

    async fn close(&self) {
        // Drop the listener first: its connection goes back to (and closes with) its own pool.
        drop(self.listener.lock().await.take());
        self.listener_pool.close().await;
        self.pool.close().await;
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn wait_for_revocations(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match PgListener::connect_with(&self.listener_pool).await {
                Ok(mut listener) => {
                    if listener.listen(REVOCATION_CHANNEL).await.is_ok() {
                        *guard = Some(listener);
                    }
                }
                Err(error) => tracing::debug!(%error, "revocation listener unavailable"),
            }
        }
        match guard.as_mut() {
            Some(listener) => match tokio::time::timeout(timeout, listener.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => *guard = None,
            },
            None => {
                drop(guard);
                tokio::time::sleep(timeout).await;
            }
        }
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats { size, idle, max: self.max_connections }
    }
}

impl_queries!(PgStore);
