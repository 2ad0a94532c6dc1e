//! Persistence: one set of operation-level traits with a PostgreSQL and a SQLite
//! implementation, chosen at run time from the database URL. Knows sqlx, never tonic.

mod postgres;
pub mod rows;
mod sql;
mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use rows::{
    AccountRow, AccountTokens, AdminUserRow, AttemptState, AuditRow, CeremonyRow, ChallengeRow, ConsentCount,
    ConsentRow, CredentialRow, EmailTokenRow, FactorRow, NewAccount, NewOAuthUser, NewRecoveryCode, NewSession,
    NewUser, NewVerificationToken, OAuthStateRow, ProfileRow, Recovered, RedeemedToken, RevocationRow, Revoked,
    SessionRow, SessionUserRow, SignUpRows, SigningKeyRow, UserChangeRow, UserExportRows, UserRow,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A unique or check constraint (named) refused the write.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database cannot be reached or is overloaded; worth retrying.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database is not fit to serve as configured (say, migrations pending behind a pooler);
    /// the message says what to do.
    #[error("{0}")]
    Setup(String),
    /// Anything else.
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

/// Connection settings shared by both backends.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `sqlite://path` or `postgres://...`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// PostgreSQL: a direct address for what a transaction-mode pooler cannot carry
    /// (migrations with their advisory lock, the revocation `LISTEN`).
    pub direct_url: Option<String>,
    /// PostgreSQL: `url` is a transaction-mode pooler (PgBouncer, Neon's pooled endpoint), so
    /// no session state survives a transaction.
    pub pooler: bool,
    /// PostgreSQL: statements are prepared once per connection and cached. Off for poolers that
    /// cannot keep prepared statements across transactions (PgBouncer before 1.21).
    pub prepared_statements: bool,
    /// PostgreSQL: the server cancels a statement that runs longer (a lock wait, a runaway
    /// plan), so a request that gave up does not keep its connection busy.
    pub statement_timeout: Option<Duration>,
}

impl DbOptions {
    /// A direct connection to `url` with the pool's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            direct_url: None,
            pooler: false,
            prepared_statements: true,
            statement_timeout: None,
        }
    }
}

