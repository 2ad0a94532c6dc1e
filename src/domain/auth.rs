//! Accounts, credentials and sessions.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{
    clock::Clock,
    email::Email,
    error::{AuthFailure, Error, Violations},
    password::{Password, PasswordHasher, PasswordPolicy},
    profile::Profile,
    token::{SessionToken, TokenHasher},
};
use crate::storage::{NewSession, NewUser, SessionRow, Store, StoreError, UserRow};

/// Longest display name.
pub const MAX_NAME_CHARS: usize = 200;

/// Session and password settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Absolute session lifetime.
    pub session_ttl: TimeDelta,
    /// A session unused for this long ends.
    pub idle_timeout: TimeDelta,
    /// `last_active_at` is written at most this often.
    pub refresh_interval: TimeDelta,
    /// Rules for new passwords.
    pub password: PasswordPolicy,
}

/// The end user behind a call, as forwarded by the calling backend.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// IP address.
    pub ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
}

/// A validated session and its user.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user.
    pub user: UserRow,
    /// The session that authenticated the call.
    pub session: SessionView,
}

/// A session as shown to its owner.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The stored session.
    pub row: SessionRow,
    /// When it ends if unused: the earlier of absolute expiry and idle deadline.
    pub expires_at: DateTime<Utc>,
    /// Whether it is the calling session.
    pub current: bool,
}

/// The result of signing up or in: the token is shown once.
#[derive(Debug)]
pub struct SignedIn {
    /// The user.
    pub user: UserRow,
    /// The new session.
    pub session: SessionView,
    /// The new session's token.
    pub token: SessionToken,
}

/// Sign-up input, unparsed: parsing reports every bad field at once.
#[derive(Debug, Default)]
pub struct SignUpInput {
    /// Email as typed.
    pub email: String,
    /// Password as typed.
    pub password: String,
    /// Display name as typed.
    pub name: String,
    /// Optional profile (its enums already decoded by the transport).
    pub profile: Option<Profile>,
}

/// Account and session operations.
pub struct Auth {
    store: Arc<dyn Store>,
    hasher: PasswordHasher,
    tokens: TokenHasher,
    clock: Arc<dyn Clock>,
    config: AuthConfig,
}

impl Auth {
    /// Auth over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        tokens: TokenHasher,
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Self {
        Self {
            store,
            hasher,
            tokens,
            clock,
            config,
        }
    }

