//! Sign-up, sign-in, credentials and account deletion.

use futures_util::future::join_all;
use tonic::Code;

use crate::{
    backends,
    helpers::{Backend, PASSWORD, TestApp, bearer, production_hashing, spawn_app_with, spawn_on, violated_fields},
};
use gatehouse::proto::v1 as pb;

backends! {
    app:
    round_trip,
    unknown_email_and_wrong_password_are_indistinguishable,
    emails_are_case_insensitive,
    concurrent_duplicate_sign_up_creates_one_user,
    sign_up_rejects_bad_input_per_field,
    sign_in_rejects_bad_input,
    password_rules,
    passwords_are_normalized_and_never_truncated,
    change_password,
    delete_account,
    sign_in_issues_a_new_token_each_time,
    forwarded_client_metadata_is_recorded,
    oversized_requests_are_refused;
    own: old_hash_parameters_are_upgraded_at_sign_in;
}

crate::through_pgbouncer! {
    app:
    round_trip,
    unknown_email_and_wrong_password_are_indistinguishable,
    concurrent_duplicate_sign_up_creates_one_user,
    sign_up_rejects_bad_input_per_field,
    change_password,
    delete_account,
    sign_in_issues_a_new_token_each_time;
}

async fn round_trip(app: &TestApp) {
    let up = app.sign_up("reader@example.com").await;
    let user = up.user.clone().unwrap();
    assert_eq!(user.email, "reader@example.com");
    assert!(!user.email_verified);
    assert!(up.session_token.starts_with("gate_"));

    let got = app.get_session(&up.session_token).await.unwrap();
    assert_eq!(got.user.unwrap().id, user.id);
    let session = got.session.unwrap();
    assert_eq!(session.id, up.session.unwrap().id);
    assert!(session.current);

    let signed_in = app.sign_in("reader@example.com", PASSWORD).await.unwrap();
    assert_eq!(signed_in.user.unwrap().id, user.id);
    assert!(app.get_session(&signed_in.session_token).await.is_ok());

    app.auth().sign_out(bearer(pb::SignOutRequest {}, &signed_in.session_token)).await.unwrap();
    let err = app.get_session(&signed_in.session_token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Signing out again is harmless but, the session being gone, unauthenticated.
    let again = app.auth().sign_out(bearer(pb::SignOutRequest {}, &signed_in.session_token)).await.unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    // The first session is untouched.
    assert!(app.get_session(&up.session_token).await.is_ok());
}

async fn unknown_email_and_wrong_password_are_indistinguishable(app: &TestApp) {
    app.sign_up("known@example.com").await;
    let wrong = app.sign_in("known@example.com", "not the right password").await.unwrap_err();
    let unknown = app.sign_in("nobody@example.com", "not the right password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.code(), unknown.code());
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(wrong.details(), unknown.details());
    assert_eq!(wrong.metadata().len(), unknown.metadata().len());
}

async fn emails_are_case_insensitive(app: &TestApp) {
    app.sign_up("  Mixed.Case@Example.COM ").await;
    let res = app.sign_in("mixed.case@example.com", PASSWORD).await.unwrap();
    assert_eq!(res.user.unwrap().email, "mixed.case@example.com");
    let dup = app
        .auth()
        .sign_up(pb::SignUpRequest {
            email: "MIXED.CASE@example.com".into(),
            password: PASSWORD.into(),
            name: "Other".into(),
            profile: None,
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
}

async fn concurrent_duplicate_sign_up_creates_one_user(app: &TestApp) {
    let attempts = (0..12).map(|i| {
        let mut client = app.auth();
        let email = if i % 2 == 0 { "race@example.com" } else { "RACE@Example.com" };
        async move {
            client
                .sign_up(pb::SignUpRequest {
                    email: email.into(),
                    password: PASSWORD.into(),
                    name: format!("Racer {i}"),
                    profile: None,
                })
                .await
        }
    });
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::AlreadyExists, "{r:?}");
    }
    assert_eq!(app.db.count("users").await, 1);
    assert_eq!(app.db.count("sessions").await, 1);
}

async fn sign_up_rejects_bad_input_per_field(app: &TestApp) {
    let cases: Vec<(pb::SignUpRequest, Vec<&str>)> = vec![
        (
            pb::SignUpRequest { email: "".into(), password: PASSWORD.into(), name: "A".into(), profile: None },
            vec!["email"],
        ),
        (
            pb::SignUpRequest {
                email: "not-an-email".into(),
                password: PASSWORD.into(),
                name: "A".into(),
                profile: None,
            },
            vec!["email"],
        ),
        (
            pb::SignUpRequest {
                email: format!("{}@example.com", "a".repeat(250)),
                password: PASSWORD.into(),
                name: "A".into(),
                profile: None,
            },
            vec!["email"],
        ),
        (
            pb::SignUpRequest { email: "a@example.com".into(), password: "".into(), name: "A".into(), profile: None },
            vec!["password"],
        ),
        (
            pb::SignUpRequest {
                email: "a@example.com".into(),
                password: PASSWORD.into(),
                name: "  ".into(),
                profile: None,
            },
            vec!["name"],
        ),
        (
            pb::SignUpRequest {
                email: "a@example.com".into(),
                password: PASSWORD.into(),
                name: "x".repeat(201),
                profile: None,
            },
            vec!["name"],
        ),
        (
            pb::SignUpRequest {
                email: "a@example.com".into(),
                password: PASSWORD.into(),
                name: "Bad\nName".into(),
                profile: None,
            },
            vec!["name"],
        ),
        (
            pb::SignUpRequest { email: "bad".into(), password: "short".into(), name: "".into(), profile: None },
            vec!["email", "name", "password"],
        ),
        (
            pb::SignUpRequest {
                email: "a@example.com".into(),
                password: PASSWORD.into(),
                name: "A".into(),
                profile: Some(pb::Profile { learning_style: 42, ..Default::default() }),
            },
            vec!["profile.learning_style"],
        ),
        (
            pb::SignUpRequest {
                email: "a@example.com".into(),
                password: PASSWORD.into(),
                name: "A".into(),
                profile: Some(pb::Profile { role: "r".repeat(101), interests: vec!["".into()], ..Default::default() }),
            },
            vec!["profile.interests[0]", "profile.role"],
        ),
    ];
    for (request, expected) in cases {
        let status = app.auth().sign_up(request).await.unwrap_err();
        let mut fields = violated_fields(&status);
        fields.sort();
        assert_eq!(fields, expected, "{status:?}");
        assert!(!status.message().contains(PASSWORD));
    }
    assert_eq!(app.db.count("users").await, 0);
}

async fn sign_in_rejects_bad_input(app: &TestApp) {
    let status = app.sign_in("", "").await.unwrap_err();
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["email", "password"]);
    let status = app.sign_in("a@example.com", &"p".repeat(129)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["password"]);
}

async fn password_rules(app: &TestApp) {
    let sign_up = |email: &'static str, password: String| {
        let mut client = app.auth();
        async move {
            client
                .sign_up(pb::SignUpRequest { email: email.into(), password, name: "Rule Tester".into(), profile: None })
                .await
        }
    };
    // Minimum minus one is refused; the minimum is accepted; 8 emoji are 8 characters.
    assert_eq!(violated_fields(&sign_up("a@example.com", "qzvkmtr".into()).await.unwrap_err()), ["password"]);
    assert!(sign_up("b@example.com", "qzvkmtrw".into()).await.is_ok());
    assert!(sign_up("c@example.com", "🦀🐍🦊🐙🦉🐢🦄🐝".into()).await.is_ok());
    // 64 and 128 characters are accepted; 129 is not.
    assert!(sign_up("d@example.com", random_text(64)).await.is_ok());
    assert!(sign_up("e@example.com", random_text(128)).await.is_ok());
    assert_eq!(violated_fields(&sign_up("f@example.com", random_text(129)).await.unwrap_err()), ["password"]);
    // Common passwords and ones containing the email or the service name are refused, with a reason.
    let common = sign_up("g@example.com", "password1234".into()).await.unwrap_err();
    assert!(common.message().contains("too common"), "{common:?}");
    let personal = sign_up("winifred@example.com", "winifred-2x9q-kvz".into()).await.unwrap_err();
    assert!(personal.message().contains("must not contain"), "{personal:?}");
    assert!(sign_up("h@example.com", "gatehouse-zq8-vk3-mm".into()).await.is_err());
    // No composition rules: a random lowercase-only password is fine.
    assert!(sign_up("i@example.com", "tvyqbnhzkc".into()).await.is_ok());
}

