//! Second factors: authenticator apps (TOTP, RFC 6238), passkeys (WebAuthn, in
//! [`passkeys`]) and recovery codes; the sign-in step that asks for one; and the step-up rule
//! for sensitive changes. Sessions are still made only by [`Sessions`]: this module decides
//! with which assurance.

mod passkeys;

pub use passkeys::{PasskeyOptions, PasskeySignInStart};

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use totp_rs::{Algorithm, Builder, Totp};
use uuid::Uuid;

use super::{
    audit::{Event, Outcome},
    cipher::SecretCipher,
    client::ClientInfo,
    core::Core,
    error::{AuthFailure, Error},
    limits::Limit,
    lockout::Lockout,
    notify::{Template, Vars},
    session::{Assurance, Authenticated, EndReason, Ending, Session, Sessions},
    token::{CHALLENGE_PREFIX, SecretToken, SessionToken, TokenHasher},
    user::User,
};
use crate::{
    metrics::METRICS,
    storage::{ChallengeRow, FactorRow, NewRecoveryCode, StoreError},
};

/// How long a sign-in waits for its second factor.
pub const CHALLENGE_TTL: TimeDelta = TimeDelta::minutes(5);
/// How long a started enrollment waits for its first code.
pub const ENROLLMENT_TTL: TimeDelta = TimeDelta::minutes(10);
/// Wrong codes one challenge takes before it is spent (the account lockout applies too).
const MAX_CHALLENGE_FAILURES: i32 = 5;
/// Recovery codes per set.
pub const RECOVERY_CODES: usize = 10;
/// Longest factor name.
const MAX_FACTOR_NAME_CHARS: usize = 100;
/// RFC 4226 recommends at least 160 bits of shared secret.
const TOTP_SECRET_BYTES: usize = 20;
const TOTP_STEP_SECONDS: u64 = 30;
const KIND_TOTP: &str = "totp";

/// Second-factor settings.
#[derive(Debug, Clone)]
pub struct FactorConfig {
    /// The issuer authenticator apps show.
    pub issuer: String,
    /// Sensitive changes need a sign-in at most this old.
    pub step_up_max_age: TimeDelta,
    /// The step-up applies to password, deletion and email changes too.
    pub step_up_account_changes: bool,
    /// The account lockout that wrong codes count towards.
    pub lockout: Lockout,
    /// A passwordless sign-in needs a verified address, as a password sign-in does.
    pub require_email_verification: bool,
    /// WebAuthn relying-party id.
    pub rp_id: String,
    /// WebAuthn relying-party name.
    pub rp_name: String,
    /// Origins allowed to run passkey ceremonies.
    pub origins: Vec<url::Url>,
}

/// What a successful first factor leads to.
#[derive(Debug)]
pub enum Entry {
    /// The user has no second factor: a session.
    Session(Session, SessionToken),
    /// The user must present a second factor.
    SecondFactor(Challenge),
}

/// A sign-in waiting for its second factor.
#[derive(Debug)]
pub struct Challenge {
    /// Shown once, to pass to `CompleteSecondFactor`.
    pub token: SecretToken,
    /// `totp`, `passkey`, `recovery_code`.
    pub methods: Vec<&'static str>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
    /// With passkeys: the request options for them (JSON).
    pub passkey_options: Option<String>,
}

/// The second factor presented to complete a sign-in.
#[derive(Debug)]
pub enum SecondFactorProof {
    /// A code from the authenticator app.
    Totp(String),
    /// One of the recovery codes.
    RecoveryCode(String),
    /// A passkey's assertion (`AuthenticationResponseJSON`).
    Passkey(String),
}

/// An enrollment in progress: what the app needs. The secret is shown only here.
pub struct Enrollment {
    /// The pending factor's id.
    pub factor_id: Uuid,
    /// Base32 secret.
    pub secret: String,
    /// `otpauth://` URI.
    pub otpauth_uri: String,
    /// The URI as an SVG QR code.
    pub qr_code_svg: String,
    /// When the enrollment lapses.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment").field("factor_id", &self.factor_id).finish_non_exhaustive()
    }
}

