//! A stock PgBouncer in transaction mode in front of TEST_POSTGRES_URL, started once per test
//! process, and the tests of what only a pooler shows: startup parameters it refuses, prepared
//! statements it cannot keep, migrations it cannot lock, a LISTEN it cannot carry.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{
    helpers::{Backend, PASSWORD, TestDb, spawn_on},
    shutdown::free_port,
};
use gatehouse::proto::v1 as pb;
use std::sync::Arc;

/// Whether this process runs as root: PostgreSQL and PgBouncer refuse to, so their processes
/// run as the `postgres` user there.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives `dir` to the `postgres` user when running as root.
pub fn chown_for_service(dir: &Path) {
    if is_root() {
        let status = Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir).status().unwrap();
        assert!(status.success(), "chown {}", dir.display());
    }
}

/// The pooler's base URL (no database): `postgres://postgres@127.0.0.1:<port>`.
pub fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start)
}

/// Starts PgBouncer with a stock configuration: transaction pooling, every database forwarded
/// to the test PostgreSQL, and no `ignore_startup_parameters`. A watchdog shell ends it when
/// this test process exits, however it exits.
fn start() -> String {
    let admin = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL");
    let admin = url::Url::parse(&admin).expect("TEST_POSTGRES_URL parses");
    let (host, pg_port) = (admin.host_str().unwrap_or("127.0.0.1").to_owned(), admin.port().unwrap_or(5432));
    let user = if admin.username().is_empty() { "postgres" } else { admin.username() }.to_owned();
    // Kept for the process's life: the watchdog removes nothing, the OS cleans /tmp.
    let dir = tempfile::Builder::new().prefix("gh-pgbouncer-").tempdir().unwrap().keep();
    let port = free_port();
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host={host} port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
             max_client_conn = 2000\ndefault_pool_size = 8\nlogfile = {log}\n",
            users = dir.join("users.txt").display(),
            log = dir.join("pgbouncer.log").display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
    chown_for_service(&dir);
    let run_as = if is_root() { "-u postgres" } else { "" };
    let script = format!(
        "/usr/sbin/pgbouncer {run_as} {ini} & child=$!; \
         while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.2; done; kill $child 2>/dev/null",
        ini = ini.display(),
        parent = std::process::id(),
    );
    let mut watchdog = Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn().expect("start pgbouncer");
    // Reaped by a thread of its own; the watchdog outlives every test of the process.
    std::thread::spawn(move || watchdog.wait());
    wait_for_port(port, Duration::from_secs(10), "pgbouncer");
    format!("postgres://{user}@127.0.0.1:{port}")
}

