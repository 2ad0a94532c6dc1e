//! Who a call is from: a validated session and its user, as the services hand them out. A
//! leaf, so that the session cache can hold these without depending on `Sessions`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::user::User;

/// A validated session and its user.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user.
    pub user: User,
    /// The session that authenticated the call.
    pub session: Session,
}

/// A session as shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Sign-in time.
    pub created_at: DateTime<Utc>,
    /// Last use (written at most once per refresh interval).
    pub last_active_at: DateTime<Utc>,
    /// When it ends if unused: the earlier of absolute expiry and idle deadline.
    pub expires_at: DateTime<Utc>,
    /// Client IP at sign-in.
    pub ip_address: Option<String>,
    /// Client user agent at sign-in.
    pub user_agent: Option<String>,
    /// Whether it is the calling session.
    pub current: bool,
    /// How the user authenticated for it.
    pub assurance: Assurance,
}

/// How a user authenticated for a session: what NIST SP 800-63B calls the authenticator
/// assurance level, and the methods (RFC 8176 `amr` values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assurance {
    /// 1 for one factor, 2 for two.
    pub aal: u8,
    /// `pwd`, `oauth`, `otp`, `rec`, and `mfa` with two factors.
    pub amr: Vec<String>,
}

impl Assurance {
    /// One factor: `pwd` or `oauth`.
    pub fn single(method: &str) -> Self {
        Self { aal: 1, amr: vec![method.to_owned()] }
    }

    /// A first factor followed by a second (`otp` or `rec`).
    pub fn two(first: &str, second: &str) -> Self {
        Self { aal: 2, amr: vec![first.to_owned(), second.to_owned(), "mfa".to_owned()] }
    }

    /// A passkey that verified its user (`hwk` or `swk`): two factors in one.
    pub fn passkey(method: &str) -> Self {
        Self { aal: 2, amr: vec![method.to_owned(), "mfa".to_owned()] }
    }

    /// As stored: the level, and the methods space-separated.
    pub fn from_stored(aal: i32, amr: &str) -> Self {
        Self { aal: if aal >= 2 { 2 } else { 1 }, amr: amr.split_whitespace().map(str::to_owned).collect() }
    }

    /// The methods as stored.
    pub fn amr_stored(&self) -> String {
        self.amr.join(" ")
    }

    /// The OIDC `acr` value of the level: `aal1` or `aal2`.
    pub fn acr(&self) -> &'static str {
        if self.aal >= 2 { "aal2" } else { "aal1" }
    }
}
