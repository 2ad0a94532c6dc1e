//! Sessions: the one place they are made, validated and ended, and how their owners see them.
//! Every other service asks `Sessions`, so the cache of validated sessions
//! ([`SessionCache`]) has one place to fill and one place to evict.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

// The views live in a leaf module, so the cache can hold them without importing this one.
pub use super::caller::{Assurance, Authenticated, Session};
use super::{
    client::ClientInfo,
    core::Core,
    error::{AuthFailure, Error},
    session_cache::SessionCache,
    token::{SessionToken, TokenHasher},
};
use crate::storage::{NewSession, Recovered, Revoked, SessionRow};

/// Which sessions [`Sessions::end`] ends.
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

/// Makes, validates and ends sessions.
pub struct Sessions {
    core: Arc<Core>,
    /// Keyed hash of session tokens.
    tokens: TokenHasher,
    lifetimes: SessionLifetimes,
    /// `last_active_at` is written at most this often.
    refresh_interval: TimeDelta,
    /// Validated sessions, evicted here for local changes and by the feed follower for
    /// other replicas'.
    cache: Arc<SessionCache>,
}

impl Sessions {
    /// Sessions hashed with `tokens`, validated through `cache`.
    pub fn new(
        core: Arc<Core>,
        tokens: TokenHasher,
        lifetimes: SessionLifetimes,
        refresh_interval: TimeDelta,
        cache: Arc<SessionCache>,
    ) -> Self {
        Self { core, tokens, lifetimes, refresh_interval, cache }
    }

