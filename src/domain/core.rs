//! What every domain service shares: the store, the clock, the audit log, rate limits, outgoing
//! mail and the revocation feed, and the operations on them that more than one service needs.
//! Each service (`Auth`, `Recovery`, `OAuth`, `Admin`, `Mesh`) holds an `Arc<Core>` instead of
//! reaching into another service's fields.

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
    session::{Session, SessionLifetimes},
};
use crate::{
    metrics::METRICS,
    storage::{Revoked, SessionRow, Store},
};

/// Which sessions `Core::end_sessions` ends.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// One session of a user.
    One { user_id: Uuid, session_id: Uuid },
    /// Every session of a user except `keep`.
    AllBut { user_id: Uuid, keep: Uuid },
    /// Every session of a user.
    All { user_id: Uuid },
}

/// Why sessions ended, as recorded in the revocation feed (`RevocationEvent.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The user signed out.
    SignOut,
    /// The user revoked one of their sessions.
    Revoked,
    /// The user revoked every other session.
    OtherSessions,
    /// The user changed their password and ended the others.
    PasswordChanged,
    /// A reset link set a new password.
    PasswordReset,
    /// The account was deleted.
    UserDeleted,
    /// An operator disabled the account.
    UserDisabled,
    /// An operator ended the sessions.
    Admin,
}

impl EndReason {
    /// The name stored in the feed (part of the API: watchers read it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignOut => "sign_out",
            Self::Revoked => "revoked",
            Self::OtherSessions => "other_sessions",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::UserDeleted => "user_deleted",
            Self::UserDisabled => "user_disabled",
            Self::Admin => "admin",
        }
    }
}

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
    /// How long sessions live.
    pub(crate) lifetimes: SessionLifetimes,
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
        lifetimes: SessionLifetimes,
    ) -> Self {
        Self { store, clock, audit, limiter, notifier, revocations, lifetimes }
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

    fn revoked(&self, reason: EndReason) -> Revoked {
        Revoked { reason: reason.as_str(), at: self.now() }
    }

    /// Ends sessions: deletes them, records each in the revocation feed (in the same
    /// transaction) and wakes the feed's follower so that local watchers hear at once. The one
    /// place sessions end, so the one place a session cache must evict. Returns how many ended.
    pub(crate) async fn end_sessions(&self, which: Ending, reason: EndReason) -> Result<u64, Error> {
        let revoked = self.revoked(reason);
        let ended = match which {
            Ending::One { user_id, session_id } => {
                u64::from(self.store.delete_session(user_id, session_id, revoked).await?)
            }
            Ending::AllBut { user_id, keep } => self.store.delete_other_sessions(user_id, keep, revoked).await?,
            Ending::All { user_id } => self.store.delete_all_sessions(user_id, revoked).await?,
        };
        self.revocations.wake();
        Ok(ended)
    }

    /// Deletes a user and everything that hangs off it, ending (and recording) their sessions
    /// as [`Core::end_sessions`] does. False if there was no such user.
    pub(crate) async fn delete_user(&self, user_id: Uuid) -> Result<bool, Error> {
        let deleted = self.store.delete_user(user_id, self.revoked(EndReason::UserDeleted)).await?;
        self.revocations.wake();
        Ok(deleted)
    }

    /// Sets a new password hash from a reset link: every session ends (recorded as
    /// [`EndReason::PasswordReset`]), and links made before the proof go.
    pub(crate) async fn reset_password(&self, user_id: Uuid, hash: &str) -> Result<crate::storage::Recovered, Error> {
        let recovered = self.store.reset_password(user_id, hash, self.revoked(EndReason::PasswordReset)).await?;
        self.revocations.wake();
        Ok(recovered)
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

    /// Whether a stored session can still validate at `now`.
    pub(crate) fn is_live(&self, s: &SessionRow, now: DateTime<Utc>) -> bool {
        self.lifetimes.is_live(s, now)
    }

    /// A stored session as its owner sees it.
    pub(crate) fn session(&self, row: SessionRow, current: bool) -> Session {
        self.lifetimes.view(row, current)
    }

    /// Deletes revocation events older than `retention`.
    pub async fn prune_revocations(&self, retention: TimeDelta) -> Result<u64, Error> {
        Ok(self.store.prune_revocations(self.now() - retention).await?)
    }
}
