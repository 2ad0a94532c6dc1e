//! Abuse protection and accountability: account lockout, rate limits (in-process and shared
//! through Redis), and the audit log.

use chrono::TimeDelta;
use gatehouse::{Config, proto::v1 as pb};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    backends,
    helpers::{Backend, PASSWORD, TestApp, bearer, from_ip, spawn_app_with, spawn_on, violated_fields},
    smtp::SmtpServer,
};

backends! {
    app:
        lockout_grows_and_expires,
        password_rechecks_count_towards_the_lockout,
        locked_accounts_refuse_password_rechecks,
        racing_password_changes_have_one_winner,
        audit_log_lists_the_callers_events;
    mail: password_reset_works_while_locked;
    own: limits_trip_and_recover;
    (own redis): replicas_share_one_limit_through_redis;
}

async fn lockout_grows_and_expires(app: &TestApp) {
    app.sign_up("locked@example.com").await;
    let wrong = app.sign_in("locked@example.com", "wrong password one").await.unwrap_err();
    for _ in 1..5 {
        app.sign_in("locked@example.com", "wrong password one").await.unwrap_err();
    }
    // Five failures lock the account for 30 s: the right password gets the same answer as a
    // wrong one, so a guesser learns nothing.
    let locked = app.sign_in("locked@example.com", PASSWORD).await.unwrap_err();
    assert_eq!((locked.code(), locked.message()), (wrong.code(), wrong.message()));
    app.clock.advance(TimeDelta::seconds(31));
    assert!(app.sign_in("locked@example.com", PASSWORD).await.is_ok(), "the lock expired");
    assert_eq!(app.db.query_texts("SELECT CAST(failed_sign_ins AS TEXT) FROM users").await, ["0"], "success resets");

    // Failures past the threshold lock for longer each time: 30 s, then 60 s.
    for _ in 0..5 {
        app.sign_in("locked@example.com", "wrong password two").await.unwrap_err();
    }
    app.clock.advance(TimeDelta::seconds(31));
    app.sign_in("locked@example.com", "wrong password three").await.unwrap_err();
    app.clock.advance(TimeDelta::seconds(31));
    assert_eq!(app.sign_in("locked@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    app.clock.advance(TimeDelta::seconds(30));
    assert!(app.sign_in("locked@example.com", PASSWORD).await.is_ok(), "never locked for good");
}

/// A stolen session cannot be used to guess the password through ChangePassword.
async fn password_rechecks_count_towards_the_lockout(app: &TestApp) {
    let token = app.sign_up("stolen@example.com").await.session_token;
    for i in 0..5 {
        let guess = pb::ChangePasswordRequest {
            current_password: format!("guess number {i}"),
            new_password: "the attacker's choice".into(),
            revoke_other_sessions: true,
        };
        let refused = app.auth().change_password(bearer(guess, &token)).await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["current_password"]);
    }
    // The account is now locked: even the owner's right password is refused for a while.
    assert_eq!(app.sign_in("stolen@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    app.clock.advance(TimeDelta::seconds(31));
    assert!(app.sign_in("stolen@example.com", PASSWORD).await.is_ok());
}

/// Every sign-in attempt's recorded reason (the outcome for a success).
async fn sign_in_reasons(app: &TestApp) -> Vec<String> {
    app.db.query_texts("SELECT COALESCE(reason, outcome) FROM audit_events WHERE event = 'sign_in'").await
}

/// Fires `wrong` wrong guesses (plus the right password when `with_right`) in parallel from
/// distinct forwarded IPs, spread over `apps`; returns how many got a session.
async fn burst(apps: &[&TestApp], email: &str, wrong: usize, with_right: bool) -> usize {
    let mut calls = Vec::new();
    let total = if with_right { wrong + 1 } else { wrong };
    for i in 0..total {
        let mut client = apps[i % apps.len()].auth();
        let password = if with_right && i == total / 2 { PASSWORD.to_owned() } else { format!("wrong guess {i}") };
        let request = from_ip(pb::SignInRequest { email: email.into(), password }, &format!("198.51.100.{}", i + 1));
        calls.push(tokio::spawn(async move { client.sign_in(request).await }));
    }
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        }
    }
    ok
}

/// Parallel guesses against one account (ZITADEL GHSA-7h8m-vrxx-vr4m: the lock must not be
/// read before hashing and trusted after). A pool with room for the whole burst, so that what
/// is measured is the lock, not connection waits.
mod bursts {
    use super::*;

    pub fn roomy_pool(c: &mut Config) {
        c.database.db_max_connections = 16;
        c.database.db_acquire_timeout = std::time::Duration::from_secs(10);
    }

    crate::backends! {
        app:
            a_parallel_burst_gets_no_more_guesses_than_the_threshold => roomy_pool,
            a_burst_split_over_two_replicas_gets_no_more_guesses => roomy_pool;
    }

    async fn a_parallel_burst_gets_no_more_guesses_than_the_threshold(app: &TestApp) {
        burst_outcome(&[app], app).await;
    }

    async fn a_burst_split_over_two_replicas_gets_no_more_guesses(app: &TestApp) {
        let second = spawn_on(app.db.clone(), roomy_pool).await;
        burst_outcome(&[app, &second], app).await;
        second.stop_only().await;
    }
}

/// Counts the burst's audit records after `before` earlier ones: (evaluated wrong, locked, success).
async fn burst_records(app: &TestApp, before: usize) -> (usize, usize, usize) {
    let reasons = sign_in_reasons(app).await;
    let burst = &reasons[before..];
    let count = |what: &str| burst.iter().filter(|r| *r == what).count();
    (count("wrong_password"), count("locked"), count("success"))
}

async fn burst_outcome(apps: &[&TestApp], app: &TestApp) {
    let email = "burst@example.com";
    app.sign_up(email).await;
    for i in 0..4 {
        app.sign_in(email, &format!("earlier wrong guess {i}")).await.unwrap_err();
    }

    // Threshold 5, four failures before: 30 parallel wrong guesses get exactly one evaluated;
    // the other 29 are refused as locked, unhashed.
    let before = sign_in_reasons(app).await.len();
    assert_eq!(burst(apps, email, 30, false).await, 0);
    let (wrong, locked, _) = burst_records(app, before).await;
    assert_eq!((wrong, locked), (1, 29), "one evaluated guess: {:?}", sign_in_reasons(app).await);
    // The lock applies to the owner's right password too, until it expires.
    assert_eq!(app.sign_in(email, PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    // Every replica's clock moves together, as real replicas' clocks do.
    for replica in apps {
        replica.clock.advance(TimeDelta::seconds(31));
    }

    // The attack as reported: four failures, then 29 wrong guesses and the right password at
    // once. Only a guess that took the last slot before the lock is evaluated; the right
    // password gets a session only if it was that guess, and then it starts a new window, so
    // the guesses still in flight get at most the threshold's worth before the lock again.
    let email = "burst-right@example.com";
    app.sign_up(email).await;
    for i in 0..4 {
        app.sign_in(email, &format!("earlier wrong guess {i}")).await.unwrap_err();
    }
    let before = sign_in_reasons(app).await.len();
    let sessions = burst(apps, email, 29, true).await;
    let (wrong, locked, success) = burst_records(app, before).await;
    assert_eq!(wrong + locked + success, 30, "{:?}", sign_in_reasons(app).await);
    assert_eq!(sessions, success);
    match sessions {
        0 => assert_eq!((wrong, locked), (1, 29), "one evaluated guess: {:?}", sign_in_reasons(app).await),
        1 => assert!(wrong <= 5, "a new window after the success, no more: {:?}", sign_in_reasons(app).await),
        n => panic!("{n} sessions from one burst"),
    }
    for replica in apps {
        replica.clock.advance(TimeDelta::seconds(31));
    }
    assert!(app.sign_in(email, PASSWORD).await.is_ok());
}

/// ChangePassword, DeleteAccount and RequestEmailChange refuse a locked account exactly as
/// sign-in does, even with the right password.
async fn locked_accounts_refuse_password_rechecks(app: &TestApp) {
    let email = "recheck@example.com";
    let token = app.sign_up(email).await.session_token;
    for i in 0..5 {
        app.sign_in(email, &format!("wrong guess {i}")).await.unwrap_err();
    }
    let change = pb::ChangePasswordRequest {
        current_password: PASSWORD.into(),
        new_password: "a brand new passphrase".into(),
        revoke_other_sessions: false,
    };
    let refused = app.auth().change_password(bearer(change.clone(), &token)).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["current_password"]);
    let wrong = pb::ChangePasswordRequest { current_password: "not the password".into(), ..change.clone() };
    let wrong = app.auth().change_password(bearer(wrong, &token)).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (wrong.code(), wrong.message()), "locked looks like wrong");
    let delete = pb::DeleteAccountRequest { password: PASSWORD.into() };
    let refused = app.auth().delete_account(bearer(delete.clone(), &token)).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["password"]);
    let move_to =
        pb::RequestEmailChangeRequest { new_email: "moved@example.com".into(), current_password: PASSWORD.into() };
    let refused = app.auth().request_email_change(bearer(move_to, &token)).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["current_password"]);
    assert_eq!(app.db.count("users").await, 1);

    app.clock.advance(TimeDelta::minutes(30));
    app.auth().change_password(bearer(change, &token)).await.expect("allowed once the lock expired");
}

