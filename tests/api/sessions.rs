//! Session lifetime, sliding idle expiry, listing and revocation.

use chrono::TimeDelta;
use tonic::Code;

use crate::{
    backends,
    helpers::{PASSWORD, TestApp, bearer},
};
use gatehouse::proto::v1 as pb;

backends! {
    app:
    idle_timeout_slides_with_use,
    absolute_lifetime_ends_even_an_active_session,
    last_active_is_written_once_per_refresh_interval,
    list_sessions_marks_the_current_one,
    revoke_one_session,
    revoke_other_sessions_spares_other_users;
}

crate::through_pgbouncer! {
    app:
    idle_timeout_slides_with_use,
    absolute_lifetime_ends_even_an_active_session,
    list_sessions_marks_the_current_one,
    revoke_one_session,
    revoke_other_sessions_spares_other_users;
}

const IDLE: TimeDelta = TimeDelta::days(7);
const TTL: TimeDelta = TimeDelta::days(30);
const SECOND: TimeDelta = TimeDelta::seconds(1);

async fn idle_timeout_slides_with_use(app: &TestApp) {
    let token = app.sign_up("idle@example.com").await.session_token;
    app.clock.advance(IDLE - SECOND);
    assert!(app.get_session(&token).await.is_ok(), "at idle - 1s the session lives and slides");
    app.clock.advance(SECOND * 2);
    assert!(app.get_session(&token).await.is_ok(), "the earlier use moved the idle deadline");
    app.clock.advance(IDLE + SECOND);
    assert_eq!(app.get_session(&token).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn absolute_lifetime_ends_even_an_active_session(app: &TestApp) {
    let token = app.sign_up("absolute@example.com").await.session_token;
    let mut elapsed = TimeDelta::zero();
    while elapsed + IDLE / 2 < TTL {
        app.clock.advance(IDLE / 2);
        elapsed += IDLE / 2;
        assert!(app.get_session(&token).await.is_ok(), "alive after {elapsed}");
    }
    app.clock.advance(TTL - elapsed - SECOND);
    let last = app.get_session(&token).await.unwrap().session.unwrap();
    // Near the end, expires_at is the absolute expiry, not the idle deadline.
    assert_eq!(last.expires_at.unwrap().seconds, last.created_at.unwrap().seconds + TTL.num_seconds());
    app.clock.advance(SECOND * 2);
    assert_eq!(app.get_session(&token).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn last_active_is_written_once_per_refresh_interval(app: &TestApp) {
    let up = app.sign_up("touch@example.com").await;
    let created = up.session.unwrap().last_active_at.unwrap();
    let stored = || app.db.query_texts("SELECT CAST(last_active_at AS TEXT) FROM sessions");

    let before = stored().await;
    app.clock.advance(TimeDelta::minutes(4));
    let seen = app.get_session(&up.session_token).await.unwrap().session.unwrap();
    assert_eq!(seen.last_active_at.unwrap(), created, "within the refresh interval nothing is written");
    assert_eq!(stored().await, before);

    app.clock.advance(TimeDelta::minutes(2));
    let seen = app.get_session(&up.session_token).await.unwrap().session.unwrap();
    assert_eq!(seen.last_active_at.unwrap().seconds, created.seconds + 6 * 60);
    assert_ne!(stored().await, before);
}

async fn list_sessions_marks_the_current_one(app: &TestApp) {
    let first = app.sign_up("lister@example.com").await.session_token;
    app.clock.advance(TimeDelta::minutes(1));
    let second = app.sign_in("lister@example.com", PASSWORD).await.unwrap();
    let sessions =
        app.auth().list_sessions(bearer(pb::ListSessionsRequest {}, &first)).await.unwrap().into_inner().sessions;
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(app.get_session(&first).await.unwrap().session.unwrap().id, current[0].id);
    // Most recently used first.
    assert_eq!(sessions[0].id, second.session.unwrap().id);
}

async fn revoke_one_session(app: &TestApp) {
    let a = app.sign_up("alice@example.com").await;
    let a2 = app.sign_in("alice@example.com", PASSWORD).await.unwrap();
    let b = app.sign_up("bob@example.com").await;

    // Bob cannot revoke Alice's session: it is not found for him.
    let a2_id = a2.session.clone().unwrap().id;
    let err = app
        .auth()
        .revoke_session(bearer(pb::RevokeSessionRequest { session_id: a2_id.clone() }, &b.session_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(app.get_session(&a2.session_token).await.is_ok());

    let bad = app
        .auth()
        .revoke_session(bearer(pb::RevokeSessionRequest { session_id: "not-a-uuid".into() }, &a.session_token))
        .await
        .unwrap_err();
    assert_eq!(crate::helpers::violated_fields(&bad), ["session_id"]);

    app.auth().revoke_session(bearer(pb::RevokeSessionRequest { session_id: a2_id }, &a.session_token)).await.unwrap();
    assert_eq!(app.get_session(&a2.session_token).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(app.get_session(&a.session_token).await.is_ok());
}

async fn revoke_other_sessions_spares_other_users(app: &TestApp) {
    let keep = app.sign_up("many@example.com").await.session_token;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(app.sign_in("many@example.com", PASSWORD).await.unwrap().session_token);
    }
    let bystander = app.sign_up("bystander@example.com").await.session_token;

    let revoked = app
        .auth()
        .revoke_other_sessions(bearer(pb::RevokeOtherSessionsRequest {}, &keep))
        .await
        .unwrap()
        .into_inner()
        .revoked_count;
    assert_eq!(revoked, 2);
    for token in &others {
        assert_eq!(app.get_session(token).await.unwrap_err().code(), Code::Unauthenticated);
    }
    assert!(app.get_session(&keep).await.is_ok());
    assert!(app.get_session(&bystander).await.is_ok());
}
