//! Accounts, credentials and sessions.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{
    audit::{AuditLog, Event, Outcome},
    breach::{BreachedPasswords, Verdict},
    client::ClientInfo,
    consent::{BACKGROUND_PURPOSE, ConsentPolicy},
    core::Core,
    email::Email,
    error::{AuthFailure, Error, Violations},
    factors::{Entry, Factors},
    limits::Limit,
    links::Links,
    lockout::Lockout,
    notify::{Template, Vars},
    password::{Password, PasswordHasher, PasswordPolicy},
    profile::Profile,
    session::{Assurance, Authenticated, EndReason, Ending, Session, Sessions},
    token::SessionToken,
    user::User,
};
use crate::{
    metrics::METRICS,
    storage::{AttemptState, CredentialRow, NewUser, SignUpRows, StoreError},
};

/// Longest display name.
pub const MAX_NAME_CHARS: usize = 200;

/// Session and password settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Rules for new passwords.
    pub password: PasswordPolicy,
    /// Sign-in needs a verified address, and sign-up returns no session.
    pub require_email_verification: bool,
    /// How repeated failed sign-ins slow an account down.
    pub lockout: Lockout,
    /// For an account without a password, a sign-in at most this old stands in for the password
    /// where one is re-checked (deleting the account, changing its address).
    pub reauth_max_age: TimeDelta,
    /// The consent policy a sign-up's profile consents under.
    pub consent: ConsentPolicy,
}

/// What a re-check of the signed-in user accepted.
pub(crate) enum Proof {
    /// The password, matching this stored hash (the compare-and-swap value for a change).
    Password(String),
    /// A recent sign-in, for an account that has no password.
    RecentSignIn,
}

/// What Auth works with besides its configuration.
pub struct AuthDeps {
    /// The shared dependencies.
    pub core: Arc<Core>,
    /// Argon2 pool.
    pub hasher: PasswordHasher,
    /// Sessions are made and ended there.
    pub sessions: Arc<Sessions>,
    /// Email links (sign-up sends the first verification link).
    pub links: Arc<Links>,
    /// The breached-password check, when configured.
    pub breached: Option<BreachedPasswords>,
    /// Second factors: sign-in asks for one when the user has one.
    pub factors: Arc<Factors>,
}

/// The result of signing in: a session (its token shown once), or the second-factor step.
#[derive(Debug)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// The new session, or the challenge for a second factor.
    pub entry: Entry,
}

/// The result of signing up: the user and, unless verification is required first, a session.
#[derive(Debug)]
pub struct SignedUp {
    /// The user (for a duplicate sign-up under required verification, a look-alike that was
    /// never stored).
    pub user: User,
    /// The new session and its token.
    pub session: Option<(Session, SessionToken)>,
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
    core: Arc<Core>,
    hasher: PasswordHasher,
    sessions: Arc<Sessions>,
    links: Arc<Links>,
    breached: Option<BreachedPasswords>,
    factors: Arc<Factors>,
    config: AuthConfig,
}

impl Auth {
    /// Auth over its dependencies.
    pub fn new(deps: AuthDeps, config: AuthConfig) -> Self {
        Self {
            core: deps.core,
            hasher: deps.hasher,
            sessions: deps.sessions,
            links: deps.links,
            breached: deps.breached,
            factors: deps.factors,
            config,
        }
    }

    /// The shared dependencies.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The rules for new passwords.
    pub(crate) fn password_policy(&self) -> &PasswordPolicy {
        &self.config.password
    }

    /// Refuses a new password that the breach corpus holds, when the check is configured. An
    /// unanswered check accepts the password (fail open, counted and logged).
    pub(crate) async fn refuse_breached(&self, field: &'static str, password: &Password) -> Result<(), Error> {
        if let Some(check) = &self.breached
            && let Verdict::Breached(_) = check.check(password).await
        {
            return Err(Error::invalid(
                field,
                "has appeared in a known data breach, so attackers will try it: choose a different password",
            ));
        }
        Ok(())
    }

    /// The audit log (for ListAuditEvents).
    pub fn audit(&self) -> &AuditLog {
        &self.core.audit
    }

