//! Rows shared by both backends: the same columns, decoded from native types on each.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user as stored, without credentials.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserRow {
    /// Primary key.
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Picture URL.
    pub image: Option<String>,
    /// Whether the email is proven.
    pub email_verified: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A user with their password hash, for sign-in.
#[derive(sqlx::FromRow)]
pub struct CredentialRow {
    /// The user.
    #[sqlx(flatten)]
    pub user: UserRow,
    /// Argon2id PHC string, if the user has a password.
    pub password_hash: Option<String>,
    /// Consecutive failed sign-ins.
    pub failed_sign_ins: i32,
    /// Sign-in refused until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// Set while an operator has disabled the user.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A user's consecutive password attempts and lock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptState {
    /// Consecutive password attempts not followed by a success.
    pub failed_sign_ins: i32,
    /// Password attempts refused until then.
    pub locked_until: Option<DateTime<Utc>>,
}

/// What a password reset by link removed.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Sessions ended.
    pub sessions_ended: u64,
    /// Providers whose links were made before the owner proved the mailbox, now removed.
    pub removed_providers: Vec<String>,
}

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Primary key (UUIDv7: index-friendly).
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: Option<String>,
    /// Creation time.
    pub now: DateTime<Utc>,
}

/// What a sign-up stores with its user, in the user's transaction: a refused sign-up then
/// leaves nothing behind, and no mail goes out for it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SignUpRows<'a> {
    /// The learner profile, when one was given.
    pub profile: Option<&'a ProfileRow>,
    /// The email verification token the welcome mail carries.
    pub verification: Option<&'a NewVerificationToken>,
    /// The first session, unless sign-in must wait for verification.
    pub session: Option<&'a NewSession>,
    /// The consent the profile was given with.
    pub consent: Option<&'a ConsentRow>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SessionRow {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Absolute expiry.
    pub expires_at: DateTime<Utc>,
    /// Last use, as recorded (at most once per refresh interval).
    pub last_active_at: DateTime<Utc>,
    /// End user's IP at sign-in.
    pub ip_address: Option<String>,
    /// End user's agent at sign-in.
    pub user_agent: Option<String>,
    /// Authenticator assurance level of the sign-in: 1 or 2.
    pub aal: i32,
    /// Authentication methods of the sign-in (RFC 8176 values), space-separated.
    pub amr: String,
}

/// A session to insert.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// HMAC of the token.
    pub token_hash: Vec<u8>,
    /// Creation time.
    pub now: DateTime<Utc>,
    /// Absolute expiry.
    pub expires_at: DateTime<Utc>,
    /// End user's IP.
    pub ip_address: Option<String>,
    /// End user's agent.
    pub user_agent: Option<String>,
    /// Authenticator assurance level of the sign-in: 1 or 2.
    pub aal: i32,
    /// Authentication methods of the sign-in, space-separated.
    pub amr: String,
}

/// A session joined with its user, read in one query by `find_session`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionUserRow {
    /// The session.
    #[sqlx(flatten)]
    pub session: SessionRow,
    /// Its user (columns prefixed `u_`).
    #[sqlx(rename = "u_email")]
    pub email: String,
    /// User's name.
    #[sqlx(rename = "u_name")]
    pub name: String,
    /// User's picture.
    #[sqlx(rename = "u_image")]
    pub image: Option<String>,
    /// User's verification state.
    #[sqlx(rename = "u_email_verified")]
    pub email_verified: bool,
    /// User's creation time.
    #[sqlx(rename = "u_created_at")]
    pub user_created_at: DateTime<Utc>,
    /// User's last change.
    #[sqlx(rename = "u_updated_at")]
    pub user_updated_at: DateTime<Utc>,
}

impl SessionUserRow {
    /// Splits the joined row.
    pub fn into_parts(self) -> (SessionRow, UserRow) {
        let user = UserRow {
            id: self.session.user_id,
            email: self.email,
            name: self.name,
            image: self.image,
            email_verified: self.email_verified,
            created_at: self.user_created_at,
            updated_at: self.user_updated_at,
        };
        (self.session, user)
    }
}

