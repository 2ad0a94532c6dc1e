//! Operator actions on users, on behalf of an authenticated service.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    audit::{AuditEvent, Event, Outcome, decode_cursor, encode_cursor},
    client::ClientInfo,
    core::Core,
    error::Error,
    factors::Factors,
    privacy::{Export, Privacy, PrivacyReport},
    session::{EndReason, Ending, Sessions},
    user::User,
};
use crate::storage::AdminUserRow;

/// Largest page of ListUsers.
pub const MAX_USERS_PAGE: u32 = 200;

/// The service calling the admin API, as its credentials prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity(pub String);

/// A user with the operator-only fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    /// The user.
    pub user: User,
    /// When an operator disabled the account.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<AdminUserRow> for AdminUser {
    fn from(r: AdminUserRow) -> Self {
        Self { user: r.user.into(), disabled_at: r.disabled_at }
    }
}

/// Admin operations.
pub struct Admin {
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    privacy: Arc<Privacy>,
    factors: Arc<Factors>,
}

fn parse_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw.trim()).map_err(|_| Error::invalid("user_id", "must be a UUID"))
}

impl Admin {
    /// Admin operations over the shared store.
    pub fn new(core: Arc<Core>, sessions: Arc<Sessions>, privacy: Arc<Privacy>, factors: Arc<Factors>) -> Self {
        Self { core, sessions, privacy, factors }
    }

    /// Removes every second factor of a user who lost them; their sessions end. Returns how
    /// many factors went.
    pub async fn reset_second_factors(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        user_id: &str,
    ) -> Result<u64, Error> {
        let id = parse_id(user_id)?;
        let user: User = self.find(id).await?.user;
        self.factors.reset(&user, client, &who.0).await
    }

    /// Everything stored about a user, for an access or portability request; audited as
    /// `admin_export`.
    pub async fn export_user(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        user_id: &str,
    ) -> Result<Export, Error> {
        let id = parse_id(user_id)?;
        let export = self.privacy.export(id).await?;
        self.audit(Some(id), Event::AdminExport, who, client).await;
        Ok(export)
    }

    /// The privacy report for `[since, until]` (default: the 30 days before now).
    pub async fn privacy_report(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<PrivacyReport, Error> {
        let until = until.unwrap_or_else(|| self.core.now());
        let since = since.unwrap_or(until - chrono::TimeDelta::days(30));
        if since > until {
            return Err(Error::invalid("since", "must not be after until"));
        }
        let report = self.privacy.report(since, until).await?;
        self.audit(None, Event::AdminRead, who, client).await;
        Ok(report)
    }

    async fn find(&self, id: Uuid) -> Result<AdminUser, Error> {
        self.core.store.admin_user(id).await?.map(Into::into).ok_or(Error::NotFound("user"))
    }

    async fn audit(&self, user_id: Option<Uuid>, event: Event, who: &ServiceIdentity, client: &ClientInfo) {
        let reason = format!("by {}", who.0);
        self.core.audit.record(user_id, event, Outcome::Success, Some(&reason), client).await;
    }

    /// A page of users, oldest first, and the next page's token.
    pub async fn list_users(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        page_size: u32,
        page_token: &str,
        email_filter: &str,
    ) -> Result<(Vec<AdminUser>, String), Error> {
        let size = match page_size {
            0 => 50,
            n if n <= MAX_USERS_PAGE => n,
            _ => return Err(Error::invalid("page_size", format!("must be at most {MAX_USERS_PAGE}"))),
        };
        let after = if page_token.is_empty() {
            (DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default(), Uuid::nil())
        } else {
            decode_cursor(page_token)
                .ok_or_else(|| Error::invalid("page_token", "is not a token from a previous page"))?
        };
        let mut rows = self.core.store.list_users(after, email_filter.trim(), i64::from(size) + 1).await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last().map(|r| encode_cursor(r.user.created_at, r.user.id)).unwrap_or_default()
        } else {
            String::new()
        };
        self.audit(None, Event::AdminRead, who, client).await;
        Ok((rows.into_iter().map(Into::into).collect(), next))
    }

    /// One user.
    pub async fn get_user(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        user_id: &str,
    ) -> Result<AdminUser, Error> {
        let id = parse_id(user_id)?;
        let user = self.find(id).await?;
        self.audit(Some(id), Event::AdminRead, who, client).await;
        Ok(user)
    }

    /// Disables a user and ends their sessions.
    pub async fn disable(&self, who: &ServiceIdentity, client: &ClientInfo, user_id: &str) -> Result<AdminUser, Error> {
        let id = parse_id(user_id)?;
        if !self.core.store.set_disabled(id, Some(self.core.now())).await? {
            return Err(Error::NotFound("user"));
        }
        self.sessions.user_changed(id);
        self.sessions.end(Ending::All { user_id: id }, EndReason::UserDisabled).await?;
        self.audit(Some(id), Event::UserDisabled, who, client).await;
        self.find(id).await
    }

    /// Re-enables a user.
    pub async fn enable(&self, who: &ServiceIdentity, client: &ClientInfo, user_id: &str) -> Result<AdminUser, Error> {
        let id = parse_id(user_id)?;
        if !self.core.store.set_disabled(id, None).await? {
            return Err(Error::NotFound("user"));
        }
        self.audit(Some(id), Event::UserEnabled, who, client).await;
        self.find(id).await
    }

    /// Deletes a user.
    pub async fn delete(&self, who: &ServiceIdentity, client: &ClientInfo, user_id: &str) -> Result<(), Error> {
        let id = parse_id(user_id)?;
        if !self.sessions.delete_user(id).await? {
            return Err(Error::NotFound("user"));
        }
        self.audit(Some(id), Event::AccountDeleted, who, client).await;
        Ok(())
    }

    /// Ends every session of a user.
    pub async fn revoke_sessions(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        user_id: &str,
    ) -> Result<u64, Error> {
        let id = parse_id(user_id)?;
        if self.core.store.admin_user(id).await?.is_none() {
            return Err(Error::NotFound("user"));
        }
        let n = self.sessions.end(Ending::All { user_id: id }, EndReason::Admin).await?;
        self.audit(Some(id), Event::SessionRevoked, who, client).await;
        Ok(n)
    }

    /// A user's audit events.
    pub async fn audit_events(
        &self,
        who: &ServiceIdentity,
        client: &ClientInfo,
        user_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditEvent>, String), Error> {
        let id = parse_id(user_id)?;
        let page = self.core.audit.list(id, page_size, page_token).await?;
        self.audit(Some(id), Event::AdminRead, who, client).await;
        Ok(page)
    }
}
