//! Throttling a distributed guesser: a per-account sign-in limit that holds whatever addresses
//! the guesses come from, a global ceiling, IPv6 clients counted by network, and a limit on
//! StartOAuth. Each behaviour runs on SQLite and PostgreSQL with the in-process limiter, and on
//! two replicas sharing their counters through Redis.

use std::{process::Stdio, time::Duration};

use chrono::TimeDelta;
use gatehouse::{Config, proto::v1 as pb};
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{Backend, PASSWORD, TestApp, TestDb, bearer, from_ip, spawn_app_with, spawn_on};

const GITHUB_REDIRECT: &str = "https://app.example/auth/github/callback";

crate::backends! {
    (fixture OneServer):
        a_guesser_on_many_addresses_meets_the_account_limit => account_limit,
        the_global_ceiling_holds_when_emails_and_addresses_vary => global_ceiling,
        ipv6_clients_are_counted_by_network => ipv6_per_ip,
        start_oauth_is_limited_per_address => oauth_start_limit;
}

/// The same behaviours on two replicas sharing Redis counters.
mod redis {
    use super::*;

    crate::backends! {
        (fixture redis Replicas):
            a_guesser_on_many_addresses_meets_the_account_limit => account_limit,
            the_global_ceiling_holds_when_emails_and_addresses_vary => global_ceiling,
            ipv6_clients_are_counted_by_network => ipv6_per_ip,
            start_oauth_is_limited_per_address => oauth_start_limit;
    }
}

/// One server with in-process counters.
pub struct OneServer(Vec<TestApp>);

impl std::ops::Deref for OneServer {
    type Target = [TestApp];
    fn deref(&self) -> &[TestApp] {
        &self.0
    }
}

impl crate::helpers::Fixture for OneServer {
    async fn start(backend: Backend, tweak: fn(&mut Config)) -> Option<Self> {
        Some(OneServer(vec![spawn_app_with(backend, tweak).await?]))
    }

    async fn finish(mut self) {
        if let Some(app) = self.0.pop() {
            app.finish().await;
        }
    }
}

/// Two servers on one database whose counters live under one fresh Redis prefix.
pub struct Replicas(Vec<TestApp>);

impl std::ops::Deref for Replicas {
    type Target = [TestApp];
    fn deref(&self) -> &[TestApp] {
        &self.0
    }
}

impl crate::helpers::Fixture for Replicas {
    async fn start(backend: Backend, tweak: fn(&mut Config)) -> Option<Self> {
        let (one, two) = replicas(backend, tweak).await?;
        Some(Replicas(vec![one, two]))
    }

    async fn finish(mut self) {
        if let (Some(two), Some(one)) = (self.0.pop(), self.0.pop()) {
            two.stop_only().await;
            one.finish().await;
        }
    }
}

/// Two servers on one database, counting under one fresh Redis prefix.
async fn replicas(backend: Backend, tweak: fn(&mut Config)) -> Option<(TestApp, TestApp)> {
    let url = crate::abuse::redis_url().await?;
    let prefix = format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple());
    let shared = |c: &mut Config| {
        tweak(c);
        c.limits.redis_url = Some(url.clone());
        c.limits.redis_prefix = prefix.clone();
    };
    let one = spawn_app_with(backend, shared).await?;
    let two = spawn_on(one.db.clone(), shared).await;
    Some((one, two))
}

/// Moves every replica's clock.
fn advance(apps: &[TestApp], by: TimeDelta) {
    for app in apps {
        app.clock.advance(by);
    }
}

async fn sign_in(app: &TestApp, email: &str, password: &str, ip: &str) -> Result<(), Status> {
    let request = from_ip(pb::SignInRequest { email: email.into(), password: password.into() }, ip);
    app.auth().sign_in(request).await.map(|_| ())
}

fn retry_delay(status: &Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    status.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo")
}

/// The production per-email limit (20 per 15 minutes); the rest stay generous.
fn account_limit(c: &mut Config) {
    c.limits.rate_sign_in_per_email = Config::default_for_test().limits.rate_sign_in_per_email;
}

