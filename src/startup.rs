//! Builds the application from configuration and runs it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::TimeDelta;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use crate::{
    config::Config,
    domain::{
        Auth, AuthConfig, Clock, Profiles,
        password::{HashParams, PasswordHasher, PasswordPolicy},
        token::TokenHasher,
    },
    grpc::{self, GrpcSettings, health},
    storage::{self, Store},
};

/// A built, bound, not yet serving Gatehouse.
pub struct Application {
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
    auth: Arc<Auth>,
    profiles: Arc<Profiles>,
}

impl Application {
    /// Connects and migrates the database, starts the hashing pool and binds the listener.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        if !config.is_production() {
            tracing::warn!(
                "development mode: the server secret is generated into the data folder and reflection is on; \
                 set GATEHOUSE_ENV=production for real deployments"
            );
        }
        let secret = config.load_secret()?;
        let tokens = TokenHasher::new(secret.expose_secret())
            .map_err(|e| anyhow::anyhow!("token key: {e}"))?;

        let db = config.db_options();
        let store = storage::connect(&db).await.with_context(|| {
            format!(
                "opening the database {}",
                crate::config::redact_url(&db.url)
            )
        })?;

        let threads = config
            .hash_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let params = HashParams {
            m_cost: config.argon2_memory_kib,
            t_cost: config.argon2_iterations,
            p_cost: config.argon2_parallelism,
        };
        let hasher = PasswordHasher::start(params, threads, config.hash_queue_limit)?;
        let auth_config = AuthConfig {
            session_ttl: delta(config.session_ttl)?,
            idle_timeout: delta(config.session_idle_timeout)?,
            refresh_interval: delta(config.session_refresh_interval)?,
            password: PasswordPolicy {
                min_chars: usize::from(config.password_min_length),
            },
        };
        let auth = Arc::new(Auth::new(
            Arc::clone(&store),
            hasher,
            tokens,
            Arc::clone(&clock),
            auth_config,
        ));
        let profiles = Arc::new(Profiles::new(Arc::clone(&store), clock));

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self {
            config,
            listener,
            store,
            auth,
            profiles,
        })
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting, gives
    /// in-flight calls the grace period, and closes the database pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        health::set_all(&reporter, ServingStatus::NotServing).await;
        let watcher = tokio::spawn(health::watch_store(
            Arc::clone(&self.store),
            reporter.clone(),
            self.config.health_interval,
        ));
        let pruner = tokio::spawn(prune_sessions(
            Arc::clone(&self.auth),
            self.config.session_prune_interval,
        ));

        let addr = self.local_addr();
        tracing::info!(%addr, backend = self.store.backend(), reflection = self.config.reflection_enabled(), "gatehouse listening");

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let on_shutdown = {
            let reporter = reporter.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                health::set_all(&reporter, ServingStatus::NotServing).await;
                let _ = stop_tx.send(());
            }
        };
        let settings = GrpcSettings {
            reflection: self.config.reflection_enabled(),
            max_request_bytes: self.config.max_request_bytes,
            request_timeout: self.config.request_timeout,
            trusted_proxies: self.config.trusted_proxies.clone(),
        };
        let server = grpc::serve(
            self.listener,
            settings,
            self.auth,
            self.profiles,
            health_service,
            on_shutdown,
        );
        let grace = self.config.shutdown_grace;
        let result = tokio::select! {
            result = server => result.map_err(anyhow::Error::from),
            () = async { let _ = stop_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
                Ok(())
            }
        };
        watcher.abort();
        pruner.abort();
        self.store.close().await;
        tracing::info!("gatehouse stopped");
        result
    }
}

async fn prune_sessions(auth: Arc<Auth>, every: Duration) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        ticker.tick().await;
        match auth.prune_expired_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned expired sessions"),
            Err(error) => tracing::warn!(%error, "pruning expired sessions failed"),
        }
    }
}

fn delta(d: Duration) -> anyhow::Result<TimeDelta> {
    TimeDelta::from_std(d).context("duration out of range")
}
