//! Privacy: consent records across grant, withdrawal and a policy change; the reader's data
//! export covering every table that holds user data; client-data retention with the injectable
//! clock; the privacy report's counts; the deletion tombstone.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use serde_json::Value;
use tonic::{Code, Request};

use crate::{
    backends,
    helpers::{Backend, PASSWORD, TestApp, TestDb, bearer, spawn_on, violated_fields},
    mesh::{admin, mesh_config, with_key},
};
use gatehouse::{Config, proto::v1 as pb};

backends! {
    app:
    sign_up_with_consent_writes_the_first_record,
    consent_history_records_grants_and_withdrawals,
    other_purposes_are_recorded_and_unknown_ones_refused => with_analytics,
    consent_records_and_audit_events_are_append_only,
    export_holds_every_table_with_user_data => mesh_config,
    deleting_an_account_leaves_a_tombstone => mesh_config,
    privacy_report_counts_consent_exports_and_deletions => mesh_config,
    retention_truncates_client_data => short_retention,
    retention_can_clear_client_data => clearing_retention;
    own:
    a_policy_change_outdates_consent_until_renewed;
}

fn with_analytics(c: &mut Config) {
    c.privacy.consent_purposes = vec!["analytics".into()];
}

fn short_retention(c: &mut Config) {
    c.privacy.personal_data_retention = Duration::from_secs(86_400);
    c.sessions.session_prune_interval = Duration::from_millis(100);
}

fn clearing_retention(c: &mut Config) {
    short_retention(c);
    c.privacy.personal_data_redaction = gatehouse::config::RedactionArg::Clear;
}

/// A request as the calling backend forwards it: bearer token, the reader's address and agent.
fn forwarded<T>(message: T, token: &str, ip: &str) -> Request<T> {
    let mut request = bearer(message, token);
    request.metadata_mut().insert("x-forwarded-for", ip.parse().unwrap());
    request.metadata_mut().insert("x-forwarded-user-agent", "BookReader/1.0".parse().unwrap());
    request
}

async fn set_consent(app: &TestApp, token: &str, given: bool) -> pb::Profile {
    let profile = pb::Profile { consent_given: given, ..Default::default() };
    let mask = Some(prost_types::FieldMask { paths: vec!["consent_given".into()] });
    app.profile()
        .update_profile(forwarded(
            pb::UpdateProfileRequest { profile: Some(profile), update_mask: mask },
            token,
            "203.0.113.9",
        ))
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap()
}

