//! Sign-in with Google, GitHub and any OpenID Connect provider, and linking provider
//! accounts to users. The browser never talks to Gatehouse: the calling backend asks where to
//! send it (`start`) and hands back what the provider returned (`complete`).

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    audit::{Event, Outcome},
    cipher::SecretCipher,
    client::ClientInfo,
    core::Core,
    email::Email,
    error::{AuthFailure, Error, Violations},
    factors::{Challenge, Entry, Factors},
    limits::Limit,
    notify::{Template, Vars},
    session::{Authenticated, Session, Sessions},
    token::SessionToken,
    user::User,
};
use crate::{
    idp::{Identity, ProviderError, ProviderTokens, provider::Provider},
    storage::{AccountRow, AccountTokens, NewAccount, NewOAuthUser, NewUser, OAuthStateRow, StoreError, Unlinked},
};

/// Refresh an access token this long before it expires.
const REFRESH_MARGIN: TimeDelta = TimeDelta::seconds(60);
/// Longest code, state or redirect URI accepted (far above what providers issue).
const MAX_PARAM_CHARS: usize = 2048;

/// Rules for provider sign-in.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Link a provider identity to an existing user when both the provider and Gatehouse say
    /// the email is verified.
    pub link_by_verified_email: bool,
    /// How long a started flow may take.
    pub state_ttl: TimeDelta,
    /// Sign-in needs a verified address (the same rule as password sign-in).
    pub require_email_verification: bool,
}

/// A started flow: where to send the browser.
#[derive(Debug)]
pub struct Started {
    /// The provider's authorization URL, with state, PKCE challenge and nonce.
    pub authorization_url: String,
    /// The state the provider will send back (also inside the URL).
    pub state: String,
    /// When the flow stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// What CompleteOAuth's caller sent back from the provider.
#[derive(Debug, Default)]
pub struct CompleteInput {
    /// Provider name.
    pub provider: String,
    /// Authorization code.
    pub code: String,
    /// State.
    pub state: String,
    /// The redirect URI the flow was started with.
    pub redirect_uri: String,
}

/// A provider account linked to a user, as its owner sees it: the tokens stay inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAccount {
    /// Provider name.
    pub provider: String,
    /// The provider's id for the person.
    pub account_id: String,
    /// The email the provider reported.
    pub email: Option<String>,
    /// Whether the provider vouched for it.
    pub email_verified: bool,
    /// When it was linked.
    pub linked_at: DateTime<Utc>,
    /// Scopes granted.
    pub scopes: Vec<String>,
}

