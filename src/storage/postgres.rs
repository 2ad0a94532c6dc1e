//! PostgreSQL: the production backend, shared by any number of stateless replicas.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use sqlx::{
    Connection, Either, Execute, Executor, Postgres, SqlStr,
    migrate::Migrator,
    postgres::{
        PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgQueryResult, PgRow,
        PgStatement, PgTypeInfo,
    },
};

use super::{
    DbOptions, PoolStats, Store, StoreError, classify,
    sql::{Backend, impl_queries},
};

/// The channel on which every replica announces new revocations.
const REVOCATION_CHANNEL: &str = "gatehouse_revocations";

/// The `application_name` of the connection that LISTENs on [`REVOCATION_CHANNEL`].
const LISTENER_NAME: &str = "gatehouse-revocations";

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgExec,
    max_connections: u32,
    /// A one-connection pool of its own for the revocation listener: a listener holds its
    /// connection for good, and one taken from `pool` would make `pool.close()` wait forever.
    /// `None` behind a transaction-mode pooler without a direct URL: the follower polls.
    listener_pool: Option<PgPool>,
    /// Listens for revocations from other replicas; opened lazily and reopened after a failure.
    listener: tokio::sync::Mutex<Option<PgListener>>,
}

impl Backend for PgStore {
    type Db = sqlx::Postgres;
}

impl PgStore {
    /// Connects and brings the schema up to date: migrating over a direct connection (the
    /// migrator takes an advisory lock, so replicas starting together apply each migration
    /// once), or, behind a transaction-mode pooler without a direct URL, refusing to start
    /// while migrations are pending.
    pub async fn connect(opts: &DbOptions) -> Result<Self, StoreError> {
        // As given: migrations run on these, without the pool's statement timeout.
        let base = connect_options(&opts.url)?;
        let mut connect = base.clone();
        if opts.pooler {
            // PgBouncer refuses startup parameters it does not track (`unsupported startup
            // parameter`), and sqlx's only optional one is extra_float_digits, which no query
            // here needs: Gatehouse stores no floating-point columns.
            connect = connect.extra_float_digits(None);
        } else if let Some(timeout) = opts.statement_timeout {
            connect = connect.options([("statement_timeout", millis(timeout).as_str())]);
        }
        if !opts.prepared_statements {
            connect = connect.statement_cache_capacity(0);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // A ping per checkout would double the round trips of GetSession. A connection that
            // died is discarded on its first error, which surfaces as UNAVAILABLE, never as OK.
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
            .map_err(classify)?;
        let pool = PgExec::new(pool, opts);
        let direct = opts.direct_url.as_deref().map(connect_options).transpose()?;
        match (&direct, opts.pooler) {
            (Some(direct), _) => migrate_over(direct).await?,
            (None, false) => migrate_over(&base).await?,
            (None, true) => refuse_pending_migrations(&pool).await?,
        }
        let listen_on = match direct {
            Some(direct) => Some(direct),
            None if !opts.pooler => Some(connect),
            None => {
                tracing::info!(
                    "DATABASE_URL is a transaction-mode pooler and GATEHOUSE_DATABASE_DIRECT_URL is unset: replicas \
                     learn of each other's revocations by polling the feed, not by LISTEN"
                );
                None
            }
        };
        let listener_pool = listen_on.map(|options| {
            // Named, so an operator (and the tests) can tell the listener from the pool.
            let options = options.application_name(LISTENER_NAME);
            PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(opts.acquire_timeout)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(options)
        });
        Ok(Self { pool, max_connections: opts.max_connections, listener_pool, listener: tokio::sync::Mutex::new(None) })
    }

    /// Announces new revocations to every replica when the transaction commits (through a
    /// pooler too: NOTIFY is transactional, LISTEN is what needs a session).
    async fn notify_revocations(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')").bind(REVOCATION_CHANNEL).execute(&mut **tx).await.map_err(classify)?;
        Ok(())
    }
}

/// A duration as PostgreSQL's milliseconds.
fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// Applies pending migrations over one connection of their own: no statement timeout (an index
/// on a large table may take a while), and a session for the migrator's advisory lock.
async fn migrate_over(options: &PgConnectOptions) -> Result<(), StoreError> {
    let mut conn = PgConnection::connect_with(options).await.map_err(classify)?;
    let result = MIGRATOR.run(&mut conn).await;
    let _ = conn.close().await;
    result.map_err(|e| StoreError::Other(e.into()))
}

/// Behind a transaction-mode pooler the migrator's session advisory lock protects nothing, so
/// migrations run only over a direct connection; this checks that none is pending.
async fn refuse_pending_migrations(pool: &PgExec) -> Result<(), StoreError> {
    let applied: Vec<(i64,)> =
        match sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await {
            Ok(rows) => rows,
            // 42P01: no migrations table yet, so everything is pending.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(classify(e)),
        };
    let pending = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .filter(|m| !applied.iter().any(|(v,)| *v == m.version))
        .count();
    if pending == 0 {
        return Ok(());
    }
    Err(StoreError::Setup(format!(
        "{pending} database migration(s) pending, and DATABASE_URL is a transaction-mode pooler, where the \
         migrator's advisory lock does not hold: set GATEHOUSE_DATABASE_DIRECT_URL to the database's direct \
         address, or run `gatehouse migrate` with DATABASE_URL pointing there"
    )))
}

/// The pool as the queries see it. Connected directly, a plain pool. Behind a transaction-mode
/// pooler, every statement runs inside a transaction of its own: the pooler hands a server
/// connection to a client only for the length of a transaction, and sqlx sends a statement's
/// Parse and its Execute in two round trips, which must reach the same server. Each such
/// transaction also sets the statement timeout (a pooler forwards no session settings), and,
/// where the pooler cannot keep prepared statements, clears the ones an earlier client left on
/// that server connection, so sqlx's per-connection statement names cannot collide.
#[derive(Clone, Debug)]
pub(super) struct PgExec {
    pool: PgPool,
    /// The statement that opens each transaction behind a pooler; `None` when direct.
    begin: Option<Arc<str>>,
    /// Statements may be prepared under a name (and cached, when the cache is on).
    named: bool,
}

impl PgExec {
    fn new(pool: PgPool, opts: &DbOptions) -> Self {
        let begin = opts.pooler.then(|| {
            let mut sql = String::from("BEGIN");
            if let Some(timeout) = opts.statement_timeout {
                sql.push_str(&format!("; SET LOCAL statement_timeout = {}", millis(timeout)));
            }
            if !opts.prepared_statements {
                sql.push_str("; DEALLOCATE ALL");
            }
            Arc::from(sql)
        });
        Self { pool, begin, named: opts.prepared_statements }
    }

