//! Starts the real server on an ephemeral port against a fresh database and hands out
//! generated clients. No sleeps: the listener is bound before the server task starts.

use std::{
    path::PathBuf,
    sync::{Arc, LazyLock, OnceLock},
    time::Duration,
};

use chrono::{TimeZone, Utc};
use gatehouse::{
    Application, Config,
    domain::ManualClock,
    proto::v1::{self as pb, auth_service_client::AuthServiceClient, profile_service_client::ProfileServiceClient},
};
use secrecy::SecretString;
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, transport::Channel};
use tonic_health::pb::health_client::HealthClient;

/// A password that passes every rule.
pub const PASSWORD: &str = "correct horse battery staple";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through a PgBouncer in transaction mode that the test process starts.
    PgBouncer,
}

/// The database a test server uses, kept when the test fails.
pub enum TestDb {
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    /// `url` is the direct address the test's own checks use; `pooled`, when set, the
    /// PgBouncer address the server is given instead.
    Postgres {
        admin_url: String,
        name: String,
        url: String,
        pooled: Option<String>,
    },
}

impl TestDb {
    /// Creates a migrated database for one test, cloned from a template that is migrated once
    /// per test run. Always `Some`: a missing PostgreSQL is a failure here (tests without one
    /// are marked ignored at build time, see `build.rs`).
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let template = tokio::task::spawn_blocking(sqlite_template).await.expect("template thread");
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("gatehouse.db");
                std::fs::copy(template, &path).expect("copy the SQLite template");
                Some(TestDb::Sqlite { _dir: dir, path })
            }
            Backend::Postgres | Backend::PgBouncer => {
                // PostgreSQL twins run only where the suite was built with TEST_POSTGRES_URL (or
                // CI=true); elsewhere they are reported as ignored. One that runs must have it.
                let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
                    panic!(
                        "TEST_POSTGRES_URL is not set (it was when the suite was built, or CI=true): the PostgreSQL \
                         twins need it; rebuild without it to have them reported as ignored"
                    );
                };
                let template = tokio::task::spawn_blocking(postgres_template).await.expect("template thread");
                let name = format!("gh_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect TEST_POSTGRES_URL");
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = with_database(&admin_url, &name);
                let pooled = (backend == Backend::PgBouncer).then(|| with_database(crate::pgbouncer::url(), &name));
                Some(TestDb::Postgres { admin_url, name, url, pooled })
            }
        }
    }

    /// The database's direct URL.
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => format!("sqlite://{}?mode=rwc", path.display()),
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// The URL the server connects to: through PgBouncer on that backend, else direct.
    pub fn server_url(&self) -> String {
        match self {
            TestDb::Postgres { pooled: Some(pooled), .. } => pooled.clone(),
            _ => self.url(),
        }
    }

    /// Drops a PostgreSQL test database (SQLite's folder goes with the TempDir).
    pub async fn drop_database(&self) {
        let TestDb::Postgres { admin_url, name, .. } = self else {
            return;
        };
        if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
            let sql = AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            let _ = sqlx::raw_sql(sql).execute(&mut conn).await;
        }
    }

    /// Runs `sql` (no parameters) and returns every row's first column as text.
    pub async fn query_texts(&self, sql: &'static str) -> Vec<String> {
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }

    /// Runs `sql` (no parameters) and returns every row's first column as bytes.
    pub async fn query_blobs(&self, sql: &'static str) -> Vec<Vec<u8>> {
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }

    /// Runs one statement (no parameters).
    pub async fn execute(&self, sql: &'static str) {
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// Runs one statement with `id` bound as `$1` (as the server binds ids).
    pub async fn execute_for(&self, sql: &'static str, id: uuid::Uuid) {
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                sqlx::query(sql).bind(id).execute(&mut conn).await.unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql).bind(id).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// Which backend this is.
    /// A count from `sql` with `$1` bound to `id`.
    pub async fn count_for(&self, sql: &str, id: uuid::Uuid) -> i64 {
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).bind(id).fetch_one(&mut conn).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).bind(id).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDb::Sqlite { .. } => Backend::Sqlite,
            TestDb::Postgres { pooled: None, .. } => Backend::Postgres,
            TestDb::Postgres { pooled: Some(_), .. } => Backend::PgBouncer,
        }
    }

    /// Counts rows of `table`.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }
}

