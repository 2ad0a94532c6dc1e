//! What every domain service shares: the store, the clock, the audit log, rate limits, outgoing
//! mail and the revocation feed, and the operations on them that more than one service needs
//! (rate limiting with its audit record). Each service (`Sessions`, `Auth`, `Recovery`, `OAuth`,
//! `Admin`, `Mesh`) holds an `Arc<Core>` instead of reaching into another service's fields.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{
    audit::{AuditLog, Event, Outcome},
    client::ClientInfo,
    clock::Clock,
    email::Email,
    error::Error,
    limits::{Limit, Limiter},
    notify::Notifier,
    revocations::RevocationHub,
};
use crate::{metrics::METRICS, storage::Store};

/// The shared dependencies of the domain services.
pub struct Core {
    /// Persistence.
    pub(crate) store: Arc<dyn Store>,
    /// Time.
    pub(crate) clock: Arc<dyn Clock>,
    /// Security events.
    pub(crate) audit: Arc<AuditLog>,
    /// Rate limits.
    pub(crate) limiter: Arc<Limiter>,
    /// Outgoing mail.
    pub(crate) notifier: Arc<Notifier>,
    /// The revocation feed's follower, woken after local revocations.
    pub(crate) revocations: Arc<RevocationHub>,
}

impl Core {
    /// A core over its parts.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
        limiter: Arc<Limiter>,
        notifier: Arc<Notifier>,
        revocations: Arc<RevocationHub>,
    ) -> Self {
        Self { store, clock, audit, limiter, notifier, revocations }
    }

    /// The current time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The audit log (for ListAuditEvents and background pruning).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The rate limiter (for background pruning).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The revocation feed.
    pub fn revocations(&self) -> &Arc<RevocationHub> {
        &self.revocations
    }

    /// The database backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Connection pool figures for metrics: open, idle, maximum.
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        let pool = self.store.pool_stats();
        (pool.size, pool.idle, pool.max)
    }

    /// Checks that the database answers and takes a write (for the health reporter).
    pub async fn check_store(&self) -> Result<(), Error> {
        Ok(self.store.ping().await?)
    }

    /// Counts an event against a rate limit; over it, audits and refuses.
    pub(crate) async fn limit(
        &self,
        limit: Limit,
        parts: &[&str],
        user_id: Option<Uuid>,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        match self.limiter.check(limit, parts).await {
            Err(e @ Error::RateLimited { .. }) => {
                METRICS.rate_limited(limit.name());
                self.audit.record(user_id, Event::RateLimited, Outcome::Denied, Some(limit.name()), client).await;
                Err(e)
            }
            other => other,
        }
    }

    /// The key part of per-IP limits for `client` (IPv6 by network).
    pub(crate) fn ip_key(&self, client: &ClientInfo) -> String {
        self.limiter.ip_key(client.ip.as_deref())
    }

    /// [`Core::limit`] for a request naming an address: a hit is audited against the address's
    /// account when there is one, so it shows in that user's `ListAuditEvents`. The lookup and
    /// the record happen after the answer, which stays the same for every address.
    pub(crate) async fn limit_by_email(
        &self,
        limit: Limit,
        parts: &[&str],
        email: &Email,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        match self.limiter.check(limit, parts).await {
            Err(e @ Error::RateLimited { .. }) => {
                METRICS.rate_limited(limit.name());
                let (store, audit, email, client) =
                    (Arc::clone(&self.store), Arc::clone(&self.audit), email.as_str().to_owned(), client.clone());
                tokio::spawn(async move {
                    let user_id = store.find_user_by_email(&email).await.ok().flatten().map(|u| u.id);
                    audit.record(user_id, Event::RateLimited, Outcome::Denied, Some(limit.name()), &client).await;
                });
                Err(e)
            }
            other => other,
        }
    }

    /// Deletes revocation events older than `retention`.
    pub async fn prune_revocations(&self, retention: TimeDelta) -> Result<u64, Error> {
        Ok(self.store.prune_revocations(self.now() - retention).await?)
    }
}
