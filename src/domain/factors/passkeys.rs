//! Passkeys (WebAuthn Level 3) through webauthn-rs: registration as a factor, the passwordless
//! sign-in with discoverable credentials, and the assertion that answers a second-factor
//! challenge. webauthn-rs checks the challenge, origin, RP id hash, user verification,
//! signature and counter; this module keeps the ceremony states between the two calls (single
//! use, 5 minutes) and the credentials (compare-and-swap on their counter).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;
use webauthn_rs::{
    Webauthn, WebauthnBuilder,
    prelude::{
        AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
        PublicKeyCredential, RegisterPublicKeyCredential,
    },
};

use super::{Completed, Factor, FactorConfig, Factors, RecoveryCodes, parse_factor_name};
use crate::{
    domain::{
        audit::{Event, Outcome},
        client::ClientInfo,
        error::{AuthFailure, Error},
        limits::Limit,
        notify::{Template, Vars},
        session::{Assurance, Authenticated},
        user::User,
    },
    metrics::METRICS,
    storage::{CeremonyRow, ChallengeRow, FactorRow, StoreError},
};

/// The kind of a passkey factor.
pub(super) const KIND_PASSKEY: &str = "passkey";
/// How long a ceremony waits for the browser.
const CEREMONY_TTL: TimeDelta = TimeDelta::minutes(5);

/// Options for `navigator.credentials.create` or `.get`, as WebAuthn's JSON.
#[derive(Debug)]
pub struct PasskeyOptions {
    /// `PublicKeyCredentialCreationOptionsJSON`.
    pub options_json: String,
    /// When the ceremony lapses.
    pub expires_at: DateTime<Utc>,
}

/// A passwordless sign-in ceremony, started.
#[derive(Debug)]
pub struct PasskeySignInStart {
    /// `PublicKeyCredentialRequestOptionsJSON`.
    pub options_json: String,
    /// The ceremony's id.
    pub challenge_id: Uuid,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
}

/// The relying party of `config`: its id, name and allowed origins.
pub(super) fn relying_party(config: &FactorConfig) -> anyhow::Result<Webauthn> {
    let Some((first, others)) = config.origins.split_first() else {
        anyhow::bail!("GATEHOUSE_WEBAUTHN_ORIGINS needs at least one origin");
    };
    let mut builder = WebauthnBuilder::new(&config.rp_id, first)
        .map_err(|e| anyhow::anyhow!("WebAuthn RP id {:?} with origin {first}: {e}", config.rp_id))?
        .rp_name(&config.rp_name)
        .timeout(Duration::from_secs(300));
    for origin in others {
        if !origin.host_str().is_some_and(|host| host == config.rp_id || host.ends_with(&format!(".{}", config.rp_id)))
        {
            anyhow::bail!("GATEHOUSE_WEBAUTHN_ORIGINS: {origin} is not on the RP id {:?} or a subdomain", config.rp_id);
        }
        builder = builder.append_allowed_origin(origin);
    }
    builder.build().map_err(|e| anyhow::anyhow!("WebAuthn relying party: {e}"))
}

/// A stored passkey's backup flags: (eligible, backed up).
pub(super) fn backup_flags(json: &str) -> (bool, bool) {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let flag = |name: &str| value["cred"][name].as_bool().unwrap_or(false);
    (flag("backup_eligible"), flag("backup_state"))
}

/// RFC 8176: a passkey that may be synced is a software key, one that may not a hardware key.
fn method_of(result: &AuthenticationResult) -> &'static str {
    if result.backup_eligible() { "swk" } else { "hwk" }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Internal(anyhow::anyhow!("WebAuthn JSON: {e}")))
}

fn from_stored<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| Error::Internal(anyhow::anyhow!("stored WebAuthn state: {e}")))
}