/// A digest of one backend's migration files: a template is reused only while they are unchanged.
fn migrations_digest(backend: &str) -> String {
    use std::hash::{Hash, Hasher};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("migrations folder").map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.file_name().hash(&mut hasher);
        std::fs::read(&file).unwrap().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

/// Runs the server's own migrations on `url`, as a server start would.
fn migrate_blocking(url: String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let opts = gatehouse::storage::DbOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(30),
            ..gatehouse::storage::DbOptions::new(url)
        };
        gatehouse::storage::migrate(&opts).await.expect("migrate the template database");
    });
}

/// A migrated SQLite file that each test copies (migrating every test's file costs more).
fn sqlite_template() -> &'static PathBuf {
    static TEMPLATE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &TEMPLATE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("template dir");
            let path = dir.path().join("template.db");
            migrate_blocking(format!("sqlite://{}?mode=rwc", path.display()));
            (dir, path)
        })
        .1
}

/// The name of a migrated PostgreSQL database that tests clone with `CREATE DATABASE ... TEMPLATE`.
/// It is named by the migrations' digest and kept between runs; an advisory lock makes
/// concurrent test processes build it once.
fn postgres_template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let admin_url = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL");
        let name = format!("gh_template_{}", migrations_digest("postgres"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("connect TEST_POSTGRES_URL");
            sqlx::query("SELECT pg_advisory_lock(7316482)").execute(&mut conn).await.unwrap();
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if !exists {
                // Built under another name and renamed, so no process ever clones a half-migrated one.
                let building = format!("gh_building_{}", uuid::Uuid::new_v4().simple());
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{building}\"")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let url = with_database(&admin_url, &building);
                tokio::task::spawn_blocking(move || migrate_blocking(url)).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            sqlx::query("SELECT pg_advisory_unlock(7316482)").execute(&mut conn).await.unwrap();
        });
        name
    })
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    // TEST_LOG=1 for the usual filter, or TEST_LOG=<filter> (say, `info,sqlx::pool=trace`).
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let filter = if filter == "1" { "info,gatehouse=debug".to_owned() } else { filter };
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
});

/// A running Gatehouse and clients for it.
pub struct TestApp {
    pub clock: ManualClock,
    /// The gRPC port.
    pub addr: std::net::SocketAddr,
    /// The HTTP side port (JWKS, discovery, metrics).
    pub http_addr: std::net::SocketAddr,
    /// Holds the outbox and development files; removed with the app.
    _data_dir: TempDir,
    pub db: Arc<TestDb>,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The test configuration: ephemeral port, fast health checks, fixed secret.
pub fn test_config(db: &TestDb, data_dir: &std::path::Path) -> Config {
    let mut config = Config::default_for_test();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
    config.database.database_url = Some(db.server_url());
    if db.backend() == Backend::PgBouncer {
        // Said outright: the free port the test's PgBouncer took is not 6432.
        config.database.db_pooler = gatehouse::config::Pooler::Transaction;
    }
    config.server.data_dir = data_dir.to_path_buf();
    config.server.secret = Some(SecretString::from("test-secret-test-secret-test-secret!".to_owned()));
    config.server.health_interval = Duration::from_millis(100);
    config.database.db_acquire_timeout = Duration::from_secs(1);
    config.database.db_max_connections = 5;
    config.passwords.hash_threads = Some(2);
    // Nothing balances traffic in front of a test server: stop at once.
    config.server.shutdown_drain = Duration::ZERO;
    // Cheap hashing: the suite tests behaviour, not Argon2's cost (tests of the stored
    // parameters use [`production_hashing`]).
    config.passwords.argon2_memory_kib = 256;
    config.passwords.argon2_iterations = 1;
    // Generous limits: the rate-limit tests set their own.
    let generous: gatehouse::domain::limits::Rate = "10000/1m".parse().unwrap();
    config.limits.rate_sign_in_per_account = generous;
    config.limits.rate_sign_in_per_ip = generous;
    config.limits.rate_sign_up_per_ip = generous;
    config.limits.rate_reset_per_email = generous;
    config.limits.rate_reset_per_ip = generous;
    config.limits.rate_verification_per_account = generous;
    config.limits.rate_redeem_per_ip = generous;
    config.limits.rate_sign_in_per_email = generous;
    config.limits.rate_sign_in_global = generous;
    config.limits.rate_oauth_start_per_ip = generous;
    // Mail goes to a per-test outbox unless a test points it at its SMTP server.
    config.mail.mail_retry_backoff = Duration::from_millis(50);
    config
}

/// Starts a server on a new database, adjusting the configuration first.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let db = Arc::new(TestDb::create(backend).await?);
    Some(spawn_on(db, tweak).await)
}

