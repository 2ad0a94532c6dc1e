//! PostgreSQL and Redis going away under load, as they do in production: a restart of a
//! PostgreSQL cluster the test owns (never the shared one), every connection terminated, a
//! statement stuck behind a lock, TLS to the database, and a Redis the test owns stopped and
//! started again.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use gatehouse::{Config, proto::v1 as pb};
use sqlx::Connection;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, TestDb, bearer, from_ip, spawn_on},
    pgbouncer::{chown_for_service, is_root, wait_for_port},
    shutdown::free_port,
};

/// The installed PostgreSQL's server binaries (the newest major version).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()).unwrap_or(0));
    versions.pop().expect("an initdb and pg_ctl")
}

/// A PostgreSQL tool run as `postgres` when the test runs as root (the server refuses root).
fn pg_tool(tool: &str) -> Command {
    let path = pg_bin().join(tool);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster of the test's own, on a free port, stopped and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Cluster {
    /// `initdb` and start, with `settings` appended to postgresql.conf.
    pub fn start_new(settings: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("gh-pg-").tempdir().unwrap();
        chown_for_service(dir.path());
        let port = free_port();
        let mut init = pg_tool("initdb");
        init.arg("-D").arg(dir.path().join("data")).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        run(init, "initdb");
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = 60\n{settings}\n",
            dir.path().display()
        );
        let conf_path = dir.path().join("data/postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).unwrap();
        let cluster = Self { dir, port };
        cluster.start();
        cluster
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start(&self) {
        let mut start = pg_tool("pg_ctl");
        start.arg("-D").arg(self.dir.path().join("data")).arg("-l").arg(self.dir.path().join("log"));
        start.args(["-w", "-t", "60", "start"]);
        run(start, "pg_ctl start");
        wait_for_port(self.port, Duration::from_secs(30), "the test's PostgreSQL");
    }

    /// Stops the cluster: `immediate` is a crash (no checkpoint; recovery replays the WAL).
    pub fn stop(&self, mode: &str) {
        let mut stop = pg_tool("pg_ctl");
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(stop, "pg_ctl stop");
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database on the cluster, as a [`TestDb`] whose checks connect directly.
    pub async fn database(&self, name: &str) -> TestDb {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await.unwrap();
        TestDb::Postgres { admin_url: self.url("postgres"), name: name.into(), url: self.url(name), pooled: None }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = pg_tool("pg_ctl");
        stop.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

/// Every answer one kind of call gave, with how long it took.
#[derive(Default)]
struct Answers(Mutex<Vec<(&'static str, Code, Duration)>>);

impl Answers {
    fn record(&self, what: &'static str, code: Code, took: Duration) {
        self.0.lock().unwrap().push((what, code, took));
    }

    /// Asserts each kind of call answered only with `allowed` codes, none slower than `bound`,
    /// and returns how many answers were UNAVAILABLE.
    fn check(&self, bound: Duration) -> usize {
        let answers = self.0.lock().unwrap();
        assert!(!answers.is_empty(), "the load ran");
        for (what, code, took) in answers.iter() {
            let allowed: &[Code] = match *what {
                "valid session" | "sign-in" | "sign-up" => &[Code::Ok, Code::Unavailable],
                // Never OK for a token that is not valid.
                "forged session" => &[Code::Unauthenticated, Code::Unavailable],
                other => panic!("unknown call {other}"),
            };
            assert!(allowed.contains(code), "{what} answered {code:?} (allowed: {allowed:?})");
            assert!(*took < bound, "{what} took {took:?}, past {bound:?}: a hang, not an answer");
        }
        answers.iter().filter(|(_, code, _)| *code == Code::Unavailable).count()
    }
}

/// Steady GetSession, SignIn and SignUp on both replicas until `stop`; the sign-ups answered OK
/// are pushed to `acked`.
fn start_load(
    apps: [&TestApp; 2],
    token: String,
    email: String,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
    acked: Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (worker, app) in apps.into_iter().enumerate() {
        let (mut auth, stop, answers, acked) = (app.auth(), stop.clone(), answers.clone(), acked.clone());
        let (token, email) = (token.clone(), email.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let began = Instant::now();
                let code = code_of(auth.get_session(bearer(pb::GetSessionRequest {}, &token)).await);
                answers.record("valid session", code, began.elapsed());
                let began = Instant::now();
                let forged = format!("gh_{}", "A".repeat(43));
                let code = code_of(auth.get_session(bearer(pb::GetSessionRequest {}, &forged)).await);
                answers.record("forged session", code, began.elapsed());
                let began = Instant::now();
                let request = pb::SignInRequest { email: email.clone(), password: PASSWORD.into() };
                let code = code_of(auth.sign_in(request).await);
                answers.record("sign-in", code, began.elapsed());
                let began = Instant::now();
                let new = format!("load-{worker}-{n}@example.com");
                let request = pb::SignUpRequest {
                    email: new.clone(),
                    password: PASSWORD.into(),
                    name: "Load".into(),
                    profile: None,
                };
                let code = code_of(auth.sign_up(request).await);
                answers.record("sign-up", code, began.elapsed());
                if code == Code::Ok {
                    acked.lock().unwrap().push(new);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tasks
}

fn code_of<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Waits until the replica's health reports `want`.
async fn wait_health(app: &TestApp, want: ServingStatus, within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let status = app
            .health()
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(|r| r.into_inner().status())
            .unwrap_or(ServingStatus::Unknown);
        if status == want {
            return began.elapsed();
        }
        assert!(began.elapsed() < within, "health did not turn {want:?} within {within:?} (it is {status:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast_failover(c: &mut Config) {
    c.database.db_acquire_timeout = Duration::from_secs(1);
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`) under load and comes back after 5 s. Every
/// answer meanwhile is UNAVAILABLE or a correct answer, none hangs past the acquire timeout,
/// health turns NOT_SERVING and back without a restart of Gatehouse, a revocation made as
/// the database returns reaches the other replica, and no sign-up answered OK is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
async fn a_postgres_restart_under_load_is_unavailable_then_recovers() {
    let cluster = Cluster::start_new("");
    let db = Arc::new(cluster.database("gatehouse").await);
    let a = spawn_on(db.clone(), fast_failover).await;
    let b = spawn_on(db.clone(), fast_failover).await;
    let steady = a.sign_up("steady@example.com").await;
    let victim = a.sign_up("victim@example.com").await;
    // Replica b has the victim's session cached: only the feed can take it away.
    b.get_session(&victim.session_token).await.unwrap();

    let (stop, answers, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Answers::default()), Arc::default());
    let load = start_load(
        [&a, &b],
        steady.session_token.clone(),
        "steady@example.com".into(),
        stop.clone(),
        answers.clone(),
        Arc::clone(&acked),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let down = Instant::now();
    // A crash: no checkpoint, recovery replays the WAL. (Blocking one of four workers briefly.)
    cluster.stop("immediate");
    let a_down = wait_health(&a, ServingStatus::NotServing, Duration::from_secs(5)).await;
    let b_down = wait_health(&b, ServingStatus::NotServing, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .unwrap();
    let up = Instant::now();
    let a_up = wait_health(&a, ServingStatus::Serving, Duration::from_secs(15)).await;
    wait_health(&b, ServingStatus::Serving, Duration::from_secs(15)).await;

    // The revocation feed is read again: a sign-out on a reaches b's cache.
    let mut signed_out = false;
    for _ in 0..20 {
        if a.auth().sign_out(bearer(pb::SignOutRequest {}, &victim.session_token)).await.is_ok() {
            signed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(signed_out, "sign-out works again after the restart");
    let revoked = Instant::now();
    loop {
        match b.get_session(&victim.session_token).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            _ => {}
        }
        assert!(revoked.elapsed() < Duration::from_secs(5), "replica b still accepts the signed-out session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heard = revoked.elapsed();

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    // The acquire timeout (1 s) plus a connect attempt: nothing waits longer.
    let unavailable = answers.check(Duration::from_secs(3));
    assert!(unavailable > 0, "the outage was seen by the load");
    // Nothing answered OK was lost: every acknowledged sign-up is in the restarted database.
    let stored = db.query_texts("SELECT email FROM users").await;
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for email in &acked {
        assert!(stored.contains(email), "{email} was acknowledged but is gone after the restart");
    }
    // After recovery every kind of call answers OK again.
    a.sign_in("steady@example.com", PASSWORD).await.unwrap();
    b.get_session(&steady.session_token).await.unwrap();
    eprintln!(
        "restart: NOT_SERVING after {a_down:?}/{b_down:?}, SERVING {a_up:?} after the start, revocation heard in \
         {heard:?}, {unavailable} UNAVAILABLE answers, {} sign-ups kept; up for {:?}",
        acked.len(),
        up.elapsed()
    );
    let mut b = b;
    b.stop().await;
    let mut a = a;
    a.stop().await;
    drop(cluster);
}

/// Every Gatehouse connection is terminated twice mid-load (a failover's effect on a pool):
/// answers are OK or UNAVAILABLE, and the pool replaces what died without a restart.
async fn terminated_connections_are_replaced(backend: Backend) {
    let db = Arc::new(TestDb::create(backend).await.unwrap());
    let a = spawn_on(db.clone(), fast_failover).await;
    let b = spawn_on(db.clone(), fast_failover).await;
    let steady = a.sign_up("steady@example.com").await;
    let (stop, answers, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Answers::default()), Arc::default());
    let load = start_load(
        [&a, &b],
        steady.session_token.clone(),
        "steady@example.com".into(),
        stop.clone(),
        answers.clone(),
        Arc::clone(&acked),
    );
    let TestDb::Postgres { admin_url, name, .. } = &*db else { unreachable!() };
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let mut terminated = 0;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        terminated += ended.len();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(terminated > 0, "there were connections to terminate");
    answers.check(Duration::from_secs(3));
    // Dead pooled connections fail once each (at most the pool's size), then all is OK.
    let mut failures = 0;
    let mut consecutive = 0;
    while consecutive < 10 {
        match a.sign_in("steady@example.com", PASSWORD).await {
            Ok(_) => consecutive += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                failures += 1;
                consecutive = 0;
                assert!(failures <= 5, "more failures than pooled connections after the terminations");
            }
        }
    }
    let stored = db.query_texts("SELECT email FROM users").await;
    for email in acked.lock().unwrap().iter() {
        assert!(stored.contains(email), "{email} was acknowledged but is gone");
    }
    let mut b = b;
    b.stop().await;
    a.finish().await;
}

/// A statement stuck behind a lock is bounded by the request timeout: the callers get
/// UNAVAILABLE or DEADLINE_EXCEEDED, PostgreSQL cancels the statements (the statement timeout,
/// just inside the request timeout), and the pool serves at once when the lock goes. The same
/// holds for callers whose own deadline is shorter and who leave before the statement ends.
async fn a_statement_stuck_behind_a_lock_is_bounded(backend: Backend) {
    let db = Arc::new(TestDb::create(backend).await.unwrap());
    let app = spawn_on(db.clone(), |c| c.server.request_timeout = Duration::from_secs(2)).await;
    app.sign_up("locked@example.com").await;
    let TestDb::Postgres { url, name, .. } = &*db else { unreachable!() };
    let mut locker = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();

    let mut calls = Vec::new();
    for i in 0..8 {
        let mut auth = app.auth();
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
            let request = from_ip(
                pb::SignInRequest { email: "locked@example.com".into(), password: PASSWORD.into() },
                &format!("203.0.113.{i}"),
            );
            (code_of(auth.sign_in(request).await), began.elapsed())
        }));
    }
    for call in calls {
        let (code, took) = call.await.unwrap();
        assert!(matches!(code, Code::DeadlineExceeded | Code::Unavailable), "{code:?}");
        assert!(took < Duration::from_secs(4), "a stuck call took {took:?}");
    }
    // The server side gave up too: no Gatehouse statement still waits for the lock.
    let mut observer = sqlx::PgConnection::connect(url).await.unwrap();
    let began = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND state = 'active'",
        )
        .bind(name)
        .fetch_one(&mut observer)
        .await
        .unwrap();
        if waiting == 0 {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(3), "{waiting} statements still wait for the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    // PostgreSQL cancelled the statements (the statement timeout sits just inside the request
    // timeout), so each handler answered with its connection in hand: the pool serves at once.
    app.sign_in("locked@example.com", PASSWORD).await.unwrap();

    // A client whose own deadline is shorter drops its call mid-statement. Its connection
    // must still come back to the pool once the statement ends.
    sqlx::raw_sql("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let mut hurried = Vec::new();
    for i in 0..5 {
        let mut auth = app.auth();
        hurried.push(tokio::spawn(async move {
            let mut request = from_ip(
                pb::SignInRequest { email: "locked@example.com".into(), password: PASSWORD.into() },
                &format!("203.0.113.{}", 100 + i),
            );
            request.set_timeout(Duration::from_millis(500));
            code_of(auth.sign_in(request).await)
        }));
    }
    for call in hurried {
        let code = call.await.unwrap();
        assert!(matches!(code, Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable), "{code:?}");
    }
    // Held past the statement timeout: PostgreSQL cancels the abandoned statements too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    // The abandoned statements ran to their cancellation on tasks of their own and gave their
    // connections back: the pool serves at once.
    if let Err(status) = app.sign_in("locked@example.com", PASSWORD).await {
        let metrics = reqwest::get(format!("http://{}/metrics", app.http_addr)).await.unwrap().text().await.unwrap();
        let pool: Vec<&str> = metrics.lines().filter(|l| l.starts_with("gatehouse_db_pool")).collect();
        panic!("the pool lost its connections to the abandoned statements: {status:?} {pool:?}");
    }
    app.finish().await;
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
    async fn terminated_connections_are_replaced() {
        super::terminated_connections_are_replaced(crate::helpers::Backend::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
    async fn a_statement_stuck_behind_a_lock_is_bounded() {
        super::a_statement_stuck_behind_a_lock_is_bounded(crate::helpers::Backend::Postgres).await;
    }
}

mod pgbouncer {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(not(gatehouse_test_pgbouncer), ignore = "TEST_POSTGRES_URL or pgbouncer is missing")]
    async fn terminated_connections_are_replaced() {
        super::terminated_connections_are_replaced(crate::helpers::Backend::PgBouncer).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(not(gatehouse_test_pgbouncer), ignore = "TEST_POSTGRES_URL or pgbouncer is missing")]
    async fn a_statement_stuck_behind_a_lock_is_bounded() {
        super::a_statement_stuck_behind_a_lock_is_bounded(crate::helpers::Backend::PgBouncer).await;
    }
}

/// A Redis of the test's own on a fixed port, so it can be stopped and started again.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_for_port(port, Duration::from_secs(10), "the test's Redis");
        Self { port, child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The keys under `prefix` (the limits' counters).
    fn keys(&self, prefix: &str) -> usize {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--scan", "--pattern", &format!("{prefix}:*")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).count()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn sign_in_from(app: &TestApp, email: &str, ip: &str) -> Code {
    let request = from_ip(pb::SignInRequest { email: email.into(), password: PASSWORD.into() }, ip);
    code_of(app.auth().sign_in(request).await)
}

/// Redis stops under load and returns: sign-in keeps working on each replica's in-process
/// limits (fail open to local limits, never to none), health stays SERVING, the metric says
/// so, and the shared count resumes when Redis answers again.
async fn a_redis_outage_falls_back_to_local_limits(backend: Backend) {
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let prefix = format!("gatehouse-outage-{}", uuid::Uuid::new_v4().simple());
    let shared = |c: &mut Config| {
        let defaults = Config::default_for_test();
        c.limits.rate_sign_in_per_account = defaults.limits.rate_sign_in_per_account;
        c.limits.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        c.limits.redis_prefix = prefix.clone();
    };
    let db = Arc::new(TestDb::create(backend).await.unwrap());
    let one = spawn_on(db.clone(), shared).await;
    let two = spawn_on(db.clone(), shared).await;
    for email in ["before@example.com", "during@example.com", "after@example.com"] {
        one.sign_up(email).await;
    }
    // Shared: five sign-ins over two replicas use up the account's one budget (5/1m).
    let shared_budget = |email: &'static str, ip: &'static str| {
        let (one, two) = (&one, &two);
        async move {
            for i in 0..5 {
                let replica = if i % 2 == 0 { one } else { two };
                assert_eq!(sign_in_from(replica, email, ip).await, Code::Ok, "attempt {i} of {email}");
            }
            for replica in [one, two] {
                assert_eq!(sign_in_from(replica, email, ip).await, Code::ResourceExhausted, "{email} over budget");
            }
        }
    };
    shared_budget("before@example.com", "203.0.113.10").await;

    redis.stop();
    // Each replica now counts alone: the full budget on each, fast, and still a limit.
    for replica in [&one, &two] {
        for i in 0..5 {
            let began = Instant::now();
            assert_eq!(sign_in_from(replica, "during@example.com", "203.0.113.20").await, Code::Ok, "attempt {i}");
            assert!(began.elapsed() < Duration::from_secs(2), "a sign-in waited {:?} on Redis", began.elapsed());
        }
        assert_eq!(
            sign_in_from(replica, "during@example.com", "203.0.113.20").await,
            Code::ResourceExhausted,
            "the local limit still holds"
        );
        let health = replica.health().check(HealthCheckRequest { service: String::new() }).await.unwrap();
        assert_eq!(health.into_inner().status(), ServingStatus::Serving, "Redis is not the database");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", one.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gatehouse_rate_limit_degraded 1"), "{metrics}");
    let fallbacks: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_rate_limit_fallbacks_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(fallbacks >= 10.0, "fallbacks counted: {fallbacks}");

    let redis = OwnRedis::start(port);
    // Both replicas reconnect on their next checks.
    let back = Instant::now();
    let warm = "203.0.113.30";
    loop {
        let _ = sign_in_from(&one, "warm-one@example.com", warm).await;
        let _ = sign_in_from(&two, "warm-two@example.com", warm).await;
        if redis.keys(&prefix) >= 2 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "the replicas did not return to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared_budget("after@example.com", "203.0.113.40").await;
    let mut two = two;
    two.stop().await;
    one.finish().await;
}

mod redis {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(not(gatehouse_test_redis), ignore = "TEST_REDIS_URL is not set")]
    async fn sqlite_a_redis_outage_falls_back_to_local_limits() {
        super::a_redis_outage_falls_back_to_local_limits(crate::helpers::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(
        not(all(gatehouse_test_redis, gatehouse_test_postgres)),
        ignore = "TEST_REDIS_URL or TEST_POSTGRES_URL is not set"
    )]
    async fn postgres_a_redis_outage_falls_back_to_local_limits() {
        super::a_redis_outage_falls_back_to_local_limits(crate::helpers::Backend::Postgres).await;
    }
}

/// TLS to the database: `sslmode=verify-full` with the operator's CA file connects (and every
/// Gatehouse connection is encrypted), a CA that did not sign the server's certificate stops
/// the start, and `sslmode=require` encrypts without verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
async fn tls_to_the_database_is_verified() {
    let cluster = Cluster::start_new("");
    let ca = crate::tls::Ca::new("Gatehouse test database CA");
    let (cert, key) = ca.leaf("127.0.0.1", &["127.0.0.1", "localhost"]);
    let data = cluster.dir.path().join("data");
    std::fs::write(data.join("server.crt"), cert).unwrap();
    std::fs::write(data.join("server.key"), key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    chown_for_service(&data);
    let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres")).await.unwrap();
    // One statement each: a multi-statement string is one implicit transaction, which
    // ALTER SYSTEM refuses.
    for sql in [
        "ALTER SYSTEM SET ssl = 'on'",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::raw_sql(sql).execute(&mut admin).await.unwrap();
    }
    let files = tempfile::tempdir().unwrap();
    let ca_path = crate::tls::write(files.path(), "ca.pem", &ca.pem());
    let other_path = crate::tls::write(files.path(), "other.pem", &crate::tls::Ca::new("Someone else").pem());
    let db = cluster.database("gatehouse").await;
    let tls_url =
        |mode: &str, root: &Path| format!("{}?sslmode={mode}&sslrootcert={}", cluster.url("gatehouse"), root.display());
    let with_url = |url: String| TestDb::Postgres {
        admin_url: cluster.url("postgres"),
        name: "gatehouse".into(),
        url,
        pooled: None,
    };
    // The reload takes effect at once for new connections; wait for it to be visible.
    let began = Instant::now();
    while sqlx::PgConnection::connect(&tls_url("verify-full", &ca_path)).await.is_err() {
        assert!(began.elapsed() < Duration::from_secs(10), "the cluster did not turn TLS on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(db);

    let verified = Arc::new(with_url(tls_url("verify-full", &ca_path)));
    let app = spawn_on(verified.clone(), crate::helpers::no_tweak).await;
    let signed_up = app.sign_up("tls@example.com").await;
    app.get_session(&signed_up.session_token).await.unwrap();
    let (encrypted, total): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = 'gatehouse' AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(total > 0, "Gatehouse has connections open");
    assert_eq!(encrypted, total, "every Gatehouse connection is TLS");
    let mut app = app;
    app.stop().await;

    let data_dir = tempfile::tempdir().unwrap();
    let untrusted = with_url(tls_url("verify-full", &other_path));
    let config = crate::helpers::test_config(&untrusted, data_dir.path());
    let clock = gatehouse::domain::ManualClock::new(chrono::Utc::now());
    let refused = match gatehouse::Application::build(config, Arc::new(clock)).await {
        Ok(_) => panic!("a certificate the CA file did not sign must be refused"),
        Err(error) => format!("{error:#}"),
    };
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    let required = Arc::new(with_url(format!("{}?sslmode=require", cluster.url("gatehouse"))));
    let app = spawn_on(required, crate::helpers::no_tweak).await;
    app.sign_in("tls@example.com", PASSWORD).await.unwrap();
    let mut app = app;
    app.stop().await;
    drop(cluster);
}

/// PostgreSQL aborts a transaction to break a deadlock (40P01) or a serialization conflict
/// (40001), rolling it back whole. Gatehouse runs such a transaction again, three attempts in
/// all; past that (and for a lone statement) the caller is told to try again (UNAVAILABLE),
/// never that the server failed (INTERNAL), and nothing of the attempts is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
async fn aborted_transactions_are_retried_a_bounded_number_of_times() {
    let db = Arc::new(TestDb::create(Backend::Postgres).await.unwrap());
    let app = spawn_on(db.clone(), crate::helpers::no_tweak).await;
    let first = app.sign_up("aborted@example.com").await;
    let second = app.sign_in("aborted@example.com", PASSWORD).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    // A sign-out deletes the session and appends to the revocation feed in one transaction.
    // The trigger makes PostgreSQL abort the first `$1` appends, as its deadlock detector and
    // serializable isolation would.
    sqlx::raw_sql(
        "CREATE TABLE abort_plan (victims int); INSERT INTO abort_plan VALUES (2); \
         CREATE SEQUENCE attempts; \
         CREATE FUNCTION victim() RETURNS trigger LANGUAGE plpgsql AS $$ \
         DECLARE n bigint := nextval('attempts'); BEGIN \
           IF n <= (SELECT victims FROM abort_plan) THEN \
             IF n % 2 = 1 THEN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; \
             ELSE RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END IF; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER victim BEFORE INSERT ON revocations FOR EACH ROW EXECUTE FUNCTION victim();",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let attempts = async |conn: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("SELECT last_value FROM attempts").fetch_one(conn).await.unwrap()
    };

    // Two aborts, then the third attempt commits: the caller sees only success.
    app.auth().sign_out(bearer(pb::SignOutRequest {}, &first.session_token)).await.unwrap();
    assert_eq!(attempts(&mut conn).await, 3, "two aborted attempts and the one that committed");
    assert_eq!(db.count("revocations").await, 1, "the aborted attempts left nothing behind");
    let refused = app.get_session(&first.session_token).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Aborted every time: three attempts, then UNAVAILABLE, and the session is untouched.
    sqlx::raw_sql("UPDATE abort_plan SET victims = 1000").execute(&mut conn).await.unwrap();
    let status = app.auth().sign_out(bearer(pb::SignOutRequest {}, &second.session_token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("deadlock") && !status.message().contains("serialize"), "{status:?}");
    assert_eq!(attempts(&mut conn).await, 6, "bounded: three attempts");
    assert_eq!(db.count("revocations").await, 1);
    app.get_session(&second.session_token).await.unwrap();
    app.finish().await;
}
