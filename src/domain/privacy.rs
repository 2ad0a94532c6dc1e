//! The reader's own data and what the operator can prove: the data export (GDPR Art. 15 and
//! 20), the privacy report, and the retention that redacts client addresses and agents.

use std::{net::IpAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    audit::{Event, Outcome},
    client::ClientInfo,
    consent::ConsentPolicy,
    core::Core,
    error::Error,
};
use crate::storage::{ClientDataTable, UserExportRows};

/// The export document's format name.
pub const EXPORT_FORMAT: &str = "gatehouse.export.v1";

/// How client data past retention is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// IPv4 to its /24, IPv6 to its /48; the user agent cleared.
    Truncate,
    /// Both cleared.
    Clear,
}

impl Redaction {
    /// The configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncate => "truncate",
            Self::Clear => "clear",
        }
    }

    /// What an IP address becomes. Text that is not an address is cleared.
    pub fn apply(self, ip: Option<&str>) -> Option<String> {
        let ip: IpAddr = ip?.trim().parse().ok()?;
        match self {
            Self::Clear => None,
            Self::Truncate => Some(match ip {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0/24")
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    format!("{}/48", std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
                }
            }),
        }
    }
}

/// How long client data is kept.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// After this long, IP addresses and user agents are redacted.
    pub personal_data: TimeDelta,
    /// How.
    pub redaction: Redaction,
}

/// An export, ready to hand out.
#[derive(Debug, Clone)]
pub struct Export {
    /// The JSON document.
    pub document: String,
    /// When it was read.
    pub exported_at: DateTime<Utc>,
}

/// Consent counts for one purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurposeConsent {
    /// The purpose.
    pub purpose: String,
    /// Granted under the version in force.
    pub current: u64,
    /// Granted under an earlier version.
    pub outdated: u64,
    /// Never granted, or withdrawn.
    pub none: u64,
}

/// The privacy report.
#[derive(Debug, Clone)]
pub struct PrivacyReport {
    /// The consent policy version in force.
    pub policy_version: String,
    /// Users that exist.
    pub users: u64,
    /// Per purpose, in configuration order.
    pub purposes: Vec<PurposeConsent>,
    /// Period start.
    pub since: DateTime<Utc>,
    /// Period end.
    pub until: DateTime<Utc>,
    /// ExportMyData calls in the period.
    pub self_exports: u64,
    /// ExportUserData calls in the period.
    pub admin_exports: u64,
    /// Accounts deleted in the period.
    pub deletions: u64,
    /// The client-data retention.
    pub retention: RetentionPolicy,
    /// Audit events are deleted after this long.
    pub audit_retention: TimeDelta,
    /// Feed entries are deleted after this long.
    pub feed_retention: TimeDelta,
}

/// Exports, reports and client-data retention.
pub struct Privacy {
    core: Arc<Core>,
    policy: ConsentPolicy,
    retention: RetentionPolicy,
    audit_retention: TimeDelta,
    feed_retention: TimeDelta,
}

/// Rows redacted per statement batch, so one pass never holds the database for long.
const REDACT_BATCH: i64 = 500;

fn time(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, time)
}