/// Starts a server on an existing test database.
pub async fn spawn_on(db: Arc<TestDb>, tweak: impl FnOnce(&mut Config)) -> TestApp {
    LazyLock::force(&TRACING);
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut config = test_config(&db, data_dir.path());
    tweak(&mut config);
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap());
    let app = Application::build(config, Arc::new(clock.clone())).await.expect("build application");
    let addr = app.local_addr();
    let http_addr = app.http_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect");
    TestApp { clock, addr, http_addr, _data_dir: data_dir, db, channel, shutdown: Some(tx), server: Some(server) }
}

/// Points a configuration's mail at the test SMTP server.
pub fn use_smtp(config: &mut Config, smtp: &crate::smtp::SmtpServer) {
    config.mail.smtp_host = Some("127.0.0.1".into());
    config.mail.smtp_port = smtp.port;
    config.mail.smtp_tls = gatehouse::mail::SmtpTls::None;
    config.mail.smtp_timeout = Duration::from_secs(5);
}

/// A request carrying `x-forwarded-for: <ip>` (the test client is a trusted loopback proxy).
pub fn from_ip<T>(message: T, ip: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-forwarded-for", ip.parse().unwrap());
    request
}

impl TestApp {
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn profile(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Signs up `email` with [`PASSWORD`].
    pub async fn sign_up(&self, email: &str) -> pb::AuthResponse {
        self.try_sign_up(email, PASSWORD).await.unwrap_or_else(|s| panic!("sign-up of {email} failed: {s:?}"))
    }

    /// Signs up `email` with `password`, returning the server's answer.
    pub async fn try_sign_up(&self, email: &str, password: &str) -> Result<pb::AuthResponse, tonic::Status> {
        self.auth()
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: password.into(),
                name: "Test Reader".into(),
                profile: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Signs up `email` and verifies it through the link mailed to the outbox, as its owner would.
    pub async fn sign_up_verified(&self, email: &str) -> pb::AuthResponse {
        let up = self.sign_up(email).await;
        let link = self.outbox_link(email, "verify-email?token=").await;
        self.auth().verify_email(pb::VerifyEmailRequest { token: link }).await.expect("verify the address");
        up
    }

    /// The token of the newest link containing `marker` mailed to `to` through the outbox
    /// (waits up to 5 s for the mail queue).
    pub async fn outbox_link(&self, to: &str, marker: &str) -> String {
        let dir = self._data_dir.path().join("outbox");
        for _ in 0..100 {
            let mut found: Vec<(String, String)> = Vec::new();
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "txt")
                    && let Ok(text) = std::fs::read_to_string(&path)
                    && text.starts_with(&format!("To: {to}\n"))
                    && let Some(at) = text.find(marker)
                {
                    let token: String = text[at + marker.len()..].chars().take_while(|c| !c.is_whitespace()).collect();
                    found.push((path.file_name().unwrap().to_string_lossy().into_owned(), token));
                }
            }
            found.sort();
            if let Some((_, token)) = found.pop() {
                return token;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail to {to} with {marker} in the outbox");
    }

    /// How many outbox mails to `to` contain `text`, once the mail queue has been given a moment.
    pub async fn outbox_count(&self, to: &str, text: &str) -> usize {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dir = self._data_dir.path().join("outbox");
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "txt"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter(|t| t.starts_with(&format!("To: {to}\n")) && t.contains(text))
            .count()
    }

    /// Signs in `email` with `password`.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<pb::AuthResponse, tonic::Status> {
        self.auth()
            .sign_in(pb::SignInRequest { email: email.into(), password: password.into() })
            .await
            .map(tonic::Response::into_inner)
    }

    /// GetSession with `token`.
    pub async fn get_session(&self, token: &str) -> Result<pb::GetSessionResponse, tonic::Status> {
        self.auth().get_session(bearer(pb::GetSessionRequest {}, token)).await.map(tonic::Response::into_inner)
    }

    /// Stops the server and drops the database.
    pub async fn finish(mut self) {
        self.stop().await;
        self.db.drop_database().await;
    }

    /// Stops a second server on a shared database (the first one drops it).
    pub async fn stop_only(mut self) {
        self.stop().await;
    }

    /// Stops the server, keeping the database.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), server).await;
        }
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The field paths of an INVALID_ARGUMENT status's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Runs each behaviour as a test on SQLite and on PostgreSQL: the one shape of a test in this
/// suite. Groups name how a behaviour is set up; `=> tweak` adjusts its configuration first
/// (a `fn(&mut Config)`, named as from the invoking module):
///
/// ```text
/// backends! {
///     app: sign_in_round_trip, stored_hash_is_argon2id => production_hashing;  // async fn(&TestApp)
///     mail: sign_up_sends_a_link => require_verification;  // async fn(&TestApp, &mut SmtpServer)
///     own: two_servers_on_one_database;                    // async fn(Backend): sets itself up
///     (fixture Env): google_sign_in;                       // async fn(&Env), Env: Fixture
/// }
/// ```
///
/// The twins are `sqlite::name` and `postgres::name`. Without `TEST_POSTGRES_URL` the PostgreSQL
/// twin is reported as ignored (build.rs sets the cfg; CI=true always sets it, so a missing URL
/// fails there). A group written `(own redis)` or `(fixture redis T)` also needs Redis. The
/// database of a failed test is kept for inspection.
#[macro_export]
macro_rules! backends {
    ($( $kind:tt : $( $name:ident $(=> $tweak:path)? ),* $(,)? );* $(;)?) => {
        mod sqlite {
            $( $( $crate::backends!(@test Sqlite $kind $name [$($tweak)?]); )* )*
        }
        mod postgres {
            $( $( $crate::backends!(@test Postgres $kind $name [$($tweak)?]); )* )*
        }
    };
    (@test Sqlite (own redis) $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(not(gatehouse_test_redis), ignore = "TEST_REDIS_URL is not set")]
        async fn $name() { $crate::backends!(@run Sqlite (own) [$($tweak)?] $name); }
    };
    (@test Postgres (own redis) $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(all(gatehouse_test_redis, gatehouse_test_postgres)),
            ignore = "TEST_REDIS_URL or TEST_POSTGRES_URL is not set"
        )]
        async fn $name() { $crate::backends!(@run Postgres (own) [$($tweak)?] $name); }
    };
    (@test Sqlite (fixture redis $t:ty) $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(not(gatehouse_test_redis), ignore = "TEST_REDIS_URL is not set")]
        async fn $name() { $crate::backends!(@run Sqlite (fixture $t) [$($tweak)?] $name); }
    };
    (@test Postgres (fixture redis $t:ty) $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(all(gatehouse_test_redis, gatehouse_test_postgres)),
            ignore = "TEST_REDIS_URL or TEST_POSTGRES_URL is not set"
        )]
        async fn $name() { $crate::backends!(@run Postgres (fixture $t) [$($tweak)?] $name); }
    };
    (@test PgBouncer (own redis) $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(all(gatehouse_test_redis, gatehouse_test_pgbouncer)),
            ignore = "TEST_REDIS_URL, TEST_POSTGRES_URL or pgbouncer is missing"
        )]
        async fn $name() { $crate::backends!(@run PgBouncer (own) [$($tweak)?] $name); }
    };
    (@test PgBouncer (fixture redis $t:ty) $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(all(gatehouse_test_redis, gatehouse_test_pgbouncer)),
            ignore = "TEST_REDIS_URL, TEST_POSTGRES_URL or pgbouncer is missing"
        )]
        async fn $name() { $crate::backends!(@run PgBouncer (fixture $t) [$($tweak)?] $name); }
    };
    (@test PgBouncer $kind:tt $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(not(gatehouse_test_pgbouncer), ignore = "TEST_POSTGRES_URL or pgbouncer is missing")]
        async fn $name() { $crate::backends!(@run PgBouncer $kind [$($tweak)?] $name); }
    };
    (@test Sqlite $kind:tt $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() { $crate::backends!(@run Sqlite $kind [$($tweak)?] $name); }
    };
    (@test Postgres $kind:tt $name:ident [$($tweak:path)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
        async fn $name() { $crate::backends!(@run Postgres $kind [$($tweak)?] $name); }
    };
    (@run $backend:ident app [$($tweak:path)?] $name:ident) => {
        // The tweak is named as from the invoking module.
        #[allow(unused_imports)]
        use super::*;
        let tweak = $crate::backends!(@tweak $($tweak)?);
        if let Some(app) = $crate::helpers::spawn_app_with($crate::helpers::Backend::$backend, tweak).await {
            super::$name(&app).await;
            app.finish().await;
        }
    };
    (@run $backend:ident mail [$($tweak:path)?] $name:ident) => {
        #[allow(unused_imports)]
        use super::*;
        let tweak = $crate::backends!(@tweak $($tweak)?);
        $crate::helpers::run_with_mail($crate::helpers::Backend::$backend, tweak, |app, smtp| {
            Box::pin(super::$name(app, smtp))
        })
        .await;
    };
    (@run $backend:ident (own) [] $name:ident) => {
        super::$name($crate::helpers::Backend::$backend).await;
    };
    (@run $backend:ident own [] $name:ident) => {
        super::$name($crate::helpers::Backend::$backend).await;
    };
    (@run $backend:ident (fixture $t:ty) [$($tweak:path)?] $name:ident) => {
        #[allow(unused_imports)]
        use super::*;
        let tweak = $crate::backends!(@tweak $($tweak)?);
        if let Some(fixture) =
            <$t as $crate::helpers::Fixture>::start($crate::helpers::Backend::$backend, tweak).await
        {
            super::$name(&fixture).await;
            $crate::helpers::Fixture::finish(fixture).await;
        }
    };
    (@tweak) => { $crate::helpers::no_tweak as fn(&mut gatehouse::Config) };
    (@tweak $tweak:path) => { $tweak as fn(&mut gatehouse::Config) };
}