/// A fresh, empty database (not cloned from the migrated template).
async fn empty_database() -> TestDb {
    use sqlx::Connection;
    let admin_url = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL");
    let name = format!("gh_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await.unwrap();
    let direct = crate::helpers::with_database(&admin_url, &name);
    let pooled = Some(crate::helpers::with_database(url(), &name));
    TestDb::Postgres { admin_url, name, url: direct, pooled }
}

/// Behind a pooler the migrator's advisory lock holds nothing, so an unmigrated database stops
/// the start with a message that says what to set; with the direct URL the same start migrates
/// through it and then serves through the pooler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_pgbouncer), ignore = "TEST_POSTGRES_URL or pgbouncer is missing")]
async fn migrations_need_the_direct_url_behind_a_pooler() {
    let db = empty_database().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(&db, data.path());
    config.database.db_pooler = gatehouse::config::Pooler::Transaction;
    let clock = gatehouse::domain::ManualClock::new(chrono::Utc::now());
    let refused = match gatehouse::Application::build(config.clone(), Arc::new(clock)).await {
        Ok(_) => panic!("an unmigrated database behind a pooler must stop the start"),
        Err(error) => format!("{error:#}"),
    };
    assert!(refused.contains("migration(s) pending"), "{refused}");
    assert!(refused.contains("GATEHOUSE_DATABASE_DIRECT_URL"), "{refused}");
    assert_eq!(refused.matches("pending").count(), 1, "said once: {refused}");
    assert_eq!(db.count("pg_tables WHERE tablename = 'users'").await, 0, "nothing was half-applied");

    let db = Arc::new(db);
    let direct = db.url();
    let app = spawn_on(Arc::clone(&db), |c| {
        c.database.db_pooler = gatehouse::config::Pooler::Transaction;
        c.database.database_direct_url = Some(direct);
    })
    .await;
    let signed_up = app.sign_up("pooled@example.com").await;
    let session = app.get_session(&signed_up.session_token).await.unwrap();
    assert_eq!(session.user.unwrap().email, "pooled@example.com");

    // A second replica, the same way: its revocation LISTEN goes over the direct URL (the
    // pooler cannot carry it), and a sign-out on one reaches the other's cache.
    let direct = db.url();
    let other = spawn_on(Arc::clone(&db), |c| {
        c.database.db_pooler = gatehouse::config::Pooler::Transaction;
        c.database.database_direct_url = Some(direct);
    })
    .await;
    other.get_session(&signed_up.session_token).await.unwrap();
    app.auth().sign_out(crate::helpers::bearer(pb::SignOutRequest {}, &signed_up.session_token)).await.unwrap();
    let began = Instant::now();
    while other.get_session(&signed_up.session_token).await.is_ok() {
        assert!(began.elapsed() < Duration::from_secs(2), "the other replica still accepts the signed-out session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each replica's follower opens its listener on its first pass.
    let began = Instant::now();
    while listeners(&db).await != 2 {
        assert!(began.elapsed() < Duration::from_secs(2), "one LISTEN per replica, on the direct connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut other = other;
    other.stop().await;
    app.finish().await;
}

/// Gatehouse connections LISTENing for revocations on the test database (they are named).
async fn listeners(db: &TestDb) -> i64 {
    use sqlx::Connection;
    let TestDb::Postgres { admin_url, name, .. } = db else { unreachable!() };
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'gatehouse-revocations' \
         AND query LIKE 'LISTEN%'",
    )
    .bind(name)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Many statements on few server connections, in parallel: PgBouncer hands each client's
/// transactions to whichever server connection is free, which is where named prepared
/// statements collide (`prepared statement "sqlx_s_1" already exists`) and an unnamed one
/// parsed on one server is executed on another. Eight pooled connections per server, 24
/// clients, and every answer must be right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_pgbouncer), ignore = "TEST_POSTGRES_URL or pgbouncer is missing")]
async fn a_parallel_burst_through_the_pooler_is_answered_correctly() {
    let db = Arc::new(TestDb::create(Backend::PgBouncer).await.unwrap());
    let app = spawn_on(Arc::clone(&db), |c| c.database.db_max_connections = 24).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app_auth = app.auth();
        tasks.push(tokio::spawn(async move {
            let mut auth = app_auth;
            let email = format!("burst{i}@example.com");
            let up = auth
                .sign_up(pb::SignUpRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    name: format!("Burst {i}"),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            for _ in 0..5 {
                let again = auth
                    .sign_in(pb::SignInRequest { email: email.clone(), password: PASSWORD.into() })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(again.user.unwrap().id, up.user.clone().unwrap().id);
            }
            let wrong = auth
                .sign_in(pb::SignInRequest { email, password: "not the password at all".into() })
                .await
                .unwrap_err();
            assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
            up
        }));
    }
    for task in tasks {
        let up = task.await.unwrap();
        let session = app.get_session(&up.session_token).await.unwrap();
        assert_eq!(session.user.unwrap().id, up.user.unwrap().id);
    }
    assert_eq!(db.count("users").await, 24);
    assert_eq!(db.count("sessions").await, 24 * 6);
    // Without a direct URL nothing LISTENs: the follower polls the feed.
    assert_eq!(listeners(&db).await, 0);
    app.finish().await;
}
