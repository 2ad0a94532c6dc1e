//! PostgreSQL: the production backend, shared by any number of stateless replicas.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};

use super::{
    DbOptions, Store, StoreError, classify,
    queries::{Backend, impl_queries},
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
}

impl Backend for PgStore {
    type Db = sqlx::Postgres;
}

impl PgStore {
    /// Connects and migrates (the migrator takes an advisory lock, so replicas starting
    /// together apply each migration once).
    pub async fn connect(opts: &DbOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&opts.url).map_err(StoreError::Other)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // A ping per checkout would double the round trips of GetSession. A connection that
            // died is discarded on its first error, which surfaces as UNAVAILABLE, never as OK.
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(classify)?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Other(e.into()))?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

impl_queries!(PgStore);