/// 50 concurrent changes with the right current password: exactly one wins, one mail, one
/// audit event; the others learn the current password no longer matches.
async fn racing_password_changes_have_one_winner(app: &TestApp) {
    let token = app.sign_up("racer@example.com").await.session_token;
    let mut calls = Vec::new();
    for i in 0..50 {
        let mut client = app.auth();
        let request = bearer(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: format!("new passphrase number {i}"),
                revoke_other_sessions: false,
            },
            &token,
        );
        calls.push(tokio::spawn(async move { (i, client.change_password(request).await) }));
    }
    let mut winners = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            (i, Ok(_)) => winners.push(i),
            (_, Err(status)) => assert_eq!(violated_fields(&status), ["current_password"], "{status:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one change wins: {winners:?}");
    let winner = format!("new passphrase number {}", winners[0]);
    // Losers that checked the old password after the change count as wrong guesses and may
    // lock the account (as they should): let any lock expire before signing in.
    app.clock.advance(TimeDelta::days(1));
    assert!(app.sign_in("racer@example.com", &winner).await.is_ok(), "the winner's password works");
    assert!(app.sign_in("racer@example.com", PASSWORD).await.is_err());
    let changed = app
        .db
        .query_texts("SELECT outcome FROM audit_events WHERE event = 'password_changed' AND outcome = 'success'")
        .await;
    assert_eq!(changed.len(), 1);
    let mails = app.outbox_count("racer@example.com", "Subject: Your password was changed").await;
    assert_eq!(mails, 1);
}