    /// Refuses a breached new password, then hashes it: for a password set without the current
    /// one (a reset).
    pub(crate) async fn hash_new_password(&self, field: &'static str, password: Password) -> Result<String, Error> {
        self.refuse_breached(field, &password).await?;
        self.hasher.hash(password).await
    }

    /// The password hashing pool (for its queue depth).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Creates an account (and its profile, atomically), sends the verification link and, unless
    /// verification is required first, signs it in.
    #[tracing::instrument(skip_all)]
    pub async fn sign_up(&self, input: SignUpInput, client: ClientInfo) -> Result<SignedUp, Error> {
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
            _ => v.check("password", Password::new_password(&input.password, &self.config.password, &[])),
        };
        if let Some(profile) = &input.profile {
            profile.validate("profile.", &mut v);
        }
        v.finish()?;
        let (Some(email), Some(name), Some(password)) = (email, name, password) else {
            return Err(Error::Internal(anyhow::anyhow!("parsed sign-up lost a field")));
        };
        self.core.limit(Limit::SignUpPerIp, &[&self.core.ip_key(&client)], None, &client).await?;
        self.refuse_breached("password", &password).await?;

        let now = self.core.now();
        let user_id = Uuid::now_v7();
        let policy = &self.config.consent;
        let (profile, consent) = match &input.profile {
            Some(p) => {
                let (profile, change) = Profile::default().apply(p, &p.set_fields(), now, &policy.version)?;
                let consent = change.map(|granted| policy.record(user_id, BACKGROUND_PURPOSE, granted, &client, now));
                (Some(profile.to_row(user_id, 1, now)), consent)
            }
            None => (None, None),
        };
        // Hash before the insert, so that a duplicate costs the same time as a new account.
        let password_hash = self.hasher.hash(password).await?;
        let new_user = NewUser {
            id: user_id,
            email: email.as_str().to_owned(),
            name: name.clone(),
            password_hash: Some(password_hash),
            now,
        };
        // The user, its profile, its verification token and its first session are one
        // transaction: a refused sign-up (a full disk, say) leaves nothing behind and mails
        // nothing, and a retry starts afresh.
        let (verification, link) = self.links.new_verification_link(user_id)?;
        let session = if self.config.require_email_verification {
            None
        } else {
            Some(self.sessions.new_session(user_id, client.clone(), &Assurance::single("pwd"))?)
        };
        let rows = SignUpRows {
            profile: profile.as_ref(),
            verification: Some(&verification),
            session: session.as_ref().map(|(s, _)| s),
            consent: consent.as_ref(),
        };
        let (user, stored_session) = match self.core.store.create_user(&new_user, rows).await {
            Ok((user, session)) => (User::from(user), session),
            // The only unique key a new random id can hit is the email's.
            Err(StoreError::Conflict(_)) => return self.duplicate_sign_up(&email, name, now, &client).await,
            Err(e) => return Err(e.into()),
        };
        self.core.audit.record(Some(user.id), Event::SignUp, Outcome::Success, None, &client).await;
        self.links.mail_verification(&user, &link, &client).await;
        let session = match (stored_session, session) {
            (Some(row), Some((_, token))) => Some((self.sessions.view(row, true), token)),
            _ => None,
        };
        tracing::info!(user_id = %user.id, "user signed up");
        Ok(SignedUp { user, session })
    }

    /// A sign-up for an address that has an account. With verification required the answer
    /// looks exactly like a fresh sign-up and the owner is told; otherwise it is ALREADY_EXISTS
    /// (the documented trade-off).
    async fn duplicate_sign_up(
        &self,
        email: &Email,
        name: String,
        now: DateTime<Utc>,
        client: &ClientInfo,
    ) -> Result<SignedUp, Error> {
        let owner = self.core.store.find_credentials_by_email(email.as_str()).await?;
        let owner_id = owner.as_ref().map(|o| o.user.id);
        self.core.audit.record(owner_id, Event::SignUp, Outcome::Denied, Some("duplicate_email"), client).await;
        if !self.config.require_email_verification {
            return Err(Error::AlreadyExists("an account with this email"));
        }
        if let Some(owner) = owner {
            let vars = Vars { name: &owner.user.name, email: &owner.user.email, ..Default::default() };
            self.core.notifier.send(Template::SignUpAttempt, &owner.user.email, vars);
        }
        let look_alike = User {
            id: Uuid::now_v7(),
            email: email.as_str().to_owned(),
            name,
            image: None,
            email_verified: false,
            created_at: now,
            updated_at: now,
        };
        Ok(SignedUp { user: look_alike, session: None })
    }

    /// Signs in with email and password. Unknown email, wrong password and locked account are
    /// one error, and each costs one Argon2 verification.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(&self, email: &str, password: &str, client: ClientInfo) -> Result<SignedIn, Error> {
        let mut v = Violations::default();
        let email = v.check("email", Email::parse(email));
        let password = v.check("password", Password::presented(password));
        v.finish()?;
        let (Some(email), Some(password)) = (email, password) else {
            return Err(Error::Internal(anyhow::anyhow!("parsed sign-in lost a field")));
        };
        let ip = self.core.ip_key(&client);
        // Narrowest first, the global ceiling last: a guess refused per IP or per account does
        // not use up everyone's budget. Every limit is checked before the account is looked up,
        // so the answer is the same for an address with or without one.
        self.core.limit_by_email(Limit::SignInPerIp, &[&ip], &email, &client).await?;
        self.core.limit_by_email(Limit::SignInPerAccountIp, &[email.as_str(), &ip], &email, &client).await?;
        self.core.limit_by_email(Limit::SignInPerEmail, &[email.as_str()], &email, &client).await?;
        self.core.limit_by_email(Limit::SignInGlobal, &[], &email, &client).await?;

        let found = self.core.store.find_credentials_by_email(email.as_str()).await?;
        let now = self.core.now();
        // The slot is taken before hashing: a guess that finds the account locked (or that
        // comes after the threshold's worth of parallel guesses) is never evaluated, and is
        // hashed against the dummy so that it costs the same.
        let slot = match &found {
            Some(c) if c.disabled_at.is_none() && c.password_hash.is_some() => {
                let seen = AttemptState { failed_sign_ins: c.failed_sign_ins, locked_until: c.locked_until };
                self.config.lockout.take_slot(&self.core, c.user.id, seen, now).await?
            }
            _ => None,
        };
        let evaluate = slot.is_some();
        let stored_hash = found.as_ref().and_then(|c| c.password_hash.clone()).filter(|_| evaluate);
        let verdict = self.hasher.verify(password.clone(), stored_hash.clone()).await?;
        let client = &client;
        let fail = |user: Option<Uuid>, outcome: Outcome, reason: &'static str| async move {
            METRICS.sign_in_failed();
            self.core.audit.record(user, Event::SignIn, outcome, Some(reason), client).await;
            Error::Unauthenticated(AuthFailure::InvalidCredentials)
        };
        let Some(CredentialRow { user, password_hash, disabled_at, .. }) = found else {
            return Err(fail(None, Outcome::Failure, "unknown_email").await);
        };
        if disabled_at.is_some() {
            return Err(fail(Some(user.id), Outcome::Denied, "disabled").await);
        }
        if password_hash.is_none() {
            return Err(fail(Some(user.id), Outcome::Failure, "no_password").await);
        }
        if !evaluate {
            return Err(fail(Some(user.id), Outcome::Denied, "locked").await);
        }
        if !verdict.valid {
            return Err(fail(Some(user.id), Outcome::Failure, "wrong_password").await);
        }
        // With a second factor the right password is not yet a success: it gives its slot
        // back but clears nothing, so the failures of earlier code guesses stand and the
        // second factor's check counts on from them; a right code clears them all.
        let factors = self.factors.active(user.id).await?;
        if factors.is_empty() {
            self.core.store.clear_failed_sign_ins(user.id).await?;
        } else if let Some(written) = slot {
            self.core.store.refund_attempt(user.id, written).await?;
        }
        if verdict.needs_rehash
            && let Some(stored) = stored_hash
        {
            self.upgrade_hash(user.id, &stored, password).await;
        }
        if self.config.require_email_verification && !user.email_verified {
            self.core
                .audit
                .record(Some(user.id), Event::SignIn, Outcome::Denied, Some("email_not_verified"), client)
                .await;
            return Err(Error::email_not_verified());
        }
        let entry = self.factors.enter_with(user.id, "pwd", &factors, client).await?;
        if let Entry::Session(..) = entry {
            self.core.audit.record(Some(user.id), Event::SignIn, Outcome::Success, None, client).await;
        }
        Ok(SignedIn { user: user.into(), entry })
    }

    /// Takes a password-attempt slot for `user_id` (see [`Lockout::take_attempt`]).
    async fn take_attempt(&self, user_id: Uuid, seen: AttemptState, now: DateTime<Utc>) -> Result<bool, Error> {
        self.config.lockout.take_attempt(&self.core, user_id, seen, now).await
    }

    /// Validates a presented token (see [`Sessions::authenticate`]).
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Authenticated, Error> {
        self.sessions.authenticate(presented).await
    }

    /// Revokes the calling session.
    #[tracing::instrument(skip_all)]
    pub async fn sign_out(&self, caller: &Authenticated, client: &ClientInfo) -> Result<(), Error> {
        let one = Ending::One { user_id: caller.user.id, session_id: caller.session.id };
        self.sessions.end(one, EndReason::SignOut).await?;
        self.core.audit.record(Some(caller.user.id), Event::SignOut, Outcome::Success, None, client).await;
        Ok(())
    }

    /// The caller's live sessions, most recently used first.
    #[tracing::instrument(skip_all)]
    pub async fn list_sessions(&self, caller: &Authenticated) -> Result<Vec<Session>, Error> {
        self.sessions.list(caller.user.id, caller.session.id).await
    }

    /// Revokes one of the caller's sessions.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_session(
        &self,
        caller: &Authenticated,
        session_id: &str,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        let Ok(id) = Uuid::parse_str(session_id.trim()) else {
            return Err(Error::invalid("session_id", "must be a UUID"));
        };
        let one = Ending::One { user_id: caller.user.id, session_id: id };
        if self.sessions.end(one, EndReason::Revoked).await? == 0 {
            return Err(Error::NotFound("session"));
        }
        self.core.audit.record(Some(caller.user.id), Event::SessionRevoked, Outcome::Success, None, client).await;
        Ok(())
    }

    /// Revokes every session of the caller but the calling one.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_other_sessions(&self, caller: &Authenticated, client: &ClientInfo) -> Result<u64, Error> {
        let others = Ending::AllBut { user_id: caller.user.id, keep: caller.session.id };
        let n = self.sessions.end(others, EndReason::OtherSessions).await?;
        self.core
            .audit
            .record(Some(caller.user.id), Event::SessionRevoked, Outcome::Success, Some("other_sessions"), client)
            .await;
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
        client: &ClientInfo,
    ) -> Result<u64, Error> {
        let mut v = Violations::default();
        let current = v.check("current_password", Password::presented(current));
        let context = [caller.user.email.as_str(), local_part(&caller.user.email), caller.user.name.as_str()];
        let new = v.check("new_password", Password::new_password(new, &self.config.password, &context));
        v.finish()?;
        let (Some(current), Some(new)) = (current, new) else {
            return Err(Error::Internal(anyhow::anyhow!("parsed password change lost a field")));
        };
        let stored = match self.check_password(caller, Some(current), "current_password", client).await {
            Ok(Proof::Password(stored)) => stored,
            Ok(Proof::RecentSignIn) => return Err(Error::FailedPrecondition("this account has no password".into())),
            Err(e) => {
                self.core
                    .audit
                    .record(
                        Some(caller.user.id),
                        Event::PasswordChanged,
                        Outcome::Failure,
                        Some("wrong_password"),
                        client,
                    )
                    .await;
                return Err(e);
            }
        };
        // After the current password, so that only its holder makes the server call out.
        self.refuse_breached("new_password", &new).await?;
        let hash = self.hasher.hash(new).await?;
        // Of concurrent changes checked against one current password, exactly one lands; for
        // the others the current password no longer matches.
        if !self.core.store.replace_password_hash(caller.user.id, &stored, &hash, self.core.now()).await? {
            self.core
                .audit
                .record(
                    Some(caller.user.id),
                    Event::PasswordChanged,
                    Outcome::Failure,
                    Some("changed_meanwhile"),
                    client,
                )
                .await;
            return Err(Error::invalid("current_password", "no longer matches: the password was just changed"));
        }
        self.sessions.user_changed(caller.user.id);
        let revoked = if revoke_others {
            let others = Ending::AllBut { user_id: caller.user.id, keep: caller.session.id };
            self.sessions.end(others, EndReason::PasswordChanged).await?
        } else {
            0
        };
        self.core.audit.record(Some(caller.user.id), Event::PasswordChanged, Outcome::Success, None, client).await;
        let vars = Vars { name: &caller.user.name, email: &caller.user.email, ..Default::default() };
        self.core.notifier.send(Template::PasswordChanged, &caller.user.email, vars);
        Ok(revoked)
    }

    /// Deletes the caller's account and everything that hangs off it.
    #[tracing::instrument(skip_all)]
    pub async fn delete_account(
        &self,
        caller: &Authenticated,
        password: &str,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        let password = optional_password(password, "password")?;
        self.check_password(caller, password, "password", client).await?;
        self.sessions.delete_user(caller.user.id).await?;
        self.core.audit.record(Some(caller.user.id), Event::AccountDeleted, Outcome::Success, None, client).await;
        Ok(())
    }

    /// Re-checks a signed-in user's password (before sensitive changes). Guesses share the
    /// sign-in rate limit, count towards the lockout and are refused while it applies, so a
    /// stolen session cannot be used to guess the password without limit. An account without
    /// a password passes with a sign-in younger than `reauth_max_age` instead.
    pub(crate) async fn check_password(
        &self,
        caller: &Authenticated,
        password: Option<Password>,
        field: &str,
        client: &ClientInfo,
    ) -> Result<Proof, Error> {
        self.factors.require_step_up_for_account_change(caller).await?;
        let user_id = caller.user.id;
        let email = caller.user.email.as_str();
        self.core.limit(Limit::SignInPerAccountIp, &[email, &self.core.ip_key(client)], Some(user_id), client).await?;
        // The account's own budget too, so guesses through a stolen session and through SignIn
        // add up.
        self.core.limit(Limit::SignInPerEmail, &[email], Some(user_id), client).await?;
        let Some(stored) = self.core.store.password_hash(user_id).await? else {
            let signed_in = self.core.now() - caller.session.created_at;
            if signed_in <= self.config.reauth_max_age {
                return Ok(Proof::RecentSignIn);
            }
            return Err(Error::FailedPrecondition(format!(
                "this account has no password: sign in again (a sign-in within the last {} minutes stands in for it) and retry",
                self.config.reauth_max_age.num_minutes().max(1)
            )));
        };
        let Some(password) = password else {
            return Err(Error::invalid(field, "is required"));
        };
        let now = self.core.now();
        let seen = self.core.store.attempt_state(user_id).await?.ok_or(Error::NotFound("user"))?;
        let evaluate = self.take_attempt(user_id, seen, now).await?;
        // A locked account is answered exactly like a wrong password, at the same cost.
        let verdict = self.hasher.verify(password, Some(stored.clone()).filter(|_| evaluate)).await?;
        if !evaluate || !verdict.valid {
            return Err(Error::invalid(field, "is incorrect"));
        }
        self.core.store.clear_failed_sign_ins(user_id).await?;
        Ok(Proof::Password(stored))
    }

    /// Re-hashes with the current parameters, unless the hash changed meanwhile; a failure only
    /// delays the upgrade.
    async fn upgrade_hash(&self, user_id: Uuid, stored: &str, password: Password) {
        let result = match self.hasher.hash(password).await {
            Ok(hash) => self
                .core
                .store
                .replace_password_hash(user_id, stored, &hash, self.core.now())
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(true) => {
                self.sessions.user_changed(user_id);
                tracing::info!(user_id = %user_id, "password hash upgraded to current parameters");
            }
            Ok(false) => tracing::debug!(user_id = %user_id, "password changed meanwhile; no upgrade"),
            Err(error) => tracing::warn!(user_id = %user_id, %error, "password hash upgrade failed"),
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

/// A password field that may be left empty by an account without a password.
pub(crate) fn optional_password(raw: &str, field: &str) -> Result<Option<Password>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    Password::presented(raw).map(Some).map_err(|d| Error::invalid(field, d))
}

pub(crate) fn local_part(email: &str) -> &str {
    email.split('@').next().unwrap_or_default()
}
