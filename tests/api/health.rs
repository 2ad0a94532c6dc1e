//! Health follows the database; reflection serves both protocols in development only.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{
    backends,
    helpers::{Backend, TestApp, TestDb, spawn_app_with},
};

backends! { app: health_turns_not_serving_when_the_database_goes_away, reflection_lists_every_service }

/// Waits (bounded) until the watched status of the whole server is `want`.
async fn wait_for(app: &TestApp, want: ServingStatus) {
    let mut stream = app.health().watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(update)) = stream.next().await {
            if update.status == want as i32 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "health never became {want:?}");
}

async fn health_turns_not_serving_when_the_database_goes_away(app: &TestApp) {
    wait_for(app, ServingStatus::Serving).await;
    let token = app.sign_up("outage@example.com").await.session_token;
    match &*app.db {
        TestDb::Sqlite { path, .. } => {
            // A moved or deleted file would swallow writes into an unlinked inode.
            let aside = path.with_extension("aside");
            std::fs::rename(path, &aside).unwrap();
            wait_for(app, ServingStatus::NotServing).await;
            std::fs::rename(&aside, path).unwrap();
            wait_for(app, ServingStatus::Serving).await;
        }
        TestDb::Postgres { admin_url, name, .. } => {
            let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
            let sql = format!(
                "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
            );
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
            wait_for(app, ServingStatus::NotServing).await;
            // Validation during the outage is UNAVAILABLE, never a false OK or a crash.
            let during = app.get_session(&token).await.unwrap_err();
            assert_eq!(during.code(), Code::Unavailable, "{during:?}");
            assert!(!during.message().contains(name.as_str()));
            let sql = format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
            wait_for(app, ServingStatus::Serving).await;
        }
    }
    assert!(app.get_session(&token).await.is_ok(), "recovered without a restart");
}

async fn reflection_lists_every_service(app: &TestApp) {
    let v1 = list_services_v1(app).await.unwrap();
    let v1alpha = list_services_v1alpha(app).await.unwrap();
    for services in [&v1, &v1alpha] {
        for service in [
            "gatehouse.v1.AuthService",
            "gatehouse.v1.ProfileService",
            "gatehouse.v1.TokenService",
            "gatehouse.v1.AdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(services.iter().any(|s| s == service), "{service} missing from {services:?}");
        }
    }
}

async fn list_services_v1(app: &TestApp) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let mut responses = client.server_reflection_info(tokio_stream::once(request)).await?.into_inner();
    let response = responses.next().await.expect("one response")?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(app: &TestApp) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let mut responses = client.server_reflection_info(tokio_stream::once(request)).await?.into_inner();
    let response = responses.next().await.expect("one response")?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// Production mode turns reflection off unless asked for (OWASP gRPC guidance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_hides_reflection() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.server.environment = gatehouse::config::Environment::Production;
        // Production refuses plaintext except on loopback behind a sidecar, which this is.
        c.tls.allow_plaintext = true;
    })
    .await
    .unwrap();
    assert_eq!(list_services_v1(&app).await.unwrap_err().code(), Code::Unimplemented);
    assert_eq!(list_services_v1alpha(&app).await.unwrap_err().code(), Code::Unimplemented);
    app.finish().await;
}

/// A database that answers reads but refuses writes (here a PostgreSQL database turned
/// read-only, as a standby is after a failover) is not healthy: health follows writes.
/// The SQLite twin, a full disk, is `tests/api/full_disk.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
async fn health_turns_not_serving_when_postgres_refuses_writes() {
    let Some(app) = spawn_app_with(Backend::Postgres, crate::helpers::no_tweak).await else { return };
    wait_for(&app, ServingStatus::Serving).await;
    let TestDb::Postgres { admin_url, name, .. } = &*app.db else { unreachable!() };
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    // New sessions pick the setting up: end the pool's current ones.
    let set = |value: &str| {
        format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = {value}; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        )
    };
    sqlx::raw_sql(AssertSqlSafe(set("on"))).execute(&mut admin).await.unwrap();
    // A connection the pool was opening at that moment read the old setting and may not yet
    // have been listed: end the sessions once more when it is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::raw_sql(AssertSqlSafe(set("on"))).execute(&mut admin).await.unwrap();
    // Ending the sessions alone flips health for a moment; once the pool has reconnected to
    // the read-only database, health must stay NOT_SERVING, and writes fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..10 {
        let status = app.health().check(HealthCheckRequest { service: String::new() }).await.unwrap();
        assert_eq!(
            status.into_inner().status,
            ServingStatus::NotServing as i32,
            "a read-only database reads as SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = app
        .auth()
        .sign_up(gatehouse::proto::v1::SignUpRequest {
            email: "readonly@example.com".into(),
            password: crate::helpers::PASSWORD.into(),
            name: "Read Only".into(),
            profile: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    sqlx::raw_sql(AssertSqlSafe(set("off"))).execute(&mut admin).await.unwrap();
    // As above: a connection opened as the setting changed may still be read-only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::raw_sql(AssertSqlSafe(set("off"))).execute(&mut admin).await.unwrap();
    wait_for(&app, ServingStatus::Serving).await;
    // Pooled connections that were ended are found dead on their next use (checkouts are not
    // pinged: README, "Health"); each costs that call an UNAVAILABLE, never a wrong answer,
    // and then writes go through again.
    let mut dead = 0;
    loop {
        match app.try_sign_up("writable@example.com", crate::helpers::PASSWORD).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                dead += 1;
                assert!(dead <= 10, "writes still fail after the database took them again");
            }
        }
    }
    app.finish().await;
}

/// `gatehouse health` against the binary's own health service: the container's health check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_subcommand_exits_by_the_servers_answer() {
    let Some(mut app) = spawn_app_with(Backend::Sqlite, crate::helpers::no_tweak).await else { return };
    wait_for(&app, ServingStatus::Serving).await;
    let addr = format!("http://{}", app.addr);
    let check = |addr: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["health", "--addr", &addr, "--timeout", "2s"])
            .env("RUST_LOG", "error")
            .output()
            .await
            .unwrap()
    };
    let serving = check(addr.clone()).await;
    assert!(serving.status.success(), "{}", String::from_utf8_lossy(&serving.stderr));
    app.stop().await;
    let stopped = check(addr).await;
    assert_eq!(stopped.status.code(), Some(1));
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert!(said.starts_with("gatehouse health: asking http://127.0.0.1:"), "{said}");
}
