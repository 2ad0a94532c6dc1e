//! Passwords in connection URLs never reach the logs or error messages, at TRACE, whether the
//! server behind the URL refuses or serves; and production warns about a database connection
//! that is neither TLS nor loopback. The real binary as a child process, its output captured.

use std::{
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use gatehouse::proto::v1::{self as pb, auth_service_client::AuthServiceClient};
use tokio::{
    io::AsyncReadExt,
    process::{Child, Command},
    task::JoinHandle,
};
use tonic::transport::Channel;
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};

use crate::{
    helpers::{Backend, PASSWORD, TestDb},
    shutdown::free_port,
};

/// The password in the URL's userinfo.
const USERINFO: &str = "UserinfoSecret-8d1f2a";
/// The password as a `?password=` query parameter.
const QUERY: &str = "QuerySecret-5c2e9b";
/// A libpq parameter sqlx does not know (it logs unknown parameters with their values).
const SSL: &str = "SslKeySecret-91c4d0";
/// Redis passwords, in the userinfo and the query.
const REDIS: &str = "RedisSecret-77ab31";
const REDIS_QUERY: &str = "RedisQuerySecret-e3f0";

const WARNING: &str = "neither TLS nor loopback";

/// A PostgreSQL URL for `host_port/database` carrying the password in both places.
fn pg_url(host_port: &str, database: &str, extra: &str) -> String {
    format!("postgres://postgres:{USERINFO}@{host_port}/{database}?password={QUERY}&sslpassword={SSL}{extra}")
}

/// The binary at TRACE on `database_url`, output piped.
fn command(database_url: &str, data_dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("GATEHOUSE_DATA_DIR", data_dir)
        .env("GATEHOUSE_SECRET", "redact-test-secret-redact-test-secret-0")
        .env("GATEHOUSE_DB_ACQUIRE_TIMEOUT", "1s")
        .env("GATEHOUSE_HEALTH_INTERVAL", "100ms")
        .env("GATEHOUSE_SHUTDOWN_GRACE", "2s")
        .env("GATEHOUSE_SHUTDOWN_DRAIN", "0s")
        .env("GATEHOUSE_ARGON2_MEMORY_KIB", "256")
        .env("GATEHOUSE_ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Production mode on loopback behind a (notional) sidecar.
fn production(command: &mut Command) {
    command.env("GATEHOUSE_ENV", "production").env("GATEHOUSE_ALLOW_PLAINTEXT", "true");
}

/// A started child whose stdout and stderr are drained as it runs (TRACE fills a pipe fast).
struct Captured {
    child: Child,
    readers: Vec<JoinHandle<Vec<u8>>>,
}

impl Captured {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start the gatehouse binary");
        let mut readers = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            readers.push(tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = out.read_to_end(&mut buf).await;
                buf
            }));
        }
        if let Some(mut err) = child.stderr.take() {
            readers.push(tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf).await;
                buf
            }));
        }
        Self { child, readers }
    }

    /// Waits (bounded) for the exit; the status and everything the process wrote.
    async fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the process did not exit within {limit:?}"))
            .unwrap();
        let mut output = String::new();
        for reader in self.readers {
            output.push_str(&String::from_utf8_lossy(&reader.await.unwrap()));
        }
        if std::env::var("TEST_LOG").is_ok() {
            eprintln!("{output}");
        }
        (status, output)
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("running");
        assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    }
}

/// Runs the binary until it exits on its own.
async fn run_to_exit(command: Command) -> (ExitStatus, String) {
    Captured::spawn(command).finish(Duration::from_secs(30)).await
}