/// A factor as its owner sees it.
#[derive(Debug, Clone)]
pub struct Factor {
    /// Id.
    pub id: Uuid,
    /// `totp` or `passkey`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// When it was activated.
    pub created_at: DateTime<Utc>,
    /// When it last completed a sign-in.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Passkey: may be synced.
    pub backup_eligible: bool,
    /// Passkey: is synced.
    pub backed_up: bool,
}

impl From<FactorRow> for Factor {
    fn from(r: FactorRow) -> Self {
        let (backup_eligible, backed_up) = r.passkey.as_deref().map(passkeys::backup_flags).unwrap_or_default();
        Factor {
            backup_eligible,
            backed_up,
            id: r.id,
            kind: r.kind,
            name: r.name,
            created_at: r.confirmed_at.unwrap_or(r.created_at),
            last_used_at: r.last_used_at,
        }
    }
}

/// A completed second-factor sign-in.
#[derive(Debug)]
pub struct Completed {
    /// The user.
    pub user: User,
    /// The new session (`aal` 2).
    pub session: Session,
    /// Its token.
    pub token: SessionToken,
}

/// Recovery codes in the clear, shown once.
pub struct RecoveryCodes(pub Vec<String>);

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes({} codes)", self.0.len())
    }
}

/// Second factors and the sign-in step that asks for them.
pub struct Factors {
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    cipher: Arc<SecretCipher>,
    /// The WebAuthn relying party.
    webauthn: webauthn_rs::Webauthn,
    /// Keyed hash of challenge tokens.
    challenges: TokenHasher,
    /// Keyed hash of recovery codes.
    codes: TokenHasher,
    config: FactorConfig,
}

impl Factors {
    /// Factors over their dependencies; the hashers are keyed from the server secret.
    pub fn new(
        core: Arc<Core>,
        sessions: Arc<Sessions>,
        cipher: Arc<SecretCipher>,
        server_secret: &[u8],
        config: FactorConfig,
    ) -> anyhow::Result<Self> {
        let key =
            |purpose: &str| TokenHasher::new(server_secret, purpose).map_err(|e| anyhow::anyhow!("factor key: {e}"));
        let webauthn = passkeys::relying_party(&config)?;
        Ok(Self {
            webauthn,
            challenges: key("second factor challenge")?,
            codes: key("recovery code")?,
            core,
            sessions,
            cipher,
            config,
        })
    }

    /// After a successful first factor (`pwd` or `oauth`): a session if the user has no second
    /// factor, otherwise a challenge for one. The caller has checked that the user may sign in.
    pub(crate) async fn enter(&self, user_id: Uuid, first: &'static str, client: &ClientInfo) -> Result<Entry, Error> {
        let active = self.core.store.active_factors(user_id).await?;
        self.enter_with(user_id, first, &active, client).await
    }

    /// [`Factors::enter`] with the user's active factors already read (the password sign-in
    /// reads them once, for the lockout too).
    pub(crate) async fn enter_with(
        &self,
        user_id: Uuid,
        first: &'static str,
        active: &[FactorRow],
        client: &ClientInfo,
    ) -> Result<Entry, Error> {
        if active.is_empty() {
            let (session, token) = self.sessions.create(user_id, client.clone(), &Assurance::single(first)).await?;
            return Ok(Entry::Session(session, token));
        }
        let mut methods = Vec::with_capacity(3);
        if active.iter().any(|f| f.kind == KIND_TOTP) {
            methods.push(KIND_TOTP);
        }
        let passkey = self.passkey_request(active)?;
        if passkey.is_some() {
            methods.push(passkeys::KIND_PASSKEY);
        }
        methods.push("recovery_code");
        let (passkey_options, passkey_state) = passkey.unzip();
        let token = SecretToken::generate_with(CHALLENGE_PREFIX)
            .map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG failed: {e}")))?;
        let now = self.core.now();
        let row = ChallengeRow {
            id: Uuid::now_v7(),
            user_id,
            first_factor: first.to_owned(),
            failures: 0,
            passkey_state,
            created_at: now,
            expires_at: now + CHALLENGE_TTL,
            used_at: None,
        };
        self.core.store.create_challenge(&row, &self.challenges.hash(&token)).await?;
        let reason = format!("challenge_issued:{first}");
        self.core.audit.record(Some(user_id), Event::SecondFactor, Outcome::Success, Some(&reason), client).await;
        Ok(Entry::SecondFactor(Challenge { token, methods, expires_at: row.expires_at, passkey_options }))
    }

