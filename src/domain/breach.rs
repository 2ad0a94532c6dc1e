//! The optional breached-password check against a Have I Been Pwned-style range API, by
//! k-anonymity: only the first five hex digits of the password's SHA-1 leave the process, and
//! the answer (padded) lists every breached suffix under that prefix, so the service never
//! learns which password was asked about. The check fails open: an outage of the API must not
//! stop sign-ups, so it is counted and logged instead.

use std::time::Duration;

use reqwest::Url;
use sha1::{Digest, Sha1};

use super::password::Password;
use crate::metrics::METRICS;

/// A range answer larger than this is not a range answer (HIBP's are about 40 KB padded).
const MAX_RANGE_BYTES: usize = 2 * 1024 * 1024;

/// What the range API said about a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Seen this many times in breaches.
    Breached(u64),
    /// Not in the corpus.
    NotFound,
    /// The API did not answer usefully in time; the password was not checked.
    Unknown,
}

/// A client of the range API.
pub struct BreachedPasswords {
    http: reqwest::Client,
    endpoint: Url,
}

impl BreachedPasswords {
    /// A client of the API at `endpoint` (its `range/{prefix}` is asked), each call bounded by
    /// `timeout`.
    pub fn new(endpoint: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut endpoint = Url::parse(endpoint)
            .map_err(|e| anyhow::anyhow!("GATEHOUSE_BREACHED_PASSWORDS_API {endpoint:?} is not a URL: {e}"))?;
        if !matches!(endpoint.scheme(), "https" | "http") || endpoint.host().is_none() {
            anyhow::bail!(
                "GATEHOUSE_BREACHED_PASSWORDS_API must be an http(s) URL, such as https://api.pwnedpasswords.com/"
            );
        }
        if !endpoint.path().ends_with('/') {
            let path = format!("{}/", endpoint.path());
            endpoint.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, endpoint })
    }

    /// Looks `password` up. Never fails: an unusable answer is [`Verdict::Unknown`], counted and
    /// logged (without the hash prefix, which narrows the password down).
    pub async fn check(&self, password: &Password) -> Verdict {
        let digest = Sha1::digest(password.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        let (prefix, suffix) = hex.split_at(5);
        let verdict = match self.range(prefix).await {
            Ok(body) => match breach_count(&body, suffix) {
                Some(n) => Verdict::Breached(n),
                None => Verdict::NotFound,
            },
            Err(error) => {
                tracing::warn!(error = %format_args!("{error:#}"), "breached-password check failed; the password was accepted unchecked");
                Verdict::Unknown
            }
        };
        METRICS.breached_password_check(match verdict {
            Verdict::Breached(_) => "breached",
            Verdict::NotFound => "not_found",
            Verdict::Unknown => "failed",
        });
        verdict
    }

    async fn range(&self, prefix: &str) -> anyhow::Result<String> {
        let url = self.endpoint.join(&format!("range/{prefix}"))?;
        // reqwest's errors name the URL, and so the prefix: strip it.
        let mut response =
            self.http.get(url).header("Add-Padding", "true").send().await.map_err(|e| e.without_url())?;
        if !response.status().is_success() {
            anyhow::bail!("the range API answered HTTP {}", response.status().as_u16());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url())? {
            if body.len() + chunk.len() > MAX_RANGE_BYTES {
                anyhow::bail!("the range answer is larger than {MAX_RANGE_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| anyhow::anyhow!("the range answer is not text"))
    }
}

/// The breach count of `suffix` in a range answer (`SUFFIX:COUNT` lines); padding entries
/// carry a count of 0 and are no breach.
fn breach_count(body: &str, suffix: &str) -> Option<u64> {
    body.lines().find_map(|line| {
        let (candidate, count) = line.trim().split_once(':')?;
        if !candidate.eq_ignore_ascii_case(suffix) {
            return None;
        }
        count.trim().parse::<u64>().ok().filter(|n| *n > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::breach_count;

    #[test]
    fn padding_is_no_breach_and_case_does_not_matter() {
        let body = "0018A45C4D1DEF81644B54AB7F969B88D65:3\r\n1E4C9B93F3F0682250B6CF8331B7EE68FD8:0\r\n";
        assert_eq!(breach_count(body, "0018a45c4d1def81644b54ab7f969b88d65"), Some(3));
        assert_eq!(breach_count(body, "1E4C9B93F3F0682250B6CF8331B7EE68FD8"), None);
        assert_eq!(breach_count(body, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"), None);
    }
}
