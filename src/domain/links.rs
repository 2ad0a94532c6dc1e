//! Single-use email links (verification, email change, password reset): 256 random bits,
//! stored only as keyed hashes, bound to one purpose, expiring, and superseded by the next link
//! of the same purpose. Sign-up sends the first verification link; `Recovery` the rest.

use std::sync::Arc;

use chrono::TimeDelta;
use uuid::Uuid;

use super::{
    audit::{Event, Outcome},
    client::ClientInfo,
    core::Core,
    error::Error,
    notify::{Template, Vars},
    token::{LINK_PREFIX, SecretToken, TokenHasher},
    user::User,
};
use crate::storage::NewVerificationToken;

/// Proves the address (a verification link).
pub(crate) const VERIFY_EMAIL: &str = "verify_email";
/// Moves the account to a new address.
pub(crate) const CHANGE_EMAIL: &str = "change_email";
/// Sets a new password.
pub(crate) const RESET_PASSWORD: &str = "reset_password";

/// How long links live.
#[derive(Debug, Clone, Copy)]
pub struct LinkLifetimes {
    /// Verification and email-change links.
    pub verification: TimeDelta,
    /// Password-reset links.
    pub reset: TimeDelta,
}

/// Makes, stores and mails links.
pub struct Links {
    core: Arc<Core>,
    tokens: TokenHasher,
    lifetimes: LinkLifetimes,
}

impl Links {
    /// Links hashed with `tokens`.
    pub fn new(core: Arc<Core>, tokens: TokenHasher, lifetimes: LinkLifetimes) -> Self {
        Self { core, tokens, lifetimes }
    }

    /// How long links live.
    pub(crate) fn lifetimes(&self) -> LinkLifetimes {
        self.lifetimes
    }

    /// The stored form of a presented link token.
    pub(crate) fn hash(&self, token: &SecretToken) -> Vec<u8> {
        self.tokens.hash(token)
    }

    /// A presented link token, if it has the link shape.
    pub(crate) fn parse(raw: &str) -> Option<SecretToken> {
        SecretToken::parse_with(raw.trim(), LINK_PREFIX)
    }

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
        let now = self.core.now();
        let row = NewVerificationToken {
            id: Uuid::new_v4(),
            user_id,
            purpose,
            token_hash: self.tokens.hash(&token),
            new_email,
            now,
            expires_at: now + ttl,
        };
        Ok((row, token))
    }

    /// Issues a link token for `purpose`, superseding the user's earlier ones.
    pub(crate) async fn issue(
        &self,
        user_id: Uuid,
        purpose: &'static str,
        ttl: TimeDelta,
        new_email: Option<String>,
    ) -> Result<SecretToken, Error> {
        let (row, token) = self.new_link(user_id, purpose, ttl, new_email)?;
        self.core.store.issue_token(&row).await?;
        Ok(token)
    }

    /// A verification link for a user being signed up, stored with the user (see
    /// [`Links::mail_verification`] for after the commit).
    pub(crate) fn new_verification_link(&self, user_id: Uuid) -> Result<(NewVerificationToken, SecretToken), Error> {
        self.new_link(user_id, VERIFY_EMAIL, self.lifetimes.verification, None)
    }

    /// Emails `user` a new verification link (on request).
    pub(crate) async fn send_verification(&self, user: &User, client: &ClientInfo) -> Result<(), Error> {
        let token = self.issue(user.id, VERIFY_EMAIL, self.lifetimes.verification, None).await?;
        self.mail_verification(user, &token, client).await;
        Ok(())
    }

    /// Mails a stored verification link to `user`: only ever after the token was committed, so
    /// no mail leaves for a change the database refused.
    pub(crate) async fn mail_verification(&self, user: &User, token: &SecretToken, client: &ClientInfo) {
        let ttl = self.lifetimes.verification;
        let vars = Vars {
            name: &user.name,
            email: &user.email,
            token: Some(token.as_str()),
            expires_in: Some(ttl),
            ..Default::default()
        };
        self.core.notifier.send(Template::VerifyEmail, &user.email, vars);
        self.core.audit.record(Some(user.id), Event::VerificationSent, Outcome::Success, None, client).await;
    }

    /// Deletes expired and used link tokens.
    pub async fn prune_stale(&self) -> Result<u64, Error> {
        Ok(self.core.store.delete_stale_tokens(self.core.now() - TimeDelta::days(1)).await?)
    }
}