/// PostgreSQL twins through a transaction-mode PgBouncer, for tests already listed in
/// [`backends!`]: `pgbouncer::name`, written like a `backends!` list. Reported as ignored
/// where PgBouncer is not installed (except under CI).
#[macro_export]
macro_rules! through_pgbouncer {
    ($( $kind:tt : $( $name:ident $(=> $tweak:path)? ),* $(,)? );* $(;)?) => {
        mod pgbouncer {
            $( $( $crate::backends!(@test PgBouncer $kind $name [$($tweak)?]); )* )*
        }
    };
}

/// What a `(fixture T)` group of [`backends!`] sets up for each test: started on a backend
/// (`None`: the backend is not configured here) and finished after the body passes.
pub trait Fixture: Sized {
    /// Starts on `backend`, with `tweak` applied to the server configuration.
    async fn start(backend: Backend, tweak: fn(&mut Config)) -> Option<Self>;
    /// Cleans up after a passing test.
    async fn finish(self);
}

/// A test database alone, for tests that start the server binary themselves.
impl Fixture for TestDb {
    async fn start(backend: Backend, _tweak: fn(&mut Config)) -> Option<Self> {
        TestDb::create(backend).await
    }

    async fn finish(self) {
        self.drop_database().await;
    }
}

/// The default test configuration.
pub fn no_tweak(_: &mut Config) {}

