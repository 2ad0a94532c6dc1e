//! The validated-session cache: for every cause a session stops validating (or its answer
//! changes), the very next `GetSession` on the same server shows it, with the cache warm; other
//! replicas hear within the feed bound; and a replica whose feed follower is deaf stops
//! answering from memory.
//!
//! A warm cache is proven, not assumed: [`warm`] deletes the session row behind Gatehouse's
//! back (no revocation is recorded, so nothing can evict) and checks the server still answers
//! from memory. Each test then restores the row and causes the change through the API.

use std::time::{Duration, Instant};

use gatehouse::{Config, proto::v1 as pb};
use tonic::Code;

use crate::{
    backends,
    helpers::{Backend, PASSWORD, TestApp, bearer, spawn_app_with, spawn_on},
    mesh::{admin, mesh_config, with_key},
};

backends! {
    app:
    the_cache_answers_from_memory,
    sign_out_is_refused_at_once,
    a_revoked_session_is_refused_at_once,
    revoking_the_others_is_refused_at_once,
    a_password_change_ends_the_others_and_shows_at_once,
    deleting_the_account_is_refused_at_once,
    verifying_the_email_shows_at_once,
    an_email_change_shows_at_once,
    a_password_reset_is_refused_at_once,
    idle_and_absolute_expiry_hold_on_a_cached_session;
    app:
    an_admin_disable_is_refused_at_once => mesh_config,
    an_admin_delete_is_refused_at_once => mesh_config,
    an_admin_revoke_is_refused_at_once => mesh_config;
    app:
    a_turned_off_cache_always_asks_the_database => cache_off;
    (fixture Pair):
    another_replica_hears_a_revocation_within_the_bound,
    another_replica_hears_a_user_change_within_the_bound,
    a_killed_listener_does_not_keep_a_revoked_session_alive;
    app:
    a_deaf_follower_stops_the_cache;
}

crate::through_pgbouncer! {
    app:
    the_cache_answers_from_memory,
    sign_out_is_refused_at_once,
    a_revoked_session_is_refused_at_once,
    a_password_change_ends_the_others_and_shows_at_once,
    deleting_the_account_is_refused_at_once;
    (fixture Pair):
    another_replica_hears_a_revocation_within_the_bound,
    another_replica_hears_a_user_change_within_the_bound;
}

const NEW_PASSWORD: &str = "a brand new passphrase 42";

fn cache_off(c: &mut Config) {
    c.sessions.session_cache_entries = 0;
}

/// The session row of `token`'s session, as stored, so that [`warm`] can put it back.
async fn session_id(app: &TestApp, token: &str) -> uuid::Uuid {
    app.get_session(token).await.unwrap().session.unwrap().id.parse().unwrap()
}

/// Makes sure `token`'s session is served from the cache: it validates, then its row is
/// deleted directly in the database and it still validates (only memory can answer), then the
/// row is restored exactly.
async fn warm(app: &TestApp, token: &str) {
    let id = session_id(app, token).await;
    app.db.execute("CREATE TABLE IF NOT EXISTS held_sessions AS SELECT * FROM sessions WHERE 1 = 0").await;
    app.db.execute_for("INSERT INTO held_sessions SELECT * FROM sessions WHERE id = $1", id).await;
    app.db.execute_for("DELETE FROM sessions WHERE id = $1", id).await;
    let answered = app.get_session(token).await;
    app.db.execute_for("INSERT INTO sessions SELECT * FROM held_sessions WHERE id = $1", id).await;
    app.db.execute_for("DELETE FROM held_sessions WHERE id = $1", id).await;
    assert!(answered.is_ok(), "the session was not served from the cache: {answered:?}");
}

