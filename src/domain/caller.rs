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
}
