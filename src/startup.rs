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
        Auth, AuthConfig, AuthDeps, Clock, Lockout, OAuth, Profiles, Recovery,
        admin::Admin,
        audit::AuditLog,
        breach::BreachedPasswords,
        cipher::SecretCipher,
        core::Core,
        keys::{AccessTokenConfig, KeyRing},
        limits::{Limiter, RateLimitBackend, Rates},
        links::{LinkLifetimes, Links},
        mesh::Mesh,
        notify::Notifier,
        oauth::OAuthConfig,
        password::{HashParams, PasswordHasher, PasswordPolicy, QueueBound},
        revocations::RevocationHub,
        session::SessionLifetimes,
        token::TokenHasher,
    },
    grpc::{self, GrpcSettings, ServiceAuth, Services, health},
    http::HttpState,
    idp::{http_client, provider::Provider},
    mail::{MailQueue, Outbox, Smtp, SmtpSettings, Transport},
    net::ConnectionLimits,
    ratelimit::{MemoryLimits, RedisLimits},
    storage::{self, Store},
    tls::ReloadingTls,
};

/// A built, bound, not yet serving Gatehouse.
pub struct Application {
    config: Config,
    listener: TcpListener,
    http_listener: TcpListener,
    /// Closed last, after the grace period.
    store: Arc<dyn Store>,
    core: Arc<Core>,
    auth: Arc<Auth>,
    recovery: Arc<Recovery>,
    links: Arc<Links>,
    profiles: Arc<Profiles>,
    oauth: Arc<OAuth>,
    mesh: Arc<Mesh>,
    service_auth: Arc<ServiceAuth>,
    tls: Option<Arc<ReloadingTls>>,
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
        warn_if_loopback_is_trusted(&config);
        let secret = config.load_secret()?;
        // Fail before anything starts if the transport security is not acceptable.
        let tls = config.tls()?.map(ReloadingTls::new).transpose()?;
        let service_auth = Arc::new(ServiceAuth::new(&config.admin_api_keys, &config.admin_client_names)?);
        let key = |purpose: &str| {
            TokenHasher::new(secret.expose_secret(), purpose).map_err(|e| anyhow::anyhow!("token key: {e}"))
        };
        let (session_tokens, link_tokens) = (key("session")?, key("email link")?);

        let db = config.db_options();
        if config.is_production()
            && let Some(host) = storage::plaintext_remote_host(&db)
        {
            tracing::warn!(
                %host,
                "the database connection is neither TLS nor loopback: its password and data cross the network in \
                 the clear; add sslmode=verify-full (or at least sslmode=require) to DATABASE_URL"
            );
        }
        let store = storage::connect(&db)
            .await
            .with_context(|| format!("opening the database {}", crate::redact::url(&db.url)))?;

