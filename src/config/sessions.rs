//! Session lifetimes, email links and the sign-in lockout.

use std::time::Duration;

use clap::Args;

use super::delta;
use crate::domain::{
    AuthConfig, Lockout, consent::ConsentPolicy, factors::FactorConfig, links::LinkLifetimes, password::PasswordPolicy,
    session::SessionLifetimes, session_cache::CacheSettings,
};

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

    /// Issuer shown by authenticator apps next to the account (the `otpauth://` URI's issuer;
    /// no colon).
    #[arg(long, env = "GATEHOUSE_TOTP_ISSUER", default_value = "Gatehouse")]
    pub totp_issuer: String,

    /// Changing second factors needs a sign-in at most this old (and one that used the second
    /// factor, once there is one); older sessions get FAILED_PRECONDITION with the
    /// `REAUTHENTICATION_REQUIRED` reason.
    #[arg(long, env = "GATEHOUSE_STEP_UP_MAX_AGE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub step_up_max_age: Duration,

    /// WebAuthn relying-party id: the registrable domain passkeys are bound to (the site's
    /// host or a parent of it, e.g. `book.example.com` or `example.com`).
    #[arg(long, env = "GATEHOUSE_WEBAUTHN_RP_ID", default_value = "localhost")]
    pub webauthn_rp_id: String,

    /// WebAuthn relying-party name, shown by browsers and passkey managers.
    #[arg(long, env = "GATEHOUSE_WEBAUTHN_RP_NAME", default_value = "Gatehouse")]
    pub webauthn_rp_name: String,

    /// Origins (scheme, host and port, exactly) the browser may run passkey ceremonies on:
    /// the front end's, comma-separated. Each must be the RP id or a subdomain of it.
    #[arg(
        long,
        env = "GATEHOUSE_WEBAUTHN_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:3000,http://localhost:8000"
    )]
    pub webauthn_origins: Vec<String>,

    /// Also require that step-up for ChangePassword, DeleteAccount and RequestEmailChange (on
    /// top of the password they re-check).
    #[arg(long, env = "GATEHOUSE_STEP_UP_ACCOUNT_CHANGES", default_value_t = false, action = clap::ArgAction::Set)]
    pub step_up_account_changes: bool,

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

    /// Most validated sessions cached in memory per replica (0 turns the cache off). Every
    /// revocation and user change evicts before its RPC returns, and other replicas evict
    /// from the feed.
    #[arg(long, env = "GATEHOUSE_SESSION_CACHE_ENTRIES", default_value_t = 100_000)]
    pub session_cache_entries: u64,

    /// Longest a cached session is served after its database read (0 turns the cache off).
    #[arg(long, env = "GATEHOUSE_SESSION_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub session_cache_ttl: Duration,

    /// Longest the revocation feed's follower may go without confirming it is caught up
    /// before the cache is bypassed (listener or database down).
    #[arg(long, env = "GATEHOUSE_SESSION_CACHE_FEED_BOUND", default_value = "1s", value_parser = humantime::parse_duration)]
    pub session_cache_feed_bound: Duration,
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

    /// The session cache's size, age and feed bound.
    pub fn cache_settings(&self) -> anyhow::Result<CacheSettings> {
        if self.session_cache_feed_bound < Duration::from_millis(100) {
            anyhow::bail!("--session-cache-feed-bound must be at least 100ms: the feed is polled within it");
        }
        Ok(CacheSettings {
            entries: self.session_cache_entries,
            ttl: self.session_cache_ttl,
            feed_bound: self.session_cache_feed_bound,
        })
    }

    /// How often the feed follower reads the feeds when no notice wakes it: well inside the
    /// cache's feed bound, so a healthy follower never lets the cache lapse.
    pub fn feed_poll(&self) -> Duration {
        (self.session_cache_feed_bound / 4).min(Duration::from_millis(500))
    }

    /// How long email links live.
    pub fn link_lifetimes(&self) -> anyhow::Result<LinkLifetimes> {
        Ok(LinkLifetimes { verification: delta(self.verification_ttl)?, reset: delta(self.reset_ttl)? })
    }

    /// The second-factor rules.
    pub fn factor_config(&self) -> anyhow::Result<FactorConfig> {
        if self.totp_issuer.contains(':') || self.totp_issuer.trim().is_empty() {
            anyhow::bail!("--totp-issuer must be non-empty and must not contain ':'");
        }
        Ok(FactorConfig {
            issuer: self.totp_issuer.trim().to_owned(),
            step_up_max_age: delta(self.step_up_max_age)?,
            step_up_account_changes: self.step_up_account_changes,
            require_email_verification: self.require_email_verification,
            lockout: self.lockout()?,
            rp_id: self.webauthn_rp_id.trim().to_owned(),
            rp_name: self.webauthn_rp_name.trim().to_owned(),
            origins: self
                .webauthn_origins
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .map(|o| url::Url::parse(o).map_err(|e| anyhow::anyhow!("GATEHOUSE_WEBAUTHN_ORIGINS: {o:?}: {e}")))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    fn lockout(&self) -> anyhow::Result<Lockout> {
        Ok(Lockout {
            threshold: self.lockout_threshold,
            base: delta(self.lockout_base)?,
            max: delta(self.lockout_max)?,
        })
    }

    /// The sign-in rules, with `password`'s rules for new passwords.
    pub fn auth_config(&self, password: PasswordPolicy, consent: ConsentPolicy) -> anyhow::Result<AuthConfig> {
        Ok(AuthConfig {
            password,
            require_email_verification: self.require_email_verification,
            lockout: self.lockout()?,
            reauth_max_age: delta(self.reauth_max_age)?,
            consent,
        })
    }
}
