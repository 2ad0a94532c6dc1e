//! Second factors: TOTP enrollment and sign-in, replay and clock skew, recovery codes, the
//! shared lockout under a parallel burst, step-up, the operator reset, and what is stored.

use chrono::TimeDelta;
use gatehouse::{
    domain::Clock,
    proto::v1::{self as pb, factor_service_client::FactorServiceClient},
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::{
    backends,
    helpers::{PASSWORD, TestApp, bearer},
    mesh::{admin, issue, mesh_config, verify_independently, with_key},
};

backends! {
    app:
    totp_enrolment_then_sign_in_needs_the_code,
    a_code_is_accepted_once_and_within_one_step,
    recovery_codes_work_once_and_regenerate,
    wrong_codes_share_the_lockout_under_a_parallel_burst,
    challenges_are_single_use_bound_and_short_lived,
    factor_changes_need_a_recent_second_factor_sign_in,
    secrets_are_never_stored_or_exported_in_the_clear,
    deleting_the_account_erases_its_factors,
    a_second_replica_honours_challenges_and_spent_codes,
    a_disabled_user_cannot_finish_with_a_code => mesh_config,
    an_operator_reset_removes_factors_and_sessions => mesh_config,
    access_tokens_carry_the_assurance => mesh_config;
}

crate::through_pgbouncer! {
    app:
    totp_enrolment_then_sign_in_needs_the_code,
    a_code_is_accepted_once_and_within_one_step,
    wrong_codes_share_the_lockout_under_a_parallel_burst;
}

const STEP: TimeDelta = TimeDelta::seconds(30);

fn factors(app: &TestApp) -> FactorServiceClient<Channel> {
    FactorServiceClient::new(app.channel.clone())
}

/// The authenticator app: an independent TOTP from the base32 secret the server returned.
fn authenticator(secret: &str) -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
}

/// The code the app shows at the server's (test) clock, `steps` steps away.
fn code_at(app: &TestApp, totp: &Totp, steps: i64) -> String {
    let at = app.clock.now() + STEP * i32::try_from(steps).unwrap();
    totp.generate(u64::try_from(at.timestamp()).unwrap()).to_string()
}

/// Signs up `email` and enrolls an authenticator; returns the session, the app and the
/// recovery codes. The clock moves one step on, so that the confirming code is spent.
async fn enrolled(app: &TestApp, email: &str) -> (String, Totp, Vec<String>) {
    let token = app.sign_up(email).await.session_token;
    let start = factors(app)
        .start_totp_enrollment(bearer(pb::StartTotpEnrollmentRequest { name: "Phone".into() }, &token))
        .await
        .unwrap()
        .into_inner();
    let totp = authenticator(&start.secret);
    let code = code_at(app, &totp, 0);
    let confirmed = factors(app)
        .confirm_totp_enrollment(bearer(pb::ConfirmTotpEnrollmentRequest { code }, &token))
        .await
        .unwrap()
        .into_inner();
    app.clock.advance(STEP);
    (token, totp, confirmed.recovery_codes)
}

/// Signs in with the password and returns the second-factor challenge token.
async fn challenge(app: &TestApp, email: &str) -> String {
    let answer = app.sign_in(email, PASSWORD).await.unwrap();
    assert!(answer.session.is_none() && answer.session_token.is_empty(), "no session before the second factor");
    answer.second_factor_required.expect("second factor required").challenge_token
}