/// The production Argon2 parameters, for tests of what is stored.
pub fn production_hashing(config: &mut Config) {
    let defaults = Config::default_for_test();
    config.passwords.argon2_memory_kib = defaults.passwords.argon2_memory_kib;
    config.passwords.argon2_iterations = defaults.passwords.argon2_iterations;
    config.passwords.argon2_parallelism = defaults.passwords.argon2_parallelism;
}

/// Starts an SMTP server and an app mailing to it, runs `body`, and cleans up after success.
pub async fn run_with_mail(
    backend: Backend,
    tweak: fn(&mut Config),
    body: impl for<'a> FnOnce(
        &'a TestApp,
        &'a mut crate::smtp::SmtpServer,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>,
) {
    let mut smtp = crate::smtp::SmtpServer::start().await;
    let Some(app) = spawn_app_with(backend, |c| {
        use_smtp(c, &smtp);
        tweak(c);
    })
    .await
    else {
        return;
    };
    body(&app, &mut smtp).await;
    app.finish().await;
}

impl TestDb {
    /// Runs a statement, returning the database's error if it refuses.
    pub async fn try_execute(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        match self {
            TestDb::Sqlite { path, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
                sqlx::query(sql).execute(&mut conn).await.map(|_| ())
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await?;
                sqlx::query(sql).execute(&mut conn).await.map(|_| ())
            }
        }
    }
}
