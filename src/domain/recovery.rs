//! Proving email ownership and recovering accounts: verification links, password reset and
//! email change. Tokens are 256 random bits, stored only as keyed hashes, single use, bound to
//! one purpose, expiring, and superseded by the next token of the same purpose.

use std::sync::Arc;

use chrono::TimeDelta;
use uuid::Uuid;

use super::{
    ClientInfo,
    audit::{Event, Outcome},
    auth::{Auth, Authenticated, local_part},
    email::Email,
    error::{Error, Violations},
    limits::Limit,
    notify::{Template, Vars},
    password::Password,
    token::{LINK_PREFIX, SecretToken},
};
use crate::storage::{NewVerificationToken, StoreError, UserRow};

const VERIFY_EMAIL: &str = "verify_email";
const CHANGE_EMAIL: &str = "change_email";
const RESET_PASSWORD: &str = "reset_password";

/// The one answer for every token that cannot be redeemed, whatever the reason.
fn bad_token() -> Error {
    Error::invalid("token", "is invalid, expired or already used")
}

impl Auth {
    /// A new link token for `purpose` and the row that stores it (not stored yet).
    fn new_link(
        &self,
        user_id: Uuid,
        purpose: &'static str,
        ttl: TimeDelta,
        new_email: Option<String>,
    ) -> Result<(NewVerificationToken, SecretToken), Error> {
        let token =
            SecretToken::generate_with(LINK_PREFIX).map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG: {e}")))?;
        let now = self.clock.now();
        let row = NewVerificationToken {
            id: Uuid::new_v4(),
            user_id,
            purpose,
            token_hash: self.link_tokens.hash(&token),
            new_email,
            now,
            expires_at: now + ttl,
        };
        Ok((row, token))
    }

    /// Issues a link token for `purpose`, superseding the user's earlier ones.
    async fn issue_link(
        &self,
        user_id: Uuid,
        purpose: &'static str,
        ttl: TimeDelta,
        new_email: Option<String>,
    ) -> Result<SecretToken, Error> {
        let (row, token) = self.new_link(user_id, purpose, ttl, new_email)?;
        self.store.issue_token(&row).await?;
        Ok(token)
    }

    /// A verification link for a user being signed up, stored with the user (see
    /// [`Auth::mail_verification`] for after the commit).
    pub(crate) fn new_verification_link(&self, user_id: Uuid) -> Result<(NewVerificationToken, SecretToken), Error> {
        self.new_link(user_id, VERIFY_EMAIL, self.config.verification_ttl, None)
    }

    /// Emails `user` a new verification link (on request).
    async fn send_verification(&self, user: &UserRow, client: &ClientInfo) -> Result<(), Error> {
        let token = self.issue_link(user.id, VERIFY_EMAIL, self.config.verification_ttl, None).await?;
        self.mail_verification(user, &token, client).await;
        Ok(())
    }

    /// Mails a stored verification link to `user`: only ever after the token was committed, so
    /// no mail leaves for a change the database refused.
    pub(crate) async fn mail_verification(&self, user: &UserRow, token: &SecretToken, client: &ClientInfo) {
        let ttl = self.config.verification_ttl;
        let vars = Vars {
            name: &user.name,
            email: &user.email,
            token: Some(token.as_str()),
            expires_in: Some(ttl),
            ..Default::default()
        };
        self.notifier.send(Template::VerifyEmail, &user.email, vars);
        self.audit.record(Some(user.id), Event::VerificationSent, Outcome::Success, None, client).await;
    }

    /// SendVerificationEmail: a new link for the caller's unverified address.
    #[tracing::instrument(skip_all)]
    pub async fn send_verification_email(&self, caller: &Authenticated, client: &ClientInfo) -> Result<(), Error> {
        if caller.user.email_verified {
            return Err(Error::FailedPrecondition("the email address is already verified".into()));
        }
        let user_key = caller.user.id.to_string();
        self.limit(Limit::VerificationPerAccount, &[&user_key], Some(caller.user.id), client).await?;
        self.send_verification(&caller.user, client).await
    }