impl From<AccountRow> for LinkedAccount {
    fn from(a: AccountRow) -> Self {
        Self {
            provider: a.provider,
            account_id: a.provider_account_id,
            email: a.email,
            email_verified: a.email_verified,
            linked_at: a.created_at,
            scopes: a.scopes.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

/// A finished flow.
#[derive(Debug)]
pub struct Completed {
    /// The user signed in or linked to.
    pub user: User,
    /// The new session, or for a link flow the caller's own; none while a second factor is
    /// awaited.
    pub session: Option<Session>,
    /// The new session's token; none for a link flow, which keeps the caller's session.
    pub token: Option<SessionToken>,
    /// Set instead of a session when the user must also present a second factor.
    pub challenge: Option<Challenge>,
    /// Whether the user was created by this flow.
    pub is_new_user: bool,
}

/// A provider access token handed to a backend.
pub struct ProviderAccessToken {
    /// The token.
    pub access_token: SecretString,
    /// When it expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// Scopes granted.
    pub scopes: Vec<String>,
}

/// Provider sign-in, linking and provider tokens.
pub struct OAuth {
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    factors: Arc<Factors>,
    providers: Vec<Provider>,
    cipher: Arc<SecretCipher>,
    state_key: Hmac<Sha256>,
    config: OAuthConfig,
}

impl OAuth {
    /// Provider sign-in, creating sessions through `sessions`.
    pub fn new(
        core: Arc<Core>,
        sessions: Arc<Sessions>,
        factors: Arc<Factors>,
        providers: Vec<Provider>,
        cipher: Arc<SecretCipher>,
        server_secret: &[u8],
        config: OAuthConfig,
    ) -> anyhow::Result<Self> {
        // A key of its own, so a state hash is never comparable with a session token hash.
        let mut derive = Hmac::<Sha256>::new_from_slice(server_secret)?;
        derive.update(b"gatehouse oauth state v1");
        let state_key = Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes())?;
        Ok(Self { core, sessions, factors, providers, cipher, state_key, config })
    }

    /// Names of the configured providers.
    pub fn provider_names(&self) -> Vec<&str> {
        self.providers.iter().map(Provider::name).collect()
    }

    /// Starts a flow: creates and stores state, PKCE verifier and (OIDC) nonce, bound to the
    /// provider and redirect URI. With a `caller`, the flow links to that user. Each start
    /// stores a row, so starts are limited per client IP.
    #[tracing::instrument(skip_all, fields(provider = %provider))]
    pub async fn start(
        &self,
        provider: &str,
        redirect_uri: &str,
        caller: Option<&Authenticated>,
        client: &ClientInfo,
    ) -> Result<Started, Error> {
        let mut v = Violations::default();
        let found = v.check("provider", self.provider(provider));
        if let Some(p) = found
            && !p.allows_redirect(redirect_uri)
        {
            v.add("redirect_uri", "is not one of this provider's registered redirect URIs");
        }
        v.finish()?;
        let Some(provider) = found else {
            return Err(Error::Internal(anyhow::anyhow!("provider check lost")));
        };
        let ip = self.core.ip_key(client);
        self.core.limit(Limit::OAuthStartPerIp, &[&ip], caller.map(|c| c.user.id), client).await?;

        let state = random_token()?;
        let nonce = if provider.is_oidc() { Some(random_token()?) } else { None };
        let request = provider
            .authorization_request(&state, nonce.as_deref(), redirect_uri)
            .await
            .map_err(|e| provider_error(provider.name(), e))?;
        let state_hash = self.hash_state(&state);
        let now = self.core.now();
        let expires_at = now + self.config.state_ttl;
        let row = OAuthStateRow {
            pkce_verifier_enc: self
                .cipher
                .encrypt(request.pkce_verifier.expose_secret().as_bytes(), &verifier_aad(&state_hash))
                .map_err(Error::Internal)?,
            key_id: self.cipher.key_id().to_owned(),
            state_hash,
            provider: provider.name().to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            nonce_hash: nonce.as_ref().map(|n| Sha256::digest(n.as_bytes()).to_vec()),
            link_user_id: caller.map(|c| c.user.id),
            created_at: now,
            expires_at,
            used_at: None,
        };
        self.core.store.create_oauth_state(&row).await?;
        Ok(Started { authorization_url: request.url, state, expires_at })
    }

    /// Completes a flow: redeems the state once, exchanges the code with the PKCE verifier,
    /// learns who the person is, then signs them in, creates them, or links the account.
    #[tracing::instrument(skip_all, fields(provider = %input.provider))]
    pub async fn complete(
        &self,
        input: CompleteInput,
        caller: Option<&Authenticated>,
        client: ClientInfo,
    ) -> Result<Completed, Error> {
        let mut v = Violations::default();
        let provider = v.check("provider", self.provider(&input.provider));
        v.check("code", required(&input.code));
        v.check("state", required(&input.state));
        v.check("redirect_uri", required(&input.redirect_uri));
        v.finish()?;
        let Some(provider) = provider else {
            return Err(Error::Internal(anyhow::anyhow!("provider check lost")));
        };

        let now = self.core.now();
        let state_hash = self.hash_state(&input.state);
        // Redeemed before anything is checked, so a state is burnt even by a failed attempt.
        let state = self
            .core
            .store
            .consume_oauth_state(&state_hash, now)
            .await?
            .filter(|s| s.expires_at > now && s.provider == provider.name() && s.redirect_uri == input.redirect_uri)
            .ok_or_else(|| {
                tracing::info!("OAuth state unknown, used, expired or for another flow");
                Error::invalid(
                    "state",
                    "is unknown, expired, already used, or was issued for another provider or redirect URI",
                )
            })?;
        if let Some(link_user) = state.link_user_id
            && caller.is_none_or(|c| c.user.id != link_user)
        {
            // A link flow finishes only in the session of the user who started it.
            return Err(Error::Unauthenticated(AuthFailure::InvalidSession));
        }
        let verifier = self
            .cipher
            .decrypt_string(&state.key_id, &state.pkce_verifier_enc, &verifier_aad(&state_hash))
            .map_err(|e| Error::Internal(e.into()))?;

        let tokens = provider
            .exchange_code(&input.code, SecretString::from(verifier), &input.redirect_uri, now)
            .await
            .map_err(|e| provider_error(provider.name(), e))?;
        let identity = provider
            .identity(&tokens, state.nonce_hash.as_deref(), now)
            .await
            .map_err(|e| provider_error(provider.name(), e))?;

        match (state.link_user_id, caller) {
            (Some(_), Some(caller)) => self.link(provider.name(), &identity, &tokens, caller, &client).await,
            _ => self.sign_in(provider.name(), &identity, &tokens, client).await,
        }
    }

    /// The caller's linked accounts, oldest first.
    pub async fn list_accounts(&self, caller: &Authenticated) -> Result<Vec<LinkedAccount>, Error> {
        Ok(self.core.store.list_accounts(caller.user.id).await?.into_iter().map(Into::into).collect())
    }

    /// Unlinks one of the caller's accounts, unless it is their last way to sign in.
    #[tracing::instrument(skip_all, fields(provider = %provider))]
    pub async fn unlink(
        &self,
        caller: &Authenticated,
        provider: &str,
        account_id: &str,
        client: &ClientInfo,
    ) -> Result<(), Error> {
        let mut v = Violations::default();
        v.check("provider", required(provider));
        v.check("account_id", required(account_id));
        v.finish()?;
        match self.core.store.unlink_account(caller.user.id, provider, account_id, self.core.now()).await? {
            Unlinked::Removed => {
                self.sessions.user_changed(caller.user.id);
                self.audit(Event::OAuthUnlinked, Outcome::Success, caller.user.id, provider, client).await;
                Ok(())
            }
            Unlinked::NotFound => Err(Error::NotFound("linked account")),
            Unlinked::LastCredential => Err(Error::FailedPrecondition(
                "this is the only way to sign in to this account: set a password or link \
                 another provider first"
                    .into(),
            )),
        }
    }

    /// A valid provider access token for the caller, refreshed with the stored refresh token
    /// when it has expired. With several accounts at one provider, `account_id` picks one.
    #[tracing::instrument(skip_all, fields(provider = %provider))]
    pub async fn provider_access_token(
        &self,
        caller: &Authenticated,
        provider: &str,
        account_id: Option<&str>,
    ) -> Result<ProviderAccessToken, Error> {
        let p = self.provider(provider).map_err(|d| Error::invalid("provider", d))?;
        let accounts = self.core.store.list_accounts(caller.user.id).await?;
        let account = accounts
            .into_iter()
            .filter(|a| a.provider == provider)
            .filter(|a| account_id.is_none_or(|id| a.provider_account_id == id))
            .max_by_key(|a| a.updated_at)
            .ok_or(Error::NotFound("linked account"))?;
        let now = self.core.now();
        let aad = |what: &str| token_aad(account.id, what);
        let expired = account.access_token_expires_at.is_some_and(|at| at <= now + REFRESH_MARGIN);
        if !expired {
            let token = self
                .cipher
                .decrypt_string(&account.token_key_id, &account.access_token_enc, &aad("access"))
                .map_err(|e| Error::Internal(e.into()))?;
            return Ok(ProviderAccessToken {
                access_token: SecretString::from(token),
                expires_at: account.access_token_expires_at,
                scopes: split_scopes(&account.scopes),
            });
        }
        let Some(refresh_enc) = &account.refresh_token_enc else {
            return Err(Error::FailedPrecondition(format!(
                "the {provider} access token has expired and cannot be refreshed: sign in with \
                 {provider} again"
            )));
        };
        let refresh = self
            .cipher
            .decrypt_string(&account.token_key_id, refresh_enc, &aad("refresh"))
            .map_err(|e| Error::Internal(e.into()))?;
        let previous_id_token = match &account.id_token_enc {
            Some(enc) => Some(
                self.cipher
                    .decrypt_string(&account.token_key_id, enc, &aad("id"))
                    .map_err(|e| Error::Internal(e.into()))?,
            ),
            None => None,
        };
        let mut tokens = match p.refresh(SecretString::from(refresh), now).await {
            Ok(t) => t,
            Err(ProviderError::Rejected(code)) => {
                tracing::info!(%code, "provider refused the refresh token");
                return Err(Error::FailedPrecondition(format!(
                    "{provider} no longer accepts the stored refresh token: sign in with \
                     {provider} again"
                )));
            }
            Err(e) => return Err(provider_error(p.name(), e)),
        };
        if tokens.id_token.is_none() {
            tokens.id_token = previous_id_token.map(SecretString::from);
        }
        let sealed = self.seal(account.id, &tokens)?;
        self.core
            .store
            .update_account_tokens(account.id, account.email.as_deref(), account.email_verified, &sealed, now)
            .await?;
        tracing::info!(user_id = %caller.user.id, "provider access token refreshed");
        Ok(ProviderAccessToken {
            access_token: tokens.access_token,
            expires_at: tokens.expires_at,
            scopes: tokens.scopes,
        })
    }

    /// Deletes flows that expired; returns how many.
    pub async fn prune_expired_states(&self) -> Result<u64, Error> {
        Ok(self.core.store.delete_expired_oauth_states(self.core.now()).await?)
    }

    async fn sign_in(
        &self,
        provider: &str,
        identity: &Identity,
        tokens: &ProviderTokens,
        client: ClientInfo,
    ) -> Result<Completed, Error> {
        // Two concurrent first sign-ins of one person race to create them; the loser finds
        // the winner's account on its second pass.
        for attempt in 0..2 {
            match self.resolve(provider, identity, tokens, &client).await {
                Err(ResolveError::Raced) if attempt == 0 => continue,
                Err(ResolveError::Raced) => {
                    return Err(Error::Unavailable(anyhow::anyhow!("concurrent sign-ins kept conflicting")));
                }
                Err(ResolveError::Domain(e)) => return Err(e),
                Ok((user, is_new_user)) => {
                    // An operator disabled this user: no way in, by any method.
                    if self.core.store.admin_user(user.id).await?.is_some_and(|u| u.disabled_at.is_some()) {
                        let detail = format!("oauth:{provider}:disabled");
                        self.audit(Event::SignIn, Outcome::Denied, user.id, &detail, &client).await;
                        return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
                    }
                    if self.config.require_email_verification && !user.email_verified {
                        let detail = format!("oauth:{provider}:email_not_verified");
                        self.audit(Event::SignIn, Outcome::Denied, user.id, &detail, &client).await;
                        return Err(Error::email_not_verified());
                    }
                    return match self.factors.enter(user.id, "oauth", &client).await? {
                        Entry::Session(session, token) => {
                            let detail = format!("oauth:{provider}");
                            self.audit(Event::SignIn, Outcome::Success, user.id, &detail, &client).await;
                            Ok(Completed {
                                user,
                                session: Some(session),
                                token: Some(token),
                                challenge: None,
                                is_new_user,
                            })
                        }
                        Entry::SecondFactor(challenge) => {
                            Ok(Completed { user, session: None, token: None, challenge: Some(challenge), is_new_user })
                        }
                    };
                }
            }
        }
        Err(Error::Internal(anyhow::anyhow!("sign-in loop ended")))
    }

    /// Finds or creates the user for `identity`: a known account signs its user in; a
    /// verified email equal to a user's verified email links; otherwise a new user.
    async fn resolve(
        &self,
        provider: &str,
        identity: &Identity,
        tokens: &ProviderTokens,
        client: &ClientInfo,
    ) -> Result<(User, bool), ResolveError> {
        let now = self.core.now();
        let email = identity.email.as_deref().map(Email::parse).transpose();
        let email = match email {
            Ok(e) => e,
            Err(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "{provider} reported an email address Gatehouse cannot use"
                ))
                .into());
            }
        };

