//! A user as the domain hands it out: what callers may see, never the credentials.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::storage::UserRow;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub image: Option<String>,
    /// Whether the owner proved the mailbox.
    pub email_verified: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            email: r.email,
            name: r.name,
            image: r.image,
            email_verified: r.email_verified,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}