        let threads =
            config.hash_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let params = HashParams {
            m_cost: config.argon2_memory_kib,
            t_cost: config.argon2_iterations,
            p_cost: config.argon2_parallelism,
        };
        // A check that waits longer than half the request timeout would likely time out
        // anyway: refuse it at once, and leave the other half for the rest of the request.
        let bound = config.hash_queue_limit.map_or(QueueBound::Within(config.request_timeout / 2), QueueBound::Fixed);
        let hasher = PasswordHasher::start(params, threads, bound)?;
        tracing::info!(
            threads,
            hashes_per_second = hasher.hashes_per_second().round(),
            queue_limit = hasher.queue_limit(),
            "password hashing ready"
        );
        let lifetimes =
            SessionLifetimes { ttl: delta(config.session_ttl)?, idle_timeout: delta(config.session_idle_timeout)? };
        let link_lifetimes =
            LinkLifetimes { verification: delta(config.verification_ttl)?, reset: delta(config.reset_ttl)? };
        let auth_config = AuthConfig {
            refresh_interval: delta(config.session_refresh_interval)?,
            password: PasswordPolicy { min_chars: usize::from(config.password_min_length) },
            require_email_verification: config.require_email_verification,
            lockout: Lockout {
                threshold: config.lockout_threshold,
                base: delta(config.lockout_base)?,
                max: delta(config.lockout_max)?,
            },
            reauth_max_age: delta(config.reauth_max_age)?,
        };
        let transport: Arc<dyn Transport> = match &config.smtp_host {
            Some(host) => {
                let settings = SmtpSettings {
                    host: host.clone(),
                    port: config.smtp_port,
                    tls: config.smtp_tls,
                    ca_file: config.smtp_ca_file.clone(),
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
            sign_in_per_email: config.rate_sign_in_per_email,
            sign_in_global: config.rate_sign_in_global,
            sign_up_per_ip: config.rate_sign_up_per_ip,
            password_reset_per_email: config.rate_reset_per_email,
            password_reset_per_ip: config.rate_reset_per_ip,
            verification_per_account: config.rate_verification_per_account,
            redeem_per_ip: config.rate_redeem_per_ip,
            oauth_start_per_ip: config.rate_oauth_start_per_ip,
        };
        let backend: Arc<dyn RateLimitBackend> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisLimits::connect(url, &config.redis_prefix, Arc::clone(&clock))
                    .await
                    .with_context(|| format!("connecting to Redis {}", crate::redact::url(url)))?,
            ),
            None => Arc::new(MemoryLimits::new(&rates, Arc::clone(&clock))),
        };
        let limiter_key = config.rate_limits.then(|| secret.expose_secret());
        let limiter = Arc::new(Limiter::new(backend, rates, limiter_key, config.rate_ipv6_prefix)?);
        let audit = Arc::new(AuditLog::new(Arc::clone(&store), Arc::clone(&clock)));
        let revocations = RevocationHub::start(Arc::clone(&store)).await?;
        let previous = config.load_previous_secrets()?;
        let previous: Vec<&[u8]> = previous.iter().map(|s| s.expose_secret()).collect();
        let cipher = Arc::new(SecretCipher::new(secret.expose_secret(), &previous)?);
        let keys = Arc::new(open_keys(&config, Arc::clone(&store), Arc::clone(&cipher), Arc::clone(&clock)).await?);
        let core = Arc::new(Core::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            audit,
            limiter,
            notifier,
            Arc::clone(&revocations),
            lifetimes,
        ));
        let links = Arc::new(Links::new(Arc::clone(&core), link_tokens, link_lifetimes));
        let deps = AuthDeps {
            core: Arc::clone(&core),
            hasher,
            session_tokens,
            links: Arc::clone(&links),
            breached: config
                .breached_passwords_api
                .as_deref()
                .map(|api| BreachedPasswords::new(api, config.breached_passwords_timeout))
                .transpose()?,
        };
        let auth = Arc::new(Auth::new(deps, auth_config));
        let recovery = Arc::new(Recovery::new(Arc::clone(&core), Arc::clone(&auth), Arc::clone(&links)));
        let mesh = Arc::new(Mesh::new(Arc::clone(&core), Arc::clone(&auth), keys));
        let profiles = Arc::new(Profiles::new(Arc::clone(&store), Arc::clone(&clock)));

        let http = http_client(config.oauth_http_timeout)?;
        let providers = config
            .oauth_providers()?
            .into_iter()
            .map(|p| Provider::new(p, http.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let oauth = Arc::new(OAuth::new(
            Arc::clone(&core),
            Arc::clone(&auth),
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
        let http_listener =
            TcpListener::bind(config.http_listen).await.with_context(|| format!("binding {}", config.http_listen))?;
        Ok(Self {
            config,
            listener,
            http_listener,
            store,
            core,
            auth,
            recovery,
            links,
            profiles,
            oauth,
            mesh,
            service_auth,
            tls,
        })
    }

    /// The bound address of the HTTP side port (JWKS, discovery, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().unwrap_or(self.config.http_listen)
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting, gives
    /// in-flight calls the grace period, and closes the database pool.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (reporter, _) = tonic_health::server::health_reporter();
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let health_service = health::StoppingHealth::new(reporter.clone(), stopping_rx);
        health::set_all(&reporter, ServingStatus::NotServing).await;
        let watcher =
            tokio::spawn(health::watch_store(Arc::clone(&self.core), reporter.clone(), self.config.health_interval));
        let retention = Retention {
            audit: delta(self.config.audit_retention)?,
            revocations: delta(self.config.revocation_retention)?,
        };
        let pruner = tokio::spawn(prune(
            Arc::clone(&self.core),
            Arc::clone(&self.auth),
            Arc::clone(&self.links),
            Arc::clone(&self.oauth),
            self.config.session_prune_interval,
            retention,
        ));
        let follower = tokio::spawn(Arc::clone(self.core.revocations()).run(Duration::from_millis(500)));
        let rotator = tokio::spawn(rotate_keys(Arc::clone(self.mesh.keys()), key_check_interval(&self.config)));
        let tls_watch = self.tls.clone().map(|tls| tokio::spawn(tls.watch(self.config.tls_reload_interval)));
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_state = HttpState {
            keys: Arc::clone(self.mesh.keys()),
            auth: Arc::clone(&self.auth),
            core: Arc::clone(&self.core),
        };
        let http_addr = self.http_addr();
        let addr = self.local_addr();
        let limits = ConnectionLimits {
            max_connections: self.config.max_connections.unwrap_or_else(crate::net::default_max_connections),
            idle_timeout: self.config.connection_idle_timeout,
        };
        let http = tokio::spawn(crate::http::serve(self.http_listener, limits, http_state, async move {
            let _ = http_stopped.await;
        }));
        tracing::info!(%http_addr, "HTTP side port listening (JWKS, discovery, metrics)");

        tracing::info!(
            %addr,
            backend = self.store.backend(),
            reflection = self.config.reflection_enabled(),
            max_connections = limits.max_connections,
            "gatehouse listening"
        );

        let grace = self.config.shutdown_grace;
        let drain = self.config.shutdown_drain.min(grace);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let on_shutdown = {
            let reporter = reporter.clone();
            let revocations = Arc::clone(self.core.revocations());
            let watcher = watcher.abort_handle();
            async move {
                shutdown.await;
                // The grace period counts from the signal; draining is part of it.
                let _ = stop_tx.send(());
                tracing::info!(?drain, ?grace, "shutting down: health is NOT_SERVING while traffic drains");
                // The store watcher must not turn health back to SERVING.
                watcher.abort();
                health::set_all(&reporter, ServingStatus::NotServing).await;
                stopping.send_replace(true);
                revocations.stop();
                tokio::time::sleep(drain).await;
                tracing::info!("shutting down: no new calls; finishing in-flight requests");
            }
        };
        let settings = GrpcSettings {
            reflection: self.config.reflection_enabled(),
            max_request_bytes: self.config.max_request_bytes,
            request_timeout: self.config.request_timeout,
            trusted_proxies: self.config.trusted_proxies.clone(),
            tls: self.tls.clone(),
            limits,
            max_streams_per_connection: self.config.max_streams_per_connection,
            keepalive_interval: self.config.http2_keepalive_interval,
        };
        let services = Services {
            admin: Arc::new(Admin::new(Arc::clone(&self.core))),
            auth: self.auth,
            recovery: self.recovery,
            profiles: self.profiles,
            oauth: self.oauth,
            mesh: self.mesh,
            revocations: Arc::clone(self.core.revocations()),
            service_auth: self.service_auth,
        };
        let server = grpc::serve(self.listener, settings, services, health_service, on_shutdown);
        let result = tokio::select! {
            result = server => result.map_err(anyhow::Error::from),
            () = async { let _ = stop_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
                Ok(())
            }
        };
        watcher.abort();
        pruner.abort();
        follower.abort();
        rotator.abort();
        if let Some(t) = tls_watch {
            t.abort();
        }
        // The follower holds the revocation listener; wait until it has let go of it.
        let _ = follower.await;
        let _ = http_stop.send(());
        // Nothing after the grace period may hold the process: bound every last step.
        if tokio::time::timeout(CLOSE_BOUND, http).await.is_err() {
            tracing::warn!("the HTTP side port did not stop in time");
        }
        if tokio::time::timeout(CLOSE_BOUND, self.store.close()).await.is_err() {
            tracing::warn!("closing the database pool did not finish in time");
        }
        tracing::info!("gatehouse stopped");
        result
    }
}

/// Behind a sidecar every caller reaches Gatehouse from loopback, so a trusted loopback means
/// that whoever can reach the sidecar chooses the address the per-IP limits count. Said once
/// at start, since it is the default and often right (a backend on the same host).
fn warn_if_loopback_is_trusted(config: &Config) {
    let loopback: [std::net::IpAddr; 2] = [std::net::Ipv4Addr::LOCALHOST.into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if loopback.iter().any(|ip| config.trusted_proxies.iter().any(|net| net.contains(ip))) {
        tracing::warn!(
            trusted_proxies = ?config.trusted_proxies,
            "x-forwarded-for is believed from loopback peers (GATEHOUSE_TRUSTED_PROXIES): behind a sidecar \
             every caller is loopback, so anyone who can reach the sidecar picks the client address that \
             per-IP limits and audit records use; the per-email and global sign-in limits still hold. \
             Admit only your own backends to the port (e.g. a mesh authorization policy), or narrow \
             GATEHOUSE_TRUSTED_PROXIES (see README, \"Client metadata\")"
        );
    }
}

/// The longest each closing step after the grace period may take.
const CLOSE_BOUND: Duration = Duration::from_millis(400);

/// How long records are kept.
struct Retention {
    audit: TimeDelta,
    revocations: TimeDelta,
}

/// Deletes what can no longer be used or is past retention, and forgets idle rate counters.
async fn prune(
    core: Arc<Core>,
    auth: Arc<Auth>,
    links: Arc<Links>,
    oauth: Arc<OAuth>,
    every: Duration,
    retention: Retention,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        ticker.tick().await;
        let report = |what: &str, result: Result<u64, crate::domain::Error>| match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned {what}"),
            Err(error) => tracing::warn!(%error, "pruning {what} failed"),
        };
        report("expired sessions", auth.prune_expired_sessions().await);
        report("stale email tokens", links.prune_stale().await);
        report("old audit events", core.audit().prune(retention.audit).await);
        report("old revocation events", core.prune_revocations(retention.revocations).await);
        report("expired provider sign-in states", oauth.prune_expired_states().await);
        core.limiter().shrink();
    }
}