/// A learner profile as stored. Enums are their lower-case names; lists are JSON arrays.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ProfileRow {
    /// Owner and primary key.
    pub user_id: Uuid,
    /// `beginner` | `intermediate` | `advanced`.
    pub programming_level: Option<String>,
    /// JSON array of strings.
    pub programming_languages: String,
    /// `none` | `basic` | `intermediate` | `advanced`.
    pub ai_knowledge_level: Option<String>,
    /// `none` | `basic` | `robotics` | `embedded_systems`.
    pub hardware_experience: Option<String>,
    /// `theory` | `code_first` | `visual` | `mixed`.
    pub learning_style: Option<String>,
    /// Free text.
    pub software_background: String,
    /// Free text.
    pub hardware_background: String,
    /// Free text.
    pub role: String,
    /// JSON array of strings.
    pub interests: String,
    /// Onboarding finished.
    pub onboarding_completed: bool,
    /// Consent to store background fields.
    pub consent_given: bool,
    /// When consent last changed.
    pub consent_updated_at: Option<DateTime<Utc>>,
    /// The consent policy version of the latest grant (`None` without consent).
    pub consent_policy_version: Option<String>,
    /// Optimistic-concurrency version.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A single-use email token to store.
#[derive(Debug, Clone)]
pub struct NewVerificationToken {
    /// Primary key.
    pub id: Uuid,
    /// The user it acts for.
    pub user_id: Uuid,
    /// `verify_email`, `change_email` or `reset_password`.
    pub purpose: &'static str,
    /// HMAC of the token.
    pub token_hash: Vec<u8>,
    /// The address a `change_email` token switches to.
    pub new_email: Option<String>,
    /// Creation time.
    pub now: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// What redeeming a token yields.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RedeemedToken {
    /// The user it acts for.
    pub user_id: Uuid,
    /// Its purpose.
    pub purpose: String,
    /// The address a `change_email` token switches to.
    pub new_email: Option<String>,
}

/// A security event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditRow {
    /// Primary key (UUIDv7, so ids sort by time).
    pub id: Uuid,
    /// The user concerned, when known.
    pub user_id: Option<Uuid>,
    /// What happened.
    pub event: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Internal detail, never shown to users.
    pub reason: Option<String>,
    /// End user's IP.
    pub ip_address: Option<String>,
    /// End user's agent.
    pub user_agent: Option<String>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// A user's identity at a provider, with its tokens still encrypted.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AccountRow {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Configured provider name.
    pub provider: String,
    /// The provider's stable id for the person.
    pub provider_account_id: String,
    /// Email the provider last reported.
    pub email: Option<String>,
    /// Whether the provider said that email is verified.
    pub email_verified: bool,
    /// AEAD ciphertext of the access token.
    pub access_token_enc: Vec<u8>,
    /// AEAD ciphertext of the refresh token.
    pub refresh_token_enc: Option<Vec<u8>>,
    /// AEAD ciphertext of the ID token.
    pub id_token_enc: Option<Vec<u8>>,
    /// Key the ciphertexts were made with.
    pub token_key_id: String,
    /// When the access token stops working, if the provider said.
    pub access_token_expires_at: Option<DateTime<Utc>>,
    /// Space-separated granted scopes.
    pub scopes: String,
    /// When the account was linked.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Encrypted provider tokens, written together so that they always share one key id.
#[derive(Debug, Clone)]
pub struct AccountTokens {
    /// AEAD ciphertext of the access token.
    pub access_token_enc: Vec<u8>,
    /// AEAD ciphertext of the refresh token.
    pub refresh_token_enc: Option<Vec<u8>>,
    /// AEAD ciphertext of the ID token.
    pub id_token_enc: Option<Vec<u8>>,
    /// Key the ciphertexts were made with.
    pub token_key_id: String,
    /// When the access token stops working.
    pub access_token_expires_at: Option<DateTime<Utc>>,
    /// Space-separated granted scopes.
    pub scopes: String,
}