async fn password_reset_works_while_locked(app: &TestApp, smtp: &mut SmtpServer) {
    app.sign_up("reset-locked@example.com").await;
    for _ in 0..6 {
        app.sign_in("reset-locked@example.com", "wrong password").await.unwrap_err();
    }
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest { email: "reset-locked@example.com".into() })
        .await
        .unwrap();
    let token = smtp.next_to("reset-locked@example.com", "Reset").await.token();
    app.auth()
        .reset_password(pb::ResetPasswordRequest { token, new_password: "unlocked at last, thanks".into() })
        .await
        .unwrap();
    assert!(app.sign_in("reset-locked@example.com", "unlocked at last, thanks").await.is_ok());
}

async fn audit_log_lists_the_callers_events(app: &TestApp) {
    let first = app.sign_up("audited@example.com").await.session_token;
    app.sign_in("audited@example.com", "a wrong password").await.unwrap_err();
    let mut request =
        from_ip(pb::SignInRequest { email: "audited@example.com".into(), password: PASSWORD.into() }, "198.51.100.23");
    request.metadata_mut().insert("x-forwarded-user-agent", "AuditBrowser/1.0".parse().unwrap());
    let second = app.auth().sign_in(request).await.unwrap().into_inner().session_token;
    app.auth()
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "another good passphrase".into(),
                revoke_other_sessions: false,
            },
            &second,
        ))
        .await
        .unwrap();
    app.auth().sign_out(bearer(pb::SignOutRequest {}, &second)).await.unwrap();
    app.sign_up("bystander@example.com").await;

    let list = |page_size: u32, page_token: String| {
        let mut client = app.auth();
        let request = bearer(pb::ListAuditEventsRequest { page_size, page_token }, &first);
        async move { client.list_audit_events(request).await.map(|r| r.into_inner()) }
    };
    let all = list(0, String::new()).await.unwrap();
    let names: Vec<(&str, &str)> = all.events.iter().map(|e| (e.event.as_str(), e.outcome.as_str())).collect();
    assert_eq!(
        names,
        [
            ("sign_out", "success"),
            ("password_changed", "success"),
            ("sign_in", "success"),
            ("sign_in", "failure"),
            ("verification_sent", "success"),
            ("sign_up", "success"),
        ],
        "newest first, only the caller's"
    );
    let sign_in = &all.events[2];
    assert_eq!(sign_in.ip_address, "198.51.100.23");
    assert_eq!(sign_in.user_agent, "AuditBrowser/1.0");

    // Paging walks the same events.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(4, token).await.unwrap();
        assert!(page.events.len() <= 4);
        paged.extend(page.events.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, all.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    assert_eq!(violated_fields(&list(0, "not-a-token".into()).await.unwrap_err()), ["page_token"]);
    assert_eq!(violated_fields(&list(101, String::new()).await.unwrap_err()), ["page_size"]);

    // No secret in any stored event, and the reason stays internal.
    let stored = app
        .db
        .query_texts(
            "SELECT event || ' ' || outcome || ' ' || COALESCE(reason, '') || ' ' || COALESCE(ip_address, '') || ' ' \
             || COALESCE(user_agent, '') FROM audit_events",
        )
        .await;
    assert!(stored.len() >= 7);
    for row in &stored {
        for secret in [PASSWORD, "a wrong password", "another good passphrase", first.as_str(), second.as_str()] {
            assert!(!row.contains(secret), "{row}");
        }
    }
    assert!(stored.iter().any(|r| r.contains("wrong_password")));
    // Append-only: the database refuses to change an event.
    assert!(app.db.try_execute("UPDATE audit_events SET outcome = 'success'").await.is_err());
}