/// The document for `rows`: every table that holds the user's data, under its own name, with
/// every column but secrets (hashes of tokens, encrypted provider tokens, PKCE verifiers).
fn document(rows: &UserExportRows, exported_at: DateTime<Utc>) -> Value {
    let u = &rows.user.user;
    let users = json!([{
        "id": u.id.to_string(), "email": u.email, "name": u.name, "image": u.image,
        "email_verified": u.email_verified, "has_password": rows.has_password,
        "failed_sign_ins": rows.failed_sign_ins, "locked_until": opt_time(rows.locked_until),
        "disabled_at": opt_time(rows.user.disabled_at),
        "created_at": time(u.created_at), "updated_at": time(u.updated_at),
    }]);
    let json_list = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let profiles: Vec<Value> = rows
        .profile
        .iter()
        .map(|p| {
            json!({
                "programming_level": p.programming_level, "programming_languages": json_list(&p.programming_languages),
                "ai_knowledge_level": p.ai_knowledge_level, "hardware_experience": p.hardware_experience,
                "learning_style": p.learning_style, "software_background": p.software_background,
                "hardware_background": p.hardware_background, "role": p.role, "interests": json_list(&p.interests),
                "onboarding_completed": p.onboarding_completed, "consent_given": p.consent_given,
                "consent_updated_at": opt_time(p.consent_updated_at),
                "consent_policy_version": p.consent_policy_version,
                "created_at": time(p.created_at), "updated_at": time(p.updated_at),
            })
        })
        .collect();
    let sessions: Vec<Value> = rows
        .sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id.to_string(), "created_at": time(s.created_at), "expires_at": time(s.expires_at),
                "last_active_at": time(s.last_active_at), "ip_address": s.ip_address, "user_agent": s.user_agent,
                "aal": s.aal, "amr": s.amr.split_whitespace().collect::<Vec<_>>(),
            })
        })
        .collect();
    let accounts: Vec<Value> = rows
        .accounts
        .iter()
        .map(|a| {
            json!({
                "id": a.id.to_string(), "provider": a.provider, "provider_account_id": a.provider_account_id,
                "email": a.email, "email_verified": a.email_verified, "scopes": a.scopes,
                "access_token_expires_at": opt_time(a.access_token_expires_at),
                "created_at": time(a.created_at), "updated_at": time(a.updated_at),
            })
        })
        .collect();
    let tokens: Vec<Value> = rows
        .email_tokens
        .iter()
        .map(|t| {
            json!({
                "id": t.id.to_string(), "purpose": t.purpose, "new_email": t.new_email, "created_at": time(t.created_at),
                "expires_at": time(t.expires_at), "used_at": opt_time(t.used_at),
            })
        })
        .collect();
    let flows: Vec<Value> = rows
        .oauth_states
        .iter()
        .map(|f| {
            json!({
                "provider": f.provider, "redirect_uri": f.redirect_uri, "created_at": time(f.created_at),
                "expires_at": time(f.expires_at), "used_at": opt_time(f.used_at),
            })
        })
        .collect();
    let consents: Vec<Value> = rows
        .consent_records
        .iter()
        .map(|c| {
            json!({
                "id": c.id.to_string(), "purpose": c.purpose, "policy_version": c.policy_version, "granted": c.granted,
                "ip_address": c.ip_address, "user_agent": c.user_agent, "created_at": time(c.created_at),
            })
        })
        .collect();
    let events: Vec<Value> = rows
        .audit_events
        .iter()
        .map(|e| {
            json!({
                "id": e.id.to_string(), "event": e.event, "outcome": e.outcome, "reason": e.reason,
                "ip_address": e.ip_address, "user_agent": e.user_agent, "created_at": time(e.created_at),
            })
        })
        .collect();
    let revocations: Vec<Value> = rows
        .revocations
        .iter()
        .map(
            |r| json!({ "session_id": r.session_id.to_string(), "reason": r.reason, "created_at": time(r.created_at) }),
        )
        .collect();
    // The secret and its key are never exported: the user has it in their app.
    let factors: Vec<Value> = rows
        .factors
        .iter()
        .map(|f| {
            json!({
                "id": f.id.to_string(), "kind": f.kind, "name": f.name, "created_at": time(f.created_at),
                "credential_id": f.credential_id.as_deref().map(|id| URL_SAFE_NO_PAD.encode(id)),
                "confirmed_at": opt_time(f.confirmed_at), "last_used_at": opt_time(f.last_used_at),
            })
        })
        .collect();
    let codes: Vec<Value> = rows
        .recovery_codes
        .iter()
        .map(|(id, created, used)| json!({ "id": id.to_string(), "created_at": time(*created), "used_at": opt_time(*used) }))
        .collect();
    let challenges: Vec<Value> = rows
        .challenges
        .iter()
        .map(|c| {
            json!({
                "id": c.id.to_string(), "first_factor": c.first_factor, "failures": c.failures,
                "created_at": time(c.created_at), "expires_at": time(c.expires_at), "used_at": opt_time(c.used_at),
            })
        })
        .collect();
    let ceremonies: Vec<Value> = rows
        .ceremonies
        .iter()
        .map(|c| {
            json!({
                "id": c.id.to_string(), "kind": c.kind, "name": c.name, "created_at": time(c.created_at),
                "expires_at": time(c.expires_at), "used_at": opt_time(c.used_at),
            })
        })
        .collect();
    let changes: Vec<Value> = rows.user_changes.iter().map(|c| json!({ "created_at": time(c.created_at) })).collect();
    json!({
        "format": EXPORT_FORMAT,
        "exported_at": time(exported_at),
        "user_id": u.id.to_string(),
        "tables": {
            "users": users,
            "profiles": profiles,
            "sessions": sessions,
            "accounts": accounts,
            "verification_tokens": tokens,
            "oauth_states": flows,
            "consent_records": consents,
            "audit_events": events,
            "revocations": revocations,
            "user_changes": changes,
            "factors": factors,
            "recovery_codes": codes,
            "second_factor_challenges": challenges,
            "passkey_ceremonies": ceremonies,
        },
    })
}

