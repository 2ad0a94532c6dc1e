//! The audit log: every security event goes to an append-only table and out as a structured
//! tracing event (target `audit`). Never a secret: only who, what, outcome, when and from where.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{client::ClientInfo, clock::Clock, error::Error};
use crate::storage::{AuditRow, Store};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An account was created.
    SignUp,
    /// A sign-in was attempted.
    SignIn,
    /// A session was ended by its holder.
    SignOut,
    /// A session (or several) was revoked.
    SessionRevoked,
    /// The password was changed by its owner.
    PasswordChanged,
    /// A reset link was asked for.
    PasswordResetRequested,
    /// The password was reset with a link.
    PasswordReset,
    /// A verification link was sent.
    VerificationSent,
    /// An address was verified.
    EmailVerified,
    /// The account's address changed.
    EmailChanged,
    /// The account was deleted.
    AccountDeleted,
    /// A rate limit refused a request.
    RateLimited,
    /// A provider account was linked.
    OAuthLinked,
    /// A provider account was unlinked.
    OAuthUnlinked,
    /// An operator disabled the user.
    UserDisabled,
    /// An operator re-enabled the user.
    UserEnabled,
    /// An operator read the user's data.
    AdminRead,
    /// The user exported their own data.
    DataExported,
    /// An operator exported a user's data.
    AdminExport,
    /// A second-factor step of a sign-in (challenge issued, wrong code, refused).
    SecondFactor,
    /// A second factor was activated.
    FactorAdded,
    /// A second factor was removed by its owner.
    FactorRemoved,
    /// New recovery codes replaced the old.
    RecoveryCodesRegenerated,
    /// An operator removed every second factor of the user.
    FactorsReset,
}

impl Event {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignUp => "sign_up",
            Self::SignIn => "sign_in",
            Self::SignOut => "sign_out",
            Self::SessionRevoked => "session_revoked",
            Self::PasswordChanged => "password_changed",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordReset => "password_reset",
            Self::VerificationSent => "verification_sent",
            Self::EmailVerified => "email_verified",
            Self::EmailChanged => "email_changed",
            Self::AccountDeleted => "account_deleted",
            Self::RateLimited => "rate_limited",
            Self::OAuthLinked => "oauth_linked",
            Self::OAuthUnlinked => "oauth_unlinked",
            Self::UserDisabled => "user_disabled",
            Self::UserEnabled => "user_enabled",
            Self::AdminRead => "admin_read",
            Self::DataExported => "data_exported",
            Self::AdminExport => "admin_export",
            Self::SecondFactor => "second_factor",
            Self::FactorAdded => "factor_added",
            Self::FactorRemoved => "factor_removed",
            Self::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            Self::FactorsReset => "factors_reset",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused: bad credentials or token.
    Failure,
    /// Refused by policy: rate limit, lock, unverified address.
    Denied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// Records and lists security events.
pub struct AuditLog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

/// A recorded event as its user (or an operator) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// What happened (`sign_in`, ...).
    pub event: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Client IP.
    pub ip_address: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<AuditRow> for AuditEvent {
    fn from(r: AuditRow) -> Self {
        Self {
            id: r.id,
            event: r.event,
            outcome: r.outcome,
            ip_address: r.ip_address,
            user_agent: r.user_agent,
            created_at: r.created_at,
        }
    }
}

/// Largest page of ListAuditEvents.
pub const MAX_PAGE_SIZE: u32 = 100;
const DEFAULT_PAGE_SIZE: u32 = 50;

impl AuditLog {
    /// An audit log over `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Records an event. A failure to store it is logged, never returned: the action it
    /// describes has already happened. The reason (a fixed word, or one with a provider's name)
    /// must never be a secret.
    pub async fn record(
        &self,
        user_id: Option<Uuid>,
        event: Event,
        outcome: Outcome,
        reason: Option<&str>,
        client: &ClientInfo,
    ) {
        let row = AuditRow {
            id: Uuid::now_v7(),
            user_id,
            event: event.as_str().to_owned(),
            outcome: outcome.as_str().to_owned(),
            reason: reason.map(str::to_owned),
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            created_at: self.clock.now(),
        };
        tracing::info!(
            target: "audit",
            event = row.event,
            outcome = row.outcome,
            reason = reason.unwrap_or(""),
            user_id = user_id.map(|u| u.to_string()).unwrap_or_default(),
            ip = client.ip.as_deref().unwrap_or(""),
            user_agent = client.user_agent.as_deref().unwrap_or(""),
            "security event"
        );
        if let Err(error) = self.store.append_audit(&row).await {
            tracing::error!(%error, event = row.event, "storing an audit event failed");
        }
    }

    /// One page of a user's events, newest first, and the token of the next page.
    pub async fn list(
        &self,
        user_id: Uuid,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditEvent>, String), Error> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            _ => return Err(Error::invalid("page_size", format!("must be at most {MAX_PAGE_SIZE}"))),
        };
        let cursor = if page_token.is_empty() {
            // The last second of year 9999: later than any event, and (unlike MAX_UTC, whose
            // year has six digits) it still sorts correctly as SQLite text.
            (DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default(), Uuid::max())
        } else {
            decode_cursor(page_token)
                .ok_or_else(|| Error::invalid("page_token", "is not a token from a previous page"))?
        };
        let mut rows = self.store.list_audit(user_id, cursor, i64::from(size) + 1).await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| encode_cursor(r.created_at, r.id)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows.into_iter().map(Into::into).collect(), next))
    }

    /// Deletes events older than `retention`.
    pub async fn prune(&self, retention: TimeDelta) -> Result<u64, Error> {
        Ok(self.store.prune_audit(self.clock.now() - retention).await?)
    }
}

/// A page token for the position `(at, id)`.
pub(crate) fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

/// The position a page token names.
pub(crate) fn decode_cursor(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (micros, id) = raw.split_once(':')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, Uuid::parse_str(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let at = DateTime::from_timestamp_micros(1_900_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("garbage"), None);
    }
}
