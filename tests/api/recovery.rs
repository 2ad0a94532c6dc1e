//! Email verification, password reset and email change, with mail delivered over real SMTP
//! to a loopback server and links followed as a person would.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use futures_util::future::join_all;
use gatehouse::{Config, proto::v1 as pb};
use tonic::Code;

use crate::{
    backends,
    helpers::{PASSWORD, TestApp, bearer, violated_fields},
    smtp::SmtpServer,
};

backends! {
    mail:
    sign_up_sends_a_link_that_verifies_the_email,
    verification_links_are_single_use_superseded_and_expiring,
    tokens_are_bound_to_their_purpose,
    password_reset_ends_every_session,
    reset_links_expire_after_an_hour,
    concurrent_redemptions_of_one_token_succeed_once,
    reset_for_an_unknown_email_is_indistinguishable,
    email_change_happens_when_the_new_address_is_confirmed,
    required_verification_hides_duplicate_sign_ups => require_verification,
    mail_is_retried_when_the_relay_fails,
    tokens_are_stored_hashed;
}

crate::through_pgbouncer! {
    mail:
    sign_up_sends_a_link_that_verifies_the_email,
    password_reset_ends_every_session,
    concurrent_redemptions_of_one_token_succeed_once,
    reset_for_an_unknown_email_is_indistinguishable,
    email_change_happens_when_the_new_address_is_confirmed;
}

fn require_verification(c: &mut Config) {
    c.sessions.require_email_verification = true;
}

const NEW_PASSWORD: &str = "a fresh and long passphrase";

async fn verify(app: &TestApp, token: &str) -> Result<(), tonic::Status> {
    app.auth().verify_email(pb::VerifyEmailRequest { token: token.into() }).await.map(|_| ())
}

async fn reset(app: &TestApp, token: &str, password: &str) -> Result<(), tonic::Status> {
    app.auth()
        .reset_password(pb::ResetPasswordRequest { token: token.into(), new_password: password.into() })
        .await
        .map(|_| ())
}