impl Privacy {
    /// Privacy operations under the consent `policy` and the retention settings.
    pub fn new(
        core: Arc<Core>,
        policy: ConsentPolicy,
        retention: RetentionPolicy,
        audit_retention: TimeDelta,
        feed_retention: TimeDelta,
    ) -> Self {
        Self { core, policy, retention, audit_retention, feed_retention }
    }

    /// Everything stored about `user_id`; `NotFound` if there is no such user.
    #[tracing::instrument(skip_all)]
    pub async fn export(&self, user_id: Uuid) -> Result<Export, Error> {
        let rows = self.core.store.export_user(user_id).await?.ok_or(Error::NotFound("user"))?;
        let exported_at = self.core.now();
        let document = serde_json::to_string_pretty(&document(&rows, exported_at))
            .map_err(|e| Error::Internal(anyhow::anyhow!("encoding the export: {e}")))?;
        Ok(Export { document, exported_at })
    }

    /// The caller's own export, audited as `data_exported`.
    pub async fn export_mine(&self, user_id: Uuid, client: &ClientInfo) -> Result<Export, Error> {
        let export = self.export(user_id).await?;
        self.core.audit.record(Some(user_id), Event::DataExported, Outcome::Success, None, client).await;
        Ok(export)
    }

    /// The privacy report for `[since, until]`.
    #[tracing::instrument(skip_all)]
    pub async fn report(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<PrivacyReport, Error> {
        let users = u64::try_from(self.core.store.count_users().await?).unwrap_or(0);
        let counts = self.core.store.consent_counts().await?;
        let purposes = self
            .policy
            .purposes
            .iter()
            .map(|purpose| {
                let (mut current, mut outdated) = (0u64, 0u64);
                for c in counts.iter().filter(|c| &c.purpose == purpose) {
                    let n = u64::try_from(c.users).unwrap_or(0);
                    if c.policy_version == self.policy.version {
                        current += n;
                    } else {
                        outdated += n;
                    }
                }
                PurposeConsent {
                    purpose: purpose.clone(),
                    current,
                    outdated,
                    none: users.saturating_sub(current + outdated),
                }
            })
            .collect();
        let count = async |event: Event| -> Result<u64, Error> {
            Ok(u64::try_from(self.core.store.count_audit_events(event.as_str(), since, until).await?).unwrap_or(0))
        };
        Ok(PrivacyReport {
            policy_version: self.policy.version.clone(),
            users,
            purposes,
            since,
            until,
            self_exports: count(Event::DataExported).await?,
            admin_exports: count(Event::AdminExport).await?,
            deletions: count(Event::AccountDeleted).await?,
            retention: self.retention,
            audit_retention: self.audit_retention,
            feed_retention: self.feed_retention,
        })
    }

    /// Redacts the client data of rows older than the retention; returns how many changed.
    pub async fn redact_expired(&self) -> Result<u64, Error> {
        let before = self.core.now() - self.retention.personal_data;
        let mut done = 0;
        for table in ClientDataTable::ALL {
            loop {
                let batch = self.core.store.unredacted_clients(table, before, REDACT_BATCH).await?;
                for (id, ip) in &batch {
                    let redacted = self.retention.redaction.apply(ip.as_deref());
                    self.core.store.redact_client(table, *id, redacted.as_deref()).await?;
                }
                done += batch.len() as u64;
                if (batch.len() as i64) < REDACT_BATCH {
                    break;
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_network() {
        let t = Redaction::Truncate;
        assert_eq!(t.apply(Some("203.0.113.77")).as_deref(), Some("203.0.113.0/24"));
        assert_eq!(t.apply(Some("2001:db8:abcd:12::1")).as_deref(), Some("2001:db8:abcd::/48"));
        assert_eq!(t.apply(Some("not an address")), None);
        assert_eq!(t.apply(None), None);
        assert_eq!(Redaction::Clear.apply(Some("203.0.113.77")), None);
    }
}