/// Default limits (5 sign-ins a minute per email and IP), as production has them.
fn production_limits(c: &mut Config) {
    let defaults = Config::default_for_test();
    c.limits.rate_sign_in_per_account = defaults.limits.rate_sign_in_per_account;
    c.limits.rate_sign_in_per_ip = defaults.limits.rate_sign_in_per_ip;
    c.limits.rate_sign_up_per_ip = defaults.limits.rate_sign_up_per_ip;
    c.limits.rate_reset_per_email = defaults.limits.rate_reset_per_email;
}

async fn sign_in_from(app: &TestApp, email: &str, ip: &str) -> Result<(), tonic::Status> {
    let request = from_ip(pb::SignInRequest { email: email.into(), password: PASSWORD.into() }, ip);
    app.auth().sign_in(request).await.map(|_| ())
}

async fn limits_trip_and_recover(backend: Backend) {
    let Some(app) = spawn_app_with(backend, production_limits).await else { return };
    app.sign_up("other@example.com").await;
    let session = app.sign_up("limited@example.com").await.session_token;
    for _ in 0..5 {
        sign_in_from(&app, "limited@example.com", "203.0.113.1").await.unwrap();
    }
    let over = sign_in_from(&app, "limited@example.com", "203.0.113.1").await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    let retry = over.get_details_retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(retry.as_secs() >= 1 && retry.as_secs() <= 60, "{retry:?}");
    // Keyed by email and IP: other pairs are unaffected.
    sign_in_from(&app, "other@example.com", "203.0.113.1").await.unwrap();
    sign_in_from(&app, "limited@example.com", "203.0.113.2").await.unwrap();
    // Recovers as time passes.
    app.clock.advance(TimeDelta::seconds(61));
    sign_in_from(&app, "limited@example.com", "203.0.113.1").await.unwrap();
    let events = app.db.query_texts("SELECT event FROM audit_events WHERE event = 'rate_limited'").await;
    assert_eq!(events.len(), 1, "a rate-limit hit is audited");
    // ... against the account the address belongs to, so its owner sees it; the same goes for
    // reset requests (3 an hour per address), whose answer does not change.
    for _ in 0..4 {
        app.auth()
            .request_password_reset(from_ip(
                pb::RequestPasswordResetRequest { email: "limited@example.com".into() },
                "203.0.113.5",
            ))
            .await
            .map(|_| ())
            .or_else(|s| if s.code() == Code::ResourceExhausted { Ok(()) } else { Err(s) })
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let own = app
        .auth()
        .list_audit_events(bearer(pb::ListAuditEventsRequest { page_size: 100, page_token: String::new() }, &session))
        .await
        .unwrap()
        .into_inner()
        .events;
    let limited: Vec<_> = own.iter().filter(|e| e.event == "rate_limited").collect();
    assert_eq!(limited.len(), 2, "the sign-in and the reset hits are in the owner's history: {own:?}");

    // Per IP: 30 sign-ins a minute, whatever the email.
    for i in 0..30 {
        let _ = sign_in_from(&app, &format!("spray{i}@example.com"), "203.0.113.9").await;
    }
    let sprayed = sign_in_from(&app, "other@example.com", "203.0.113.9").await.unwrap_err();
    assert_eq!(sprayed.code(), Code::ResourceExhausted);
    app.finish().await;
}

/// Redis for the shared-limit tests; skipped locally when not reachable, required under CI.
pub(crate) async fn redis_url() -> Option<String> {
    // The tests that call this run only where Redis is configured (TEST_REDIS_URL when the
    // suite was built, or CI=true; elsewhere they are reported as ignored), so an unreachable
    // Redis is a failure, never a silent pass.
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = match redis::Client::open(url.as_str()) {
        Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
        Err(_) => false,
    };
    assert!(reachable, "Redis at {url} is not reachable; unset TEST_REDIS_URL to skip the Redis tests");
    Some(url)
}

async fn replicas_share_one_limit_through_redis(backend: Backend) {
    let Some(url) = redis_url().await else { return };
    let prefix = format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple());
    let shared = |c: &mut Config| {
        production_limits(c);
        c.limits.redis_url = Some(url.clone());
        c.limits.redis_prefix = prefix.clone();
    };
    let Some(one) = spawn_app_with(backend, shared).await else { return };
    let two = spawn_on(one.db.clone(), shared).await;
    one.sign_up("shared@example.com").await;
    // Five attempts spread over two replicas use up one budget.
    for i in 0..5 {
        let replica = if i % 2 == 0 { &one } else { &two };
        sign_in_from(replica, "shared@example.com", "203.0.113.5").await.unwrap();
    }
    for replica in [&one, &two] {
        let over = sign_in_from(replica, "shared@example.com", "203.0.113.5").await.unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted);
    }
    // The next window opens for both.
    one.clock.advance(TimeDelta::seconds(60));
    two.clock.advance(TimeDelta::seconds(60));
    sign_in_from(&two, "shared@example.com", "203.0.113.5").await.unwrap();
    let mut two = two;
    two.stop().await;
    one.finish().await;
}
