//! Consent purposes and policy version, and how long client data is kept.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::delta;
use crate::domain::{
    consent::ConsentPolicy,
    privacy::{Redaction, RetentionPolicy},
};

/// Consent purposes and policy version, and how long client data is kept.
#[derive(Clone, Args)]
#[command(next_help_heading = "Privacy")]
pub struct PrivacyArgs {
    /// The version of the privacy policy in force. Consent given under another version is
    /// reported as outdated until the reader consents again.
    #[arg(long, env = "GATEHOUSE_CONSENT_POLICY_VERSION", default_value = "1")]
    pub consent_policy_version: String,

    /// Purposes readers can consent to besides `learner_background` (the profile's background
    /// fields, always present), comma-separated, e.g. `analytics,newsletter`.
    #[arg(long, env = "GATEHOUSE_CONSENT_PURPOSES", value_delimiter = ',')]
    pub consent_purposes: Vec<String>,

    /// After this long, the IP address and user agent stored with sessions, audit events and
    /// consent records are redacted (by the pruner, every GATEHOUSE_SESSION_PRUNE_INTERVAL).
    #[arg(long, env = "GATEHOUSE_PERSONAL_DATA_RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub personal_data_retention: Duration,

    /// How: `truncate` keeps the network (IPv4 /24, IPv6 /48) and clears the user agent;
    /// `clear` clears both.
    #[arg(long, env = "GATEHOUSE_PERSONAL_DATA_REDACTION", value_enum, default_value_t = RedactionArg::Truncate)]
    pub personal_data_redaction: RedactionArg,
}

/// How client data is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedactionArg {
    /// Keep the network, clear the user agent.
    Truncate,
    /// Clear both.
    Clear,
}

impl PrivacyArgs {
    /// The consent policy.
    pub fn consent_policy(&self) -> anyhow::Result<ConsentPolicy> {
        ConsentPolicy::new(&self.consent_policy_version, &self.consent_purposes).map_err(anyhow::Error::msg)
    }

    /// How long client data is kept, and how it is redacted after.
    pub fn retention(&self) -> anyhow::Result<RetentionPolicy> {
        Ok(RetentionPolicy {
            personal_data: delta(self.personal_data_retention)?,
            redaction: match self.personal_data_redaction {
                RedactionArg::Truncate => Redaction::Truncate,
                RedactionArg::Clear => Redaction::Clear,
            },
        })
    }
}