/// Accounts and credentials.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user and, in the same transaction, what the sign-up stores with it (profile,
    /// verification token, first session); returns the user and that session. A taken email is
    /// `Conflict("users_email_key")`, and nothing is stored.
    async fn create_user(
        &self,
        user: &NewUser,
        with: SignUpRows<'_>,
    ) -> Result<(UserRow, Option<SessionRow>), StoreError>;
    /// The user with this normalised email and their password hash.
    async fn find_credentials_by_email(&self, email: &str) -> Result<Option<CredentialRow>, StoreError>;
    /// The password hash of a user (`None` if they have none or do not exist).
    async fn password_hash(&self, user_id: Uuid) -> Result<Option<String>, StoreError>;
    /// Replaces a user's password hash if it is still `expected` (compare-and-swap: of
    /// concurrent changes checked against one hash, one wins). False if it had changed.
    async fn replace_password_hash(
        &self,
        user_id: Uuid,
        expected: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Deletes a user; sessions (recorded as revoked), tokens, provider accounts and flows, and
    /// profile go with it. False if there was no such user.
    async fn delete_user(&self, user_id: Uuid, revoked: Revoked) -> Result<bool, StoreError>;
    /// A user by id.
    async fn find_user(&self, user_id: Uuid) -> Result<Option<UserRow>, StoreError>;
    /// The user's consecutive password attempts and lock, if the user exists.
    async fn attempt_state(&self, user_id: Uuid) -> Result<Option<AttemptState>, StoreError>;
    /// Takes one password attempt slot: counts it and sets `lock`, but only if the state is
    /// still `seen` and the account is not locked at `now`. False if another attempt came first
    /// or a lock applies; the caller re-reads. This is what bounds a parallel burst.
    async fn take_attempt(
        &self,
        user_id: Uuid,
        seen: &AttemptState,
        now: DateTime<Utc>,
        lock: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;
    /// Gives back the slot an attempt took (the count it wrote, `written`) and the lock it
    /// set, if no attempt came after it. For a right password of a user with a second factor:
    /// neither a failure nor yet a success. False if another attempt came after.
    async fn refund_attempt(&self, user_id: Uuid, written: i32) -> Result<bool, StoreError>;
    /// Forgets failed sign-ins and any lock.
    async fn clear_failed_sign_ins(&self, user_id: Uuid) -> Result<(), StoreError>;
    /// Marks the user's email verified (the owner proved the mailbox) and removes provider links
    /// made before that proof; returns the removed links' provider names.
    async fn mark_email_verified(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<String>, StoreError>;
    /// Switches the user to a new, verified email. `Conflict` if another account has it.
    async fn change_email(&self, user_id: Uuid, new_email: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// The owner proved the mailbox with a reset link: sets a new password hash, marks the
    /// address verified, clears any lock, deletes every session and removes provider links made
    /// before the proof, in one transaction; the sessions are recorded as `revoked` (whose time
    /// is the change's).
    async fn reset_password(&self, user_id: Uuid, hash: &str, revoked: Revoked) -> Result<Recovered, StoreError>;
}

/// Single-use email tokens (verification, email change, password reset).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token, superseding the user's unused tokens of the same purpose.
    async fn issue_token(&self, token: &NewVerificationToken) -> Result<(), StoreError>;
    /// A live, unused token of one of the two purposes, without using it.
    async fn find_live_token(
        &self,
        token_hash: &[u8],
        purposes: (&str, &str),
        now: DateTime<Utc>,
    ) -> Result<Option<RedeemedToken>, StoreError>;
    /// Marks a live, unused token of one of the two purposes used and returns what it was
    /// for; `None` if there is no such token. Atomic: of concurrent redemptions one wins.
    async fn redeem_token(
        &self,
        token_hash: &[u8],
        purposes: (&str, &str),
        now: DateTime<Utc>,
    ) -> Result<Option<RedeemedToken>, StoreError>;
    /// Deletes tokens that expired or were used before `before`.
    async fn delete_stale_tokens(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an event.
    async fn append_audit(&self, event: &AuditRow) -> Result<(), StoreError>;
    /// A user's events older than the cursor `(created_at, id)`, newest first.
    async fn list_audit(
        &self,
        user_id: Uuid,
        before: (DateTime<Utc>, Uuid),
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// Deletes events older than `before` (retention).
    async fn prune_audit(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Sessions, found by the keyed hash of their token.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    async fn create_session(&self, session: &NewSession) -> Result<SessionRow, StoreError>;
    /// The session with this token hash and its user, in one query: the hot path.
    async fn find_session(&self, token_hash: &[u8]) -> Result<Option<SessionUserRow>, StoreError>;
    /// Sets a session's `last_active_at` to `now` if it is at or before `due_before`. False if
    /// it was not due (another replica touched it within the interval) or the session is gone,
    /// so that of replicas touching at once exactly one writes.
    async fn touch_session(
        &self,
        session_id: Uuid,
        now: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// A user's sessions whose absolute expiry is after `now`, most recently used first.
    async fn list_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<SessionRow>, StoreError>;
    /// Ends one session of a user, recording the revocation. False if the user has no such
    /// session.
    async fn delete_session(&self, user_id: Uuid, session_id: Uuid, revoked: Revoked) -> Result<bool, StoreError>;
    /// Ends every session of a user except `keep`; returns how many went.
    async fn delete_other_sessions(&self, user_id: Uuid, keep: Uuid, revoked: Revoked) -> Result<u64, StoreError>;
    /// Ends every session of a user; returns how many went.
    async fn delete_all_sessions(&self, user_id: Uuid, revoked: Revoked) -> Result<u64, StoreError>;
    /// Deletes sessions that can no longer validate; returns how many went.
    async fn delete_expired_sessions(
        &self,
        absolute_before: DateTime<Utc>,
        idle_before: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// Learner profiles.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// A user's profile, if one was ever stored.
    async fn get_profile(&self, user_id: Uuid) -> Result<Option<ProfileRow>, StoreError>;
    /// Inserts a profile (version 1) and, in the same transaction, the consent record of its
    /// consent change. `Conflict` if the user already has one.
    async fn insert_profile(&self, profile: &ProfileRow, consent: Option<&ConsentRow>) -> Result<(), StoreError>;
    /// Writes a profile only if the stored version is `expected_version`, bumping it, and in the
    /// same transaction appends the consent record of its consent change. False (and nothing
    /// written) if another writer got there first.
    async fn update_profile(
        &self,
        profile: &ProfileRow,
        expected_version: i64,
        consent: Option<&ConsentRow>,
    ) -> Result<bool, StoreError>;
}

/// Which table's client data retention redacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientDataTable {
    /// `sessions`.
    Sessions,
    /// `audit_events`.
    AuditEvents,
    /// `consent_records`.
    ConsentRecords,
}

impl ClientDataTable {
    /// Every table with client data.
    pub const ALL: [ClientDataTable; 3] = [Self::Sessions, Self::AuditEvents, Self::ConsentRecords];

    /// The table's name (a fixed identifier, so safe to put into SQL).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
            Self::AuditEvents => "audit_events",
            Self::ConsentRecords => "consent_records",
        }
    }
}

/// Consent records, the reader's data export and privacy reporting.
#[async_trait]
pub trait PrivacyStore: Send + Sync {
    /// Appends a consent record (for purposes other than the profile's own).
    async fn append_consent(&self, record: &ConsentRow) -> Result<(), StoreError>;
    /// A user's records recorded before `before_seq`, newest first.
    async fn list_consent_records(
        &self,
        user_id: Uuid,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<ConsentRow>, StoreError>;
    /// The latest record of each purpose the user has any for.
    async fn latest_consents(&self, user_id: Uuid) -> Result<Vec<ConsentRow>, StoreError>;
    /// Everything stored about a user, in one transaction; `None` if there is no such user.
    async fn export_user(&self, user_id: Uuid) -> Result<Option<UserExportRows>, StoreError>;
    /// For each purpose and policy version, the users whose latest record is a grant of it.
    async fn consent_counts(&self) -> Result<Vec<ConsentCount>, StoreError>;
    /// How many users exist.
    async fn count_users(&self) -> Result<i64, StoreError>;
    /// Audit events of this kind and outcome `success` in `[since, until]`.
    async fn count_audit_events(
        &self,
        event: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
    /// Up to `limit` rows of `table` created before `before` whose client data is not yet
    /// redacted: `(id, ip_address)`.
    async fn unredacted_clients(
        &self,
        table: ClientDataTable,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(Uuid, Option<String>)>, StoreError>;
    /// Replaces one row's IP address (its user agent is cleared) and marks it redacted.
    async fn redact_client(&self, table: ClientDataTable, id: Uuid, ip_address: Option<&str>)
    -> Result<(), StoreError>;
}

/// What `unlink_account` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlinked {
    /// The account is gone.
    Removed,
    /// The user has no such account.
    NotFound,
    /// It is the user's last way to sign in, so it was kept.
    LastCredential,
}

/// Accounts at identity providers, linked to users.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// The account with this provider identity.
    async fn find_account(&self, provider: &str, provider_account_id: &str) -> Result<Option<AccountRow>, StoreError>;
    /// A user by normalised email, for linking by verified email.
    async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError>;
    /// Creates a password-less user and their first account in one transaction. A taken email
    /// is `Conflict("users_email_key")`, a linked identity
    /// `Conflict("accounts_provider_account_key")`.
    async fn create_user_with_account(&self, user: &NewOAuthUser, account: &NewAccount) -> Result<UserRow, StoreError>;
    /// Links an account to an existing user. A linked identity is
    /// `Conflict("accounts_provider_account_key")`.
    async fn create_account(&self, account: &NewAccount) -> Result<AccountRow, StoreError>;
    /// Replaces an account's tokens and what the provider says about the email.
    async fn update_account_tokens(
        &self,
        account_id: Uuid,
        email: Option<&str>,
        email_verified: bool,
        tokens: &AccountTokens,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// A user's accounts, oldest first.
    async fn list_accounts(&self, user_id: Uuid) -> Result<Vec<AccountRow>, StoreError>;
    /// Removes an account unless it is the user's last way to sign in (no password and no
    /// other account); the check and the delete are one transaction holding the user's row.
    async fn unlink_account(
        &self,
        user_id: Uuid,
        provider: &str,
        provider_account_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Unlinked, StoreError>;
}

/// Authorization-code flows in progress.
#[async_trait]
pub trait OAuthStateStore: Send + Sync {
    /// Stores a new flow.
    async fn create_oauth_state(&self, state: &OAuthStateRow) -> Result<(), StoreError>;
    /// Marks the flow with this state hash used and returns it, if it existed and was unused:
    /// one atomic statement, so concurrent redemptions get it at most once.
    async fn consume_oauth_state(
        &self,
        state_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<OAuthStateRow>, StoreError>;
    /// Deletes flows that expired before `before`; returns how many went.
    async fn delete_expired_oauth_states(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// The revocation feed, and session liveness for access-token introspection.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Feed entries after `after_id`, oldest first.
    async fn revocations_after(&self, after_id: i64, limit: i64) -> Result<Vec<RevocationRow>, StoreError>;
    /// The newest entry's id (0 when empty).
    async fn last_revocation_id(&self) -> Result<i64, StoreError>;
    /// User-change entries after `after_id`, oldest first.
    async fn user_changes_after(&self, after_id: i64, limit: i64) -> Result<Vec<UserChangeRow>, StoreError>;
    /// The newest user-change entry's id (0 when empty).
    async fn last_user_change_id(&self) -> Result<i64, StoreError>;
    /// Deletes revocation and user-change entries older than `before`.
    async fn prune_revocations(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// A session that still exists and whose user is not disabled.
    async fn live_session(&self, session_id: Uuid) -> Result<Option<SessionRow>, StoreError>;
}

/// Access-token signing keys.
#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// Every key, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>, StoreError>;
    /// Adds a key. With `retire`, only if that key is still the newest (it is retired as of the
    /// new key's `activates_at`, in the same transaction); without, only if there is no such
    /// key. False if another replica won.
    async fn add_signing_key(&self, key: &SigningKeyRow, retire: Option<&str>) -> Result<bool, StoreError>;
}

/// Operator views of users.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Users after the cursor `(created_at, id)`, oldest first, whose email contains the text.
    async fn list_users(
        &self,
        after: (DateTime<Utc>, Uuid),
        email_contains: &str,
        limit: i64,
    ) -> Result<Vec<AdminUserRow>, StoreError>;
    /// One user with the operator-only fields.
    async fn admin_user(&self, user_id: Uuid) -> Result<Option<AdminUserRow>, StoreError>;
    /// Sets or clears `disabled_at`. False if there is no such user.
    async fn set_disabled(&self, user_id: Uuid, disabled_at: Option<DateTime<Utc>>) -> Result<bool, StoreError>;
}

/// Second factors, recovery codes and the sign-ins waiting for them.
#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Stores a pending factor, replacing the user's other pending factors of its kind.
    async fn put_pending_factor(&self, factor: &FactorRow) -> Result<(), StoreError>;
    /// The user's pending factor of `kind` that has not lapsed at `now`.
    async fn pending_factor(
        &self,
        user_id: Uuid,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<FactorRow>, StoreError>;
    /// Activates a pending factor, records `step` as its last accepted step and replaces the
    /// user's recovery codes with `codes`, in one transaction. False if it was no longer
    /// pending; `Conflict("factors_one_totp_key")` if the user has an active one of its kind.
    async fn confirm_factor(
        &self,
        factor_id: Uuid,
        step: i64,
        codes: &[NewRecoveryCode],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// The user's active factors, oldest first.
    async fn active_factors(&self, user_id: Uuid) -> Result<Vec<FactorRow>, StoreError>;
    /// Accepts time step `step` of an active factor if no later or equal step was accepted
    /// (compare-and-swap: a code is accepted once, whatever the concurrency). False otherwise.
    async fn accept_step(&self, factor_id: Uuid, step: i64, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Removes one factor of the user; with the last active one go the recovery codes. False
    /// if the user has no such factor.
    async fn remove_factor(&self, user_id: Uuid, factor_id: Uuid) -> Result<bool, StoreError>;
    /// Replaces the user's recovery codes.
    async fn replace_recovery_codes(
        &self,
        user_id: Uuid,
        codes: &[NewRecoveryCode],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Marks an unused recovery code of the user used. False if there is none with this hash.
    async fn use_recovery_code(&self, user_id: Uuid, code_hash: &[u8], now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// How many unused recovery codes the user has.
    async fn count_recovery_codes(&self, user_id: Uuid) -> Result<i64, StoreError>;
    /// Removes every factor, recovery code and waiting sign-in of the user, in one
    /// transaction; returns how many active factors went.
    async fn reset_factors(&self, user_id: Uuid) -> Result<u64, StoreError>;
    /// Stores a sign-in waiting for a second factor.
    async fn create_challenge(&self, challenge: &ChallengeRow, token_hash: &[u8]) -> Result<(), StoreError>;
    /// The unused, unlapsed challenge with this token hash.
    async fn find_challenge(&self, token_hash: &[u8], now: DateTime<Utc>) -> Result<Option<ChallengeRow>, StoreError>;
    /// Counts a wrong code against a challenge; returns the failures so far.
    async fn fail_challenge(&self, challenge_id: Uuid) -> Result<i32, StoreError>;
    /// Marks a challenge used if it is unused and unlapsed: of concurrent completions, one wins.
    async fn consume_challenge(&self, challenge_id: Uuid, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Adds an active passkey and, when `codes` is not empty, the user's first recovery codes,
    /// in one transaction. `Conflict("factors_credential_id_key")` if the credential is taken.
    async fn add_passkey(&self, factor: &FactorRow, codes: &[NewRecoveryCode]) -> Result<(), StoreError>;
    /// The active passkey with this credential id.
    async fn find_passkey(&self, credential_id: &[u8]) -> Result<Option<FactorRow>, StoreError>;
    /// Records a passkey's use: its new state (counter, backup flag) if it is still
    /// `expected` (compare-and-swap: of two uses racing on one counter, one lands). False if
    /// it changed meanwhile or is gone.
    async fn use_passkey(
        &self,
        factor_id: Uuid,
        expected: &str,
        updated: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Stores a ceremony; a registration replaces the user's other pending registrations.
    async fn create_ceremony(&self, ceremony: &CeremonyRow) -> Result<(), StoreError>;
    /// Takes (marks used and returns) the user's pending registration, if it has not lapsed.
    async fn take_registration(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<Option<CeremonyRow>, StoreError>;
    /// Takes an unused, unlapsed passwordless sign-in ceremony: single use, whatever the
    /// concurrency.
    async fn take_sign_in_ceremony(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<CeremonyRow>, StoreError>;
    /// Deletes challenges, ceremonies and pending factors that lapsed before `before`.
    async fn delete_expired_challenges(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Connection pool figures for metrics: open, idle, maximum.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
    /// Configured maximum.
    pub max: u32,
}

/// Everything Gatehouse stores.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + ProfileStore
    + TokenStore
    + AuditStore
    + AccountStore
    + OAuthStateStore
    + RevocationStore
    + SigningKeyStore
    + AdminStore
    + PrivacyStore
    + FactorStore
{
    /// Waits up to `timeout` for another replica to announce new revocations (PostgreSQL
    /// LISTEN/NOTIFY); backends without cross-process notice just wait.
    async fn wait_for_revocations(&self, timeout: Duration);
    /// Pool usage.
    fn pool_stats(&self) -> PoolStats;
    /// Checks that the database answers and takes a write (used by the health reporter).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);
    /// Backend name, for logs.
    fn backend(&self) -> &'static str;
}

/// Opens the database named by `opts.url`, creating a SQLite file if needed.
pub async fn connect(opts: &DbOptions) -> Result<Arc<dyn Store>, StoreError> {
    if opts.url.starts_with("postgres://") || opts.url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(opts).await?))
    } else if opts.url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(opts).await?))
    } else {
        Err(StoreError::Other(sqlx::Error::Configuration(
            "DATABASE_URL must start with sqlite:// or postgres://".into(),
        )))
    }
}

/// For a connection that crosses the network in the clear (PostgreSQL neither over TLS nor
/// to loopback), the host it goes to; `None` for TLS, loopback, a Unix socket or SQLite.
pub fn plaintext_remote_host(opts: &DbOptions) -> Option<String> {
    if opts.url.starts_with("postgres://") || opts.url.starts_with("postgresql://") {
        postgres::plaintext_remote_host(&opts.url)
    } else {
        None
    }
}

/// Applies pending migrations for the backend named by `opts.url`.
pub async fn migrate(opts: &DbOptions) -> Result<(), StoreError> {
    let store = connect(opts).await?;
    store.close().await;
    Ok(())
}

/// When the database last failed a statement for a reason other than "no such row" or a
/// constraint: milliseconds after [`EPOCH`], plus one (0 means never).
static LAST_FAULT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);

fn note_fault() {
    let ms = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
    LAST_FAULT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a database fault was seen within `window` (process-wide: any store).
pub(crate) fn faulted_within(window: Duration) -> bool {
    let last = LAST_FAULT_MS.load(std::sync::atomic::Ordering::Relaxed);
    last != 0 && EPOCH.elapsed().as_millis() < u128::from(last) + window.as_millis()
}

/// Sorts a sqlx error into the store's categories.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    if !matches!(&err, E::RowNotFound)
        && !matches!(&err, E::Database(db) if db.is_unique_violation() || db.is_check_violation())
    {
        note_fault();
    }
    match err {
        E::RowNotFound => StoreError::NotFound,
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => {
            StoreError::Unavailable(err)
        }
        E::Database(ref db) if db.is_unique_violation() || db.is_check_violation() => {
            StoreError::Conflict(db.constraint().unwrap_or("unknown").to_owned())
        }
        E::Database(ref db) if is_transient(db.code().as_deref()) => StoreError::Unavailable(err),
        other => StoreError::Other(other),
    }
}

/// How many times a transaction runs when PostgreSQL keeps aborting it.
const ABORTED_ATTEMPTS: u32 = 3;

impl StoreError {
    /// PostgreSQL aborted the transaction to break a deadlock (40P01) or a serialization
    /// conflict (40001): nothing of it was applied.
    fn is_aborted(&self) -> bool {
        matches!(self, StoreError::Unavailable(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("40001" | "40P01")))
    }
}

/// Runs a transaction, and runs it again (twice at most, after a short jittered pause) when
/// PostgreSQL aborted it as a deadlock or serialization victim. An aborted transaction was
/// rolled back whole and the transactions here touch nothing outside the database, so a
/// repeat cannot apply anything twice. Anything else, including a failed COMMIT whose outcome
/// is unknown, is returned as it is.
pub(crate) async fn retry_aborted<'a, T>(
    mut attempt: impl FnMut() -> futures_util::future::BoxFuture<'a, Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(error) if tries < ABORTED_ATTEMPTS && error.is_aborted() => {
                tries += 1;
                let mut byte = [0u8; 1];
                let jitter = getrandom::fill(&mut byte).map_or(0, |()| u64::from(byte[0] % 16));
                tracing::debug!(tries, "the database aborted a transaction; running it again");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries) + jitter)).await;
            }
            other => return other,
        }
    }
}

/// PostgreSQL SQLSTATE classes and SQLite result codes that mean "not now" rather than "never".
fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // PostgreSQL: connection exceptions (08), insufficient resources (53), operator
    // intervention such as shutdown or "database does not allow connections" (57, 55000), and
    // a read-only transaction (25006: a standby after a failover takes no writes), and
    // a transaction PostgreSQL chose to abort.
    // A serialization failure or deadlock (40001, 40P01) rolled the transaction back whole:
    // the caller may run it again.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code == "55000"
        || code == "25006"
        || code == "40001"
        || code == "40P01"
        // SQLite primary codes: BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN (extended codes keep
        // the primary in the low byte).
        || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 7 | 10 | 13 | 14))
}