async fn a_guesser_on_many_addresses_meets_the_account_limit(apps: &[TestApp]) {
    let email = "target@example.com";
    let session = apps[0].sign_up(email).await.session_token;
    apps[0].sign_up("bystander@example.com").await;
    // Twenty attempts, each from its own address (so no per-IP or per-email-and-IP limit is
    // near), spread over the replicas; and as many for an address without an account.
    for i in 0..20 {
        let app = &apps[i % apps.len()];
        sign_in(app, email, PASSWORD, &format!("198.51.100.{}", i + 1)).await.unwrap();
        let unknown = sign_in(app, "nobody@example.com", PASSWORD, &format!("203.0.113.{}", i + 1)).await;
        assert_eq!(unknown.unwrap_err().code(), Code::Unauthenticated);
    }
    // The next one, from yet another address and spelled differently, meets the account's
    // limit, right password or not; the address without an account gets the same answer.
    let known = sign_in(&apps[apps.len() - 1], " Target@Example.COM", PASSWORD, "192.0.2.1").await.unwrap_err();
    let unknown = sign_in(&apps[0], "nobody@example.com", PASSWORD, "192.0.2.2").await.unwrap_err();
    let delay = retry_delay(&known);
    assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(15 * 60), "{delay:?}");
    assert_eq!(
        (known.code(), known.message(), known.details(), retry_delay(&known)),
        (unknown.code(), unknown.message(), unknown.details(), retry_delay(&unknown)),
        "the same answer whether the address has an account or not"
    );
    // The limit is the account's, not the addresses': others sign in from those addresses.
    sign_in(&apps[0], "bystander@example.com", PASSWORD, "192.0.2.1").await.unwrap();

    // Audited against the account, in its owner's history; without a user for the other address.
    let mut attributed = Vec::new();
    for _ in 0..50 {
        attributed = apps[0]
            .db
            .query_texts(
                "SELECT CASE WHEN user_id IS NULL THEN 'none' ELSE 'user' END FROM audit_events \
                 WHERE event = 'rate_limited' AND reason = 'sign_in_email' ORDER BY 1",
            )
            .await;
        if attributed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attributed, ["none", "user"]);
    let history = apps[0]
        .auth()
        .list_audit_events(bearer(pb::ListAuditEventsRequest { page_size: 100, page_token: String::new() }, &session))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history.iter().filter(|e| e.event == "rate_limited").count(), 1, "{history:?}");

    // The budget comes back with time.
    advance(apps, TimeDelta::minutes(15) + TimeDelta::seconds(1));
    sign_in(&apps[0], email, PASSWORD, "192.0.2.3").await.unwrap();
}

/// A low global ceiling (10 sign-ins a minute in all).
fn global_ceiling(c: &mut Config) {
    c.limits.rate_sign_in_global = "10/1m".parse().unwrap();
}

async fn the_global_ceiling_holds_when_emails_and_addresses_vary(apps: &[TestApp]) {
    // Every attempt names another email from another address: no narrower limit applies.
    for i in 0..10 {
        let refused =
            sign_in(&apps[i % apps.len()], &format!("spray{i}@example.com"), "a guess", &format!("198.51.100.{i}"))
                .await
                .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    for app in apps {
        let over = sign_in(app, "spray-next@example.com", "a guess", "203.0.113.99").await.unwrap_err();
        let delay = retry_delay(&over);
        assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(60), "{delay:?}");
    }
    let audited = "SELECT event FROM audit_events WHERE reason = 'sign_in_global'";
    assert!(eventually_some(&apps[0], audited).await, "ceiling hits are audited");
    advance(apps, TimeDelta::seconds(61));
    let again = sign_in(&apps[0], "spray-later@example.com", "a guess", "203.0.113.100").await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "the ceiling lifts: {again:?}");
}