async fn consents(app: &TestApp, token: &str) -> pb::ListConsentRecordsResponse {
    app.profile()
        .list_consent_records(bearer(pb::ListConsentRecordsRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
}

async fn sign_up_with_profile(app: &TestApp, email: &str, consent: bool) -> pb::AuthResponse {
    let profile = pb::Profile {
        consent_given: consent,
        programming_level: if consent { pb::ProgrammingLevel::Advanced.into() } else { 0 },
        role: "student".into(),
        ..Default::default()
    };
    let mut request = Request::new(pb::SignUpRequest {
        email: email.into(),
        password: PASSWORD.into(),
        name: "Reader".into(),
        profile: Some(profile),
    });
    request.metadata_mut().insert("x-forwarded-for", "198.51.100.23".parse().unwrap());
    app.auth().sign_up(request).await.unwrap().into_inner()
}

async fn sign_up_with_consent_writes_the_first_record(app: &TestApp) {
    let up = sign_up_with_profile(app, "first@example.com", true).await;
    let list = consents(app, &up.session_token).await;
    assert_eq!(list.records.len(), 1, "{list:?}");
    let record = &list.records[0];
    assert_eq!(
        (record.purpose.as_str(), record.policy_version.as_str(), record.granted),
        ("learner_background", "1", true)
    );
    assert_eq!(record.ip_address, "198.51.100.23");
    assert_eq!(list.purposes.len(), 1);
    assert!(list.purposes[0].granted && !list.purposes[0].outdated);

    // Without consent there is nothing to record; a refused (duplicate) sign-up records nothing.
    let plain = sign_up_with_profile(app, "plain@example.com", false).await;
    assert!(consents(app, &plain.session_token).await.records.is_empty());
    let mut dup = Request::new(pb::SignUpRequest {
        email: "first@example.com".into(),
        password: PASSWORD.into(),
        name: "Again".into(),
        profile: Some(pb::Profile { consent_given: true, ..Default::default() }),
    });
    dup.metadata_mut().insert("x-forwarded-for", "198.51.100.24".parse().unwrap());
    assert_eq!(app.auth().sign_up(dup).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(app.db.count("consent_records").await, 1);
}

async fn consent_history_records_grants_and_withdrawals(app: &TestApp) {
    let token = app.sign_up("history@example.com").await.session_token;
    assert!(consents(app, &token).await.records.is_empty());
    let granted = set_consent(app, &token, true).await;
    assert_eq!((granted.consent_policy_version.as_str(), granted.consent_outdated), ("1", false));
    // Saying it again changes nothing and records nothing.
    set_consent(app, &token, true).await;
    app.clock.advance(TimeDelta::seconds(5));
    let withdrawn = set_consent(app, &token, false).await;
    assert_eq!(withdrawn.consent_policy_version, "");
    app.clock.advance(TimeDelta::seconds(5));
    set_consent(app, &token, true).await;

    let list = consents(app, &token).await;
    let kinds: Vec<bool> = list.records.iter().map(|r| r.granted).collect();
    assert_eq!(kinds, [true, false, true], "newest first");
    assert!(list.records.iter().all(|r| r.ip_address == "203.0.113.9" && r.user_agent == "BookReader/1.0"));
    assert!(list.records[0].created_at.unwrap().seconds > list.records[2].created_at.unwrap().seconds);

    // Pages of one, newest first, and the token is checked.
    let page = app
        .profile()
        .list_consent_records(bearer(pb::ListConsentRecordsRequest { page_size: 2, page_token: String::new() }, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 2);
    let rest = app
        .profile()
        .list_consent_records(bearer(
            pb::ListConsentRecordsRequest { page_size: 2, page_token: page.next_page_token.clone() },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records.len(), 1);
    assert_eq!(rest.records[0].id, list.records[2].id);
    assert!(rest.next_page_token.is_empty());
    let bad = app
        .profile()
        .list_consent_records(bearer(pb::ListConsentRecordsRequest { page_size: 2, page_token: "x".into() }, &token))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["page_token"]);
}

async fn other_purposes_are_recorded_and_unknown_ones_refused(app: &TestApp) {
    let token = app.sign_up("purposes@example.com").await.session_token;
    let update = |purpose: &str, granted: bool| {
        let mut client = app.profile();
        let request =
            forwarded(pb::UpdateConsentRequest { purpose: purpose.into(), granted }, &token, "2001:db8:1:2::7");
        async move { client.update_consent(request).await }
    };
    let state = update("analytics", true).await.unwrap().into_inner().state.unwrap();
    assert!(state.granted && state.policy_version == "1" && !state.outdated);
    update("analytics", true).await.unwrap();
    let state = update("analytics", false).await.unwrap().into_inner().state.unwrap();
    assert!(!state.granted);
    let err = update("marketing", true).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["purpose"]);
    assert!(err.message().contains("analytics"), "{}", err.message());

    // The background purpose through UpdateConsent is the profile's consent.
    update("learner_background", true).await.unwrap();
    let profile = app.profile().get_profile(bearer(pb::GetProfileRequest {}, &token)).await.unwrap().into_inner();
    assert!(profile.profile.unwrap().consent_given);

    let list = consents(app, &token).await;
    let seen: Vec<(&str, bool)> = list.records.iter().map(|r| (r.purpose.as_str(), r.granted)).collect();
    assert_eq!(seen, [("learner_background", true), ("analytics", false), ("analytics", true)]);
    let states: Vec<(&str, bool)> = list.purposes.iter().map(|s| (s.purpose.as_str(), s.granted)).collect();
    assert_eq!(states, [("learner_background", true), ("analytics", false)]);
}

async fn consent_records_and_audit_events_are_append_only(app: &TestApp) {
    let token = app.sign_up("append@example.com").await.session_token;
    set_consent(app, &token, true).await;
    assert!(app.db.try_execute("UPDATE consent_records SET granted = false").await.is_err());
    assert!(app.db.try_execute("UPDATE consent_records SET policy_version = '0'").await.is_err());
    assert!(app.db.try_execute("UPDATE audit_events SET event = 'sign_out'").await.is_err());
    // Retention's one change is allowed once, and not undone.
    app.db.try_execute("UPDATE consent_records SET ip_address = NULL, client_redacted = true").await.unwrap();
    assert!(app.db.try_execute("UPDATE consent_records SET ip_address = '203.0.113.9'").await.is_err());
    assert!(app.db.try_execute("UPDATE consent_records SET client_redacted = false").await.is_err());
    assert!(consents(app, &token).await.records[0].granted);
}

/// The tables that hold a user's data, from the schema itself: `users` and every table with a
/// `user_id` or `link_user_id` column.
async fn user_tables(db: &TestDb) -> Vec<(String, String)> {
    let rows = match db.backend() {
        Backend::Sqlite => {
            db.query_texts(
                "SELECT m.name || ':' || p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND p.name IN ('user_id', 'link_user_id') ORDER BY 1",
            )
            .await
        }
        Backend::Postgres | Backend::PgBouncer => {
            db.query_texts(
                "SELECT table_name || ':' || column_name FROM information_schema.columns \
                 WHERE table_schema = 'public' AND column_name IN ('user_id', 'link_user_id') ORDER BY 1",
            )
            .await
        }
    };
    let mut tables: Vec<(String, String)> =
        rows.iter().map(|r| r.split_once(':').map(|(t, c)| (t.to_owned(), c.to_owned())).unwrap()).collect();
    tables.push(("users".into(), "id".into()));
    tables
}

async fn export_holds_every_table_with_user_data(app: &TestApp) {
    let up = sign_up_with_profile(app, "export@example.com", true).await;
    let user_id: uuid::Uuid = up.user.as_ref().unwrap().id.parse().unwrap();
    let second = app.sign_in("export@example.com", PASSWORD).await.unwrap().session_token;
    app.auth().sign_out(bearer(pb::SignOutRequest {}, &second)).await.unwrap();
    let link = app.outbox_link("export@example.com", "verify").await;
    let token = link.split("token=").nth(1).unwrap().to_owned();
    app.auth().verify_email(pb::VerifyEmailRequest { token: token.clone() }).await.unwrap();

    let export =
        app.auth().export_my_data(bearer(pb::ExportMyDataRequest {}, &up.session_token)).await.unwrap().into_inner();
    let doc: Value = serde_json::from_str(&export.document).unwrap();
    assert_eq!(doc["format"], "gatehouse.export.v1");
    assert_eq!(doc["user_id"], user_id.to_string());
    assert_eq!(doc["tables"]["users"][0]["email"], "export@example.com");
    assert_eq!(doc["tables"]["profiles"][0]["programming_level"], "advanced");

    // Every table that holds user data is in the export, with every one of the user's rows: a
    // table added to the schema but not to the export fails here.
    let tables = user_tables(&app.db).await;
    assert!(tables.len() >= 10, "{tables:?}");
    for (table, column) in &tables {
        let rows = doc["tables"][table.as_str()].as_array();
        let Some(rows) = rows else { panic!("the export has no {table:?} table") };
        let mut stored = app.db.count_for(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1"), user_id).await;
        if table == "audit_events" {
            // The export's own event is recorded after it is read.
            stored -= 1;
        }
        assert_eq!(rows.len() as i64, stored, "{table}: exported rows against stored rows");
    }
    for table in ["sessions", "verification_tokens", "consent_records", "audit_events", "revocations", "user_changes"] {
        assert!(!doc["tables"][table].as_array().unwrap().is_empty(), "{table} should have rows for this user");
    }

    // Never a secret: no token, no hash, no password.
    for secret in [up.session_token.as_str(), second.as_str(), token.as_str(), PASSWORD, "$argon2", "token_hash"] {
        assert!(!export.document.contains(secret), "the export contains {secret:?}");
    }
    let hashes = app.db.query_blobs("SELECT token_hash FROM sessions").await;
    for hash in hashes {
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!export.document.contains(&hex));
    }

    // The export is audited; an operator's export is the same document, audited too.
    let events = app
        .auth()
        .list_audit_events(bearer(pb::ListAuditEventsRequest::default(), &up.session_token))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].event, "data_exported");
    let by_admin = admin(app)
        .export_user_data(with_key(pb::ExportUserDataRequest { user_id: user_id.to_string() }))
        .await
        .unwrap()
        .into_inner();
    let admin_doc: Value = serde_json::from_str(&by_admin.document).unwrap();
    assert_eq!(admin_doc["tables"]["users"], doc["tables"]["users"]);
    assert_eq!(
        admin_doc["tables"]["audit_events"].as_array().unwrap().len(),
        doc["tables"]["audit_events"].as_array().unwrap().len() + 1,
        "the operator's export shows the user's own export"
    );
    let unknown = admin(app)
        .export_user_data(with_key(pb::ExportUserDataRequest { user_id: uuid::Uuid::now_v7().to_string() }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad =
        admin(app).export_user_data(with_key(pb::ExportUserDataRequest { user_id: "x".into() })).await.unwrap_err();
    assert_eq!(violated_fields(&bad), ["user_id"]);
    let anonymous = admin(app).export_user_data(pb::ExportUserDataRequest { user_id: user_id.to_string() }).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(app.auth().export_my_data(pb::ExportMyDataRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
}

async fn deleting_an_account_leaves_a_tombstone(app: &TestApp) {
    let up = sign_up_with_profile(app, "tombstone@example.com", true).await;
    let user_id = up.user.as_ref().unwrap().id.clone();
    app.auth()
        .delete_account(bearer(pb::DeleteAccountRequest { password: PASSWORD.into() }, &up.session_token))
        .await
        .unwrap();
    let events = admin(app)
        .list_user_audit_events(with_key(pb::ListUserAuditEventsRequest { user_id, ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].event, "account_deleted");
    assert_eq!(app.db.count("consent_records").await, 0, "consent records go with the account");
    assert_eq!(app.db.count("users").await, 0);
    let stored = app.db.query_texts("SELECT event || ' ' || COALESCE(reason, '') FROM audit_events").await;
    assert!(stored.iter().all(|e| !e.contains("tombstone@") && !e.contains("Reader")), "{stored:?}");
}

async fn report(app: &TestApp) -> pb::PrivacyReport {
    admin(app).get_privacy_report(with_key(pb::GetPrivacyReportRequest::default())).await.unwrap().into_inner()
}

async fn privacy_report_counts_consent_exports_and_deletions(app: &TestApp) {
    let a = sign_up_with_profile(app, "a@example.com", true).await.session_token;
    let b = sign_up_with_profile(app, "b@example.com", true).await.session_token;
    set_consent(app, &b, false).await;
    let c = app.sign_up("c@example.com").await.session_token;
    let r = report(app).await;
    assert_eq!((r.users, r.policy_version.as_str()), (3, "1"));
    assert_eq!(r.purposes.len(), 1);
    let p = &r.purposes[0];
    assert_eq!((p.purpose.as_str(), p.current, p.outdated, p.none), ("learner_background", 1, 0, 2));
    assert_eq!((r.self_exports, r.admin_exports, r.deletions), (0, 0, 0));
    let retention = r.retention.unwrap();
    assert_eq!(retention.personal_data.unwrap().seconds, 30 * 86_400);
    assert_eq!(retention.personal_data_mode, "truncate");
    assert_eq!(retention.audit_events.unwrap().seconds, 90 * 86_400);

    app.auth().export_my_data(bearer(pb::ExportMyDataRequest {}, &a)).await.unwrap();
    app.auth().export_my_data(bearer(pb::ExportMyDataRequest {}, &a)).await.unwrap();
    app.auth().delete_account(bearer(pb::DeleteAccountRequest { password: PASSWORD.into() }, &c)).await.unwrap();
    let r = report(app).await;
    assert_eq!((r.users, r.self_exports, r.admin_exports, r.deletions), (2, 2, 0, 1));
    assert_eq!((r.purposes[0].current, r.purposes[0].none), (1, 1));

    // A period that ends before those events counts none of them.
    let until = r.since.unwrap();
    let old = admin(app)
        .get_privacy_report(with_key(pb::GetPrivacyReportRequest { since: None, until: Some(until) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((old.self_exports, old.deletions), (0, 0));
    let backwards = admin(app)
        .get_privacy_report(with_key(pb::GetPrivacyReportRequest { since: r.until, until: Some(until) }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&backwards), ["since"]);
}

/// Waits (up to 10 s) until the pruner has redacted every row created before the clock moved.
async fn redacted_export(app: &TestApp, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let export = app.auth().export_my_data(bearer(pb::ExportMyDataRequest {}, token)).await.unwrap().into_inner();
        let doc: Value = serde_json::from_str(&export.document).unwrap();
        if done(&doc) {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("client data was not redacted within 10 s");
}

async fn sign_up_from(app: &TestApp, email: &str, ip: &str) -> String {
    let mut request = Request::new(pb::SignUpRequest {
        email: email.into(),
        password: PASSWORD.into(),
        name: "Reader".into(),
        profile: Some(pb::Profile { consent_given: true, ..Default::default() }),
    });
    request.metadata_mut().insert("x-forwarded-for", ip.parse().unwrap());
    request.metadata_mut().insert("x-forwarded-user-agent", "BookReader/1.0".parse().unwrap());
    app.auth().sign_up(request).await.unwrap().into_inner().session_token
}

fn first(doc: &Value, table: &str) -> (Value, Value) {
    let row = &doc["tables"][table][0];
    (row["ip_address"].clone(), row["user_agent"].clone())
}

async fn retention_truncates_client_data(app: &TestApp) {
    let v4 = sign_up_from(app, "v4@example.com", "203.0.113.77").await;
    let v6 = sign_up_from(app, "v6@example.com", "2001:db8:abcd:12::1").await;
    // Inside the retention nothing changes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh: Value = serde_json::from_str(
        &app.auth().export_my_data(bearer(pb::ExportMyDataRequest {}, &v4)).await.unwrap().into_inner().document,
    )
    .unwrap();
    assert_eq!(first(&fresh, "sessions"), (Value::from("203.0.113.77"), Value::from("BookReader/1.0")));

    app.clock.advance(TimeDelta::days(2));
    let done = |doc: &Value| {
        ["sessions", "audit_events", "consent_records"].iter().all(|t| doc["tables"][*t][0]["user_agent"].is_null())
    };
    let doc = redacted_export(app, &v4, done).await;
    for table in ["sessions", "audit_events", "consent_records"] {
        assert_eq!(first(&doc, table), (Value::from("203.0.113.0/24"), Value::Null), "{table}");
    }
    let doc = redacted_export(app, &v6, done).await;
    assert_eq!(first(&doc, "sessions").0, "2001:db8:abcd::/48");
    // The records themselves stay, and an event made now keeps its address until it is old.
    assert_eq!(doc["tables"]["consent_records"][0]["granted"], true);
    app.auth().export_my_data(forwarded(pb::ExportMyDataRequest {}, &v4, "203.0.113.9")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let recent = app
        .auth()
        .list_audit_events(bearer(pb::ListAuditEventsRequest::default(), &v4))
        .await
        .unwrap()
        .into_inner()
        .events;
    let sign_up = recent.iter().find(|e| e.event == "sign_up").unwrap();
    assert_eq!(sign_up.ip_address, "203.0.113.0/24");
    let latest = recent.iter().find(|e| e.event == "data_exported").unwrap();
    assert_eq!((latest.ip_address.as_str(), latest.user_agent.as_str()), ("203.0.113.9", "BookReader/1.0"));
}

async fn retention_can_clear_client_data(app: &TestApp) {
    let token = sign_up_from(app, "clear@example.com", "203.0.113.77").await;
    app.clock.advance(TimeDelta::days(2));
    let doc = redacted_export(app, &token, |doc| doc["tables"]["sessions"][0]["user_agent"].is_null()).await;
    for table in ["sessions", "audit_events", "consent_records"] {
        let doc = redacted_export(app, &token, |d| d["tables"][table][0]["ip_address"].is_null()).await;
        assert_eq!(first(&doc, table), (Value::Null, Value::Null), "{table}");
    }
    assert_eq!(doc["tables"]["consent_records"].as_array().unwrap().len(), 1);
}

async fn a_policy_change_outdates_consent_until_renewed(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else { return };
    let db = Arc::new(db);
    let app = spawn_on(Arc::clone(&db), mesh_config).await;
    let token = sign_up_with_profile(&app, "policy@example.com", true).await.session_token;
    app.stop_only().await;

    let app = spawn_on(Arc::clone(&db), |c| {
        mesh_config(c);
        c.privacy.consent_policy_version = "2026-12".into();
    })
    .await;
    let profile = app.profile().get_profile(bearer(pb::GetProfileRequest {}, &token)).await.unwrap().into_inner();
    let profile = profile.profile.unwrap();
    // Outdated: still stored (consent was given, for the earlier text), but flagged.
    assert!(profile.consent_given && profile.consent_outdated);
    assert_eq!(profile.consent_policy_version, "1");
    assert_eq!(profile.programming_level, i32::from(pb::ProgrammingLevel::Advanced));
    let list = consents(&app, &token).await;
    assert_eq!(list.policy_version, "2026-12");
    assert!(list.purposes[0].granted && list.purposes[0].outdated);
    let r = report(&app).await;
    assert_eq!((r.purposes[0].current, r.purposes[0].outdated, r.purposes[0].none), (0, 1, 0));

    // Consenting again records the new version.
    let renewed = set_consent(&app, &token, true).await;
    assert!(!renewed.consent_outdated);
    assert_eq!(renewed.consent_policy_version, "2026-12");
    let list = consents(&app, &token).await;
    let versions: Vec<&str> = list.records.iter().map(|r| r.policy_version.as_str()).collect();
    assert_eq!(versions, ["2026-12", "1"]);
    assert!(!list.purposes[0].outdated);
    let r = report(&app).await;
    assert_eq!((r.purposes[0].current, r.purposes[0].outdated), (1, 0));
    app.finish().await;
}