fn refused(answer: Result<pb::GetSessionResponse, tonic::Status>) {
    let status = answer.expect_err("a stale cached session was served");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

async fn the_cache_answers_from_memory(app: &TestApp) {
    let token = app.sign_up("memory@example.com").await.session_token;
    warm(app, &token).await;
    // Restored: the database agrees again.
    assert!(app.get_session(&token).await.is_ok());
}

async fn a_turned_off_cache_always_asks_the_database(app: &TestApp) {
    let token = app.sign_up("off@example.com").await.session_token;
    let id = session_id(app, &token).await;
    app.get_session(&token).await.unwrap();
    app.db.execute_for("DELETE FROM sessions WHERE id = $1", id).await;
    refused(app.get_session(&token).await);
}

async fn sign_out_is_refused_at_once(app: &TestApp) {
    let token = app.sign_up("out@example.com").await.session_token;
    warm(app, &token).await;
    app.auth().sign_out(bearer(pb::SignOutRequest {}, &token)).await.unwrap();
    refused(app.get_session(&token).await);
}

async fn a_revoked_session_is_refused_at_once(app: &TestApp) {
    let first = app.sign_up("revoke@example.com").await.session_token;
    let second = app.sign_in("revoke@example.com", PASSWORD).await.unwrap().session_token;
    warm(app, &second).await;
    let id = session_id(app, &second).await.to_string();
    app.auth().revoke_session(bearer(pb::RevokeSessionRequest { session_id: id }, &first)).await.unwrap();
    refused(app.get_session(&second).await);
    assert!(app.get_session(&first).await.is_ok());
}

async fn revoking_the_others_is_refused_at_once(app: &TestApp) {
    let keep = app.sign_up("others@example.com").await.session_token;
    let other = app.sign_in("others@example.com", PASSWORD).await.unwrap().session_token;
    warm(app, &other).await;
    app.auth().revoke_other_sessions(bearer(pb::RevokeOtherSessionsRequest {}, &keep)).await.unwrap();
    refused(app.get_session(&other).await);
    assert!(app.get_session(&keep).await.is_ok());
}

async fn a_password_change_ends_the_others_and_shows_at_once(app: &TestApp) {
    let keep = app.sign_up("change@example.com").await.session_token;
    let other = app.sign_in("change@example.com", PASSWORD).await.unwrap().session_token;
    warm(app, &other).await;
    warm(app, &keep).await;
    let before = app.get_session(&keep).await.unwrap().user.unwrap().updated_at.unwrap();
    app.clock.advance(chrono::TimeDelta::seconds(5));
    let request = pb::ChangePasswordRequest {
        current_password: PASSWORD.into(),
        new_password: NEW_PASSWORD.into(),
        revoke_other_sessions: true,
    };
    app.auth().change_password(bearer(request, &keep)).await.unwrap();
    refused(app.get_session(&other).await);
    // The kept session shows the account's new update time, not the cached one.
    let after = app.get_session(&keep).await.unwrap().user.unwrap().updated_at.unwrap();
    assert!(after.seconds > before.seconds, "updated_at {after:?} is not after {before:?}");
}

async fn deleting_the_account_is_refused_at_once(app: &TestApp) {
    let token = app.sign_up("delete@example.com").await.session_token;
    warm(app, &token).await;
    app.auth().delete_account(bearer(pb::DeleteAccountRequest { password: PASSWORD.into() }, &token)).await.unwrap();
    refused(app.get_session(&token).await);
}

async fn verifying_the_email_shows_at_once(app: &TestApp) {
    let token = app.sign_up("verify@example.com").await.session_token;
    warm(app, &token).await;
    assert!(!app.get_session(&token).await.unwrap().user.unwrap().email_verified);
    let link = app.outbox_link("verify@example.com", "verify-email?token=").await;
    app.auth().verify_email(pb::VerifyEmailRequest { token: link }).await.unwrap();
    assert!(app.get_session(&token).await.unwrap().user.unwrap().email_verified);
}

async fn an_email_change_shows_at_once(app: &TestApp) {
    let token = app.sign_up("before@example.com").await.session_token;
    warm(app, &token).await;
    let request =
        pb::RequestEmailChangeRequest { new_email: "after@example.com".into(), current_password: PASSWORD.into() };
    app.auth().request_email_change(bearer(request, &token)).await.unwrap();
    let link = app.outbox_link("after@example.com", "?token=").await;
    app.auth().verify_email(pb::VerifyEmailRequest { token: link }).await.unwrap();
    assert_eq!(app.get_session(&token).await.unwrap().user.unwrap().email, "after@example.com");
}

async fn a_password_reset_is_refused_at_once(app: &TestApp) {
    let token = app.sign_up("reset@example.com").await.session_token;
    warm(app, &token).await;
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest { email: "reset@example.com".into() })
        .await
        .unwrap();
    let link = app.outbox_link("reset@example.com", "reset-password?token=").await;
    let request = pb::ResetPasswordRequest { token: link, new_password: NEW_PASSWORD.into() };
    app.auth().reset_password(request).await.unwrap();
    refused(app.get_session(&token).await);
}

async fn user_id(app: &TestApp, token: &str) -> String {
    app.get_session(token).await.unwrap().user.unwrap().id
}

async fn an_admin_disable_is_refused_at_once(app: &TestApp) {
    let token = app.sign_up("disable@example.com").await.session_token;
    let user_id = user_id(app, &token).await;
    warm(app, &token).await;
    admin(app).disable_user(with_key(pb::DisableUserRequest { user_id })).await.unwrap();
    refused(app.get_session(&token).await);
}

async fn an_admin_delete_is_refused_at_once(app: &TestApp) {
    let token = app.sign_up("admindelete@example.com").await.session_token;
    let user_id = user_id(app, &token).await;
    warm(app, &token).await;
    admin(app).delete_user(with_key(pb::DeleteUserRequest { user_id })).await.unwrap();
    refused(app.get_session(&token).await);
}

async fn an_admin_revoke_is_refused_at_once(app: &TestApp) {
    let token = app.sign_up("adminrevoke@example.com").await.session_token;
    let user_id = user_id(app, &token).await;
    warm(app, &token).await;
    admin(app).revoke_user_sessions(with_key(pb::RevokeUserSessionsRequest { user_id })).await.unwrap();
    refused(app.get_session(&token).await);
}

