//! Store-level guarantees that the RPC surface cannot provoke on purpose.

use std::time::Duration;

use chrono::Utc;
use gatehouse::{
    domain::profile::{Profile, ProgrammingLevel},
    storage::{self, DbOptions, NewUser, SignUpRows},
};
use uuid::Uuid;

use crate::helpers::{Backend, TestDb};

async fn user_and_profile_are_one_transaction(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let store = storage::connect(&DbOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(2),
        ..DbOptions::new(db.url())
    })
    .await
    .unwrap();
    let now = Utc::now();
    let user =
        NewUser { id: Uuid::now_v7(), email: "tx@example.com".into(), name: "T".into(), password_hash: None, now };
    // Background without consent: the database's check constraint refuses the profile row
    // after the user row was written, so the transaction must roll both back.
    let bad =
        Profile { programming_level: Some(ProgrammingLevel::Advanced), ..Default::default() }.to_row(user.id, 1, now);
    assert!(matches!(
        store.create_user(&user, SignUpRows { profile: Some(&bad), ..Default::default() }).await,
        Err(storage::StoreError::Conflict(_))
    ));
    assert!(store.find_credentials_by_email("tx@example.com").await.unwrap().is_none());
    assert_eq!(db.count("users").await, 0);

    let good = Profile {
        consent_given: true,
        ..Profile { programming_level: Some(ProgrammingLevel::Advanced), ..Default::default() }
    }
    .to_row(user.id, 1, now);
    store.create_user(&user, SignUpRows { profile: Some(&good), ..Default::default() }).await.unwrap();
    assert_eq!(db.count("profiles").await, 1);
    store.close().await;
    db.drop_database().await;
}

crate::backends! { own: user_and_profile_are_one_transaction }