    /// The user's active factors.
    pub(crate) async fn active(&self, user_id: Uuid) -> Result<Vec<FactorRow>, Error> {
        Ok(self.core.store.active_factors(user_id).await?)
    }

    /// Whether the user has an active second factor.
    pub(crate) async fn has_factor(&self, user_id: Uuid) -> Result<bool, Error> {
        Ok(!self.active(user_id).await?.is_empty())
    }

    /// Finishes a sign-in with its second factor. Every failure (unknown, used or expired
    /// challenge; wrong, replayed or locked-out code) is one answer. Wrong codes count towards
    /// the account's lockout and the sign-in rate limits, as wrong passwords do.
    #[tracing::instrument(skip_all)]
    pub async fn complete(
        &self,
        challenge_token: &str,
        proof: Option<SecondFactorProof>,
        client: ClientInfo,
    ) -> Result<Completed, Error> {
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidSecondFactor);
        let Some(proof) = proof else {
            return Err(Error::invalid("proof", "is required: set totp_code or recovery_code"));
        };
        let client = &client;
        let ip = self.core.ip_key(client);
        self.core.limit(Limit::SignInPerIp, &[&ip], None, client).await?;
        let Some(token) = SecretToken::parse_with(challenge_token.trim(), CHALLENGE_PREFIX) else {
            return Err(invalid());
        };
        let now = self.core.now();
        let Some(challenge) = self.core.store.find_challenge(&self.challenges.hash(&token), now).await? else {
            METRICS.sign_in_failed();
            return Err(invalid());
        };
        let user_id = challenge.user_id;
        let Some(admin_row) = self.core.store.admin_user(user_id).await? else {
            return Err(invalid());
        };
        let email = admin_row.user.email.clone();
        self.core.limit(Limit::SignInPerAccountIp, &[&email, &ip], Some(user_id), client).await?;
        self.core.limit(Limit::SignInPerEmail, &[&email], Some(user_id), client).await?;
        let fail = |outcome: Outcome, reason: &'static str| async move {
            METRICS.sign_in_failed();
            self.core.audit.record(Some(user_id), Event::SecondFactor, outcome, Some(reason), client).await;
            invalid()
        };
        // An operator disabled the user while the challenge waited: no way in, by any factor.
        if admin_row.disabled_at.is_some() {
            return Err(fail(Outcome::Denied, "disabled").await);
        }
        if challenge.failures >= MAX_CHALLENGE_FAILURES {
            return Err(fail(Outcome::Denied, "challenge_spent").await);
        }
        let seen = self.core.store.attempt_state(user_id).await?.ok_or_else(invalid)?;
        if !self.config.lockout.take_attempt(&self.core, user_id, seen, now).await? {
            return Err(fail(Outcome::Denied, "locked").await);
        }
        let method = match &proof {
            SecondFactorProof::Totp(code) => self.accept_totp(user_id, code, now).await?.then_some("otp"),
            SecondFactorProof::Passkey(json) => self.accept_passkey(&challenge, json, now).await?,
            SecondFactorProof::RecoveryCode(code) => match normalise_recovery_code(code) {
                Some(code) => {
                    let hash = self.codes.hash_text(&code);
                    self.core.store.use_recovery_code(user_id, &hash, now).await?.then_some("rec")
                }
                None => None,
            },
        };
        let Some(method) = method else {
            self.core.store.fail_challenge(challenge.id).await?;
            return Err(fail(Outcome::Failure, "wrong_code").await);
        };
        // Of two completions of one challenge (two valid codes), one signs in.
        if !self.core.store.consume_challenge(challenge.id, now).await? {
            return Err(fail(Outcome::Denied, "challenge_used").await);
        }
        self.core.store.clear_failed_sign_ins(user_id).await?;
        let assurance = Assurance::two(&challenge.first_factor, method);
        let (session, token) = self.sessions.create(user_id, client.clone(), &assurance).await?;
        let reason = format!("{}+{method}", challenge.first_factor);
        self.core.audit.record(Some(user_id), Event::SignIn, Outcome::Success, Some(&reason), client).await;
        let user = User::from(admin_row.user);
        if method == "rec" {
            // (A passkey's method is `hwk` or `swk`.)
            let left = self.core.store.count_recovery_codes(user_id).await?;
            let detail = format!("You have {left} unused recovery codes left.");
            let vars = Vars { name: &user.name, email: &user.email, detail: Some(&detail), ..Default::default() };
            self.core.notifier.send(Template::RecoveryCodeUsed, &user.email, vars);
        }
        Ok(Completed { user, session, token })
    }

    /// Accepts a TOTP code of one of the user's authenticators: within ±1 step of now, and
    /// only for a step later than the last one accepted (so a code works once, even when two
    /// requests race with it).
    async fn accept_totp(&self, user_id: Uuid, code: &str, now: DateTime<Utc>) -> Result<bool, Error> {
        let code = normalise_totp_code(code);
        if code.len() != 6 {
            return Ok(false);
        }
        for factor in self.core.store.active_factors(user_id).await? {
            if factor.kind != KIND_TOTP {
                continue;
            }
            let totp = self.totp_of(&factor, "")?;
            if let Some(step) = totp.check(&code, unix_seconds(now))
                && let Ok(step) = i64::try_from(step)
            {
                return Ok(self.core.store.accept_step(factor.id, step, now).await?);
            }
        }
        Ok(false)
    }

    /// The authenticator of a stored factor (its secret decrypted).
    fn totp_of(&self, factor: &FactorRow, account: &str) -> Result<Totp, Error> {
        let (Some(key_id), Some(secret_enc)) = (&factor.key_id, &factor.secret_enc) else {
            return Err(Error::Internal(anyhow::anyhow!("a TOTP factor has no secret")));
        };
        let secret = self.cipher.decrypt(key_id, secret_enc, &secret_aad(factor.id)).map_err(|_| {
            Error::Internal(anyhow::anyhow!("a TOTP secret does not decrypt (server secret rotated away?)"))
        })?;
        totp(secret, &self.config.issuer, account)
    }

    /// Refuses a sensitive change from a session that is too old, or that did not use the
    /// second factor the user has.
    pub(crate) fn require_step_up(&self, caller: &Authenticated, has_factor: bool) -> Result<(), Error> {
        let max_age = self.config.step_up_max_age;
        let max_age_seconds = max_age.num_seconds();
        if has_factor && caller.session.assurance.aal < 2 {
            return Err(Error::StepUpRequired {
                reason: "SECOND_FACTOR_REQUIRED",
                message: "this change needs a sign-in that used your second factor: sign in again with it and retry"
                    .into(),
                max_age_seconds,
            });
        }
        if self.core.now() - caller.session.created_at > max_age {
            return Err(Error::StepUpRequired {
                reason: "REAUTHENTICATION_REQUIRED",
                message: format!(
                    "this change needs a recent sign-in (within the last {} minutes): sign in again and retry",
                    max_age.num_minutes().max(1)
                ),
                max_age_seconds,
            });
        }
        Ok(())
    }

    /// The step-up for password, deletion and email changes, when configured.
    pub(crate) async fn require_step_up_for_account_change(&self, caller: &Authenticated) -> Result<(), Error> {
        if !self.config.step_up_account_changes {
            return Ok(());
        }
        let has_factor = self.has_factor(caller.user.id).await?;
        self.require_step_up(caller, has_factor)
    }

    /// Starts enrolling an authenticator app for the caller.
    #[tracing::instrument(skip_all)]
    pub async fn start_totp(&self, caller: &Authenticated, name: &str) -> Result<Enrollment, Error> {
        let name = parse_factor_name(name, "Authenticator app")?;
        self.require_step_up(caller, false)?;
        let user_id = caller.user.id;
        if self.core.store.active_factors(user_id).await?.iter().any(|f| f.kind == KIND_TOTP) {
            return Err(Error::AlreadyExists("an authenticator app for this account (remove it first)"));
        }
        let mut secret = vec![0u8; TOTP_SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG failed: {e}")))?;
        let id = Uuid::now_v7();
        let secret_enc = self.cipher.encrypt(&secret, &secret_aad(id)).map_err(Error::Internal)?;
        let totp = totp(secret, &self.config.issuer, &caller.user.email)?;
        let otpauth_uri = totp.to_url().map_err(|e| Error::Internal(anyhow::anyhow!("otpauth URI: {e}")))?;
        let qr_code_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
            .map_err(|e| Error::Internal(anyhow::anyhow!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        let now = self.core.now();
        let row = FactorRow {
            id,
            user_id,
            kind: KIND_TOTP.to_owned(),
            name,
            secret_enc: Some(secret_enc),
            key_id: Some(self.cipher.key_id().to_owned()),
            credential_id: None,
            passkey: None,
            created_at: now,
            confirmed_at: None,
            expires_at: Some(now + ENROLLMENT_TTL),
            last_used_step: None,
            last_used_at: None,
        };
        self.core.store.put_pending_factor(&row).await?;
        Ok(Enrollment {
            factor_id: id,
            secret: totp.secret().to_base32(),
            otpauth_uri,
            qr_code_svg,
            expires_at: now + ENROLLMENT_TTL,
        })
    }

    /// Activates the caller's pending authenticator with a code from it; returns the factor
    /// and a new set of recovery codes.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_totp(
        &self,
        caller: &Authenticated,
        code: &str,
        client: &ClientInfo,
    ) -> Result<(Factor, RecoveryCodes), Error> {
        self.require_step_up(caller, false)?;
        let user_id = caller.user.id;
        let now = self.core.now();
        let Some(pending) = self.core.store.pending_factor(user_id, KIND_TOTP, now).await? else {
            return Err(Error::FailedPrecondition(
                "no authenticator enrollment in progress (or it expired): call StartTotpEnrollment first".into(),
            ));
        };
        let code = normalise_totp_code(code);
        if code.len() != 6 {
            return Err(Error::invalid("code", "must be the 6 digits the authenticator app shows"));
        }
        let totp = self.totp_of(&pending, "")?;
        let Some(step) = totp.check(&code, unix_seconds(now)).and_then(|s| i64::try_from(s).ok()) else {
            return Err(Error::invalid("code", "is incorrect: check that the device's clock is right and retry"));
        };
        let (codes, rows) = self.new_recovery_codes()?;
        match self.core.store.confirm_factor(pending.id, step, &rows, now).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::FailedPrecondition("the enrollment was replaced or expired: start again".into()));
            }
            Err(StoreError::Conflict(_)) => {
                return Err(Error::AlreadyExists("an authenticator app for this account (remove it first)"));
            }
            Err(e) => return Err(e.into()),
        }
        self.core.audit.record(Some(user_id), Event::FactorAdded, Outcome::Success, Some(KIND_TOTP), client).await;
        let detail = format!("An authenticator app (\"{}\")", pending.name);
        let vars =
            Vars { name: &caller.user.name, email: &caller.user.email, detail: Some(&detail), ..Default::default() };
        self.core.notifier.send(Template::FactorAdded, &caller.user.email, vars);
        let mut factor = pending;
        factor.confirmed_at = Some(now);
        Ok((factor.into(), codes))
    }

    /// Replaces the caller's recovery codes.
    #[tracing::instrument(skip_all)]
    pub async fn regenerate_recovery_codes(
        &self,
        caller: &Authenticated,
        client: &ClientInfo,
    ) -> Result<RecoveryCodes, Error> {
        let user_id = caller.user.id;
        if !self.has_factor(user_id).await? {
            return Err(Error::FailedPrecondition(
                "recovery codes need an active second factor: enroll an authenticator app first".into(),
            ));
        }
        self.require_step_up(caller, true)?;
        let (codes, rows) = self.new_recovery_codes()?;
        self.core.store.replace_recovery_codes(user_id, &rows, self.core.now()).await?;
        self.core.audit.record(Some(user_id), Event::RecoveryCodesRegenerated, Outcome::Success, None, client).await;
        Ok(codes)
    }

    /// The caller's active factors and how many unused recovery codes they have.
    pub async fn list(&self, caller: &Authenticated) -> Result<(Vec<Factor>, i64), Error> {
        let factors = self.core.store.active_factors(caller.user.id).await?;
        let left = self.core.store.count_recovery_codes(caller.user.id).await?;
        Ok((factors.into_iter().map(Factor::from).collect(), left))
    }

    /// Removes one of the caller's factors.
    #[tracing::instrument(skip_all)]
    pub async fn remove(&self, caller: &Authenticated, factor_id: &str, client: &ClientInfo) -> Result<(), Error> {
        let Ok(id) = Uuid::parse_str(factor_id.trim()) else {
            return Err(Error::invalid("factor_id", "must be a UUID"));
        };
        let user_id = caller.user.id;
        let factors = self.core.store.active_factors(user_id).await?;
        let Some(factor) = factors.iter().find(|f| f.id == id) else {
            return Err(Error::NotFound("factor"));
        };
        self.require_step_up(caller, true)?;
        if !self.core.store.remove_factor(user_id, id).await? {
            return Err(Error::NotFound("factor"));
        }
        self.core.audit.record(Some(user_id), Event::FactorRemoved, Outcome::Success, Some(&factor.kind), client).await;
        let what = if factor.kind == KIND_TOTP { "authenticator app" } else { "passkey" };
        let detail = format!(
            "The {what} \"{}\" was removed from your account ({}). It can no longer be used to sign in.",
            factor.name, caller.user.email
        );
        let vars =
            Vars { name: &caller.user.name, email: &caller.user.email, detail: Some(&detail), ..Default::default() };
        self.core.notifier.send(Template::FactorRemoved, &caller.user.email, vars);
        Ok(())
    }

    /// An operator removes every second factor of a user (who lost them): their sessions end
    /// and they are told. Returns how many factors went.
    pub(crate) async fn reset(&self, user: &User, client: &ClientInfo, service: &str) -> Result<u64, Error> {
        let removed = self.core.store.reset_factors(user.id).await?;
        self.sessions.end(Ending::All { user_id: user.id }, EndReason::Admin).await?;
        let reason = format!("service:{service}");
        self.core.audit.record(Some(user.id), Event::FactorsReset, Outcome::Success, Some(&reason), client).await;
        if removed > 0 {
            let detail = format!(
                "An administrator removed the second factors and recovery codes of your account ({}) at your request. Sign in with your password and set up a new authenticator app.",
                user.email
            );
            let vars = Vars { name: &user.name, email: &user.email, detail: Some(&detail), ..Default::default() };
            self.core.notifier.send(Template::FactorRemoved, &user.email, vars);
        }
        Ok(removed)
    }

    /// Deletes lapsed challenges and enrollments; returns how many.
    pub async fn prune_expired(&self) -> Result<u64, Error> {
        Ok(self.core.store.delete_expired_challenges(self.core.now()).await?)
    }

    /// Ten new recovery codes and the rows that store their hashes.
    fn new_recovery_codes(&self) -> Result<(RecoveryCodes, Vec<NewRecoveryCode>), Error> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut rows = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let mut bytes = [0u8; 10];
            getrandom::fill(&mut bytes).map_err(|e| Error::Internal(anyhow::anyhow!("OS RNG failed: {e}")))?;
            // 10 characters of a 32-letter alphabet: 50 bits each.
            let text: String = bytes.iter().map(|b| char::from(RECOVERY_ALPHABET[usize::from(b % 32)])).collect();
            rows.push(NewRecoveryCode { id: Uuid::now_v7(), code_hash: self.codes.hash_text(&text) });
            codes.push(format!("{}-{}", &text[..5], &text[5..]));
        }
        Ok((RecoveryCodes(codes), rows))
    }
}