/// Whether `sql` finds a row within a few seconds (rate-limit hits are audited after the
/// answer).
async fn eventually_some(app: &TestApp, sql: &'static str) -> bool {
    for _ in 0..50 {
        if !app.db.query_texts(sql).await.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Three sign-ins a minute per client address, IPv6 counted per /64 (the default).
fn ipv6_per_ip(c: &mut Config) {
    c.limits.rate_sign_in_per_ip = "3/1m".parse().unwrap();
}

async fn ipv6_clients_are_counted_by_network(apps: &[TestApp]) {
    let n = apps.len();
    // Three addresses of one /64: one budget.
    for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"].into_iter().enumerate() {
        let refused = sign_in(&apps[i % n], &format!("v6-{i}@example.com"), "a guess", ip).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let over = sign_in(&apps[n - 1], "v6-next@example.com", "a guess", "2001:db8:1:2:abcd::9").await.unwrap_err();
    retry_delay(&over);
    // The neighbouring /64 is another client, and so is an IPv4 address.
    for ip in ["2001:db8:1:3::1", "198.51.100.1"] {
        let refused = sign_in(&apps[0], "v6-other@example.com", "a guess", ip).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{ip}: {refused:?}");
    }
    // Audit records keep the full address.
    let ips = apps[0].db.query_texts("SELECT ip_address FROM audit_events WHERE event = 'sign_in'").await;
    assert!(ips.iter().any(|ip| ip == "2001:db8:1:2:ffff:ffff:ffff:ffff"), "{ips:?}");
}

/// GitHub configured (starting a flow needs no call to it), three starts a minute per address.
fn oauth_start_limit(c: &mut Config) {
    c.limits.rate_oauth_start_per_ip = "3/1m".parse().unwrap();
    c.oauth.github.client_id = Some("github-client".into());
    c.oauth.github.client_secret = Some(SecretString::from("github-secret"));
    c.oauth.github.redirect_uris = vec![GITHUB_REDIRECT.into()];
    c.oauth.github.authorize_url = "https://github.invalid/authorize".into();
    c.oauth.github.token_url = "https://github.invalid/token".into();
    c.oauth.github.api_url = "https://github.invalid".into();
}

async fn start_oauth(app: &TestApp, ip: &str) -> Result<pb::StartOAuthResponse, Status> {
    let request =
        from_ip(pb::StartOAuthRequest { provider: "github".into(), redirect_uri: GITHUB_REDIRECT.into() }, ip);
    app.auth().start_o_auth(request).await.map(tonic::Response::into_inner)
}

async fn start_oauth_is_limited_per_address(apps: &[TestApp]) {
    let n = apps.len();
    for i in 0..3 {
        start_oauth(&apps[i % n], "198.51.100.7").await.unwrap();
    }
    let over = start_oauth(&apps[n - 1], "198.51.100.7").await.unwrap_err();
    let delay = retry_delay(&over);
    assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(60), "{delay:?}");
    // A refused start stores nothing; another address starts.
    assert_eq!(apps[0].db.count("oauth_states").await, 3);
    start_oauth(&apps[0], "198.51.100.8").await.unwrap();
    let audited = "SELECT event FROM audit_events WHERE reason = 'oauth_start_ip'";
    assert!(eventually_some(&apps[0], audited).await, "the hit is audited");
    advance(apps, TimeDelta::seconds(61));
    start_oauth(&apps[0], "198.51.100.7").await.unwrap();
    assert_eq!(apps[0].db.count("oauth_states").await, 5);
}

/// Starts the binary with `extra` environment and returns its log lines up to "gatehouse
/// listening".
async fn start_log(db: &TestDb, extra: &[(&str, &str)]) -> Vec<String> {
    let data_dir = tempfile::tempdir().unwrap();
    let port = crate::shutdown::free_port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_HTTP_LISTEN", format!("127.0.0.1:{}", crate::shutdown::free_port()))
        .env("GATEHOUSE_DATA_DIR", data_dir.path())
        .env("GATEHOUSE_SECRET", "throttle-test-secret-throttle-test-secret")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the gatehouse binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("gatehouse listening");
            seen.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("the server started within 30 s");
    child.kill().await.unwrap();
    seen
}

/// Trusting loopback (the default) believes every sidecar caller's x-forwarded-for: said at
/// start, and not said once the trusted proxies leave loopback out.
async fn loopback_trust_is_warned_on(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else { return };
    let warning = "x-forwarded-for is believed from loopback peers";
    let default = start_log(&db, &[]).await;
    assert!(default.iter().any(|l| l.contains("WARN") && l.contains(warning)), "{default:#?}");
    let narrowed = start_log(&db, &[("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    assert!(!narrowed.iter().any(|l| l.contains(warning)), "{narrowed:#?}");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_trust_is_warned_sqlite() {
    loopback_trust_is_warned_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
async fn loopback_trust_is_warned_postgres() {
    loopback_trust_is_warned_on(Backend::Postgres).await;
}