async fn passwords_are_normalized_and_never_truncated(app: &TestApp) {
    // Sign up with U+00C5 (Å), sign in with A + U+030A.
    let composed = "\u{c5}ngstr\u{f6}m-kvz-8q2-lpx";
    let decomposed = "A\u{30a}ngstro\u{308}m-kvz-8q2-lpx";
    app.auth()
        .sign_up(pb::SignUpRequest {
            email: "nfkc@example.com".into(),
            password: composed.into(),
            name: "N".into(),
            profile: None,
        })
        .await
        .unwrap();
    assert!(app.sign_in("nfkc@example.com", decomposed).await.is_ok());

    let long: String = "hv7Qz-x2Lm9".repeat(10);
    assert_eq!(long.chars().count(), 110);
    app.auth()
        .sign_up(pb::SignUpRequest {
            email: "long@example.com".into(),
            password: long.clone(),
            name: "L".into(),
            profile: None,
        })
        .await
        .unwrap();
    let first_72: String = long.chars().take(72).collect();
    assert_eq!(app.sign_in("long@example.com", &first_72).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(app.sign_in("long@example.com", &long).await.is_ok());
}

/// What is stored, with the production Argon2 parameters (the suite's default is cheap).
mod stored_hashes {
    use super::*;

    crate::backends! { app: passwords_are_stored_as_argon2id => production_hashing }

    async fn passwords_are_stored_as_argon2id(app: &TestApp) {
        app.sign_up("one@example.com").await;
        app.sign_up("two@example.com").await;
        let hashes = app.db.query_texts("SELECT password_hash FROM users ORDER BY email").await;
        assert_eq!(hashes.len(), 2);
        for h in &hashes {
            assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
            assert!(!h.contains(PASSWORD));
        }
        // Same password, different salts.
        assert_ne!(hashes[0], hashes[1]);
    }
}

async fn change_password(app: &TestApp) {
    let up = app.sign_up("changer@example.com").await;
    let other = app.sign_in("changer@example.com", PASSWORD).await.unwrap();
    let token = up.session_token.clone();
    let new_password = "a whole new passphrase";
    let before = app.db.query_texts("SELECT password_hash FROM users").await;

    let wrong = app
        .auth()
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: "wrong password here".into(),
                new_password: new_password.into(),
                revoke_other_sessions: true,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&wrong), ["current_password"]);
    assert_eq!(app.db.query_texts("SELECT password_hash FROM users").await, before);

    let weak = app
        .auth()
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "password1234".into(),
                revoke_other_sessions: false,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&weak), ["new_password"]);

    let done = app
        .auth()
        .change_password(bearer(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: new_password.into(),
                revoke_other_sessions: true,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.revoked_count, 1);
    assert!(app.get_session(&token).await.is_ok(), "the calling session survives");
    assert_eq!(app.get_session(&other.session_token).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(app.sign_in("changer@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(app.sign_in("changer@example.com", new_password).await.is_ok());

    let unauthenticated = app.auth().change_password(pb::ChangePasswordRequest::default()).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

async fn delete_account(app: &TestApp) {
    let up = app.sign_up("leaver@example.com").await;
    let token = up.session_token;
    app.profile()
        .update_profile(bearer(
            pb::UpdateProfileRequest {
                profile: Some(pb::Profile { role: "student".into(), ..Default::default() }),
                update_mask: None,
            },
            &token,
        ))
        .await
        .unwrap();
    let wrong = app
        .auth()
        .delete_account(bearer(pb::DeleteAccountRequest { password: "nope nope nope".into() }, &token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&wrong), ["password"]);
    assert_eq!(app.db.count("users").await, 1);

    app.auth().delete_account(bearer(pb::DeleteAccountRequest { password: PASSWORD.into() }, &token)).await.unwrap();
    assert_eq!(app.get_session(&token).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(app.sign_in("leaver@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    for table in ["users", "sessions", "profiles"] {
        assert_eq!(app.db.count(table).await, 0, "{table} not emptied");
    }
    // The address is free again.
    app.sign_up("leaver@example.com").await;
}

async fn sign_in_issues_a_new_token_each_time(app: &TestApp) {
    let up = app.sign_up("tokens@example.com").await;
    let mut request =
        tonic::Request::new(pb::SignInRequest { email: "tokens@example.com".into(), password: PASSWORD.into() });
    request.metadata_mut().insert("authorization", format!("Bearer {}", up.session_token).parse().unwrap());
    let again = app.auth().sign_in(request).await.unwrap().into_inner();
    assert_ne!(again.session_token, up.session_token);
    assert_eq!(app.db.count("sessions").await, 2);

    // An invented token, the stored hash, and garbage are all unauthenticated, and create nothing.
    let invented = format!("gate_{}", "A".repeat(43));
    let stored = app.db.query_blobs("SELECT token_hash FROM sessions").await;
    let stored_b64 = base64_url(&stored[0]);
    for token in [invented.as_str(), stored_b64.as_str(), "garbage", ""] {
        assert_eq!(app.get_session(token).await.unwrap_err().code(), Code::Unauthenticated, "{token}");
    }
    let missing = app.auth().get_session(pb::GetSessionRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(app.db.count("sessions").await, 2);
    // No raw token anywhere in the sessions table.
    for hash in stored {
        assert_eq!(hash.len(), 32);
        assert!(!String::from_utf8_lossy(&hash).contains(&up.session_token));
    }
}

/// `len` random hex characters: long, unguessable and free of repetition.
fn random_text(len: usize) -> String {
    (0..len.div_ceil(32)).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect::<String>()[..len].to_owned()
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    format!("gate_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

async fn forwarded_client_metadata_is_recorded(app: &TestApp) {
    let mut request = tonic::Request::new(pb::SignUpRequest {
        email: "fwd@example.com".into(),
        password: PASSWORD.into(),
        name: "F".into(),
        profile: None,
    });
    request.metadata_mut().insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    request.metadata_mut().insert("x-forwarded-user-agent", "Mozilla/5.0 (Reader)".parse().unwrap());
    let session = app.auth().sign_up(request).await.unwrap().into_inner().session.unwrap();
    // The test client connects from loopback, a trusted proxy by default.
    assert_eq!(session.ip_address, "203.0.113.7");
    assert_eq!(session.user_agent, "Mozilla/5.0 (Reader)");
}

async fn oversized_requests_are_refused(app: &TestApp) {
    let huge = pb::SignUpRequest {
        email: "big@example.com".into(),
        password: PASSWORD.into(),
        name: "x".repeat(200_000),
        profile: None,
    };
    let status = app.auth().sign_up(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Still healthy afterwards.
    app.sign_up("after@example.com").await;
}

async fn old_hash_parameters_are_upgraded_at_sign_in(backend: Backend) {
    let Some(mut old) = spawn_app_with(backend, |c| {
        c.passwords.argon2_memory_kib = 8192;
        c.passwords.argon2_iterations = 3;
    })
    .await
    else {
        return;
    };
    old.sign_up("upgrade@example.com").await;
    let before = old.db.query_texts("SELECT password_hash FROM users").await;
    assert!(before[0].starts_with("$argon2id$v=19$m=8192,t=3,p=1$"), "{}", before[0]);
    old.stop().await;

    let new = spawn_on(old.db.clone(), production_hashing).await;
    assert!(new.sign_in("upgrade@example.com", PASSWORD).await.is_ok());
    let after = new.db.query_texts("SELECT password_hash FROM users").await;
    assert!(after[0].starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", after[0]);
    assert!(new.sign_in("upgrade@example.com", PASSWORD).await.is_ok());
    new.finish().await;
}