        if let Some(account) = self.core.store.find_account(provider, &identity.subject).await.map_err(Error::from)? {
            let sealed = self.seal(account.id, tokens)?;
            self.core
                .store
                .update_account_tokens(
                    account.id,
                    email.as_ref().map(Email::as_str),
                    identity.email_verified,
                    &sealed,
                    now,
                )
                .await
                .map_err(Error::from)?;
            let user = self
                .core
                .store
                .find_user(account.user_id)
                .await
                .map_err(Error::from)?
                .ok_or(Error::NotFound("user"))?;
            return Ok((user.into(), false));
        }

        let Some(email) = email else {
            return Err(Error::FailedPrecondition(format!(
                "{provider} did not share an email address; allow access to it and try again"
            ))
            .into());
        };
        if let Some(existing) = self.core.store.find_user_by_email(email.as_str()).await.map_err(Error::from)? {
            if !(identity.email_verified && existing.email_verified && self.config.link_by_verified_email) {
                tracing::info!(
                    provider_verified = identity.email_verified,
                    "provider email matches a user but cannot be linked"
                );
                let detail = format!("oauth:{provider}:email_not_verified");
                self.audit(Event::OAuthLinked, Outcome::Denied, existing.id, &detail, client).await;
                return Err(Error::FailedPrecondition(format!(
                    "an account with this email already exists and the {provider} email could \
                     not be matched to it as verified: sign in to that account and link \
                     {provider} from there"
                ))
                .into());
            }
            let account = self.new_account_opt(existing.id, provider, identity, Some(&email), true, tokens)?;
            match self.core.store.create_account(&account).await {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => return Err(ResolveError::Raced),
                Err(e) => return Err(Error::from(e).into()),
            }
            self.audit(Event::OAuthLinked, Outcome::Success, existing.id, provider, client).await;
            let existing = User::from(existing);
            self.tell_linked(&existing, provider);
            return Ok((existing, false));
        }
        // An address the provider has not verified could be anyone's: an account made from it
        // would later collide with (and could be merged into by) the real owner's.
        if !identity.email_verified {
            tracing::info!(provider, "provider email not verified: no account created");
            return Err(Error::FailedPrecondition(format!(
                "{provider} has not verified this email address: verify it with {provider}, or sign up with email and a password"
            ))
            .into());
        }

