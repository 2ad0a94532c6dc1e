//! Builds the application from configuration and runs it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::TimeDelta;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

use crate::{
    config::{Config, delta},
    domain::{
        Auth, AuthDeps, Clock, OAuth, Profiles, Recovery,
        admin::Admin,
        audit::AuditLog,
        cipher::SecretCipher,
        core::Core,
        factors::Factors,
        keys::KeyRing,
        limits::{Limiter, RateLimitBackend},
        links::Links,
        mesh::Mesh,
        notify::Notifier,
        password::PasswordHasher,
        privacy::Privacy,
        revocations::RevocationHub,
        session::Sessions,
        session_cache::SessionCache,
        token::TokenHasher,
    },
    grpc::{self, GrpcSettings, ServiceAuth, Services, health},
    http::HttpState,
    idp::{http_client, provider::Provider},
    mail::{MailQueue, Outbox, Smtp, Transport},
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
    sessions: Arc<Sessions>,
    auth: Arc<Auth>,
    recovery: Arc<Recovery>,
    links: Arc<Links>,
    profiles: Arc<Profiles>,
    privacy: Arc<Privacy>,
    oauth: Arc<OAuth>,
    mesh: Arc<Mesh>,
    factors: Arc<Factors>,
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
        let tls = config.tls_settings()?.map(ReloadingTls::new).transpose()?;
        let service_auth = Arc::new(ServiceAuth::new(&config.mesh.admin_api_keys, &config.mesh.admin_client_names)?);
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

        let threads = config.passwords.threads();
        let bound = config.passwords.queue_bound(config.server.request_timeout);
        let hasher = PasswordHasher::start(config.passwords.hash_params(), threads, bound)?;
        tracing::info!(
            threads,
            hashes_per_second = hasher.hashes_per_second().round(),
            queue_limit = hasher.queue_limit(),
            "password hashing ready"
        );
        let consent = config.privacy.consent_policy()?;
        let auth_config = config.sessions.auth_config(config.passwords.policy(), consent.clone())?;
        let transport: Arc<dyn Transport> = match config.mail.smtp_settings()? {
            Some(settings) => Arc::new(Smtp::new(&settings, &config.mail.mail_from)?),
            None => {
                let dir = config.server.data_dir.join("outbox");
                if config.is_production() {
                    tracing::warn!(dir = %dir.display(), "no SMTP relay configured: mail goes to the outbox folder");
                }
                // Links carry single-use tokens: log them only in development.
                Arc::new(Outbox::new(dir, &config.mail.mail_from, !config.is_production())?)
            }
        };
        let queue = Arc::new(MailQueue::start(transport, config.mail.mail_attempts, config.mail.mail_retry_backoff));
        let notifier =
            Arc::new(Notifier::new(queue, &config.mail.frontend_url, config.mail.mail_templates_dir.as_deref())?);
        let rates = config.limits.rates();
        let backend: Arc<dyn RateLimitBackend> = match &config.limits.redis_url {
            Some(url) => Arc::new(
                RedisLimits::connect(url, &config.limits.redis_prefix, Arc::clone(&clock), &rates)
                    .await
                    .with_context(|| format!("connecting to Redis {}", crate::redact::url(url)))?,
            ),
            None => Arc::new(MemoryLimits::new(&rates, Arc::clone(&clock))),
        };
        let limiter_key = config.limits.rate_limits.then(|| secret.expose_secret());
        let limiter = Arc::new(Limiter::new(backend, rates, limiter_key, config.limits.rate_ipv6_prefix)?);
        let audit = Arc::new(AuditLog::new(Arc::clone(&store), Arc::clone(&clock)));
        let cache = Arc::new(SessionCache::new(config.sessions.cache_settings()?));
        let revocations = RevocationHub::start(Arc::clone(&store), Arc::clone(&cache)).await?;
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
        ));
        let sessions = Arc::new(Sessions::new(
            Arc::clone(&core),
            session_tokens,
            config.sessions.lifetimes()?,
            config.sessions.refresh_interval()?,
            cache,
        ));
        let links = Arc::new(Links::new(Arc::clone(&core), link_tokens, config.sessions.link_lifetimes()?));
        let factors = Arc::new(Factors::new(
            Arc::clone(&core),
            Arc::clone(&sessions),
            Arc::clone(&cipher),
            secret.expose_secret(),
            config.sessions.factor_config()?,
        )?);
        let deps = AuthDeps {
            core: Arc::clone(&core),
            hasher,
            sessions: Arc::clone(&sessions),
            links: Arc::clone(&links),
            breached: config.passwords.breached()?,
            factors: Arc::clone(&factors),
        };
        let auth = Arc::new(Auth::new(deps, auth_config));
        let recovery =
            Arc::new(Recovery::new(Arc::clone(&core), Arc::clone(&auth), Arc::clone(&sessions), Arc::clone(&links)));
        let mesh = Arc::new(Mesh::new(Arc::clone(&core), Arc::clone(&sessions), keys));
        let profiles = Arc::new(Profiles::new(Arc::clone(&store), Arc::clone(&clock), consent.clone()));
        let privacy = Arc::new(Privacy::new(
            Arc::clone(&core),
            consent,
            config.privacy.retention()?,
            delta(config.server.audit_retention)?,
            delta(config.mesh.revocation_retention)?,
        ));

        let http = http_client(config.oauth.oauth_http_timeout)?;
        let providers = config
            .oauth_providers()?
            .into_iter()
            .map(|p| Provider::new(p, http.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let oauth = Arc::new(OAuth::new(
            Arc::clone(&core),
            Arc::clone(&sessions),
            Arc::clone(&factors),
            providers,
            cipher,
            secret.expose_secret(),
            config.oauth.oauth_config(config.sessions.require_email_verification)?,
        )?);
        if !oauth.provider_names().is_empty() {
            tracing::info!(providers = ?oauth.provider_names(), "identity providers configured");
        }

        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let http_listener = TcpListener::bind(config.server.http_listen)
            .await
            .with_context(|| format!("binding {}", config.server.http_listen))?;
        Ok(Self {
            config,
            listener,
            http_listener,
            store,
            core,
            sessions,
            auth,
            recovery,
            links,
            profiles,
            privacy,
            oauth,
            mesh,
            factors,
            service_auth,
            tls,
        })
    }

    /// The bound address of the HTTP side port (JWKS, discovery, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().unwrap_or(self.config.server.http_listen)
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.server.listen)
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting, gives
    /// in-flight calls the grace period, and closes the database pool.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (reporter, _) = tonic_health::server::health_reporter();
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let health_service = health::StoppingHealth::new(reporter.clone(), stopping_rx);
        health::set_all(&reporter, ServingStatus::NotServing).await;
        let watcher = tokio::spawn(health::watch_store(
            Arc::clone(&self.core),
            reporter.clone(),
            self.config.server.health_interval,
        ));
        let retention = Retention {
            audit: delta(self.config.server.audit_retention)?,
            revocations: delta(self.config.mesh.revocation_retention)?,
        };
        let prunable = Prunable {
            core: Arc::clone(&self.core),
            sessions: Arc::clone(&self.sessions),
            links: Arc::clone(&self.links),
            oauth: Arc::clone(&self.oauth),
            privacy: Arc::clone(&self.privacy),
            factors: Arc::clone(&self.factors),
        };
        let pruner = tokio::spawn(prune(prunable, self.config.sessions.session_prune_interval, retention));
        let follower = tokio::spawn(Arc::clone(self.core.revocations()).run(self.config.sessions.feed_poll()));
        let rotator = tokio::spawn(rotate_keys(Arc::clone(self.mesh.keys()), self.config.mesh.key_check_interval()));
        let tls_watch = self.tls.clone().map(|tls| tokio::spawn(tls.watch(self.config.tls.tls_reload_interval)));
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_state = HttpState {
            keys: Arc::clone(self.mesh.keys()),
            auth: Arc::clone(&self.auth),
            core: Arc::clone(&self.core),
        };
        let http_addr = self.http_addr();
        let addr = self.local_addr();
        let limits = ConnectionLimits {
            max_connections: self.config.server.max_connections.unwrap_or_else(crate::net::default_max_connections),
            idle_timeout: self.config.server.connection_idle_timeout,
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

        let grace = self.config.server.shutdown_grace;
        let drain = self.config.server.shutdown_drain.min(grace);
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
            max_request_bytes: self.config.server.max_request_bytes,
            request_timeout: self.config.server.request_timeout,
            trusted_proxies: self.config.server.trusted_proxies.clone(),
            tls: self.tls.clone(),
            limits,
            max_streams_per_connection: self.config.server.max_streams_per_connection,
            keepalive_interval: self.config.server.http2_keepalive_interval,
        };
        let services = Services {
            admin: Arc::new(Admin::new(
                Arc::clone(&self.core),
                Arc::clone(&self.sessions),
                Arc::clone(&self.privacy),
                Arc::clone(&self.factors),
            )),
            factors: Arc::clone(&self.factors),
            auth: self.auth,
            recovery: self.recovery,
            profiles: self.profiles,
            oauth: self.oauth,
            mesh: self.mesh,
            revocations: Arc::clone(self.core.revocations()),
            service_auth: self.service_auth,
            privacy: self.privacy,
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
    if loopback.iter().any(|ip| config.server.trusted_proxies.iter().any(|net| net.contains(ip))) {
        tracing::warn!(
            trusted_proxies = ?config.server.trusted_proxies,
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

/// The services whose stale rows the pruner deletes.
struct Prunable {
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    links: Arc<Links>,
    oauth: Arc<OAuth>,
    privacy: Arc<Privacy>,
    factors: Arc<Factors>,
}

/// Deletes what can no longer be used or is past retention, and forgets idle rate counters.
async fn prune(prunable: Prunable, every: Duration, retention: Retention) {
    let Prunable { core, sessions, links, oauth, privacy, factors } = prunable;
    let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        ticker.tick().await;
        let report = |what: &str, result: Result<u64, crate::domain::Error>| match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned {what}"),
            Err(error) => tracing::warn!(%error, "pruning {what} failed"),
        };
        report("expired sessions", sessions.prune_expired().await);
        report("stale email tokens", links.prune_stale().await);
        report("old audit events", core.audit().prune(retention.audit).await);
        report("old revocation events", core.prune_revocations(retention.revocations).await);
        report("expired provider sign-in states", oauth.prune_expired_states().await);
        report("lapsed second-factor challenges and enrollments", factors.prune_expired().await);
        report("client data past retention (redacted)", privacy.redact_expired().await);
        core.limiter().shrink();
    }
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
    Ok(KeyRing::open(store, cipher, clock, config.access_tokens()?).await?)
}