    /// VerifyEmail: redeems a verification or email-change link.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<(), Error> {
        self.limit(Limit::RedeemPerIp, &[&self.ip_key(client)], None, client).await?;
        let Some(token) = SecretToken::parse_with(token.trim(), LINK_PREFIX) else { return Err(bad_token()) };
        let now = self.clock.now();
        let redeemed =
            self.store.redeem_token(&self.link_tokens.hash(&token), (VERIFY_EMAIL, CHANGE_EMAIL), now).await?;
        let Some(redeemed) = redeemed else {
            self.audit.record(None, Event::EmailVerified, Outcome::Failure, Some("bad_token"), client).await;
            return Err(bad_token());
        };
        match (redeemed.purpose.as_str(), redeemed.new_email) {
            (CHANGE_EMAIL, Some(new_email)) => match self.store.change_email(redeemed.user_id, &new_email, now).await {
                Ok(()) => {
                    self.audit
                        .record(Some(redeemed.user_id), Event::EmailChanged, Outcome::Success, None, client)
                        .await;
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => {
                    self.audit
                        .record(Some(redeemed.user_id), Event::EmailChanged, Outcome::Failure, Some("taken"), client)
                        .await;
                    Err(Error::FailedPrecondition("that address now belongs to another account".into()))
                }
                Err(e) => Err(e.into()),
            },
            _ => {
                let removed = self.store.mark_email_verified(redeemed.user_id, now).await?;
                self.audit.record(Some(redeemed.user_id), Event::EmailVerified, Outcome::Success, None, client).await;
                self.tell_removed(redeemed.user_id, &removed).await?;
                Ok(())
            }
        }
    }