        let user_id = Uuid::now_v7();
        let name = identity
            .name
            .as_deref()
            .map(clean_name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| email.local_part().to_owned());
        let new_user = NewOAuthUser {
            user: NewUser { id: user_id, email: email.as_str().to_owned(), name, password_hash: None, now },
            email_verified: identity.email_verified,
            image: identity.picture.clone().filter(|p| p.len() <= MAX_PARAM_CHARS),
        };
        let account = self.new_account_opt(user_id, provider, identity, Some(&email), true, tokens)?;
        match self.core.store.create_user_with_account(&new_user, &account).await {
            Ok(user) => {
                tracing::info!(user_id = %user.id, "user created through a provider");
                self.audit(Event::OAuthLinked, Outcome::Success, user.id, provider, client).await;
                Ok((user.into(), true))
            }
            Err(StoreError::Conflict(_)) => Err(ResolveError::Raced),
            Err(e) => Err(Error::from(e).into()),
        }
    }

    async fn link(
        &self,
        provider: &str,
        identity: &Identity,
        tokens: &ProviderTokens,
        caller: &Authenticated,
        client: &ClientInfo,
    ) -> Result<Completed, Error> {
        let email = identity.email.as_deref().and_then(|e| Email::parse(e).ok());
        if let Some(existing) = self.core.store.find_account(provider, &identity.subject).await? {
            if existing.user_id != caller.user.id {
                return Err(Error::FailedPrecondition(format!(
                    "this {provider} account is already linked to another user"
                )));
            }
            let sealed = self.seal(existing.id, tokens)?;
            self.core
                .store
                .update_account_tokens(
                    existing.id,
                    email.as_ref().map(Email::as_str),
                    identity.email_verified,
                    &sealed,
                    self.core.now(),
                )
                .await?;
        } else {
            // Until the address is proven, whoever holds this session may not be its owner: a
            // link made now would outlive the owner's recovery of the account.
            if !caller.user.email_verified {
                return Err(Error::FailedPrecondition(format!(
                    "verify this account's email address before linking {provider}: follow the link sent to it, or ask for a new one"
                )));
            }
            let asserted = identity.email_verified && email.as_ref().is_some_and(|e| e.as_str() == caller.user.email);
            let proven = caller.user.email_verified || asserted;
            let account = self.new_account_opt(caller.user.id, provider, identity, email.as_ref(), proven, tokens)?;
            match self.core.store.create_account(&account).await {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => {
                    return Err(Error::FailedPrecondition(format!(
                        "this {provider} account is already linked to another user"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            self.audit(Event::OAuthLinked, Outcome::Success, caller.user.id, provider, client).await;
            self.tell_linked(&caller.user, provider);
        }
        Ok(Completed {
            user: caller.user.clone(),
            session: Some(caller.session.clone()),
            token: None,
            challenge: None,
            is_new_user: false,
        })
    }

    /// Tells the address's owner that a new sign-in method was added.
    fn tell_linked(&self, user: &User, provider: &str) {
        let vars = Vars { name: &user.name, email: &user.email, provider: Some(provider), ..Default::default() };
        self.core.notifier.send(Template::AccountLinked, &user.email, vars);
    }

    fn new_account_opt(
        &self,
        user_id: Uuid,
        provider: &str,
        identity: &Identity,
        email: Option<&Email>,
        proven: bool,
        tokens: &ProviderTokens,
    ) -> Result<NewAccount, Error> {
        let id = Uuid::new_v4();
        Ok(NewAccount {
            id,
            user_id,
            provider: provider.to_owned(),
            provider_account_id: identity.subject.clone(),
            email: email.map(|e| e.as_str().to_owned()),
            email_verified: identity.email_verified,
            proven,
            tokens: self.seal(id, tokens)?,
            now: self.core.now(),
        })
    }

    /// Encrypts the tokens of account `account_id`, each bound to its account and column.
    fn seal(&self, account_id: Uuid, tokens: &ProviderTokens) -> Result<AccountTokens, Error> {
        let seal = |what: &str, secret: &SecretString| {
            self.cipher
                .encrypt(secret.expose_secret().as_bytes(), &token_aad(account_id, what))
                .map_err(Error::Internal)
        };
        Ok(AccountTokens {
            access_token_enc: seal("access", &tokens.access_token)?,
            refresh_token_enc: tokens.refresh_token.as_ref().map(|t| seal("refresh", t)).transpose()?,
            id_token_enc: tokens.id_token.as_ref().map(|t| seal("id", t)).transpose()?,
            token_key_id: self.cipher.key_id().to_owned(),
            access_token_expires_at: tokens.expires_at,
            scopes: tokens.scopes.join(" "),
        })
    }

    fn provider(&self, name: &str) -> Result<&Provider, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("is required".into());
        }
        self.providers.iter().find(|p| p.name() == name).ok_or_else(|| "is not a configured provider".into())
    }

    /// Records a link, unlink or provider sign-in (provider named) in the audit log, with
    /// the end user's address and agent.
    async fn audit(&self, event: Event, outcome: Outcome, user_id: Uuid, detail: &str, client: &ClientInfo) {
        self.core.audit.record(Some(user_id), event, outcome, Some(detail), client).await;
    }

    fn hash_state(&self, state: &str) -> Vec<u8> {
        let mut mac = self.state_key.clone();
        mac.update(state.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Why resolving a sign-in failed.
enum ResolveError {
    /// A concurrent sign-in created the user or account first: look again.
    Raced,
    /// A final answer.
    Domain(Error),
}

impl From<Error> for ResolveError {
    fn from(e: Error) -> Self {
        Self::Domain(e)
    }
}

/// Maps a provider failure to the domain's answer; details go to the log only.
fn provider_error(provider: &str, e: ProviderError) -> Error {
    match e {
        ProviderError::Unavailable(source) => {
            tracing::warn!(provider, error = %source, "identity provider unavailable");
            Error::ProviderUnavailable
        }
        ProviderError::Rejected(code) => {
            tracing::info!(provider, %code, "identity provider rejected the authorization code");
            Error::Unauthenticated(AuthFailure::ProviderRejected)
        }
        ProviderError::InvalidIdToken(reason) => {
            tracing::warn!(provider, reason, "ID token rejected");
            Error::Unauthenticated(AuthFailure::InvalidIdToken)
        }
        ProviderError::Misconfigured(why) => Error::Internal(anyhow::anyhow!(
            "provider {provider} refused Gatehouse's client credentials ({why}): check its \
             client id and secret"
        )),
    }
}

/// 256 random bits, base64url: states and nonces.
fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn required(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("is required".into())
    } else if value.chars().count() > MAX_PARAM_CHARS {
        Err(format!("must be at most {MAX_PARAM_CHARS} characters"))
    } else {
        Ok(())
    }
}

fn verifier_aad(state_hash: &[u8]) -> Vec<u8> {
    [b"pkce-verifier:".as_slice(), state_hash].concat()
}

fn token_aad(account_id: Uuid, what: &str) -> Vec<u8> {
    format!("account:{account_id}:{what}").into_bytes()
}

fn split_scopes(scopes: &str) -> Vec<String> {
    scopes.split_whitespace().map(str::to_owned).collect()
}

/// A provider's display name, made safe for ours: no control characters, bounded.
fn clean_name(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_control()).take(super::auth::MAX_NAME_CHARS).collect::<String>().trim().to_owned()
}