fn assert_no_secret(output: &str) {
    for secret in [USERINFO, QUERY, SSL, REDIS, REDIS_QUERY] {
        if let Some(at) = output.find(secret) {
            let line_start = output[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = output[at..].find('\n').map_or(output.len(), |i| at + i);
            panic!("{secret} reached the output:\n{}", &output[line_start..line_end]);
        }
    }
}

/// Waits until the server on `port` says SERVING.
async fn serving(port: u16) -> Channel {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(30), "the server did not start within 30 s");
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await {
            let ok = HealthClient::new(channel.clone())
                .check(HealthCheckRequest { service: String::new() })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
            if ok {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_passwords_stay_out_of_the_output_when_the_server_refuses() {
    let data_dir = tempfile::tempdir().unwrap();
    let db_port = free_port();
    let url = pg_url(&format!("127.0.0.1:{db_port}"), "gatehouse", "");
    let (status, output) = run_to_exit(command(&url, data_dir.path(), free_port())).await;
    assert!(!status.success(), "the start must fail against a refusing database");
    assert_no_secret(&output);
    // The operator still learns which database could not be opened.
    assert!(output.contains(&format!("127.0.0.1:{db_port}")), "{output}");
    assert!(output.contains("opening the database"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(gatehouse_test_postgres), ignore = "TEST_POSTGRES_URL is not set")]
async fn database_passwords_stay_out_of_the_output_of_a_serving_server() {
    let Some(db) = TestDb::create(Backend::Postgres).await else { return };
    let TestDb::Postgres { name, .. } = &db else { unreachable!() };
    // The test server trusts loopback, so the passwords are carried but not needed.
    let url = pg_url("127.0.0.1:5432", name, "");
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Captured::spawn(command(&url, data_dir.path(), port));
    let channel = serving(port).await;
    let mut auth = AuthServiceClient::new(channel);
    let email = "redact@example.com";
    auth.sign_up(pb::SignUpRequest { email: email.into(), password: PASSWORD.into(), name: "R".into(), profile: None })
        .await
        .unwrap();
    auth.sign_in(pb::SignInRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();
    server.terminate();
    let (status, output) = server.finish(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(output.contains("TRACE"), "the run was at TRACE");
    assert_no_secret(&output);
    db.drop_database().await;
}

/// A Redis that refuses at start is not fatal (replicas restarting during a Redis outage must
/// come up): the server serves on in-process limits and says which Redis it could not reach,
/// without its passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passwords_stay_out_of_the_output() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let port = free_port();
    let mut command = command(&db.url(), data_dir.path(), port);
    command.env("REDIS_URL", format!("redis://gatehouse:{REDIS}@127.0.0.1:{redis_port}/0?password={REDIS_QUERY}"));
    let server = Captured::spawn(command);
    let mut auth = AuthServiceClient::new(serving(port).await);
    let email = "redis-down@example.com";
    auth.sign_up(pb::SignUpRequest { email: email.into(), password: PASSWORD.into(), name: "R".into(), profile: None })
        .await
        .unwrap();
    auth.sign_in(pb::SignInRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap();
    server.terminate();
    let (status, output) = server.finish(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert_no_secret(&output);
    let warning = output.lines().find(|l| l.contains("Redis is unavailable")).unwrap_or_else(|| panic!("{output}"));
    assert!(warning.contains(&format!("127.0.0.1:{redis_port}")), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_warns_about_a_database_connection_that_is_neither_tls_nor_loopback() {
    let data_dir = tempfile::tempdir().unwrap();
    // TEST-NET-1: nothing answers, so the start fails after the acquire timeout.
    let remote = "192.0.2.10:5432";
    let run = |url: String, prod: bool| {
        let mut command = command(&url, data_dir.path(), free_port());
        if prod {
            production(&mut command);
        }
        run_to_exit(command)
    };

    let (_, output) = run(pg_url(remote, "gatehouse", ""), true).await;
    assert_no_secret(&output);
    let warning = output.lines().find(|l| l.contains(WARNING)).unwrap_or_else(|| panic!("no warning in:\n{output}"));
    assert!(warning.contains("WARN") && warning.contains("192.0.2.10"), "{warning}");
    assert!(warning.contains("sslmode"), "the warning says what to set: {warning}");

    for (url, why) in [
        (pg_url(remote, "gatehouse", "&sslmode=verify-full"), "verified TLS"),
        (pg_url(remote, "gatehouse", "&sslmode=require"), "TLS"),
        (pg_url(&format!("127.0.0.1:{}", free_port()), "gatehouse", ""), "loopback"),
        (pg_url(&format!("localhost:{}", free_port()), "gatehouse", ""), "localhost"),
    ] {
        let (_, output) = run(url, true).await;
        assert_no_secret(&output);
        assert!(!output.contains(WARNING), "{why} must not be warned about:\n{output}");
    }
    // Development mode does not warn (nor does SQLite, a local file).
    let (_, output) = run(pg_url(remote, "gatehouse", ""), false).await;
    assert!(!output.contains(WARNING), "{output}");
}

/// Second factors at TRACE: the TOTP secret, its otpauth URI, the recovery codes, the
/// challenge token and the session tokens never reach the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_factor_secrets_stay_out_of_the_output() {
    use gatehouse::proto::v1::factor_service_client::FactorServiceClient;
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Captured::spawn(command(&db.server_url(), data_dir.path(), port));
    let channel = serving(port).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut factors = FactorServiceClient::new(channel);
    let email = "mfa-redact@example.com";
    let up = auth
        .sign_up(pb::SignUpRequest { email: email.into(), password: PASSWORD.into(), name: "R".into(), profile: None })
        .await
        .unwrap()
        .into_inner();
    let start = factors
        .start_totp_enrollment(crate::helpers::bearer(pb::StartTotpEnrollmentRequest::default(), &up.session_token))
        .await
        .unwrap()
        .into_inner();
    let totp =
        totp_rs::Builder::new().with_secret(totp_rs::Secret::try_from_base32(&start.secret).unwrap()).build().unwrap();
    let now = || u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let codes = factors
        .confirm_totp_enrollment(crate::helpers::bearer(
            pb::ConfirmTotpEnrollmentRequest { code: totp.generate(now()).to_string() },
            &up.session_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    let answer =
        auth.sign_in(pb::SignInRequest { email: email.into(), password: PASSWORD.into() }).await.unwrap().into_inner();
    let challenge = answer.second_factor_required.unwrap().challenge_token;
    use pb::complete_second_factor_request::Proof;
    let done = auth
        .complete_second_factor(pb::CompleteSecondFactorRequest {
            challenge_token: challenge.clone(),
            proof: Some(Proof::RecoveryCode(codes[0].clone())),
        })
        .await
        .unwrap()
        .into_inner();
    server.terminate();
    let (status, output) = server.finish(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    assert!(output.contains("TRACE") && output.contains("second_factor"), "the run was at TRACE and audited");
    let secrets = [PASSWORD, &start.secret, &start.otpauth_uri, &challenge, &up.session_token, &done.session_token];
    for secret in secrets.iter().copied().chain(codes.iter().map(String::as_str)) {
        assert!(!output.contains(secret), "{secret:?} reached the output");
        assert!(!output.contains(&secret.replace('-', "")), "{secret:?} reached the output");
    }
    db.drop_database().await;
}
