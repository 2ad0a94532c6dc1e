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
        Auth, AuthConfig, AuthDeps, Clock, Lockout, OAuth, Profiles,
        audit::AuditLog,
        cipher::SecretCipher,
        limits::{Limiter, RateLimitBackend, Rates},
        notify::Notifier,
        oauth::{OAuthConfig, Provider, http_client},
        password::{HashParams, PasswordHasher, PasswordPolicy},
        token::TokenHasher,
    },
    grpc::{self, GrpcSettings, health},
    mail::{MailQueue, Outbox, Smtp, SmtpSettings, Transport},
    ratelimit::{MemoryLimits, RedisLimits},
    storage::{self, Store},
};

/// A built, bound, not yet serving Gatehouse.
pub struct Application {
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
    auth: Arc<Auth>,
    profiles: Arc<Profiles>,
    oauth: Arc<OAuth>,
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
        let key = |purpose: &str| {
            TokenHasher::new(secret.expose_secret(), purpose).map_err(|e| anyhow::anyhow!("token key: {e}"))
        };
        let (session_tokens, link_tokens) = (key("session")?, key("email link")?);

        let db = config.db_options();
        let store = storage::connect(&db)
            .await
            .with_context(|| format!("opening the database {}", crate::config::redact_url(&db.url)))?;

        let threads =
            config.hash_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
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
            password: PasswordPolicy { min_chars: usize::from(config.password_min_length) },
            require_email_verification: config.require_email_verification,
            verification_ttl: delta(config.verification_ttl)?,
            reset_ttl: delta(config.reset_ttl)?,
            lockout: Lockout {
                threshold: config.lockout_threshold,
                base: delta(config.lockout_base)?,
                max: delta(config.lockout_max)?,
            },
        };
        let transport: Arc<dyn Transport> = match &config.smtp_host {
            Some(host) => {
                let settings = SmtpSettings {
                    host: host.clone(),
                    port: config.smtp_port,
                    tls: config.smtp_tls,
                    username: config.smtp_username.clone(),
                    password: config.smtp_password()?,
                    timeout: config.smtp_timeout,
                };
                Arc::new(Smtp::new(&settings, &config.mail_from)?)
            }
            None => {
                let dir = config.data_dir.join("outbox");
                if config.is_production() {
                    tracing::warn!(dir = %dir.display(), "no SMTP relay configured: mail goes to the outbox folder");
                }
                // Links carry single-use tokens: log them only in development.
                Arc::new(Outbox::new(dir, &config.mail_from, !config.is_production())?)
            }
        };
        let queue = Arc::new(MailQueue::start(transport, config.mail_attempts, config.mail_retry_backoff));
        let notifier = Arc::new(Notifier::new(queue, &config.frontend_url, config.mail_templates_dir.as_deref())?);
        let rates = Rates {
            sign_in_per_account_ip: config.rate_sign_in_per_account,
            sign_in_per_ip: config.rate_sign_in_per_ip,
            sign_up_per_ip: config.rate_sign_up_per_ip,
            password_reset_per_email: config.rate_reset_per_email,
            password_reset_per_ip: config.rate_reset_per_ip,
            verification_per_account: config.rate_verification_per_account,
            redeem_per_ip: config.rate_redeem_per_ip,
        };
        let backend: Arc<dyn RateLimitBackend> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisLimits::connect(url, &config.redis_prefix, Arc::clone(&clock))
                    .await
                    .with_context(|| format!("connecting to Redis {}", crate::config::redact_url(url)))?,
            ),
            None => Arc::new(MemoryLimits::new(&rates, Arc::clone(&clock))),
        };
        let limiter_key = config.rate_limits.then(|| secret.expose_secret());
        let limiter = Arc::new(Limiter::new(backend, rates, limiter_key)?);
        let audit = Arc::new(AuditLog::new(Arc::clone(&store), Arc::clone(&clock)));
        let deps = AuthDeps {
            store: Arc::clone(&store),
            hasher,
            session_tokens,
            link_tokens,
            clock: Arc::clone(&clock),
            audit,
            limiter,
            notifier,
        };
        let auth = Arc::new(Auth::new(deps, auth_config));
        let profiles = Arc::new(Profiles::new(Arc::clone(&store), Arc::clone(&clock)));

        let http = http_client(config.oauth_http_timeout)?;
        let providers = config
            .oauth_providers()?
            .into_iter()
            .map(|p| Provider::new(p, http.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let previous = config.load_previous_secrets()?;
        let previous: Vec<&[u8]> = previous.iter().map(|s| s.expose_secret()).collect();
        let cipher = SecretCipher::new(secret.expose_secret(), &previous)?;
        let oauth = Arc::new(OAuth::new(
            Arc::clone(&store),
            Arc::clone(&auth),
            clock,
            providers,
            cipher,
            secret.expose_secret(),
            OAuthConfig {
                link_by_verified_email: config.oauth_link_by_verified_email,
                state_ttl: delta(config.oauth_state_ttl)?,
            },
        )?);
        if !oauth.provider_names().is_empty() {
            tracing::info!(providers = ?oauth.provider_names(), "identity providers configured");
        }

        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        Ok(Self { config, listener, store, auth, profiles, oauth })
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting, gives
    /// in-flight calls the grace period, and closes the database pool.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        health::set_all(&reporter, ServingStatus::NotServing).await;
        let watcher =
            tokio::spawn(health::watch_store(Arc::clone(&self.store), reporter.clone(), self.config.health_interval));
        let retention = delta(self.config.audit_retention)?;
        let pruner = tokio::spawn(prune(
            Arc::clone(&self.auth),
            Arc::clone(&self.oauth),
            self.config.session_prune_interval,
            retention,
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
        let server =
            grpc::serve(self.listener, settings, self.auth, self.profiles, self.oauth, health_service, on_shutdown);
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

/// Deletes what can no longer be used or is past retention, and forgets idle rate counters.
async fn prune(auth: Arc<Auth>, oauth: Arc<OAuth>, every: Duration, audit_retention: TimeDelta) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        ticker.tick().await;
        let report = |what: &str, result: Result<u64, crate::domain::Error>| match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned {what}"),
            Err(error) => tracing::warn!(%error, "pruning {what} failed"),
        };
        report("expired sessions", auth.prune_expired_sessions().await);
        report("stale email tokens", auth.prune_stale_tokens().await);
        report("old audit events", auth.audit().prune(audit_retention).await);
        report("expired provider sign-in states", oauth.prune_expired_states().await);
        auth.limiter().shrink();
    }
}

fn delta(d: Duration) -> anyhow::Result<TimeDelta> {
    TimeDelta::from_std(d).context("duration out of range")
}
