//! Proving email ownership and recovering accounts: verification, password reset and email
//! change, over the links of [`Links`].

use std::sync::Arc;

use super::{
    audit::{Event, Outcome},
    auth::{Auth, local_part},
    client::ClientInfo,
    core::Core,
    email::Email,
    error::{Error, Violations},
    limits::Limit,
    links::{CHANGE_EMAIL, Links, RESET_PASSWORD, VERIFY_EMAIL},
    notify::{Template, Vars},
    password::Password,
    session::{Authenticated, Sessions},
};
use crate::storage::StoreError;

/// The one answer for every token that cannot be redeemed, whatever the reason.
fn bad_token() -> Error {
    Error::invalid("token", "is invalid, expired or already used")
}

/// Verification, reset and email change.
pub struct Recovery {
    core: Arc<Core>,
    /// For the password rules, the breach check and hashing, and re-checking the current
    /// password: one owner of each password rule.
    auth: Arc<Auth>,
    sessions: Arc<Sessions>,
    links: Arc<Links>,
}

impl Recovery {
    /// Recovery over `links`, with `auth`'s password rules; a reset ends sessions through
    /// `sessions`.
    pub fn new(core: Arc<Core>, auth: Arc<Auth>, sessions: Arc<Sessions>, links: Arc<Links>) -> Self {
        Self { core, auth, sessions, links }
    }

    /// SendVerificationEmail: a new link for the caller's unverified address.
    #[tracing::instrument(skip_all)]
    pub async fn send_verification_email(&self, caller: &Authenticated, client: &ClientInfo) -> Result<(), Error> {
        if caller.user.email_verified {
            return Err(Error::FailedPrecondition("the email address is already verified".into()));
        }
        let user_key = caller.user.id.to_string();
        self.core.limit(Limit::VerificationPerAccount, &[&user_key], Some(caller.user.id), client).await?;
        self.links.send_verification(&caller.user, client).await
    }

    /// VerifyEmail: redeems a verification or email-change link.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<(), Error> {
        self.core.limit(Limit::RedeemPerIp, &[&self.core.ip_key(client)], None, client).await?;
        let Some(token) = Links::parse(token) else { return Err(bad_token()) };
        let now = self.core.now();
        let redeemed =
            self.core.store.redeem_token(&self.links.hash(&token), (VERIFY_EMAIL, CHANGE_EMAIL), now).await?;
        let Some(redeemed) = redeemed else {
            self.core.audit.record(None, Event::EmailVerified, Outcome::Failure, Some("bad_token"), client).await;
            return Err(bad_token());
        };
        match (redeemed.purpose.as_str(), redeemed.new_email) {
            (CHANGE_EMAIL, Some(new_email)) => match self
                .core
                .store
                .change_email(redeemed.user_id, &new_email, now)
                .await
            {
                Ok(()) => {
                    self.sessions.user_changed(redeemed.user_id);
                    self.core
                        .audit
                        .record(Some(redeemed.user_id), Event::EmailChanged, Outcome::Success, None, client)
                        .await;
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => {
                    self.core
                        .audit
                        .record(Some(redeemed.user_id), Event::EmailChanged, Outcome::Failure, Some("taken"), client)
                        .await;
                    Err(Error::FailedPrecondition("that address now belongs to another account".into()))
                }
                Err(e) => Err(e.into()),
            },
            _ => {
                let removed = self.core.store.mark_email_verified(redeemed.user_id, now).await?;
                self.sessions.user_changed(redeemed.user_id);
                self.core
                    .audit
                    .record(Some(redeemed.user_id), Event::EmailVerified, Outcome::Success, None, client)
                    .await;
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
        self.core.limit_by_email(Limit::PasswordResetPerIp, &[&self.core.ip_key(&client)], &email, &client).await?;
        self.core.limit_by_email(Limit::PasswordResetPerEmail, &[email.as_str()], &email, &client).await?;
        let recovery = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = recovery.send_reset(&email, &client).await {
                tracing::warn!(%error, "password reset request could not be completed");
            }
        });
        Ok(())
    }

    async fn send_reset(&self, email: &Email, client: &ClientInfo) -> Result<(), Error> {
        let Some(found) = self.core.store.find_credentials_by_email(email.as_str()).await? else {
            self.core
                .audit
                .record(None, Event::PasswordResetRequested, Outcome::Failure, Some("unknown_email"), client)
                .await;
            return Ok(());
        };
        let user = found.user;
        let ttl = self.links.lifetimes().reset;
        let token = self.links.issue(user.id, RESET_PASSWORD, ttl, None).await?;
        let vars = Vars {
            name: &user.name,
            email: &user.email,
            token: Some(token.as_str()),
            expires_in: Some(ttl),
            ..Default::default()
        };
        self.core.notifier.send(Template::ResetPassword, &user.email, vars);
        self.core.audit.record(Some(user.id), Event::PasswordResetRequested, Outcome::Success, None, client).await;
        Ok(())
    }