    /// Opens a transaction.
    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        match &self.begin {
            None => self.pool.begin().await,
            Some(sql) => self.pool.begin_with(sqlx::AssertSqlSafe(sql.to_string())).await,
        }
    }
}

/// A statement taken apart into owned pieces, so it can run on a task of its own.
struct Owned {
    sql: SqlStr,
    arguments: Option<PgArguments>,
    persistent: bool,
}

impl Owned {
    fn take<'q>(mut query: impl Execute<'q, Postgres>) -> Result<Self, sqlx::Error> {
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
        let persistent = query.persistent();
        Ok(Self { sql: query.sql(), arguments, persistent })
    }
}

impl PgExec {
    /// Runs one statement to the end on a task of its own, inside its own transaction behind a
    /// pooler. A caller that stops waiting (its deadline passed) then never drops sqlx in the
    /// middle of a statement: the statement finishes, or PostgreSQL's statement timeout ends
    /// it, and its connection goes back to the pool in order. (A connection dropped mid-
    /// statement whose statement is then cancelled is lost to sqlx 0.9's pool for good;
    /// `outage::…::a_statement_stuck_behind_a_lock_is_bounded` shows it.)
    async fn run(&self, statement: Owned) -> Result<Vec<Either<PgQueryResult, PgRow>>, sqlx::Error> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let Owned { sql, arguments, persistent } = statement;
            let persistent = persistent && this.named;
            match &this.begin {
                None => this.execute_on(&this.pool, sql, arguments, persistent).await,
                Some(_) => {
                    let mut tx = this.begin().await?;
                    let results = this.execute_on(&mut *tx, sql, arguments, persistent).await?;
                    tx.commit().await?;
                    Ok(results)
                }
            }
        });
        task.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    async fn execute_on<'c, X>(
        &self,
        executor: X,
        sql: SqlStr,
        arguments: Option<PgArguments>,
        persistent: bool,
    ) -> Result<Vec<Either<PgQueryResult, PgRow>>, sqlx::Error>
    where
        X: Executor<'c, Database = Postgres>,
    {
        match arguments {
            Some(arguments) => {
                executor.fetch_many(sqlx::query_with(sql, arguments).persistent(persistent)).try_collect().await
            }
            // No arguments: the simple protocol, as sqlx sends a bare string.
            None => executor.fetch_many(sql).try_collect().await,
        }
    }
}

impl<'p> Executor<'p> for &'p PgExec {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        // Collected on the statement's task, then streamed: the queries here read pages, not
        // tables.
        let rows = async move {
            let rows = self.run(Owned::take(query)?).await?;
            Ok::<_, sqlx::Error>(futures_util::stream::iter(rows.into_iter().map(Ok)))
        };
        futures_util::stream::once(rows).try_flatten().boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move {
            let results = self.run(Owned::take(query)?).await?;
            Ok(results.into_iter().find_map(|r| r.right()))
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).describe(sql)
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
        if let Some(listener_pool) = &self.listener_pool {
            listener_pool.close().await;
        }
        self.pool.pool.close().await;
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn wait_for_revocations(&self, timeout: Duration) {
        let Some(listener_pool) = &self.listener_pool else {
            // Polling: the caller reads the feed after every `timeout`.
            tokio::time::sleep(timeout).await;
            return;
        };
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match PgListener::connect_with(listener_pool).await {
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
        let size = self.pool.pool.size();
        let idle = u32::try_from(self.pool.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats { size, idle, max: self.max_connections }
    }
}

impl_queries!(PgStore);
