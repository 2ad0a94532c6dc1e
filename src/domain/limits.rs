//! Rate limits per RPC, keyed by client IP and by target account, so that credential stuffing
//! and mail bombing are held off. Counters live in-process or, with several replicas, in Redis.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::error::Error;

/// `count` events per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    /// Parses `5/1m`, `10/1h`, `3/30s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, per) = s.split_once('/').ok_or_else(|| format!("{s:?} is not COUNT/PERIOD, e.g. 5/1m"))?;
        let count: u32 = count.trim().parse().map_err(|_| format!("{count:?} is not a count"))?;
        let per = humantime::parse_duration(per.trim()).map_err(|e| format!("{per:?}: {e}"))?;
        if count == 0 || per.is_zero() {
            return Err("count and period must be positive".into());
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// The limited actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Sign-in attempts per email and IP pair.
    SignInPerAccountIp,
    /// Sign-in attempts per IP.
    SignInPerIp,
    /// Sign-in attempts per email, from any IP: what a guesser spread over many addresses
    /// meets.
    SignInPerEmail,
    /// Sign-in attempts in all, the ceiling that holds when both addresses and emails vary.
    SignInGlobal,
    /// Sign-ups per IP.
    SignUpPerIp,
    /// Password reset requests per email.
    PasswordResetPerEmail,
    /// Password reset requests per IP.
    PasswordResetPerIp,
    /// Verification or email-change mails per account.
    VerificationPerAccount,
    /// Token redemptions (VerifyEmail, ResetPassword) per IP.
    RedeemPerIp,
    /// Provider sign-ins started (StartOAuth, each storing a row) per IP.
    OAuthStartPerIp,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 10] = [
        Self::SignInPerAccountIp,
        Self::SignInPerIp,
        Self::SignInPerEmail,
        Self::SignInGlobal,
        Self::SignUpPerIp,
        Self::PasswordResetPerEmail,
        Self::PasswordResetPerIp,
        Self::VerificationPerAccount,
        Self::RedeemPerIp,
        Self::OAuthStartPerIp,
    ];

    /// Stable name (Redis keys, logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::SignInPerAccountIp => "sign_in_account_ip",
            Self::SignInPerIp => "sign_in_ip",
            Self::SignInPerEmail => "sign_in_email",
            Self::SignInGlobal => "sign_in_global",
            Self::SignUpPerIp => "sign_up_ip",
            Self::PasswordResetPerEmail => "reset_email",
            Self::PasswordResetPerIp => "reset_ip",
            Self::VerificationPerAccount => "verification_account",
            Self::RedeemPerIp => "redeem_ip",
            Self::OAuthStartPerIp => "oauth_start_ip",
        }
    }
}

/// The configured rate of each limit.
#[derive(Debug, Clone)]
pub struct Rates {
    /// `SignIn` per email and IP.
    pub sign_in_per_account_ip: Rate,
    /// `SignIn` per IP.
    pub sign_in_per_ip: Rate,
    /// `SignIn` per email, whatever the IP.
    pub sign_in_per_email: Rate,
    /// `SignIn` in all.
    pub sign_in_global: Rate,
    /// `SignUp` per IP.
    pub sign_up_per_ip: Rate,
    /// `RequestPasswordReset` per email.
    pub password_reset_per_email: Rate,
    /// `RequestPasswordReset` per IP.
    pub password_reset_per_ip: Rate,
    /// `SendVerificationEmail` and `RequestEmailChange` per account.
    pub verification_per_account: Rate,
    /// `VerifyEmail` and `ResetPassword` per IP.
    pub redeem_per_ip: Rate,
    /// `StartOAuth` per IP.
    pub oauth_start_per_ip: Rate,
}

impl Rates {
    /// The rate of `limit`.
    pub fn of(&self, limit: Limit) -> Rate {
        match limit {
            Limit::SignInPerAccountIp => self.sign_in_per_account_ip,
            Limit::SignInPerIp => self.sign_in_per_ip,
            Limit::SignInPerEmail => self.sign_in_per_email,
            Limit::SignInGlobal => self.sign_in_global,
            Limit::SignUpPerIp => self.sign_up_per_ip,
            Limit::PasswordResetPerEmail => self.password_reset_per_email,
            Limit::PasswordResetPerIp => self.password_reset_per_ip,
            Limit::VerificationPerAccount => self.verification_per_account,
            Limit::RedeemPerIp => self.redeem_per_ip,
            Limit::OAuthStartPerIp => self.oauth_start_per_ip,
        }
    }
}

/// Where counters are kept.
#[async_trait]
pub trait RateLimitBackend: Send + Sync {
    /// Counts one event for `key` under `limit`; `Some(retry_after)` if it is over the rate.
    async fn hit(&self, limit: Limit, rate: Rate, key: &str) -> Result<Option<Duration>, Error>;
    /// Forgets idle keys (memory backends).
    fn shrink(&self) {}
}