    /// ResetPassword: a new password with a reset link; every session ends, a lock is lifted,
    /// and the owner is told. No session is returned.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(&self, token: &str, new_password: &str, client: &ClientInfo) -> Result<(), Error> {
        self.core.limit(Limit::RedeemPerIp, &[&self.core.ip_key(client)], None, client).await?;
        let mut v = Violations::default();
        let token = Links::parse(token);
        if token.is_none() {
            v.add("token", "is invalid, expired or already used");
        }
        // Rules that need no user first, so that a bad password does not spend the token.
        let _ = v.check("new_password", Password::new_password(new_password, self.auth.password_policy(), &[]));
        v.finish()?;
        let Some(token) = token else { return Err(bad_token()) };
        let hash = self.links.hash(&token);
        let now = self.core.now();
        let purposes = (RESET_PASSWORD, RESET_PASSWORD);
        let Some(live) = self.core.store.find_live_token(&hash, purposes, now).await? else {
            self.core.audit.record(None, Event::PasswordReset, Outcome::Failure, Some("bad_token"), client).await;
            return Err(bad_token());
        };
        let Some(user) = self.core.store.find_user(live.user_id).await? else { return Err(bad_token()) };
        let context = [user.email.as_str(), local_part(&user.email), user.name.as_str()];
        let password = Password::new_password(new_password, self.auth.password_policy(), &context)
            .map_err(|d| Error::invalid("new_password", d))?;
        let password_hash = self.auth.hash_new_password("new_password", password).await?;
        // Redeeming is the single-use gate: of concurrent resets with one token, one wins.
        if self.core.store.redeem_token(&hash, purposes, self.core.now()).await?.is_none() {
            return Err(bad_token());
        }
        let recovered = self.sessions.reset_password(user.id, &password_hash).await?;
        self.core.audit.record(Some(user.id), Event::PasswordReset, Outcome::Success, None, client).await;
        tracing::info!(
            user_id = %user.id,
            sessions_ended = recovered.sessions_ended,
            links_removed = recovered.removed_providers.len(),
            "password reset"
        );
        let vars = Vars { name: &user.name, email: &user.email, ..Default::default() };
        self.core.notifier.send(Template::PasswordChanged, &user.email, vars);
        self.tell_removed(user.id, &recovered.removed_providers).await?;
        Ok(())
    }

    /// Tells the owner which provider links made before they proved the mailbox were removed.
    async fn tell_removed(&self, user_id: uuid::Uuid, removed: &[String]) -> Result<(), Error> {
        if removed.is_empty() {
            return Ok(());
        }
        tracing::info!(user_id = %user_id, providers = ?removed, "removed provider links made before the address was proven");
        if let Some(user) = self.core.store.find_user(user_id).await? {
            let vars = Vars { name: &user.name, email: &user.email, removed, ..Default::default() };
            self.core.notifier.send(Template::AccessRemoved, &user.email, vars);
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
        self.auth.check_password(caller, password, "current_password", client).await?;
        let user_key = caller.user.id.to_string();
        self.core.limit(Limit::VerificationPerAccount, &[&user_key], Some(caller.user.id), client).await?;

        let user = &caller.user;
        let notice =
            Vars { name: &user.name, email: &user.email, new_email: Some(new_email.as_str()), ..Default::default() };
        if self.core.store.find_credentials_by_email(new_email.as_str()).await?.is_some() {
            self.core.notifier.send(Template::EmailChangeNotice, &user.email, notice);
            self.core
                .audit
                .record(Some(user.id), Event::VerificationSent, Outcome::Denied, Some("email_taken"), client)
                .await;
            return Ok(());
        }
        let ttl = self.links.lifetimes().verification;
        let token = self.links.issue(user.id, CHANGE_EMAIL, ttl, Some(new_email.as_str().to_owned())).await?;
        // Mail only for a request that was stored.
        self.core.notifier.send(Template::EmailChangeNotice, &user.email, notice);
        let vars = Vars {
            name: &user.name,
            email: new_email.as_str(),
            token: Some(token.as_str()),
            expires_in: Some(ttl),
            ..Default::default()
        };
        self.core.notifier.send(Template::ChangeEmail, new_email.as_str(), vars);
        self.core
            .audit
            .record(Some(user.id), Event::VerificationSent, Outcome::Success, Some("email_change"), client)
            .await;
        Ok(())
    }
}