async fn request_reset(app: &TestApp, email: &str) -> pb::RequestPasswordResetResponse {
    app.auth()
        .request_password_reset(pb::RequestPasswordResetRequest { email: email.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn sign_up_sends_a_link_that_verifies_the_email(app: &TestApp, smtp: &mut SmtpServer) {
    let up = app.sign_up("verify@example.com").await;
    assert!(!up.user.unwrap().email_verified);
    let mail = smtp.next_to("verify@example.com", "Confirm your email").await;
    assert!(mail.data.contains("http://localhost:3000/verify-email?token=gatelink_"), "{}", mail.data);
    verify(app, &mail.token()).await.unwrap();
    let user = app.get_session(&up.session_token).await.unwrap().user.unwrap();
    assert!(user.email_verified);
    // A verified address gets no new link.
    let again = app
        .auth()
        .send_verification_email(bearer(pb::SendVerificationEmailRequest {}, &up.session_token))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

async fn verification_links_are_single_use_superseded_and_expiring(app: &TestApp, smtp: &mut SmtpServer) {
    let up = app.sign_up("links@example.com").await;
    let first = smtp.next_to("links@example.com", "Confirm").await.token();
    app.auth().send_verification_email(bearer(pb::SendVerificationEmailRequest {}, &up.session_token)).await.unwrap();
    let second = smtp.next_to("links@example.com", "Confirm").await.token();
    assert_ne!(first, second);
    // The first link was superseded by the second.
    assert_eq!(violated_fields(&verify(app, &first).await.unwrap_err()), ["token"]);

    app.clock.advance(TimeDelta::hours(24) + TimeDelta::seconds(1));
    assert_eq!(violated_fields(&verify(app, &second).await.unwrap_err()), ["token"], "expired after 24 h");

    app.auth().send_verification_email(bearer(pb::SendVerificationEmailRequest {}, &up.session_token)).await.unwrap();
    let third = smtp.next_to("links@example.com", "Confirm").await.token();
    app.clock.advance(TimeDelta::hours(24) - TimeDelta::seconds(1));
    verify(app, &third).await.unwrap();
    assert_eq!(violated_fields(&verify(app, &third).await.unwrap_err()), ["token"], "used once");
    for garbage in ["", "gatelink_short", "gate_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(violated_fields(&verify(app, garbage).await.unwrap_err()), ["token"]);
    }
}

async fn tokens_are_bound_to_their_purpose(app: &TestApp, smtp: &mut SmtpServer) {
    app.sign_up("purpose@example.com").await;
    let verification = smtp.next_to("purpose@example.com", "Confirm").await.token();
    request_reset(app, "purpose@example.com").await;
    let reset_token = smtp.next_to("purpose@example.com", "Reset").await.token();

    assert_eq!(violated_fields(&reset(app, &verification, NEW_PASSWORD).await.unwrap_err()), ["token"]);
    assert_eq!(violated_fields(&verify(app, &reset_token).await.unwrap_err()), ["token"]);
    // Neither was spent by the failed attempts.
    verify(app, &verification).await.unwrap();
    reset(app, &reset_token, NEW_PASSWORD).await.unwrap();
}

async fn password_reset_ends_every_session(app: &TestApp, smtp: &mut SmtpServer) {
    let mut tokens = vec![app.sign_up("reset@example.com").await.session_token];
    for _ in 0..2 {
        tokens.push(app.sign_in("reset@example.com", PASSWORD).await.unwrap().session_token);
    }
    let answer = request_reset(app, "reset@example.com").await;
    assert_eq!(answer, pb::RequestPasswordResetResponse {});
    let mail = smtp.next_to("reset@example.com", "Reset your password").await;
    assert!(mail.data.contains("http://localhost:3000/reset-password?token=gatelink_"));
    let token = mail.token();

    // The password rules apply, and a refused password does not spend the token.
    let weak = reset(app, &token, "password1234").await.unwrap_err();
    assert_eq!(violated_fields(&weak), ["new_password"]);
    let personal = reset(app, &token, "reset-my-passphrase-9x").await.unwrap_err();
    assert_eq!(violated_fields(&personal), ["new_password"]);

    reset(app, &token, NEW_PASSWORD).await.unwrap();
    for t in &tokens {
        assert_eq!(app.get_session(t).await.unwrap_err().code(), Code::Unauthenticated);
    }
    assert_eq!(app.sign_in("reset@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(app.sign_in("reset@example.com", NEW_PASSWORD).await.is_ok());
    smtp.next_to("reset@example.com", "Your password was changed").await;
    assert_eq!(violated_fields(&reset(app, &token, "yet another passphrase").await.unwrap_err()), ["token"]);
}

async fn reset_links_expire_after_an_hour(app: &TestApp, smtp: &mut SmtpServer) {
    app.sign_up("expiry@example.com").await;
    request_reset(app, "expiry@example.com").await;
    let token = smtp.next_to("expiry@example.com", "Reset").await.token();
    app.clock.advance(TimeDelta::hours(1) + TimeDelta::seconds(1));
    assert_eq!(violated_fields(&reset(app, &token, NEW_PASSWORD).await.unwrap_err()), ["token"]);
    // Requesting a reset changed nothing by itself.
    assert!(app.sign_in("expiry@example.com", PASSWORD).await.is_ok());
}

async fn concurrent_redemptions_of_one_token_succeed_once(app: &TestApp, smtp: &mut SmtpServer) {
    app.sign_up("race@example.com").await;
    request_reset(app, "race@example.com").await;
    let token = smtp.next_to("race@example.com", "Reset").await.token();
    let attempts = (0..20).map(|i| {
        let mut client = app.auth();
        let token = token.clone();
        async move {
            client.reset_password(pb::ResetPasswordRequest { token, new_password: format!("{NEW_PASSWORD} {i}") }).await
        }
    });
    let results = join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
}

async fn reset_for_an_unknown_email_is_indistinguishable(app: &TestApp, smtp: &mut SmtpServer) {
    app.sign_up("known@example.com").await;
    smtp.next_to("known@example.com", "Confirm").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let a = app
            .auth()
            .request_password_reset(pb::RequestPasswordResetRequest { email: "known@example.com".into() })
            .await;
        known.push(t.elapsed());
        let t = Instant::now();
        let b = app
            .auth()
            .request_password_reset(pb::RequestPasswordResetRequest { email: format!("nobody{i}@example.com") })
            .await;
        unknown.push(t.elapsed());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.get_ref(), b.get_ref());
        assert_eq!(a.metadata().len(), b.metadata().len());
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[5], unknown[5]);
    let gap = k.abs_diff(u);
    assert!(gap < Duration::from_millis(25), "median {k:?} for a known address, {u:?} for an unknown one");
    // Only the account holder gets mail.
    for _ in 0..10 {
        smtp.next_to("known@example.com", "Reset").await;
    }
    smtp.assert_quiet(Duration::from_millis(300)).await;
}

async fn email_change_happens_when_the_new_address_is_confirmed(app: &TestApp, smtp: &mut SmtpServer) {
    let token = app.sign_up("old@example.com").await.session_token;
    app.sign_up("taken@example.com").await;
    let change = |new_email: &str, password: &str| {
        let mut client = app.auth();
        let request = bearer(
            pb::RequestEmailChangeRequest { new_email: new_email.into(), current_password: password.into() },
            &token,
        );
        async move { client.request_email_change(request).await }
    };
    let wrong = change("new@example.com", "not my password at all").await.unwrap_err();
    assert_eq!(violated_fields(&wrong), ["current_password"]);
    let same = change("OLD@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(violated_fields(&same), ["new_email"]);

    // A taken address: the same answer, a notice to the owner's current address, no link.
    change("taken@example.com", PASSWORD).await.unwrap();
    change("new@example.com", PASSWORD).await.unwrap();
    let mut link = None;
    let mut notices = 0;
    for _ in 0..5 {
        let mail = smtp.next().await;
        if mail.to == ["old@example.com"] && mail.subject().contains("being changed") {
            notices += 1;
        } else if mail.to == ["new@example.com"] {
            link = Some(mail.token());
        } else {
            assert!(
                !mail.to.contains(&"taken@example.com".to_string()) || mail.subject().contains("Confirm your email")
            );
        }
        if notices == 2 && link.is_some() {
            break;
        }
    }
    assert_eq!(notices, 2);
    // Nothing changes until the link is followed.
    assert!(app.sign_in("old@example.com", PASSWORD).await.is_ok());
    verify(app, &link.unwrap()).await.unwrap();
    assert_eq!(app.sign_in("old@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    let user = app.sign_in("new@example.com", PASSWORD).await.unwrap().user.unwrap();
    assert_eq!(user.email, "new@example.com");
    assert!(user.email_verified);
}

async fn required_verification_hides_duplicate_sign_ups(app: &TestApp, smtp: &mut SmtpServer) {
    let sign_up = |name: &str| {
        let mut client = app.auth();
        let request = pb::SignUpRequest {
            email: "owner@example.com".into(),
            password: PASSWORD.into(),
            name: name.into(),
            profile: None,
        };
        async move { client.sign_up(request).await.unwrap().into_inner() }
    };
    let fresh = sign_up("Owner").await;
    assert!(fresh.session.is_none() && fresh.session_token.is_empty(), "no session before verification");
    let link = smtp.next_to("owner@example.com", "Confirm").await.token();

    let refused = app.sign_in("owner@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // A duplicate gets an answer of the same shape, and the owner is told.
    let duplicate = sign_up("Intruder").await;
    assert!(duplicate.session.is_none() && duplicate.session_token.is_empty());
    let (a, b) = (fresh.user.unwrap(), duplicate.user.unwrap());
    assert_eq!(a.email, b.email);
    assert_ne!(a.id, b.id);
    assert!(!b.email_verified);
    smtp.next_to("owner@example.com", "Someone tried to sign up").await;
    assert_eq!(app.db.count("users").await, 1);

    verify(app, &link).await.unwrap();
    assert!(app.sign_in("owner@example.com", PASSWORD).await.is_ok());
}

async fn mail_is_retried_when_the_relay_fails(app: &TestApp, smtp: &mut SmtpServer) {
    smtp.fail_next(2);
    app.sign_up("retry@example.com").await;
    let mail = smtp.next_to("retry@example.com", "Confirm").await;
    verify(app, &mail.token()).await.unwrap();
}

async fn tokens_are_stored_hashed(app: &TestApp, smtp: &mut SmtpServer) {
    app.sign_up("hashed@example.com").await;
    let token = smtp.next_to("hashed@example.com", "Confirm").await.token();
    let hashes = app.db.query_blobs("SELECT token_hash FROM verification_tokens").await;
    assert_eq!(hashes.len(), 1);
    assert_eq!(hashes[0].len(), 32);
    assert!(!String::from_utf8_lossy(&hashes[0]).contains(&token));
    // Presenting the stored hash as a token does not work.
    let forged = format!("gatelink_{}", base64_url(&hashes[0]));
    assert_eq!(violated_fields(&verify(app, &forged).await.unwrap_err()), ["token"]);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
