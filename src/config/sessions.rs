//! Session lifetimes, email links and the sign-in lockout.

use std::time::Duration;

use clap::Args;

use super::delta;
use crate::domain::{AuthConfig, Lockout, links::LinkLifetimes, password::PasswordPolicy, session::SessionLifetimes};

/// Session lifetimes, email links and the sign-in lockout.
#[derive(Clone, Args)]
#[command(next_help_heading = "Sessions and recovery")]
pub struct SessionArgs {
    /// Absolute session lifetime.
    #[arg(long, env = "GATEHOUSE_SESSION_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// A session unused for this long ends.
    #[arg(long, env = "GATEHOUSE_SESSION_IDLE_TIMEOUT", default_value = "7days", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,

    /// How often GetSession may write a session's last_active_at.
    #[arg(long, env = "GATEHOUSE_SESSION_REFRESH_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub session_refresh_interval: Duration,

    /// How often expired sessions are deleted.
    #[arg(long, env = "GATEHOUSE_SESSION_PRUNE_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub session_prune_interval: Duration,

    /// For an account without a password (created through a provider), a sign-in at most this
    /// old stands in for the password that DeleteAccount and RequestEmailChange re-check.
    #[arg(long, env = "GATEHOUSE_REAUTH_MAX_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub reauth_max_age: Duration,

    /// Refuse sign-in until the email address is verified; sign-up then returns no session and
    /// answers a duplicate address exactly like a new one.
    #[arg(long, env = "GATEHOUSE_REQUIRE_EMAIL_VERIFICATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_email_verification: bool,

    /// Lifetime of verification and email-change links.
    #[arg(long, env = "GATEHOUSE_VERIFICATION_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub verification_ttl: Duration,

    /// Lifetime of password-reset links.
    #[arg(long, env = "GATEHOUSE_RESET_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub reset_ttl: Duration,

    /// Failed sign-ins in a row before an account is slowed down.
    #[arg(long, env = "GATEHOUSE_LOCKOUT_THRESHOLD", default_value_t = 5)]
    pub lockout_threshold: u32,

    /// First lock after the threshold; doubles with each further failure.
    #[arg(long, env = "GATEHOUSE_LOCKOUT_BASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lockout_base: Duration,

    /// Longest lock.
    #[arg(long, env = "GATEHOUSE_LOCKOUT_MAX", default_value = "15m", value_parser = humantime::parse_duration)]
    pub lockout_max: Duration,
}

impl SessionArgs {
    /// How long sessions live.
    pub fn lifetimes(&self) -> anyhow::Result<SessionLifetimes> {
        Ok(SessionLifetimes { ttl: delta(self.session_ttl)?, idle_timeout: delta(self.session_idle_timeout)? })
    }

    /// How often `GetSession` may write a session's `last_active_at`.
    pub fn refresh_interval(&self) -> anyhow::Result<chrono::TimeDelta> {
        delta(self.session_refresh_interval)
    }

    /// How long email links live.
    pub fn link_lifetimes(&self) -> anyhow::Result<LinkLifetimes> {
        Ok(LinkLifetimes { verification: delta(self.verification_ttl)?, reset: delta(self.reset_ttl)? })
    }

    /// The sign-in rules, with `password`'s rules for new passwords.
    pub fn auth_config(&self, password: PasswordPolicy) -> anyhow::Result<AuthConfig> {
        Ok(AuthConfig {
            password,
            require_email_verification: self.require_email_verification,
            lockout: Lockout {
                threshold: self.lockout_threshold,
                base: delta(self.lockout_base)?,
                max: delta(self.lockout_max)?,
            },
            reauth_max_age: delta(self.reauth_max_age)?,
        })
    }
}
