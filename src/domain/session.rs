//! Sessions as their owners see them, and the rules for how long they live.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::storage::SessionRow;

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionLifetimes {
    /// Absolute lifetime.
    pub ttl: TimeDelta,
    /// A session unused for this long ends.
    pub idle_timeout: TimeDelta,
}

impl SessionLifetimes {
    /// Whether a stored session can still validate at `now`.
    pub(crate) fn is_live(&self, s: &SessionRow, now: DateTime<Utc>) -> bool {
        now < s.expires_at && now < s.last_active_at + self.idle_timeout
    }

    /// A stored session as its owner sees it.
    pub(crate) fn view(&self, row: SessionRow, current: bool) -> Session {
        Session {
            id: row.id,
            user_id: row.user_id,
            created_at: row.created_at,
            last_active_at: row.last_active_at,
            expires_at: row.expires_at.min(row.last_active_at + self.idle_timeout),
            ip_address: row.ip_address,
            user_agent: row.user_agent,
            current,
        }
    }
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