/// Lower-case letters and digits without 0, 1, l and o, which people misread.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A recovery code as typed, to the 10 characters that were hashed: case, spaces and dashes
/// do not matter. `None` if it cannot be one.
fn normalise_recovery_code(raw: &str) -> Option<String> {
    let code: String =
        raw.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    (code.len() == 10 && code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))).then_some(code)
}

/// A TOTP code as typed, without the spaces apps show in the middle.
fn normalise_totp_code(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_whitespace()).take(8).collect()
}

fn parse_factor_name(raw: &str, default: &str) -> Result<String, Error> {
    let name = raw.trim();
    if name.is_empty() {
        return Ok(default.to_owned());
    }
    if name.chars().count() > MAX_FACTOR_NAME_CHARS {
        return Err(Error::invalid("name", format!("must be at most {MAX_FACTOR_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Binds a ciphertext to its factor, so that a secret copied to another row does not decrypt.
fn secret_aad(factor_id: Uuid) -> Vec<u8> {
    let mut aad = b"gatehouse totp secret v1:".to_vec();
    aad.extend_from_slice(factor_id.as_bytes());
    aad
}

fn unix_seconds(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp()).unwrap_or(0)
}

/// RFC 6238 as authenticator apps expect it: SHA-1, 6 digits, 30-second steps, ±1 step.
fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> Result<Totp, Error> {
    let mut builder = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(TOTP_STEP_SECONDS)
        .with_secret(secret)
        .with_issuer(Some(issuer.to_owned()));
    if !account.is_empty() {
        builder = builder.with_account_name(account.replace(':', "_"));
    }
    builder.build().map_err(|e| Error::Internal(anyhow::anyhow!("TOTP parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_normalise_case_spaces_and_dashes() {
        assert_eq!(normalise_recovery_code(" ABCDE-fghij ").as_deref(), Some("abcdefghij"));
        assert_eq!(normalise_recovery_code("abcde fghij").as_deref(), Some("abcdefghij"));
        assert!(normalise_recovery_code("abcde-fghi").is_none(), "too short");
        assert!(normalise_recovery_code("abcde-fgh0j").is_none(), "0 is not in the alphabet");
    }

    #[test]
    fn totp_matches_the_rfc_6238_vector() {
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); 6 digits keep the tail.
        let t = totp(b"12345678901234567890".to_vec(), "Gatehouse", "a@example.com").unwrap();
        assert_eq!(t.generate(59).to_string(), "287082");
        assert_eq!(t.check("287082", 59 + 30), Some(1), "one step late is accepted");
        assert_eq!(t.check("287082", 59 + 60), None, "two steps late is not");
    }
}
