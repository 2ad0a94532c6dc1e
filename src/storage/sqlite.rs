//! SQLite: the embedded default. One file in WAL mode, so readers never wait for the writer.

use std::{os::unix::fs::MetadataExt, path::PathBuf, str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    DbOptions, PoolStats, Store, StoreError, classify, faulted_within,
    sql::{Backend, impl_queries},
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// The SQLite store.
pub struct SqliteStore {
    pool: SqlitePool,
    max_connections: u32,
    /// The database file and its inode at start: if the file is deleted or replaced, the pool
    /// would go on writing into a file nobody can see, so health must fail.
    file: Option<(PathBuf, u64)>,
}

impl Backend for SqliteStore {
    type Db = sqlx::Sqlite;
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub async fn connect(opts: &DbOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(&opts.url)
            .map_err(StoreError::Other)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL is durable against application crashes and much faster.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Each pooled connection keeps its own page cache (2 MiB by default, 32 MiB over a
            // full pool). The session cache answers the hot path and the kernel caches the file,
            // so 512 KiB each bounds memory without slowing the rest.
            .pragma("cache_size", "-512")
            .foreign_keys(true);
        let path = connect.get_filename().to_path_buf();
        let in_memory = opts.url.contains(":memory:") || path.as_os_str().is_empty();
        if let Some(dir) = path.parent().filter(|d| !in_memory && !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.into()))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .after_release(|conn, _| {
                Box::pin(async move {
                    let stuck = left_in_transaction(conn).await?;
                    if stuck {
                        tracing::warn!("closing a SQLite connection left inside a failed transaction");
                    }
                    Ok(!stuck)
                })
            })
            .connect_with(connect)
            .await
            .map_err(classify)?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Other(e.into()))?;
        let file = if in_memory {
            None
        } else {
            let ino = std::fs::metadata(&path).map_err(|e| StoreError::Unavailable(e.into()))?.ino();
            Some((path, ino))
        };
        Ok(Self { pool, max_connections: opts.max_connections, file })
    }

    /// One process owns a SQLite file: its watchers are woken in-process, so there is nothing
    /// to announce.
    async fn notify_revocations(_tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How long after a database fault returning connections are asked whether SQLite still holds
/// them inside a transaction.
const FAULT_WINDOW: Duration = Duration::from_secs(60);

/// Whether a connection coming back to the pool is still inside a transaction. A write that
/// fails on a full disk or an I/O error can leave one open (SQLite may or may not roll back by
/// itself, and sqlx's rollback can fail too): that connection holds the write lock, so every
/// other writer waits out its busy timeout and fails with "database is locked" long after
/// space returns, and its next statements would join a transaction that never commits. Such a
/// connection is closed, which rolls back and releases the lock, and the pool opens a new one.
///
/// Asking SQLite itself costs a round trip to the connection's worker thread on every release
/// (GetSession fell from 0.34–0.37 of the empty RPC's throughput to 0.27–0.32; BENCHMARKS.md). So it is asked only while database
/// faults are recent: a failure leaves a connection stuck only together with a failed
/// statement (classified, so noted, before its connection is returned), and a stuck
/// connection makes every other writer fail with "database is locked", which keeps the window
/// open until that connection is next released and closed.
async fn left_in_transaction(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        return Ok(true);
    }
    if !faulted_within(FAULT_WINDOW) {
        return Ok(false);
    }
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is locked away from the connection's worker thread while it is held,
    // and sqlite3_get_autocommit only reads the connection's state.
    let autocommit = unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    Ok(autocommit == 0)
}

#[async_trait]
impl Store for SqliteStore {
    /// Healthy means the database takes a write: reads keep working on a full disk.
    async fn ping(&self) -> Result<(), StoreError> {
        probe_write(&self.pool).await?;
        if let Some((path, ino)) = &self.file {
            let meta = std::fs::metadata(path).map_err(|e| StoreError::Unavailable(e.into()))?;
            if meta.ino() != *ino {
                return Err(StoreError::Unavailable(sqlx::Error::Configuration(
                    "the database file was replaced".into(),
                )));
            }
        }
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn wait_for_revocations(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats { size, idle, max: self.max_connections }
    }
}

impl_queries!(SqliteStore);