async fn complete(app: &TestApp, challenge: &str, totp_code: &str) -> Result<pb::AuthResponse, tonic::Status> {
    use pb::complete_second_factor_request::Proof;
    app.auth()
        .complete_second_factor(pb::CompleteSecondFactorRequest {
            challenge_token: challenge.into(),
            proof: Some(Proof::TotpCode(totp_code.into())),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn complete_with_recovery(app: &TestApp, challenge: &str, code: &str) -> Result<pb::AuthResponse, tonic::Status> {
    use pb::complete_second_factor_request::Proof;
    app.auth()
        .complete_second_factor(pb::CompleteSecondFactorRequest {
            challenge_token: challenge.into(),
            proof: Some(Proof::RecoveryCode(code.into())),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

async fn list(app: &TestApp, token: &str) -> pb::ListFactorsResponse {
    factors(app).list_factors(bearer(pb::ListFactorsRequest {}, token)).await.unwrap().into_inner()
}

async fn totp_enrolment_then_sign_in_needs_the_code(app: &TestApp) {
    let token = app.sign_up("totp@example.com").await.session_token;
    let start = factors(app)
        .start_totp_enrollment(bearer(pb::StartTotpEnrollmentRequest { name: String::new() }, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(start.otpauth_uri.starts_with("otpauth://totp/Gatehouse:totp%40example.com?"), "{}", start.otpauth_uri);
    assert!(start.otpauth_uri.contains(&format!("secret={}", start.secret)));
    assert!(start.otpauth_uri.contains("issuer=Gatehouse"));
    assert!(start.qr_code_svg.contains("<svg"), "an SVG QR code");
    assert_eq!(start.secret.len(), 32, "160 bits in base32");

    // Pending is not active: the password alone still signs in.
    assert!(list(app, &token).await.factors.is_empty());
    assert!(app.sign_in("totp@example.com", PASSWORD).await.unwrap().session.is_some());

    let totp = authenticator(&start.secret);
    let wrong = factors(app)
        .confirm_totp_enrollment(bearer(pb::ConfirmTotpEnrollmentRequest { code: "000000".into() }, &token))
        .await
        .unwrap_err();
    // 000000 could be right once in a million runs; the field is what matters.
    if code_at(app, &totp, 0) != "000000" {
        assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
        assert_eq!(crate::helpers::violated_fields(&wrong), ["code"]);
    }
    let confirmed = factors(app)
        .confirm_totp_enrollment(bearer(pb::ConfirmTotpEnrollmentRequest { code: code_at(app, &totp, 0) }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.recovery_codes.len(), 10);
    assert!(confirmed.recovery_codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'));
    let factor = confirmed.factor.unwrap();
    assert_eq!((factor.kind.as_str(), factor.name.as_str()), ("totp", "Authenticator app"));
    let listed = list(app, &token).await;
    assert_eq!(listed.factors.len(), 1);
    assert_eq!(listed.recovery_codes_remaining, 10);
    assert!(listed.factors[0].last_used_at.is_none(), "confirming is not a sign-in");
    assert_eq!(app.outbox_count("totp@example.com", "was just added to your account").await, 1);
    let again = factors(app)
        .start_totp_enrollment(bearer(pb::StartTotpEnrollmentRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    app.clock.advance(STEP);
    let answer = app.sign_in("totp@example.com", PASSWORD).await.unwrap();
    let required = answer.second_factor_required.expect("second factor required");
    assert_eq!(required.methods, ["totp", "recovery_code"]);
    assert!(answer.session.is_none() && answer.session_token.is_empty());
    assert!(answer.user.is_none(), "nothing of the account before the second factor");
    assert!(required.challenge_token.starts_with("gatemfa_"));
    // The challenge is not a session.
    assert_eq!(app.get_session(&required.challenge_token).await.unwrap_err().code(), Code::Unauthenticated);

    let done = complete(app, &required.challenge_token, &code_at(app, &totp, 0)).await.unwrap();
    let session = done.session.unwrap();
    assert_eq!(session.aal, 2);
    assert_eq!(session.amr, ["pwd", "otp", "mfa"]);
    assert_eq!(session.auth_time, session.created_at);
    let seen = app.get_session(&done.session_token).await.unwrap().session.unwrap();
    assert_eq!((seen.aal, seen.amr.clone()), (2, vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()]));
    // The session from before enrollment says what it was.
    let old = app.get_session(&token).await.unwrap().session.unwrap();
    assert_eq!((old.aal, old.amr), (1, vec!["pwd".to_owned()]));
    assert!(list(app, &done.session_token).await.factors[0].last_used_at.is_some());

    let events = app
        .auth()
        .list_audit_events(bearer(pb::ListAuditEventsRequest::default(), &done.session_token))
        .await
        .unwrap()
        .into_inner()
        .events;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names[..3], ["sign_in", "second_factor", "factor_added"], "{names:?}");
}

async fn a_code_is_accepted_once_and_within_one_step(app: &TestApp) {
    let (_, totp, _) = enrolled(app, "skew@example.com").await;
    let now = code_at(app, &totp, 0);
    let first = challenge(app, "skew@example.com").await;
    assert!(complete(app, &first, &now).await.is_ok());
    // The same code again, on a new challenge and in parallel: refused every time.
    let mut replays = Vec::new();
    for _ in 0..4 {
        let c = challenge(app, "skew@example.com").await;
        let now = now.clone();
        let channel = app.channel.clone();
        replays.push(tokio::spawn(async move {
            use pb::complete_second_factor_request::Proof;
            gatehouse::proto::v1::auth_service_client::AuthServiceClient::new(channel)
                .complete_second_factor(pb::CompleteSecondFactorRequest {
                    challenge_token: c,
                    proof: Some(Proof::TotpCode(now)),
                })
                .await
        }));
    }
    for replay in replays {
        assert_eq!(replay.await.unwrap().unwrap_err().code(), Code::Unauthenticated, "a replayed code is refused");
    }

    // One step of skew either way is accepted (each a step later than the last accepted).
    app.clock.advance(STEP * 2);
    let c = challenge(app, "skew@example.com").await;
    assert!(complete(app, &c, &code_at(app, &totp, -1)).await.is_ok(), "a code one step old");
    let c = challenge(app, "skew@example.com").await;
    assert!(complete(app, &c, &code_at(app, &totp, 1)).await.is_ok(), "a code one step early");
    app.clock.advance(STEP * 4);
    let c = challenge(app, "skew@example.com").await;
    let far = code_at(app, &totp, -2);
    if far != code_at(app, &totp, -1) && far != code_at(app, &totp, 0) && far != code_at(app, &totp, 1) {
        assert_eq!(complete(app, &c, &far).await.unwrap_err().code(), Code::Unauthenticated, "two steps old");
    }
    // Spaces as apps show them do not matter.
    let spaced = code_at(app, &totp, 0);
    let spaced = format!("{} {}", &spaced[..3], &spaced[3..]);
    assert!(complete(app, &c, &spaced).await.is_ok());
}

async fn recovery_codes_work_once_and_regenerate(app: &TestApp) {
    let (_, _, codes) = enrolled(app, "rec@example.com").await;
    let c = challenge(app, "rec@example.com").await;
    let done = complete_with_recovery(app, &c, &codes[0].to_uppercase()).await.unwrap();
    let session = done.session.unwrap();
    assert_eq!((session.aal, session.amr), (2, vec!["pwd".to_owned(), "rec".to_owned(), "mfa".to_owned()]));
    assert_eq!(app.outbox_count("rec@example.com", "A recovery code was just used").await, 1);
    assert_eq!(list(app, &done.session_token).await.recovery_codes_remaining, 9);

    let c = challenge(app, "rec@example.com").await;
    assert_eq!(complete_with_recovery(app, &c, &codes[0]).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(complete_with_recovery(app, &c, &codes[1].replace('-', "")).await.is_ok());

    let fresh = factors(app)
        .regenerate_recovery_codes(bearer(pb::RegenerateRecoveryCodesRequest {}, &done.session_token))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !codes.contains(c)));
    let c = challenge(app, "rec@example.com").await;
    assert_eq!(complete_with_recovery(app, &c, &codes[2]).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(complete_with_recovery(app, &c, &fresh[0]).await.is_ok());
}

async fn wrong_codes_share_the_lockout_under_a_parallel_burst(app: &TestApp) {
    let (token, totp, _) = enrolled(app, "burst@example.com").await;
    let user: uuid::Uuid = app.get_session(&token).await.unwrap().user.unwrap().id.parse().unwrap();
    let right = code_at(app, &totp, 0);
    let wrong = (0..1_000_000).map(|n| format!("{n:06}")).find(|c| (-1..=1).all(|s| *c != code_at(app, &totp, s)));
    let wrong = wrong.unwrap();
    let mut challenges = Vec::new();
    for _ in 0..3 {
        challenges.push(challenge(app, "burst@example.com").await);
    }
    // 30 wrong codes at once over three challenges: the lockout (threshold 5; the right
    // passwords before them count neither way) lets at most five of them be evaluated.
    let mut burst = Vec::new();
    for i in 0..30 {
        let c = challenges[i % 3].clone();
        let wrong = wrong.clone();
        let channel = app.channel.clone();
        burst.push(tokio::spawn(async move {
            use pb::complete_second_factor_request::Proof;
            gatehouse::proto::v1::auth_service_client::AuthServiceClient::new(channel)
                .complete_second_factor(pb::CompleteSecondFactorRequest {
                    challenge_token: c,
                    proof: Some(Proof::TotpCode(wrong)),
                })
                .await
        }));
    }
    for attempt in burst {
        assert_eq!(attempt.await.unwrap().unwrap_err().code(), Code::Unauthenticated);
    }
    let evaluated = app
        .db
        .count_for(
            "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND event = 'second_factor' AND reason = 'wrong_code'",
            user,
        )
        .await;
    assert!((1..=5).contains(&evaluated), "{evaluated} wrong codes were evaluated");
    // Locked: even the right code is refused, and so is the password.
    assert_eq!(complete(app, &challenges[0], &right).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(app.sign_in("burst@example.com", PASSWORD).await.unwrap_err().code(), Code::Unauthenticated);
    // The lock ends (30 s, doubling per failure beyond the threshold; at most 15 min).
    app.clock.advance(TimeDelta::minutes(16));
    let c = challenge(app, "burst@example.com").await;
    assert!(complete(app, &c, &code_at(app, &totp, 0)).await.is_ok());
}

async fn challenges_are_single_use_bound_and_short_lived(app: &TestApp) {
    let (_, totp, codes) = enrolled(app, "bound@example.com").await;
    let (_, other_totp, _) = enrolled(app, "other@example.com").await;
    let c = challenge(app, "bound@example.com").await;
    // Another user's valid code does not complete this user's challenge.
    let theirs = code_at(app, &other_totp, 0);
    if theirs != code_at(app, &totp, 0) {
        assert_eq!(complete(app, &c, &theirs).await.unwrap_err().code(), Code::Unauthenticated);
    }
    let done = complete(app, &c, &code_at(app, &totp, 0)).await.unwrap();
    assert!(done.session.is_some());
    // Used: even with a valid recovery code it is refused.
    assert_eq!(complete_with_recovery(app, &c, &codes[0]).await.unwrap_err().code(), Code::Unauthenticated);
    // Lapsed after 5 minutes.
    let late = challenge(app, "bound@example.com").await;
    app.clock.advance(TimeDelta::minutes(5) + TimeDelta::seconds(1));
    assert_eq!(complete_with_recovery(app, &late, &codes[0]).await.unwrap_err().code(), Code::Unauthenticated);
    // Garbage and a missing proof.
    assert_eq!(complete(app, "gatemfa_nope", "123456").await.unwrap_err().code(), Code::Unauthenticated);
    let missing = app
        .auth()
        .complete_second_factor(pb::CompleteSecondFactorRequest { challenge_token: late, proof: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(crate::helpers::violated_fields(&missing), ["proof"]);
    // Five wrong codes spend a challenge, whatever the lockout says.
    app.clock.advance(TimeDelta::minutes(30));
    let c = challenge(app, "bound@example.com").await;
    for _ in 0..5 {
        let _ = complete_with_recovery(app, &c, "aaaaa-aaaaa").await;
    }
    app.clock.advance(TimeDelta::minutes(16));
    assert_eq!(complete_with_recovery(app, &c, &codes[1]).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn factor_changes_need_a_recent_second_factor_sign_in(app: &TestApp) {
    let token = app.sign_up("stepup@example.com").await.session_token;
    app.clock.advance(TimeDelta::minutes(16));
    let stale = factors(app)
        .start_totp_enrollment(bearer(pb::StartTotpEnrollmentRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert_eq!(reason(&stale).as_deref(), Some("REAUTHENTICATION_REQUIRED"));
    let info = stale.get_details_error_info().unwrap();
    assert_eq!((info.domain.as_str(), info.metadata["max_age_seconds"].as_str()), ("gatehouse", "900"));

    let (aal1, totp, _) = enrolled(app, "stepup2@example.com").await;
    let factor_id = list(app, &aal1).await.factors[0].id.clone();
    let weak = factors(app)
        .remove_factor(bearer(pb::RemoveFactorRequest { factor_id: factor_id.clone() }, &aal1))
        .await
        .unwrap_err();
    assert_eq!(reason(&weak).as_deref(), Some("SECOND_FACTOR_REQUIRED"));
    let weak =
        factors(app).regenerate_recovery_codes(bearer(pb::RegenerateRecoveryCodesRequest {}, &aal1)).await.unwrap_err();
    assert_eq!(reason(&weak).as_deref(), Some("SECOND_FACTOR_REQUIRED"));

    let c = challenge(app, "stepup2@example.com").await;
    let strong = complete(app, &c, &code_at(app, &totp, 0)).await.unwrap().session_token;
    let nobody = factors(app)
        .remove_factor(bearer(pb::RemoveFactorRequest { factor_id: uuid::Uuid::new_v4().to_string() }, &strong))
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);
    // Another user's factor is not found either.
    let (mallory, _, _) = enrolled(app, "mallory@example.com").await;
    let theirs = factors(app)
        .remove_factor(bearer(pb::RemoveFactorRequest { factor_id: factor_id.clone() }, &mallory))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    factors(app).remove_factor(bearer(pb::RemoveFactorRequest { factor_id }, &strong)).await.unwrap();
    assert_eq!(app.outbox_count("stepup2@example.com", "was removed from your account").await, 1);
    let listed = list(app, &strong).await;
    assert!(listed.factors.is_empty());
    assert_eq!(listed.recovery_codes_remaining, 0, "the codes go with the last factor");
    assert!(app.sign_in("stepup2@example.com", PASSWORD).await.unwrap().session.is_some());
}

async fn secrets_are_never_stored_or_exported_in_the_clear(app: &TestApp) {
    let token = app.sign_up("vault@example.com").await.session_token;
    let start = factors(app)
        .start_totp_enrollment(bearer(pb::StartTotpEnrollmentRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    let totp = authenticator(&start.secret);
    let codes = factors(app)
        .confirm_totp_enrollment(bearer(pb::ConfirmTotpEnrollmentRequest { code: code_at(app, &totp, 0) }, &token))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    let raw = Secret::try_from_base32(&start.secret).unwrap().as_ref().to_vec();
    let stored = app.db.query_blobs("SELECT secret_enc FROM factors").await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].windows(raw.len()).any(|w| w == raw.as_slice()), "the secret is stored encrypted");
    let hashes = app.db.query_blobs("SELECT code_hash FROM recovery_codes").await;
    assert_eq!(hashes.len(), 10);
    for code in &codes {
        let plain = code.replace('-', "");
        assert!(hashes.iter().all(|h| !h.windows(plain.len()).any(|w| w == plain.as_bytes())));
    }
    let export =
        app.auth().export_my_data(bearer(pb::ExportMyDataRequest {}, &token)).await.unwrap().into_inner().document;
    assert!(export.contains("\"factors\""));
    for secret in codes.iter().map(String::as_str).chain([start.secret.as_str(), "secret_enc", "code_hash"]) {
        assert!(!export.contains(secret), "the export contains {secret:?}");
    }
}

async fn a_disabled_user_cannot_finish_with_a_code(app: &TestApp) {
    let (token, totp, _) = enrolled(app, "disabled@example.com").await;
    let user_id = app.get_session(&token).await.unwrap().user.unwrap().id;
    let c = challenge(app, "disabled@example.com").await;
    admin(app).disable_user(with_key(pb::DisableUserRequest { user_id })).await.unwrap();
    assert_eq!(complete(app, &c, &code_at(app, &totp, 0)).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn an_operator_reset_removes_factors_and_sessions(app: &TestApp) {
    let (token, _, codes) = enrolled(app, "lost@example.com").await;
    let user_id = app.get_session(&token).await.unwrap().user.unwrap().id;
    let pending = challenge(app, "lost@example.com").await;
    let unknown =
        admin(app).reset_second_factors(pb::ResetSecondFactorsRequest { user_id: user_id.clone() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "services only");
    let reset = admin(app)
        .reset_second_factors(with_key(pb::ResetSecondFactorsRequest { user_id: user_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.removed_count, 1);
    assert_eq!(app.get_session(&token).await.unwrap_err().code(), Code::Unauthenticated, "sessions ended");
    assert_eq!(complete_with_recovery(app, &pending, &codes[0]).await.unwrap_err().code(), Code::Unauthenticated);
    let again = app.sign_in("lost@example.com", PASSWORD).await.unwrap();
    assert!(again.session.is_some(), "the password alone signs in again");
    assert_eq!(app.outbox_count("lost@example.com", "An administrator removed the second factors").await, 1);
    let events = admin(app)
        .list_user_audit_events(with_key(pb::ListUserAuditEventsRequest { user_id, ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.iter().any(|e| e.event == "factors_reset"));
}

async fn access_tokens_carry_the_assurance(app: &TestApp) {
    let (weak, totp, _) = enrolled(app, "claims@example.com").await;
    let issued = issue(app, &weak, "books-api").await.unwrap();
    let claims = verify_independently(app, &issued.access_token).await.unwrap();
    assert_eq!((claims["acr"].as_str(), claims["amr"].clone()), (Some("aal1"), serde_json::json!(["pwd"])));
    let c = challenge(app, "claims@example.com").await;
    let strong = complete(app, &c, &code_at(app, &totp, 0)).await.unwrap();
    let issued = issue(app, &strong.session_token, "books-api").await.unwrap();
    let claims = verify_independently(app, &issued.access_token).await.unwrap();
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["auth_time"].as_i64(), Some(strong.session.unwrap().created_at.unwrap().seconds));
}

async fn deleting_the_account_erases_its_factors(app: &TestApp) {
    let (token, _, _) = enrolled(app, "gone@example.com").await;
    let user: uuid::Uuid = app.get_session(&token).await.unwrap().user.unwrap().id.parse().unwrap();
    let _waiting = challenge(app, "gone@example.com").await;
    let tables = ["factors", "recovery_codes", "second_factor_challenges"];
    for table in tables {
        let n = app.db.count_for(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = $1"), user).await;
        assert!(n > 0, "{table} has the user's rows before");
    }
    app.auth().delete_account(bearer(pb::DeleteAccountRequest { password: PASSWORD.into() }, &token)).await.unwrap();
    for table in tables {
        let n = app.db.count_for(&format!("SELECT COUNT(*) FROM {table} WHERE user_id = $1"), user).await;
        assert_eq!(n, 0, "{table} keeps rows of a deleted user");
    }
}

/// Two servers on one database: a challenge from one completes on the other, and a code
/// accepted by one is spent for both, also when the same code reaches both at once.
async fn a_second_replica_honours_challenges_and_spent_codes(app: &TestApp) {
    let (_, totp, _) = enrolled(app, "replica@example.com").await;
    let two = crate::helpers::spawn_on(app.db.clone(), crate::helpers::no_tweak).await;
    // Both replicas read one time (the first one's clock moved on during enrollment).
    two.clock.advance(app.clock.now() - two.clock.now());
    let c = challenge(app, "replica@example.com").await;
    let code = code_at(app, &totp, 0);
    assert!(complete(&two, &c, &code).await.is_ok(), "a challenge from one replica completes on the other");
    let again = challenge(&two, "replica@example.com").await;
    assert_eq!(complete(app, &again, &code).await.unwrap_err().code(), Code::Unauthenticated, "spent everywhere");

    // The next step's code, sent to both replicas at once: one sign-in.
    let next = code_at(app, &totp, 1);
    let (a, b) = (challenge(app, "replica@example.com").await, challenge(&two, "replica@example.com").await);
    let (on_one, on_two) = tokio::join!(complete(app, &a, &next), complete(&two, &b, &next));
    assert_eq!(u8::from(on_one.is_ok()) + u8::from(on_two.is_ok()), 1, "{on_one:?} / {on_two:?}");
    two.stop_only().await;
}