async fn idle_and_absolute_expiry_hold_on_a_cached_session(app: &TestApp) {
    let defaults = Config::default_for_test();
    let idle = chrono::TimeDelta::from_std(defaults.sessions.session_idle_timeout).unwrap();
    let ttl = chrono::TimeDelta::from_std(defaults.sessions.session_ttl).unwrap();
    let idle_token = app.sign_up("idle@example.com").await.session_token;
    let old_token = app.sign_in("idle@example.com", PASSWORD).await.unwrap().session_token;
    warm(app, &idle_token).await;
    warm(app, &old_token).await;
    // Keep one session in use (each use past the refresh interval slides its idle deadline);
    // leave the other idle.
    let step = idle - chrono::TimeDelta::hours(1);
    app.clock.advance(step);
    assert!(app.get_session(&old_token).await.is_ok());
    app.clock.advance(chrono::TimeDelta::hours(2));
    refused(app.get_session(&idle_token).await);
    // The used one still lives, until its absolute lifetime.
    assert!(app.get_session(&old_token).await.is_ok());
    warm(app, &old_token).await;
    let mut used = step + chrono::TimeDelta::hours(2);
    while used + step < ttl {
        app.clock.advance(step);
        used += step;
        assert!(app.get_session(&old_token).await.is_ok());
    }
    warm(app, &old_token).await;
    app.clock.advance(ttl - used);
    refused(app.get_session(&old_token).await);
}

/// Two servers on one database (a fresh database per test).
pub struct Pair {
    a: TestApp,
    b: TestApp,
}

impl crate::helpers::Fixture for Pair {
    async fn start(backend: Backend, tweak: fn(&mut Config)) -> Option<Self> {
        let a = spawn_app_with(backend, tweak).await?;
        let b = spawn_on(std::sync::Arc::clone(&a.db), tweak).await;
        Some(Self { a, b })
    }

    async fn finish(self) {
        self.b.stop_only().await;
        self.a.finish().await;
    }
}

/// How long until `check` holds on `app`, polling; panics after `limit`.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The bound the tests hold replicas to: the default feed bound.
const BOUND: Duration = Duration::from_secs(1);

async fn another_replica_hears_a_revocation_within_the_bound(pair: &Pair) {
    let token = pair.a.sign_up("replicas@example.com").await.session_token;
    warm(&pair.a, &token).await;
    pair.b.auth().sign_out(bearer(pb::SignOutRequest {}, &token)).await.unwrap();
    within(BOUND, async || pair.a.get_session(&token).await.is_err()).await;
    refused(pair.a.get_session(&token).await);
}

async fn another_replica_hears_a_user_change_within_the_bound(pair: &Pair) {
    let token = pair.a.sign_up("heard@example.com").await.session_token;
    warm(&pair.a, &token).await;
    // Mailed by A (which signed the user up); redeemed on B.
    let link = pair.a.outbox_link("heard@example.com", "verify-email?token=").await;
    pair.b.auth().verify_email(pb::VerifyEmailRequest { token: link }).await.unwrap();
    within(BOUND, async || pair.a.get_session(&token).await.unwrap().user.unwrap().email_verified).await;
}

async fn a_killed_listener_does_not_keep_a_revoked_session_alive(pair: &Pair) {
    let token = pair.a.sign_up("killed@example.com").await.session_token;
    warm(&pair.a, &token).await;
    // PostgreSQL: end every LISTEN connection on this database (A's among them). SQLite has
    // no listener; the follower polls, and the test holds it to the same bound.
    if pair.a.db.backend() == Backend::Postgres {
        let killed = pair
            .a
            .db
            .query_texts(
                "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            )
            .await;
        assert!(!killed.is_empty(), "no listener connection was found to kill");
    }
    pair.b.auth().sign_out(bearer(pb::SignOutRequest {}, &token)).await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(BOUND).await;
    // From the bound on, A never answers OK for that session.
    while started.elapsed() < BOUND * 2 {
        refused(pair.a.get_session(&token).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_deaf_follower_stops_the_cache(app: &TestApp) {
    let token = app.sign_up("deaf@example.com").await.session_token;
    warm(app, &token).await;
    let id = session_id(app, &token).await;
    // The follower can no longer read the feed (as when its database is gone), and the session
    // ends without a feed entry: only a cache that stops serving can refuse it.
    app.db.execute("ALTER TABLE revocations RENAME TO revocations_away").await;
    app.db.execute_for("DELETE FROM sessions WHERE id = $1", id).await;
    let status = within(BOUND * 3, async || app.get_session(&token).await.is_err()).await;
    app.db.execute("ALTER TABLE revocations_away RENAME TO revocations").await;
    assert!(status >= Duration::from_millis(200), "refused after {status:?}: the cache was not warm");
    refused(app.get_session(&token).await);
}