/// An account to link.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Primary key (chosen first: it is the AEAD associated data of the tokens).
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Configured provider name.
    pub provider: String,
    /// The provider's stable id for the person.
    pub provider_account_id: String,
    /// Email the provider reported.
    pub email: Option<String>,
    /// Whether the provider said it is verified.
    pub email_verified: bool,
    /// Whether whoever linked had proved control of the user's address: the provider asserted
    /// that verified address, or the user's address was verified when linking. Links that had
    /// not are removed when the owner proves the mailbox.
    pub proven: bool,
    /// Encrypted tokens.
    pub tokens: AccountTokens,
    /// Creation time.
    pub now: DateTime<Utc>,
}

/// A user created by a provider sign-in.
#[derive(Debug, Clone)]
pub struct NewOAuthUser {
    /// The user (no password).
    pub user: NewUser,
    /// Whether the provider vouched for the email.
    pub email_verified: bool,
    /// Picture URL from the provider.
    pub image: Option<String>,
}

/// An authorization-code flow in progress.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OAuthStateRow {
    /// HMAC of the state.
    pub state_hash: Vec<u8>,
    /// Provider the flow was started for.
    pub provider: String,
    /// Redirect URI the flow was started with.
    pub redirect_uri: String,
    /// AEAD ciphertext of the PKCE verifier.
    pub pkce_verifier_enc: Vec<u8>,
    /// Key of that ciphertext.
    pub key_id: String,
    /// Hash of the OIDC nonce.
    pub nonce_hash: Option<Vec<u8>>,
    /// The signed-in user who asked to link, if any.
    pub link_user_id: Option<Uuid>,
    /// Start time.
    pub created_at: DateTime<Utc>,
    /// Deadline.
    pub expires_at: DateTime<Utc>,
    /// When it was redeemed.
    pub used_at: Option<DateTime<Utc>>,
}

/// Why and when sessions are being ended, for the revocation feed.
#[derive(Debug, Clone, Copy)]
pub struct Revoked {
    /// `sign_out`, `revoked`, `other_sessions`, `password_changed`, `password_reset`,
    /// `user_disabled`, `user_deleted` or `admin`.
    pub reason: &'static str,
    /// When.
    pub at: DateTime<Utc>,
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RevocationRow {
    /// Increasing id.
    pub id: i64,
    /// The ended session.
    pub session_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// Why.
    pub reason: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// One entry of the user-change feed: something `GetSession` returns for the user changed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserChangeRow {
    /// Increasing id.
    pub id: i64,
    /// The user that changed.
    pub user_id: Uuid,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An access-token signing key as stored (private key encrypted).
#[derive(Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    /// Key id (`kid` header).
    pub kid: String,
    /// JWS algorithm.
    pub algorithm: String,
    /// Encrypted PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// Which derived key encrypted it.
    pub cipher_key_id: String,
    /// Public JWK (JSON).
    pub public_jwk: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it starts signing (published from creation).
    pub activates_at: DateTime<Utc>,
    /// When a newer key takes over (may be ahead: the successor's `activates_at`).
    pub retired_at: Option<DateTime<Utc>>,
}

/// A user with the operator-only fields.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AdminUserRow {
    /// The user.
    #[sqlx(flatten)]
    pub user: UserRow,
    /// Set while disabled.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// One grant or withdrawal of consent.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ConsentRow {
    /// Order of recording (assigned by the database; ignored on insert).
    pub seq: i64,
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Whose.
    pub user_id: Uuid,
    /// What for.
    pub purpose: String,
    /// The policy version in force.
    pub policy_version: String,
    /// Grant (true) or withdrawal.
    pub granted: bool,
    /// Forwarded client IP.
    pub ip_address: Option<String>,
    /// Forwarded user agent.
    pub user_agent: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An email link as exported: what it was for and when, never its hash.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EmailTokenRow {
    /// Id.
    pub id: Uuid,
    /// `verify_email`, `change_email` or `reset_password`.
    pub purpose: String,
    /// The address a change_email link switches to.
    pub new_email: Option<String>,
    /// Sent.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Redemption.
    pub used_at: Option<DateTime<Utc>>,
}

/// Everything stored about one user, read in one transaction.
#[derive(Debug, Clone)]
pub struct UserExportRows {
    /// The user and the operator fields.
    pub user: AdminUserRow,
    /// Whether a password is set (the hash itself is never exported).
    pub has_password: bool,
    /// Consecutive failed sign-ins.
    pub failed_sign_ins: i32,
    /// Lock after failures.
    pub locked_until: Option<DateTime<Utc>>,
    /// The learner profile.
    pub profile: Option<ProfileRow>,
    /// Every stored session (expired ones too, until pruned).
    pub sessions: Vec<SessionRow>,
    /// Linked provider accounts (the encrypted tokens are dropped by the exporter).
    pub accounts: Vec<AccountRow>,
    /// Email links.
    pub email_tokens: Vec<EmailTokenRow>,
    /// Provider-linking flows started by the user.
    pub oauth_states: Vec<OAuthStateRow>,
    /// Consent history, oldest first.
    pub consent_records: Vec<ConsentRow>,
    /// Security events, oldest first.
    pub audit_events: Vec<AuditRow>,
    /// Revocation feed entries.
    pub revocations: Vec<RevocationRow>,
    /// User-change feed entries.
    pub user_changes: Vec<UserChangeRow>,
    /// Second factors (their secrets are dropped by the exporter).
    pub factors: Vec<FactorRow>,
    /// Recovery codes: `(id, created_at, used_at)`, never their hashes.
    pub recovery_codes: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// Sign-ins waiting for a second factor.
    pub challenges: Vec<ChallengeRow>,
    /// Passkey registrations in progress (their states are dropped by the exporter).
    pub ceremonies: Vec<CeremonyRow>,
}

/// A WebAuthn ceremony between its two calls.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CeremonyRow {
    /// Primary key (the sign-in's `challenge_id`).
    pub id: Uuid,
    /// The registering user; `None` for a passwordless sign-in.
    pub user_id: Option<Uuid>,
    /// `register` or `sign_in`.
    pub kind: String,
    /// webauthn-rs's state, JSON.
    pub state: String,
    /// Registration: the passkey's name.
    pub name: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
    /// When it was finished.
    pub used_at: Option<DateTime<Utc>>,
}

