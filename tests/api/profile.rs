//! Learner profiles: partial updates, the consent rule, and atomic sign-up with a profile.

use prost_types::FieldMask;
use tonic::Code;

use crate::{
    backends,
    helpers::{PASSWORD, TestApp, bearer, violated_fields},
};
use gatehouse::proto::v1 as pb;

backends! {
    app:
    new_users_have_an_empty_profile,
    partial_update_changes_only_masked_fields,
    background_fields_need_consent,
    withdrawing_consent_erases_background,
    sign_up_with_profile_stores_it,
    sign_up_with_profile_is_all_or_nothing,
    bad_profile_updates_name_the_field;
}

crate::through_pgbouncer! {
    app:
    new_users_have_an_empty_profile,
    partial_update_changes_only_masked_fields,
    background_fields_need_consent,
    withdrawing_consent_erases_background,
    sign_up_with_profile_is_all_or_nothing;
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

async fn update(
    app: &TestApp,
    token: &str,
    profile: pb::Profile,
    paths: &[&str],
) -> Result<pb::Profile, tonic::Status> {
    let update_mask = if paths.is_empty() { None } else { mask(paths) };
    app.profile()
        .update_profile(bearer(pb::UpdateProfileRequest { profile: Some(profile), update_mask }, token))
        .await
        .map(|r| r.into_inner().profile.unwrap())
}

async fn get(app: &TestApp, token: &str) -> pb::Profile {
    app.profile().get_profile(bearer(pb::GetProfileRequest {}, token)).await.unwrap().into_inner().profile.unwrap()
}

async fn new_users_have_an_empty_profile(app: &TestApp) {
    let token = app.sign_up("empty@example.com").await.session_token;
    assert_eq!(get(app, &token).await, pb::Profile::default());
    let err = app.profile().get_profile(pb::GetProfileRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn partial_update_changes_only_masked_fields(app: &TestApp) {
    let token = app.sign_up("partial@example.com").await.session_token;
    let first = pb::Profile {
        learning_style: pb::LearningStyle::Visual.into(),
        role: "student".into(),
        interests: vec!["robots".into(), "llms".into()],
        ..Default::default()
    };
    update(app, &token, first, &[]).await.unwrap();

    // Only `role` is named: learning_style and interests in the message are ignored.
    let second = pb::Profile { role: "engineer".into(), interests: vec!["ignored".into()], ..Default::default() };
    let after = update(app, &token, second, &["role"]).await.unwrap();
    assert_eq!(after.role, "engineer");
    assert_eq!(after.learning_style, i32::from(pb::LearningStyle::Visual));
    assert_eq!(after.interests, ["robots", "llms"]);

    // A named field that is empty in the message is cleared.
    let cleared = update(app, &token, pb::Profile::default(), &["interests"]).await.unwrap();
    assert!(cleared.interests.is_empty());
    assert_eq!(cleared.role, "engineer");
    assert_eq!(get(app, &token).await, cleared);
}

async fn background_fields_need_consent(app: &TestApp) {
    let token = app.sign_up("consent@example.com").await.session_token;
    let background = pb::Profile {
        programming_level: pb::ProgrammingLevel::Advanced.into(),
        programming_languages: vec!["rust".into()],
        ..Default::default()
    };
    let refused =
        update(app, &token, background.clone(), &["programming_level", "programming_languages"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("consent_given"), "{refused:?}");
    assert_eq!(get(app, &token).await.programming_level, 0);

    // Preferences need no consent.
    assert!(
        update(
            app,
            &token,
            pb::Profile { onboarding_completed: true, ..Default::default() },
            &["onboarding_completed"]
        )
        .await
        .is_ok()
    );

    let consented = pb::Profile { consent_given: true, ..background };
    let stored =
        update(app, &token, consented, &["consent_given", "programming_level", "programming_languages"]).await.unwrap();
    assert_eq!(stored.programming_level, i32::from(pb::ProgrammingLevel::Advanced));
    assert!(stored.consent_given);
    assert!(stored.consent_updated_at.is_some());
    assert!(stored.onboarding_completed);
}

async fn withdrawing_consent_erases_background(app: &TestApp) {
    let token = app.sign_up("withdraw@example.com").await.session_token;
    let full = pb::Profile {
        consent_given: true,
        programming_level: pb::ProgrammingLevel::Beginner.into(),
        ai_knowledge_level: pb::AiKnowledgeLevel::Basic.into(),
        hardware_experience: pb::HardwareExperience::Robotics.into(),
        software_background: "web apps".into(),
        hardware_background: "arduino".into(),
        programming_languages: vec!["python".into()],
        role: "maker".into(),
        ..Default::default()
    };
    update(app, &token, full, &[]).await.unwrap();
    app.clock.advance(chrono::TimeDelta::minutes(1));
    let withdrawn = update(app, &token, pb::Profile::default(), &["consent_given"]).await.unwrap();
    assert!(!withdrawn.consent_given);
    assert_eq!(withdrawn.programming_level, 0);
    assert_eq!(withdrawn.ai_knowledge_level, 0);
    assert_eq!(withdrawn.hardware_experience, 0);
    assert!(withdrawn.software_background.is_empty() && withdrawn.hardware_background.is_empty());
    assert!(withdrawn.programming_languages.is_empty());
    assert_eq!(withdrawn.role, "maker", "preferences stay");
    // Gone from the database too, not just from the answer.
    assert_eq!(app.db.query_texts("SELECT software_background FROM profiles").await, [""]);
}

async fn sign_up_with_profile_stores_it(app: &TestApp) {
    let profile = pb::Profile {
        consent_given: true,
        programming_level: pb::ProgrammingLevel::Intermediate.into(),
        learning_style: pb::LearningStyle::CodeFirst.into(),
        interests: vec!["humanoids".into()],
        ..Default::default()
    };
    let up = app
        .auth()
        .sign_up(pb::SignUpRequest {
            email: "withprofile@example.com".into(),
            password: PASSWORD.into(),
            name: "P".into(),
            profile: Some(profile),
        })
        .await
        .unwrap()
        .into_inner();
    let stored = get(app, &up.session_token).await;
    assert_eq!(stored.programming_level, i32::from(pb::ProgrammingLevel::Intermediate));
    assert_eq!(stored.learning_style, i32::from(pb::LearningStyle::CodeFirst));
    assert_eq!(stored.interests, ["humanoids"]);
}

async fn sign_up_with_profile_is_all_or_nothing(app: &TestApp) {
    let without_consent = pb::Profile { hardware_background: "drones".into(), ..Default::default() };
    let err = app
        .auth()
        .sign_up(pb::SignUpRequest {
            email: "atomic@example.com".into(),
            password: PASSWORD.into(),
            name: "A".into(),
            profile: Some(without_consent),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(app.db.count("users").await, 0);
    assert_eq!(app.db.count("profiles").await, 0);
    // Nothing was kept, so the same email signs up fine.
    app.sign_up("atomic@example.com").await;
}

async fn bad_profile_updates_name_the_field(app: &TestApp) {
    let token = app.sign_up("badprofile@example.com").await.session_token;
    let cases: Vec<(pb::Profile, Vec<&str>, Vec<&str>)> = vec![
        (pb::Profile::default(), vec!["no_such_field"], vec!["update_mask.paths[0]"]),
        (pb::Profile::default(), vec!["role", "consent_updated_at"], vec!["update_mask.paths[1]"]),
        (
            pb::Profile { programming_level: 9, ..Default::default() },
            vec!["programming_level"],
            vec!["profile.programming_level"],
        ),
        (
            pb::Profile { software_background: "x".repeat(2001), ..Default::default() },
            vec!["software_background"],
            vec!["profile.software_background"],
        ),
        (
            pb::Profile { interests: (0..21).map(|i| i.to_string()).collect(), ..Default::default() },
            vec!["interests"],
            vec!["profile.interests"],
        ),
        (
            pb::Profile { programming_languages: vec!["x".repeat(51)], ..Default::default() },
            vec!["programming_languages"],
            vec!["profile.programming_languages[0]"],
        ),
    ];
    for (profile, paths, expected) in cases {
        let status = update(app, &token, profile, &paths).await.unwrap_err();
        assert_eq!(violated_fields(&status), expected, "{status:?}");
    }
}

/// Contended updates of one profile. A pool with room for the whole burst, so that what is
/// measured is the optimistic update, not connection waits.
mod contention {
    use super::*;

    pub fn roomy_pool(c: &mut gatehouse::Config) {
        c.database.db_max_connections = 16;
        c.database.db_acquire_timeout = std::time::Duration::from_secs(10);
    }

    crate::backends! { app: conflicting_updates_succeed_or_abort => roomy_pool }
}

/// Many concurrent updates of one profile: each is retried until it applies, and one that
/// still conflicts is ABORTED, never UNAVAILABLE (the database is fine).
async fn conflicting_updates_succeed_or_abort(app: &TestApp) {
    const CALLS: usize = 60;
    let token = app.sign_up("contended@example.com").await.session_token;
    // Several connections, so the calls really run in parallel.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            tonic::transport::Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await.unwrap(),
        );
    }
    let calls = (0..CALLS).map(|i| {
        let mut client = gatehouse::proto::v1::profile_service_client::ProfileServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        let request = bearer(
            pb::UpdateProfileRequest {
                profile: Some(pb::Profile {
                    role: format!("role {i}"),
                    interests: vec![format!("topic {i}")],
                    ..Default::default()
                }),
                update_mask: mask(if i % 2 == 0 { &["role"] } else { &["interests"] }),
            },
            &token,
        );
        async move { client.update_profile(request).await.map(|_| ()) }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for result in &results {
        let code = result.as_ref().map_or_else(|s| format!("{:?}", s.code()), |()| "Ok".into());
        *codes.entry(code).or_default() += 1;
    }
    eprintln!("{CALLS} concurrent UpdateProfile calls on {:?}: {codes:?}", app.db.url().split(':').next());
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
        }
    }
    assert!(codes.get("Ok").copied().unwrap_or(0) >= CALLS * 9 / 10, "most updates apply: {codes:?}");
    // Neither field's updates were lost to the other's.
    let profile = get(app, &token).await;
    assert!(profile.role.starts_with("role "), "{profile:?}");
    assert!(profile.interests.len() == 1 && profile.interests[0].starts_with("topic "), "{profile:?}");
}
