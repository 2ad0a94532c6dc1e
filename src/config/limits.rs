//! Rate limits and where their counters live.

use clap::Args;

use crate::domain::limits::{Rate, Rates};

/// Rate limits and where their counters live.
#[derive(Clone, Args)]
#[command(next_help_heading = "Rate limits")]
pub struct LimitArgs {
    /// Enforce rate limits.
    #[arg(long, env = "GATEHOUSE_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limits: bool,

    /// SignIn attempts per email and client IP.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_PER_ACCOUNT", default_value = "5/1m")]
    pub rate_sign_in_per_account: Rate,

    /// SignIn attempts per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_PER_IP", default_value = "30/1m")]
    pub rate_sign_in_per_ip: Rate,

    /// SignIn attempts per email from any IP (and password re-checks of that account): holds
    /// off a guesser spread over many addresses. The owner is held off too while it applies.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_PER_EMAIL", default_value = "20/15m")]
    pub rate_sign_in_per_email: Rate,

    /// SignIn attempts in all, whatever the email and IP: a ceiling for a guesser that varies
    /// both. Size it well above the peak of real traffic (per replica set, with Redis).
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_IN_GLOBAL", default_value = "3000/1m")]
    pub rate_sign_in_global: Rate,

    /// StartOAuth calls per client IP (each stores a pending sign-in).
    #[arg(long, env = "GATEHOUSE_RATE_OAUTH_START_PER_IP", default_value = "30/1m")]
    pub rate_oauth_start_per_ip: Rate,

    /// IPv6 clients are counted by network for every per-IP limit: the first this many bits
    /// (64: one /64, what a subscriber or a cloud host usually holds). 128 keys each address.
    #[arg(long, env = "GATEHOUSE_RATE_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub rate_ipv6_prefix: u8,

    /// SignUp calls per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_SIGN_UP_PER_IP", default_value = "10/1h")]
    pub rate_sign_up_per_ip: Rate,

    /// RequestPasswordReset calls per email.
    #[arg(long, env = "GATEHOUSE_RATE_RESET_PER_EMAIL", default_value = "3/1h")]
    pub rate_reset_per_email: Rate,

    /// RequestPasswordReset calls per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_RESET_PER_IP", default_value = "20/1h")]
    pub rate_reset_per_ip: Rate,

    /// SendVerificationEmail and RequestEmailChange calls per account.
    #[arg(long, env = "GATEHOUSE_RATE_VERIFICATION_PER_ACCOUNT", default_value = "3/1h")]
    pub rate_verification_per_account: Rate,

    /// VerifyEmail and ResetPassword calls per client IP.
    #[arg(long, env = "GATEHOUSE_RATE_REDEEM_PER_IP", default_value = "20/1m")]
    pub rate_redeem_per_ip: Rate,

    /// Redis for rate-limit counters shared by every replica; unset keeps them in-process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of Gatehouse's Redis keys.
    #[arg(long, env = "GATEHOUSE_REDIS_PREFIX", default_value = "gatehouse")]
    pub redis_prefix: String,
}

impl LimitArgs {
    /// The configured rates.
    pub fn rates(&self) -> Rates {
        Rates {
            sign_in_per_account_ip: self.rate_sign_in_per_account,
            sign_in_per_ip: self.rate_sign_in_per_ip,
            sign_in_per_email: self.rate_sign_in_per_email,
            sign_in_global: self.rate_sign_in_global,
            sign_up_per_ip: self.rate_sign_up_per_ip,
            password_reset_per_email: self.rate_reset_per_email,
            password_reset_per_ip: self.rate_reset_per_ip,
            verification_per_account: self.rate_verification_per_account,
            redeem_per_ip: self.rate_redeem_per_ip,
            oauth_start_per_ip: self.rate_oauth_start_per_ip,
        }
    }
}