/// Checks limits; keys that name a person are keyed hashes, never addresses in the clear.
pub struct Limiter {
    backend: Arc<dyn RateLimitBackend>,
    rates: Rates,
    keyed: Option<Hmac<Sha256>>,
    ipv6_prefix: u8,
}

impl Limiter {
    /// A limiter over `backend`, keying IPv6 clients by their first `ipv6_prefix` bits; `None`
    /// for `secret` disables limiting.
    pub fn new(
        backend: Arc<dyn RateLimitBackend>,
        rates: Rates,
        secret: Option<&[u8]>,
        ipv6_prefix: u8,
    ) -> Result<Self, Error> {
        let keyed = match secret {
            Some(secret) => {
                let mut derive = Hmac::<Sha256>::new_from_slice(secret)
                    .map_err(|e| Error::Internal(anyhow::anyhow!("rate-limit key: {e}")))?;
                derive.update(b"gatehouse rate-limit key v1");
                Some(
                    Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes())
                        .map_err(|e| Error::Internal(anyhow::anyhow!("rate-limit key: {e}")))?,
                )
            }
            None => None,
        };
        Ok(Self { backend, rates, keyed, ipv6_prefix: ipv6_prefix.min(128) })
    }

    /// The key part for per-IP limits: an IPv4 address as it is, an IPv6 address as its
    /// network (`/64` by default), since one subscriber or one cloud host usually holds a whole
    /// /64 and would otherwise get a fresh budget from every address in it.
    pub fn ip_key(&self, ip: Option<&str>) -> String {
        match ip.map(|raw| raw.parse::<IpAddr>().map(|a| a.to_canonical())) {
            Some(Ok(IpAddr::V6(v6))) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.ipv6_prefix)).unwrap_or(0);
                format!("{}/{}", Ipv6Addr::from(u128::from(v6) & mask), self.ipv6_prefix)
            }
            Some(Ok(IpAddr::V4(v4))) => v4.to_string(),
            // Not an address (the peer was unknown): one shared bucket, as before.
            Some(Err(_)) | None => ip.unwrap_or("unknown").to_owned(),
        }
    }

    /// Counts an event of `limit` for the key made of `parts`; `RateLimited` when over.
    pub async fn check(&self, limit: Limit, parts: &[&str]) -> Result<(), Error> {
        let Some(keyed) = &self.keyed else { return Ok(()) };
        let mut mac = keyed.clone();
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        let digest = mac.finalize().into_bytes();
        let key: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        match self.backend.hit(limit, self.rates.of(limit), &key).await? {
            None => Ok(()),
            // The caller audits the hit (with the user and client it knows), which also emits
            // the tracing event.
            Some(retry_after) => Err(Error::RateLimited { retry_after }),
        }
    }

    /// Forgets idle counters.
    pub fn shrink(&self) {
        self.backend.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;

    #[async_trait]
    impl RateLimitBackend for Never {
        async fn hit(&self, _: Limit, _: Rate, _: &str) -> Result<Option<Duration>, Error> {
            Ok(None)
        }
    }

    fn limiter(prefix: u8) -> Limiter {
        let rate: Rate = "1/1m".parse().unwrap();
        let rates = Rates {
            sign_in_per_account_ip: rate,
            sign_in_per_ip: rate,
            sign_in_per_email: rate,
            sign_in_global: rate,
            sign_up_per_ip: rate,
            password_reset_per_email: rate,
            password_reset_per_ip: rate,
            verification_per_account: rate,
            redeem_per_ip: rate,
            oauth_start_per_ip: rate,
        };
        Limiter::new(Arc::new(Never), rates, None, prefix).unwrap()
    }

    #[test]
    fn ipv6_is_keyed_by_prefix() {
        let l = limiter(64);
        assert_eq!(l.ip_key(Some("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(l.ip_key(Some("2001:db8:1:2::ffff")), "2001:db8:1:2::/64");
        assert_eq!(l.ip_key(Some("2001:db8:1:3::1")), "2001:db8:1:3::/64");
        assert_eq!(l.ip_key(Some("203.0.113.7")), "203.0.113.7");
        assert_eq!(l.ip_key(Some("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(l.ip_key(None), "unknown");
        assert_eq!(limiter(128).ip_key(Some("2001:db8::1")), "2001:db8::1/128");
        assert_eq!(limiter(48).ip_key(Some("2001:db8:1:2::1")), "2001:db8:1::/48");
        assert_eq!(limiter(0).ip_key(Some("2001:db8:1:2::1")), "::/0");
    }
}