/// How often the keys are re-read: as configured, but not in a busy loop.
fn key_check_interval(config: &Config) -> Duration {
    config.signing_key_check_interval.max(Duration::from_millis(50))
}

/// Re-reads the keys (another replica may have rotated) and rotates by age, every `every`.
async fn rotate_keys(keys: Arc<KeyRing>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(error) = keys.reload().await {
            tracing::warn!(%error, "reloading signing keys failed");
        }
        if let Err(error) = keys.rotate_if_due().await {
            tracing::warn!(%error, "rotating the signing key failed");
        }
    }
}

/// Opens the access-token key ring from configuration.
pub async fn open_keys(
    config: &Config,
    store: Arc<dyn Store>,
    cipher: Arc<SecretCipher>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<KeyRing> {
    let hs256_secret = match (config.hs256_compat, &config.better_auth_secret) {
        (false, _) => None,
        (true, Some(secret)) if secret.expose_secret().len() >= crate::config::MIN_SECRET_BYTES => {
            tracing::warn!("HS256 compatibility mode: access tokens are signed with the shared BETTER_AUTH_SECRET");
            Some(secret.expose_secret().as_bytes().to_vec())
        }
        (true, _) => anyhow::bail!("GATEHOUSE_HS256_COMPAT needs BETTER_AUTH_SECRET of at least 32 bytes"),
    };
    let access = AccessTokenConfig {
        issuer: config.issuer(),
        audiences: config
            .access_token_audiences
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        ttl: delta(config.access_token_ttl)?,
        algorithm: config.signing_algorithm,
        rotate_after: delta(config.signing_key_rotation)?,
        jwks_max_age: delta(config.jwks_max_age)?,
        check_interval: delta(key_check_interval(config))?,
        hs256_secret,
    };
    Ok(KeyRing::open(store, cipher, clock, access).await?)
}

fn delta(d: Duration) -> anyhow::Result<TimeDelta> {
    TimeDelta::from_std(d).context("duration out of range")
}
