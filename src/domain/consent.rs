//! Consent: the purposes a reader can consent to, the policy version in force, and the
//! append-only records of every grant and withdrawal. The learner profile's `consent_given`
//! is the purpose [`BACKGROUND_PURPOSE`]; [`super::profile::Profiles`] records its changes
//! in the profile's own transaction.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{client::ClientInfo, error::Error};
use crate::storage::ConsentRow;

/// The purpose `Profile.consent_given` stands for: storing the learner background fields.
pub const BACKGROUND_PURPOSE: &str = "learner_background";

/// What readers can consent to, and the policy version in force.
#[derive(Debug, Clone)]
pub struct ConsentPolicy {
    /// The version of the privacy policy in force; a grant of another version is outdated.
    pub version: String,
    /// Every purpose, [`BACKGROUND_PURPOSE`] first.
    pub purposes: Vec<String>,
}

impl Default for ConsentPolicy {
    fn default() -> Self {
        Self { version: "1".into(), purposes: vec![BACKGROUND_PURPOSE.into()] }
    }
}

impl ConsentPolicy {
    /// A policy of `version` over `extra` purposes besides the background one. Purposes are
    /// 1 to 64 characters of `a-z`, `0-9`, `_`, `-` and `.`; the version is 1 to 64 printable
    /// characters.
    pub fn new(version: &str, extra: &[String]) -> Result<Self, String> {
        let version = version.trim();
        if version.is_empty() || version.chars().count() > 64 || version.chars().any(char::is_control) {
            return Err("the consent policy version must be 1 to 64 printable characters".into());
        }
        let mut purposes = vec![BACKGROUND_PURPOSE.to_owned()];
        for purpose in extra.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let valid = purpose.len() <= 64
                && purpose.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
            if !valid {
                return Err(format!("consent purpose {purpose:?}: use 1 to 64 of a-z, 0-9, _, - and ."));
            }
            if !purposes.iter().any(|p| p == purpose) {
                purposes.push(purpose.to_owned());
            }
        }
        Ok(Self { version: version.to_owned(), purposes })
    }

    /// Checks that `purpose` is configured.
    pub fn check(&self, purpose: &str) -> Result<(), Error> {
        if self.purposes.iter().any(|p| p == purpose) {
            Ok(())
        } else {
            Err(Error::invalid("purpose", format!("must be one of: {}", self.purposes.join(", "))))
        }
    }

    /// The record of a grant or withdrawal of `purpose` now, under the version in force.
    pub fn record(
        &self,
        user_id: Uuid,
        purpose: &str,
        granted: bool,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> ConsentRow {
        ConsentRow {
            seq: 0,
            id: Uuid::now_v7(),
            user_id,
            purpose: purpose.to_owned(),
            policy_version: self.version.clone(),
            granted,
            ip_address: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            created_at: now,
        }
    }

    /// Where a user stands for every purpose, given their latest record of each.
    pub fn states(&self, latest: &[ConsentRow]) -> Vec<ConsentState> {
        self.purposes
            .iter()
            .map(|purpose| match latest.iter().find(|r| &r.purpose == purpose) {
                Some(r) => ConsentState {
                    purpose: purpose.clone(),
                    granted: r.granted,
                    policy_version: r.granted.then(|| r.policy_version.clone()),
                    outdated: r.granted && r.policy_version != self.version,
                    updated_at: Some(r.created_at),
                },
                None => ConsentState { purpose: purpose.clone(), ..Default::default() },
            })
            .collect()
    }
}

/// One recorded grant or withdrawal, as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// Id.
    pub id: Uuid,
    /// What for.
    pub purpose: String,
    /// The policy version in force then.
    pub policy_version: String,
    /// Grant or withdrawal.
    pub granted: bool,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Forwarded IP (a network after retention).
    pub ip_address: Option<String>,
    /// Forwarded user agent.
    pub user_agent: Option<String>,
}

impl From<ConsentRow> for ConsentRecord {
    fn from(r: ConsentRow) -> Self {
        Self {
            id: r.id,
            purpose: r.purpose,
            policy_version: r.policy_version,
            granted: r.granted,
            created_at: r.created_at,
            ip_address: r.ip_address,
            user_agent: r.user_agent,
        }
    }
}

/// Where a user stands for one purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentState {
    /// The purpose.
    pub purpose: String,
    /// The latest record is a grant.
    pub granted: bool,
    /// The version of that grant.
    pub policy_version: Option<String>,
    /// Granted under an earlier version than the one in force.
    pub outdated: bool,
    /// When the latest record was made.
    pub updated_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_checked_and_background_comes_first() {
        let policy = ConsentPolicy::new("2026-01", &["analytics".into(), "learner_background".into()]).unwrap();
        assert_eq!(policy.purposes, ["learner_background", "analytics"]);
        assert!(policy.check("analytics").is_ok());
        assert!(policy.check("marketing").is_err());
        assert!(ConsentPolicy::new("", &[]).is_err());
        assert!(ConsentPolicy::new("1", &["Bad Purpose".into()]).is_err());
    }

    #[test]
    fn a_grant_of_an_earlier_version_is_outdated() {
        let policy = ConsentPolicy::new("2", &["analytics".into()]).unwrap();
        let now = Utc::now();
        let mut old = ConsentPolicy::new("1", &[]).unwrap().record(
            Uuid::nil(),
            "learner_background",
            true,
            &ClientInfo::default(),
            now,
        );
        old.seq = 1;
        let states = policy.states(&[old]);
        assert!(states[0].granted && states[0].outdated);
        assert_eq!(states[0].policy_version.as_deref(), Some("1"));
        assert_eq!(states[1], ConsentState { purpose: "analytics".into(), ..Default::default() });
    }
}