/// A second factor as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FactorRow {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// `totp` or `passkey`.
    pub kind: String,
    /// The name the user gave it.
    pub name: String,
    /// TOTP: the encrypted secret.
    pub secret_enc: Option<Vec<u8>>,
    /// TOTP: the cipher key that encrypted it.
    pub key_id: Option<String>,
    /// Passkey: the credential id.
    pub credential_id: Option<Vec<u8>>,
    /// Passkey: webauthn-rs's `Passkey` as JSON (public key, counter, flags).
    pub passkey: Option<String>,
    /// When enrollment started.
    pub created_at: DateTime<Utc>,
    /// When the first code activated it; `None` while pending.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When a pending enrollment lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last time step whose code was accepted.
    pub last_used_step: Option<i64>,
    /// When it last completed a sign-in.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A recovery code to store.
#[derive(Debug, Clone)]
pub struct NewRecoveryCode {
    /// Primary key.
    pub id: Uuid,
    /// Keyed hash of the normalised code.
    pub code_hash: Vec<u8>,
}

/// A sign-in waiting for its second factor.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChallengeRow {
    /// Primary key.
    pub id: Uuid,
    /// The user whose first factor succeeded.
    pub user_id: Uuid,
    /// That first factor: `pwd` or `oauth`.
    pub first_factor: String,
    /// Wrong codes presented with it so far.
    pub failures: i32,
    /// The WebAuthn authentication state for the user's passkeys, if they have any.
    pub passkey_state: Option<String>,
    /// When the first factor succeeded.
    pub created_at: DateTime<Utc>,
    /// When it lapses.
    pub expires_at: DateTime<Utc>,
    /// When a second factor completed it.
    pub used_at: Option<DateTime<Utc>>,
}

/// Users whose latest record for a purpose is a grant of a policy version.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsentCount {
    /// The purpose.
    pub purpose: String,
    /// The version granted.
    pub policy_version: String,
    /// How many users.
    pub users: i64,
}