    /// Validates a presented token: the hot path. A cached answer is served while the session
    /// is live by the clock; one due a `last_active_at` write, or that would refuse, asks the
    /// database. The database path reads one joined row, and writes only when `last_active_at`
    /// is older than the refresh interval.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Authenticated, Error> {
        let invalid = Error::Unauthenticated(AuthFailure::InvalidSession);
        let Some(token) = presented.and_then(SessionToken::parse) else {
            return Err(invalid);
        };
        let hash = self.tokens.hash(&token);
        let key: Option<[u8; 32]> = hash.as_slice().try_into().ok();
        let now = self.core.now();
        if let Some(key) = key
            && let Some(hit) = self.cache.get(&key)
            && now < hit.auth.session.expires_at
        {
            let last = hit.auth.session.last_active_at;
            if now - last < self.refresh_interval {
                return Ok(hit.auth.clone());
            }
            // Due a touch: the conditional write is also a check that the session still
            // exists. Not due any more means another replica touched it: read it afresh.
            if self.core.store.touch_session(hit.auth.session.id, now, now - self.refresh_interval).await? {
                let touched = hit.touched(now, self.lifetimes.idle_timeout);
                let auth = touched.auth.clone();
                self.cache.refresh(key, touched);
                return Ok(auth);
            }
        }
        let ticket = self.cache.ticket();
        let Some(found) = self.core.store.find_session(&hash).await? else {
            return Err(invalid);
        };
        let (mut session, user) = found.into_parts();
        if !self.is_live(&session, now) {
            return Err(invalid);
        }
        let mut fresh = true;
        if now - session.last_active_at >= self.refresh_interval {
            // False when another replica touched it meanwhile: the answer stands, uncached.
            fresh = self.core.store.touch_session(session.id, now, now - self.refresh_interval).await?;
            session.last_active_at = now;
        }
        let absolute = session.expires_at;
        let auth = Authenticated { user: user.into(), session: self.view(session, true) };
        if let (Some(key), Some(ticket), true) = (key, ticket, fresh) {
            self.cache.fill(key, ticket, auth.clone(), absolute);
        }
        Ok(auth)
    }

    /// What `GetSession` returns for `user_id` changed (email, verification, password,
    /// linked accounts, disabling): this replica stops serving their cached sessions before
    /// the caller returns, and the follower is woken to tell the others' feeds sooner.
    pub(crate) fn user_changed(&self, user_id: Uuid) {
        self.cache.invalidate_user(user_id);
        self.core.revocations.wake();
    }

    /// A new session token for `user_id` and the row that stores it (not stored yet: sign-up
    /// stores it in the user's own transaction).
    pub(crate) fn new_session(
        &self,
        user_id: Uuid,
        client: ClientInfo,
        assurance: &Assurance,
    ) -> Result<(NewSession, SessionToken), Error> {
        let token = SessionToken::generate().map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG failed: {e}")))?;
        let now = self.core.now();
        let new = NewSession {
            id: Uuid::new_v4(),
            user_id,
            token_hash: self.tokens.hash(&token),
            now,
            expires_at: now + self.lifetimes.ttl,
            ip_address: client.ip,
            user_agent: client.user_agent,
            aal: i32::from(assurance.aal),
            amr: assurance.amr_stored(),
        };
        Ok((new, token))
    }

    /// Creates a session for `user_id`, for password and provider sign-in alike.
    pub(crate) async fn create(
        &self,
        user_id: Uuid,
        client: ClientInfo,
        assurance: &Assurance,
    ) -> Result<(Session, SessionToken), Error> {
        let (new, token) = self.new_session(user_id, client, assurance)?;
        let row = self.core.store.create_session(&new).await?;
        Ok((self.view(row, true), token))
    }

    /// `user_id`'s live sessions, most recently used first; `current` is marked.
    pub(crate) async fn list(&self, user_id: Uuid, current: Uuid) -> Result<Vec<Session>, Error> {
        let now = self.core.now();
        let rows = self.core.store.list_sessions(user_id, now).await?;
        Ok(rows
            .into_iter()
            .filter(|s| self.is_live(s, now))
            .map(|s| {
                let is_current = s.id == current;
                self.view(s, is_current)
            })
            .collect())
    }

    /// A still-existing session of a user who is not disabled, if it can still validate (for
    /// access-token introspection).
    pub(crate) async fn live(&self, session_id: Uuid) -> Result<Option<SessionRow>, Error> {
        let found = self.core.store.live_session(session_id).await?;
        Ok(found.filter(|s| self.is_live(s, self.core.now())))
    }

    fn revoked(&self, reason: EndReason) -> Revoked {
        Revoked { reason: reason.as_str(), at: self.core.now() }
    }

    /// Ends sessions: deletes them, records each in the revocation feed (in the same
    /// transaction) and wakes the feed's follower so that local watchers hear at once. With
    /// [`Sessions::delete_user`] and [`Sessions::reset_password`], the only ways a session
    /// ends before it expires. Returns how many ended.
    pub(crate) async fn end(&self, which: Ending, reason: EndReason) -> Result<u64, Error> {
        let revoked = self.revoked(reason);
        let store = &self.core.store;
        let ended = match which {
            Ending::One { user_id, session_id } => u64::from(store.delete_session(user_id, session_id, revoked).await?),
            Ending::AllBut { user_id, keep } => store.delete_other_sessions(user_id, keep, revoked).await?,
            Ending::All { user_id } => store.delete_all_sessions(user_id, revoked).await?,
        };
        let (Ending::One { user_id, .. } | Ending::AllBut { user_id, .. } | Ending::All { user_id }) = which;
        self.user_changed(user_id);
        Ok(ended)
    }

    /// Deletes a user and everything that hangs off it, ending (and recording) their sessions.
    /// False if there was no such user.
    pub(crate) async fn delete_user(&self, user_id: Uuid) -> Result<bool, Error> {
        let deleted = self.core.store.delete_user(user_id, self.revoked(EndReason::UserDeleted)).await?;
        self.user_changed(user_id);
        Ok(deleted)
    }

    /// Sets a new password hash from a reset link: every session ends (recorded as
    /// [`EndReason::PasswordReset`]), and links made before the proof go.
    pub(crate) async fn reset_password(&self, user_id: Uuid, hash: &str) -> Result<Recovered, Error> {
        let recovered = self.core.store.reset_password(user_id, hash, self.revoked(EndReason::PasswordReset)).await?;
        self.user_changed(user_id);
        Ok(recovered)
    }

    /// Deletes sessions that can no longer validate; returns how many.
    pub async fn prune_expired(&self) -> Result<u64, Error> {
        let now = self.core.now();
        Ok(self.core.store.delete_expired_sessions(now, now - self.lifetimes.idle_timeout).await?)
    }

    /// Whether a stored session can still validate at `now`.
    pub(crate) fn is_live(&self, s: &SessionRow, now: DateTime<Utc>) -> bool {
        self.lifetimes.is_live(s, now)
    }

    /// A stored session as its owner sees it.
    pub(crate) fn view(&self, row: SessionRow, current: bool) -> Session {
        self.lifetimes.view(row, current)
    }
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionLifetimes {
    /// Absolute lifetime.
    pub ttl: TimeDelta,
    /// A session unused for this long ends.
    pub idle_timeout: TimeDelta,
}

impl SessionLifetimes {
    /// Whether a stored session can still validate at `now`.
    pub(crate) fn is_live(&self, s: &SessionRow, now: DateTime<Utc>) -> bool {
        now < s.expires_at && now < s.last_active_at + self.idle_timeout
    }

    /// A stored session as its owner sees it.
    pub(crate) fn view(&self, row: SessionRow, current: bool) -> Session {
        Session {
            id: row.id,
            user_id: row.user_id,
            created_at: row.created_at,
            last_active_at: row.last_active_at,
            expires_at: row.expires_at.min(row.last_active_at + self.idle_timeout),
            ip_address: row.ip_address,
            user_agent: row.user_agent,
            current,
            assurance: Assurance::from_stored(row.aal, &row.amr),
        }
    }
}