    /// The password hashing pool (for its queue depth).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Creates an account (and its profile, atomically) and signs it in.
    #[tracing::instrument(skip_all)]
    pub async fn sign_up(&self, input: SignUpInput, client: ClientInfo) -> Result<SignedIn, Error> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(&input.email));
        let name = v.check("name", parse_name(&input.name));
        let password = match (&email, &name) {
            (Some(email), Some(name)) => v.check(
                "password",
                Password::new_password(
                    &input.password,
                    &self.config.password,
                    &[email.as_str(), email.local_part(), name],
                ),
            ),
            _ => v.check(
                "password",
                Password::new_password(&input.password, &self.config.password, &[]),
            ),
        };
        if let Some(profile) = &input.profile {
            profile.validate("profile.", &mut v);
        }
        v.finish()?;
        let (Some(email), Some(name), Some(password)) = (email, name, password) else {
            return Err(Error::Internal(anyhow::anyhow!(
                "parsed sign-up lost a field"
            )));
        };

        let now = self.clock.now();
        let user_id = Uuid::now_v7();
        let profile = match &input.profile {
            Some(p) => Some(
                Profile::default()
                    .apply(p, &p.set_fields(), now)?
                    .to_row(user_id, 1, now),
            ),
            None => None,
        };
        let password_hash = self.hasher.hash(password).await?;
        let new_user = NewUser {
            id: user_id,
            email: email.as_str().to_owned(),
            name,
            password_hash: Some(password_hash),
            now,
        };
        let user = match self.store.create_user(&new_user, profile.as_ref()).await {
            Ok(user) => user,
            // The only unique key a new random id can hit is the email's.
            Err(StoreError::Conflict(_)) => {
                return Err(Error::AlreadyExists("an account with this email"));
            }
            Err(e) => return Err(e.into()),
        };
        let (session, token) = self.create_session(user.id, client).await?;
        tracing::info!(user_id = %user.id, "user signed up");
        Ok(SignedIn {
            user,
            session,
            token,
        })
    }

    /// Signs in with email and password. Unknown email and wrong password are one error, and
    /// both cost one Argon2 verification.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<SignedIn, Error> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(email));
        let password = v.check("password", Password::presented(password));
        v.finish()?;
        let (Some(email), Some(password)) = (email, password) else {
            return Err(Error::Internal(anyhow::anyhow!(
                "parsed sign-in lost a field"
            )));
        };

        let found = self.store.find_credentials_by_email(email.as_str()).await?;
        let (user, stored_hash) = match found {
            Some(c) => (Some(c.user), c.password_hash),
            None => (None, None),
        };
        let verdict = self.hasher.verify(password.clone(), stored_hash).await?;
        let Some(user) = user.filter(|_| verdict.valid) else {
            tracing::info!("sign-in failed");
            return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
        };
        if verdict.needs_rehash {
            self.upgrade_hash(user.id, password).await;
        }
        let (session, token) = self.create_session(user.id, client).await?;
        tracing::info!(user_id = %user.id, "user signed in");
        Ok(SignedIn {
            user,
            session,
            token,
        })
    }

    /// Validates a presented token: the hot path. Reads one joined row, and writes only when
    /// `last_active_at` is older than the refresh interval.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Authenticated, Error> {
        let invalid = Error::Unauthenticated(AuthFailure::InvalidSession);
        let Some(token) = presented.and_then(SessionToken::parse) else {
            return Err(invalid);
        };
        let Some(found) = self.store.find_session(&self.tokens.hash(&token)).await? else {
            return Err(invalid);
        };
        let (mut session, user) = found.into_parts();
        let now = self.clock.now();
        if !self.is_live(&session, now) {
            return Err(invalid);
        }
        if now - session.last_active_at >= self.config.refresh_interval {
            self.store.touch_session(session.id, now).await?;
            session.last_active_at = now;
        }
        Ok(Authenticated {
            user,
            session: self.view(session, true),
        })
    }

    /// Revokes the calling session.
    #[tracing::instrument(skip_all)]
    pub async fn sign_out(&self, caller: &Authenticated) -> Result<(), Error> {
        self.store
            .delete_session(caller.user.id, caller.session.row.id)
            .await?;
        tracing::info!(user_id = %caller.user.id, "user signed out");
        Ok(())
    }

    /// The caller's live sessions, most recently used first.
    #[tracing::instrument(skip_all)]
    pub async fn list_sessions(&self, caller: &Authenticated) -> Result<Vec<SessionView>, Error> {
        let now = self.clock.now();
        let rows = self.store.list_sessions(caller.user.id, now).await?;
        Ok(rows
            .into_iter()
            .filter(|s| self.is_live(s, now))
            .map(|s| {
                let current = s.id == caller.session.row.id;
                self.view(s, current)
            })
            .collect())
    }

    /// Revokes one of the caller's sessions.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_session(
        &self,
        caller: &Authenticated,
        session_id: &str,
    ) -> Result<(), Error> {
        let Ok(id) = Uuid::parse_str(session_id.trim()) else {
            return Err(Error::invalid("session_id", "must be a UUID"));
        };
        if !self.store.delete_session(caller.user.id, id).await? {
            return Err(Error::NotFound("session"));
        }
        tracing::info!(user_id = %caller.user.id, session_id = %id, "session revoked");
        Ok(())
    }

    /// Revokes every session of the caller but the calling one.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_other_sessions(&self, caller: &Authenticated) -> Result<u64, Error> {
        let n = self
            .store
            .delete_other_sessions(caller.user.id, caller.session.row.id)
            .await?;
        tracing::info!(user_id = %caller.user.id, revoked = n, "other sessions revoked");
        Ok(n)
    }

    /// Changes the caller's password; returns how many other sessions were revoked.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        caller: &Authenticated,
        current: &str,
        new: &str,
        revoke_others: bool,
    ) -> Result<u64, Error> {
        let mut v = Violations::default();
        let current = v.check("current_password", Password::presented(current));
        let context = [
            caller.user.email.as_str(),
            local_part(&caller.user.email),
            caller.user.name.as_str(),
        ];
        let new = v.check(
            "new_password",
            Password::new_password(new, &self.config.password, &context),
        );
        v.finish()?;
        let (Some(current), Some(new)) = (current, new) else {
            return Err(Error::Internal(anyhow::anyhow!(
                "parsed password change lost a field"
            )));
        };
        self.check_password(caller.user.id, current, "current_password")
            .await?;
        let hash = self.hasher.hash(new).await?;
        self.store
            .set_password_hash(caller.user.id, &hash, self.clock.now())
            .await?;
        let revoked = if revoke_others {
            self.store
                .delete_other_sessions(caller.user.id, caller.session.row.id)
                .await?
        } else {
            0
        };
        tracing::info!(user_id = %caller.user.id, revoked, "password changed");
        Ok(revoked)
    }

    /// Deletes the caller's account and everything that hangs off it.
    #[tracing::instrument(skip_all)]
    pub async fn delete_account(
        &self,
        caller: &Authenticated,
        password: &str,
    ) -> Result<(), Error> {
        let password = Password::presented(password).map_err(|d| Error::invalid("password", d))?;
        self.check_password(caller.user.id, password, "password")
            .await?;
        self.store.delete_user(caller.user.id).await?;
        tracing::info!(user_id = %caller.user.id, "account deleted");
        Ok(())
    }

    /// Deletes sessions that can no longer validate; returns how many.
    pub async fn prune_expired_sessions(&self) -> Result<u64, Error> {
        let now = self.clock.now();
        Ok(self
            .store
            .delete_expired_sessions(now, now - self.config.idle_timeout)
            .await?)
    }

    async fn check_password(
        &self,
        user_id: Uuid,
        password: Password,
        field: &str,
    ) -> Result<(), Error> {
        let stored = self.store.password_hash(user_id).await?;
        if stored.is_none() {
            return Err(Error::FailedPrecondition(
                "this account has no password".into(),
            ));
        }
        let verdict = self.hasher.verify(password.clone(), stored).await?;
        if !verdict.valid {
            return Err(Error::invalid(field, "is incorrect"));
        }
        if verdict.needs_rehash {
            self.upgrade_hash(user_id, password).await;
        }
        Ok(())
    }

    /// Re-hashes with the current parameters; a failure only delays the upgrade.
    async fn upgrade_hash(&self, user_id: Uuid, password: Password) {
        let result = match self.hasher.hash(password).await {
            Ok(hash) => self
                .store
                .set_password_hash(user_id, &hash, self.clock.now())
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(user_id = %user_id, "password hash upgraded to current parameters")
            }
            Err(error) => {
                tracing::warn!(user_id = %user_id, %error, "password hash upgrade failed")
            }
        }
    }

    async fn create_session(
        &self,
        user_id: Uuid,
        client: ClientInfo,
    ) -> Result<(SessionView, SessionToken), Error> {
        let token = SessionToken::generate()
            .map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG failed: {e}")))?;
        let now = self.clock.now();
        let new = NewSession {
            id: Uuid::new_v4(),
            user_id,
            token_hash: self.tokens.hash(&token),
            now,
            expires_at: now + self.config.session_ttl,
            ip_address: client.ip,
            user_agent: client.user_agent,
        };
        let row = self.store.create_session(&new).await?;
        Ok((self.view(row, true), token))
    }

    fn is_live(&self, s: &SessionRow, now: DateTime<Utc>) -> bool {
        now < s.expires_at && now < s.last_active_at + self.config.idle_timeout
    }

    fn view(&self, row: SessionRow, current: bool) -> SessionView {
        let expires_at = row
            .expires_at
            .min(row.last_active_at + self.config.idle_timeout);
        SessionView {
            row,
            expires_at,
            current,
        }
    }
}

fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("is required".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

fn local_part(email: &str) -> &str {
    email.split('@').next().unwrap_or_default()
}