    /// RequestPasswordReset: answers at once, the same way for every address; the lookup,
    /// token and mail happen afterwards, so neither the answer nor its timing tells whether
    /// the address has an account.
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(self: &Arc<Self>, email: &str, client: ClientInfo) -> Result<(), Error> {
        let email = Email::parse(email).map_err(|d| Error::invalid("email", d))?;
        self.limit_by_email(Limit::PasswordResetPerIp, &[&self.ip_key(&client)], &email, &client).await?;
        self.limit_by_email(Limit::PasswordResetPerEmail, &[email.as_str()], &email, &client).await?;
        let auth = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = auth.send_reset(&email, &client).await {
                tracing::warn!(%error, "password reset request could not be completed");
            }
        });
        Ok(())
    }

    async fn send_reset(&self, email: &Email, client: &ClientInfo) -> Result<(), Error> {
        let Some(found) = self.store.find_credentials_by_email(email.as_str()).await? else {
            self.audit
                .record(None, Event::PasswordResetRequested, Outcome::Failure, Some("unknown_email"), client)
                .await;
            return Ok(());
        };
        let user = found.user;
        let ttl = self.config.reset_ttl;
        let token = self.issue_link(user.id, RESET_PASSWORD, ttl, None).await?;
        let vars = Vars {
            name: &user.name,
            email: &user.email,
            token: Some(token.as_str()),
            expires_in: Some(ttl),
            ..Default::default()
        };
        self.notifier.send(Template::ResetPassword, &user.email, vars);
        self.audit.record(Some(user.id), Event::PasswordResetRequested, Outcome::Success, None, client).await;
        Ok(())
    }

    /// ResetPassword: a new password with a reset link; every session ends, a lock is lifted,
    /// and the owner is told. No session is returned.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(&self, token: &str, new_password: &str, client: &ClientInfo) -> Result<(), Error> {
        self.limit(Limit::RedeemPerIp, &[&self.ip_key(client)], None, client).await?;
        let mut v = Violations::default();
        let token = SecretToken::parse_with(token.trim(), LINK_PREFIX);
        if token.is_none() {
            v.add("token", "is invalid, expired or already used");
        }
        // Rules that need no user first, so that a bad password does not spend the token.
        let _ = v.check("new_password", Password::new_password(new_password, &self.config.password, &[]));
        v.finish()?;
        let Some(token) = token else { return Err(bad_token()) };
        let hash = self.link_tokens.hash(&token);
        let now = self.clock.now();
        let purposes = (RESET_PASSWORD, RESET_PASSWORD);
        let Some(live) = self.store.find_live_token(&hash, purposes, now).await? else {
            self.audit.record(None, Event::PasswordReset, Outcome::Failure, Some("bad_token"), client).await;
            return Err(bad_token());
        };
        let Some(user) = self.store.find_user(live.user_id).await? else { return Err(bad_token()) };
        let context = [user.email.as_str(), local_part(&user.email), user.name.as_str()];
        let password = Password::new_password(new_password, &self.config.password, &context)
            .map_err(|d| Error::invalid("new_password", d))?;
        self.refuse_breached("new_password", &password).await?;
        let password_hash = self.hasher.hash(password).await?;
        // Redeeming is the single-use gate: of concurrent resets with one token, one wins.
        if self.store.redeem_token(&hash, purposes, self.clock.now()).await?.is_none() {
            return Err(bad_token());
        }
        let recovered = self.store.reset_password(user.id, &password_hash, self.clock.now()).await?;
        self.revocations.wake();
        self.audit.record(Some(user.id), Event::PasswordReset, Outcome::Success, None, client).await;
        tracing::info!(
            user_id = %user.id,
            sessions_ended = recovered.sessions_ended,
            links_removed = recovered.removed_providers.len(),
            "password reset"
        );
        let vars = Vars { name: &user.name, email: &user.email, ..Default::default() };
        self.notifier.send(Template::PasswordChanged, &user.email, vars);
        self.tell_removed(user.id, &recovered.removed_providers).await?;
        Ok(())
    }

    /// Tells the owner which provider links made before they proved the mailbox were removed.
    async fn tell_removed(&self, user_id: uuid::Uuid, removed: &[String]) -> Result<(), Error> {
        if removed.is_empty() {
            return Ok(());
        }
        tracing::info!(user_id = %user_id, providers = ?removed, "removed provider links made before the address was proven");
        if let Some(user) = self.store.find_user(user_id).await? {
            let vars = Vars { name: &user.name, email: &user.email, removed, ..Default::default() };
            self.notifier.send(Template::AccessRemoved, &user.email, vars);
        }
        Ok(())
    }

    /// RequestEmailChange: a link to the new address, a notice to the current one. An address
    /// that already has an account gets no link, and the caller cannot tell.
    #[tracing::instrument(skip_all)]
    pub async fn request_email_change(
        &self,
        caller: &Authenticated,
        new_email: &str,
        current_password: &str,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        let mut v = Violations::default();
        let new_email = v.check("new_email", Email::parse(new_email));
        // Empty is allowed: an account without a password offers a recent sign-in instead.
        let password = if current_password.is_empty() {
            Some(None)
        } else {
            v.check("current_password", Password::presented(current_password)).map(Some)
        };
        if new_email.as_ref().is_some_and(|e| e.as_str() == caller.user.email) {
            v.add("new_email", "is already the account's address");
        }
        v.finish()?;
        let (Some(new_email), Some(password)) = (new_email, password) else {
            return Err(Error::Internal(anyhow::anyhow!("parsed email change lost a field")));
        };
        self.check_password(caller, password, "current_password", client).await?;
        let user_key = caller.user.id.to_string();
        self.limit(Limit::VerificationPerAccount, &[&user_key], Some(caller.user.id), client).await?;

        let user = &caller.user;
        let notice =
            Vars { name: &user.name, email: &user.email, new_email: Some(new_email.as_str()), ..Default::default() };
        if self.store.find_credentials_by_email(new_email.as_str()).await?.is_some() {
            self.notifier.send(Template::EmailChangeNotice, &user.email, notice);
            self.audit
                .record(Some(user.id), Event::VerificationSent, Outcome::Denied, Some("email_taken"), client)
                .await;
            return Ok(());
        }
        let ttl = self.config.verification_ttl;
        let token = self.issue_link(user.id, CHANGE_EMAIL, ttl, Some(new_email.as_str().to_owned())).await?;
        // Mail only for a request that was stored.
        self.notifier.send(Template::EmailChangeNotice, &user.email, notice);
        let vars = Vars {
            name: &user.name,
            email: new_email.as_str(),
            token: Some(token.as_str()),
            expires_in: Some(ttl),
            ..Default::default()
        };
        self.notifier.send(Template::ChangeEmail, new_email.as_str(), vars);
        self.audit.record(Some(user.id), Event::VerificationSent, Outcome::Success, Some("email_change"), client).await;
        Ok(())
    }

    /// Deletes revocation events older than `retention`.
    pub async fn prune_revocations(&self, retention: TimeDelta) -> Result<u64, Error> {
        Ok(self.store.prune_revocations(self.clock.now() - retention).await?)
    }

    /// Deletes expired and used link tokens.
    pub async fn prune_stale_tokens(&self) -> Result<u64, Error> {
        Ok(self.store.delete_stale_tokens(self.clock.now() - TimeDelta::days(1)).await?)
    }
}