impl Factors {
    /// Request options and their state for the user's passkeys, if they have any.
    pub(super) fn passkey_request(&self, active: &[FactorRow]) -> Result<Option<(String, String)>, Error> {
        let keys: Vec<Passkey> = active
            .iter()
            .filter(|f| f.kind == KIND_PASSKEY)
            .filter_map(|f| f.passkey.as_deref())
            .map(from_stored)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(None);
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&keys)
            .map_err(|e| Error::Internal(anyhow::anyhow!("WebAuthn challenge: {e}")))?;
        Ok(Some((to_json(&options.public_key)?, to_json(&state)?)))
    }

    /// Checks a passkey assertion against a second-factor challenge; the method (`hwk` or
    /// `swk`) if it verifies for one of the challenge's user's passkeys.
    pub(super) async fn accept_passkey(
        &self,
        challenge: &ChallengeRow,
        json: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<&'static str>, Error> {
        let Some(state) = &challenge.passkey_state else { return Ok(None) };
        let state: PasskeyAuthentication = from_stored(state)?;
        let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(json) else { return Ok(None) };
        let result = match self.webauthn.finish_passkey_authentication(&credential, &state) {
            Ok(result) => result,
            Err(error) => {
                tracing::debug!(%error, "a passkey assertion did not verify");
                return Ok(None);
            }
        };
        let Some(factor) = self
            .core
            .store
            .find_passkey(AsRef::<[u8]>::as_ref(result.cred_id()))
            .await?
            .filter(|f| f.user_id == challenge.user_id)
        else {
            return Ok(None);
        };
        Ok(self.record_passkey_use(&factor, &result, now).await?.then(|| method_of(&result)))
    }

    /// Stores a passkey's new counter and backup state; false if another use got there first
    /// (its counter is spent: the caller refuses).
    async fn record_passkey_use(
        &self,
        factor: &FactorRow,
        result: &AuthenticationResult,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(stored) = factor.passkey.as_deref() else { return Ok(false) };
        let mut passkey: Passkey = from_stored(stored)?;
        passkey.update_credential(result);
        let updated = to_json(&passkey)?;
        Ok(self.core.store.use_passkey(factor.id, stored, &updated, now).await?)
    }

    /// Starts registering a passkey for the caller: discoverable, user verification required,
    /// excluding the caller's existing passkeys.
    #[tracing::instrument(skip_all)]
    pub async fn start_passkey_registration(
        &self,
        caller: &Authenticated,
        name: &str,
    ) -> Result<PasskeyOptions, Error> {
        let name = parse_factor_name(name, "Passkey")?;
        let active = self.core.store.active_factors(caller.user.id).await?;
        self.require_step_up(caller, !active.is_empty())?;
        let exclude: Vec<_> = active
            .iter()
            .filter_map(|f| f.passkey.as_deref())
            .map(from_stored::<Passkey>)
            .map(|p| p.map(|p| p.cred_id().clone()))
            .collect::<Result<_, _>>()?;
        let (mut options, state) = self
            .webauthn
            .start_passkey_registration(caller.user.id, &caller.user.email, &caller.user.name, Some(exclude))
            .map_err(|e| Error::Internal(anyhow::anyhow!("WebAuthn registration: {e}")))?;
        // Discoverable, so that the passkey also signs in without a password.
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = true;
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
        }
        let now = self.core.now();
        let ceremony = CeremonyRow {
            id: Uuid::new_v4(),
            user_id: Some(caller.user.id),
            kind: "register".into(),
            state: to_json(&state)?,
            name: Some(name),
            created_at: now,
            expires_at: now + CEREMONY_TTL,
            used_at: None,
        };
        self.core.store.create_ceremony(&ceremony).await?;
        Ok(PasskeyOptions { options_json: to_json(&options.public_key)?, expires_at: ceremony.expires_at })
    }

    /// Finishes the caller's passkey registration; with the user's first second factor, also
    /// their recovery codes.
    #[tracing::instrument(skip_all)]
    pub async fn finish_passkey_registration(
        &self,
        caller: &Authenticated,
        credential_json: &str,
        client: &ClientInfo,
    ) -> Result<(Factor, Option<RecoveryCodes>), Error> {
        let user_id = caller.user.id;
        let active = self.core.store.active_factors(user_id).await?;
        self.require_step_up(caller, !active.is_empty())?;
        let credential: RegisterPublicKeyCredential = serde_json::from_str(credential_json).map_err(|_| {
            Error::invalid("credential_json", "is not a WebAuthn registration response (RegistrationResponseJSON)")
        })?;
        let now = self.core.now();
        let Some(ceremony) = self.core.store.take_registration(user_id, now).await? else {
            return Err(Error::FailedPrecondition(
                "no passkey registration in progress (or it expired): call StartPasskeyRegistration first".into(),
            ));
        };
        let state: PasskeyRegistration = from_stored(&ceremony.state)?;
        let passkey = self.webauthn.finish_passkey_registration(&credential, &state).map_err(|error| {
            tracing::debug!(%error, "a passkey registration did not verify");
            Error::invalid(
                "credential_json",
                "did not verify: it must answer this registration's challenge, from an allowed origin, for this \
                 relying party, with user verification; start the registration again",
            )
        })?;
        let (codes, rows) = if active.is_empty() {
            let (codes, rows) = self.new_recovery_codes()?;
            (Some(codes), rows)
        } else {
            (None, Vec::new())
        };
        let row = FactorRow {
            id: Uuid::now_v7(),
            user_id,
            kind: KIND_PASSKEY.into(),
            name: ceremony.name.unwrap_or_else(|| "Passkey".into()),
            secret_enc: None,
            key_id: None,
            credential_id: Some(AsRef::<[u8]>::as_ref(passkey.cred_id()).to_vec()),
            passkey: Some(to_json(&passkey)?),
            created_at: now,
            confirmed_at: Some(now),
            expires_at: None,
            last_used_step: None,
            last_used_at: None,
        };
        match self.core.store.add_passkey(&row, &rows).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(Error::AlreadyExists("this passkey")),
            Err(e) => return Err(e.into()),
        }
        self.core.audit.record(Some(user_id), Event::FactorAdded, Outcome::Success, Some(KIND_PASSKEY), client).await;
        let detail = format!("A passkey (\"{}\")", row.name);
        let vars =
            Vars { name: &caller.user.name, email: &caller.user.email, detail: Some(&detail), ..Default::default() };
        self.core.notifier.send(Template::FactorAdded, &caller.user.email, vars);
        Ok((row.into(), codes))
    }

    /// Starts a passwordless sign-in: any discoverable passkey of this relying party.
    #[tracing::instrument(skip_all)]
    pub async fn start_passkey_sign_in(&self, client: &ClientInfo) -> Result<PasskeySignInStart, Error> {
        self.core.limit(Limit::SignInPerIp, &[&self.core.ip_key(client)], None, client).await?;
        let (options, state): (_, DiscoverableAuthentication) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| Error::Internal(anyhow::anyhow!("WebAuthn challenge: {e}")))?;
        let now = self.core.now();
        let ceremony = CeremonyRow {
            id: Uuid::new_v4(),
            user_id: None,
            kind: "sign_in".into(),
            state: to_json(&state)?,
            name: None,
            created_at: now,
            expires_at: now + CEREMONY_TTL,
            used_at: None,
        };
        self.core.store.create_ceremony(&ceremony).await?;
        Ok(PasskeySignInStart {
            options_json: to_json(&options.public_key)?,
            challenge_id: ceremony.id,
            expires_at: ceremony.expires_at,
        })
    }

    /// Finishes a passwordless sign-in. Every failure after the ceremony is found is one
    /// answer; the ceremony is spent either way.
    #[tracing::instrument(skip_all)]
    pub async fn finish_passkey_sign_in(
        &self,
        challenge_id: &str,
        credential_json: &str,
        client: ClientInfo,
    ) -> Result<Completed, Error> {
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidPasskey);
        let client = &client;
        self.core.limit(Limit::SignInPerIp, &[&self.core.ip_key(client)], None, client).await?;
        let Ok(id) = Uuid::parse_str(challenge_id.trim()) else {
            return Err(Error::invalid("challenge_id", "must be the UUID StartPasskeySignIn returned"));
        };
        let credential: PublicKeyCredential = serde_json::from_str(credential_json).map_err(|_| {
            Error::invalid("credential_json", "is not a WebAuthn authentication response (AuthenticationResponseJSON)")
        })?;
        let now = self.core.now();
        let Some(ceremony) = self.core.store.take_sign_in_ceremony(id, now).await? else {
            METRICS.sign_in_failed();
            return Err(invalid());
        };
        let Ok((user_id, credential_id)) = self.webauthn.identify_discoverable_authentication(&credential) else {
            METRICS.sign_in_failed();
            return Err(invalid());
        };
        let Some(factor) = self.core.store.find_passkey(credential_id).await?.filter(|f| f.user_id == user_id) else {
            METRICS.sign_in_failed();
            return Err(invalid());
        };
        let fail = |outcome: Outcome, reason: &'static str| async move {
            METRICS.sign_in_failed();
            self.core.audit.record(Some(user_id), Event::SignIn, outcome, Some(reason), client).await;
            invalid()
        };
        let Some(account) = self.core.store.admin_user(user_id).await? else { return Err(invalid()) };
        if account.disabled_at.is_some() {
            return Err(fail(Outcome::Denied, "passkey:disabled").await);
        }
        let state: DiscoverableAuthentication = from_stored(&ceremony.state)?;
        let passkey: Passkey = from_stored(factor.passkey.as_deref().unwrap_or_default())?;
        let result = match self.webauthn.finish_discoverable_authentication_v2(&credential, state, &passkey) {
            Ok(result) => result,
            Err(error) => {
                // A counter that went backwards (a cloned authenticator) ends here too.
                tracing::info!(user_id = %user_id, %error, "a passkey sign-in did not verify");
                return Err(fail(Outcome::Failure, "passkey_rejected").await);
            }
        };
        if !self.record_passkey_use(&factor, &result, now).await? {
            return Err(fail(Outcome::Denied, "passkey_raced").await);
        }
        if self.config.require_email_verification && !account.user.email_verified {
            self.core
                .audit
                .record(Some(user_id), Event::SignIn, Outcome::Denied, Some("email_not_verified"), client)
                .await;
            return Err(Error::email_not_verified());
        }
        self.core.store.clear_failed_sign_ins(user_id).await?;
        let assurance = Assurance::passkey(method_of(&result));
        let (session, token) = self.sessions.create(user_id, client.clone(), &assurance).await?;
        self.core.audit.record(Some(user_id), Event::SignIn, Outcome::Success, Some("passkey"), client).await;
        Ok(Completed { user: User::from(account.user), session, token })
    }
}
