//! Stopping: the real binary as a child process, sent SIGTERM, idle, with open streams and
//! under load, on SQLite and PostgreSQL.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use gatehouse::proto::v1::{self as pb, token_service_client::TokenServiceClient};
use tokio::process::{Child, Command};
use tonic::{Request, transport::Channel};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};

use crate::helpers::{PASSWORD, TestDb};

const API_KEY: &str = "shutdown-test-key-0123456789abcdef";
/// Short enough for a test, long enough to tell "exited within the grace" from "held".
const GRACE: Duration = Duration::from_secs(4);
const DRAIN: Duration = Duration::from_millis(1500);

/// A `gatehouse` child process on its own data folder and database.
pub struct ServerProcess {
    pub child: Child,
    pub channel: Channel,
    /// The gRPC port's address.
    pub addr: std::net::SocketAddr,
    /// The HTTP side port's address.
    pub http_addr: std::net::SocketAddr,
    _data_dir: tempfile::TempDir,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ServerProcess {
    /// Starts the binary on `db` with `extra` environment, and waits until it serves.
    pub async fn start(db: &TestDb, extra: &[(&str, String)]) -> Self {
        Self::start_limited(db, extra, None).await
    }

    /// Like [`Self::start`], with the open-file limit (`ulimit -n`) set to `nofile` when given.
    pub async fn start_limited(db: &TestDb, extra: &[(&str, String)], nofile: Option<u64>) -> Self {
        use sha2::{Digest, Sha256};
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let http_port = free_port();
        let key_hash: String = Sha256::digest(API_KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let mut command = match nofile {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {limit} && exec \"$0\""), env!("CARGO_BIN_EXE_gatehouse")]);
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_gatehouse")),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db.url())
            .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEHOUSE_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("GATEHOUSE_DATA_DIR", data_dir.path())
            .env("GATEHOUSE_SECRET", "shutdown-test-secret-shutdown-test-secret")
            .env("GATEHOUSE_ADMIN_API_KEYS", format!("tests={key_hash}"))
            .env("GATEHOUSE_HEALTH_INTERVAL", "100ms")
            .env("GATEHOUSE_ARGON2_MEMORY_KIB", "256")
            .env("GATEHOUSE_ARGON2_ITERATIONS", "1")
            .env("GATEHOUSE_SHUTDOWN_GRACE", format!("{}ms", GRACE.as_millis()))
            .env("GATEHOUSE_SHUTDOWN_DRAIN", format!("{}ms", DRAIN.as_millis()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var("TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("start the gatehouse binary");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        let channel = loop {
            assert!(started.elapsed() < Duration::from_secs(30), "the server did not start within 30 s");
            if let Ok(channel) = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
                let serving = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest { service: String::new() })
                    .await
                    .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
                if serving {
                    break channel;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let http_addr = format!("127.0.0.1:{http_port}").parse().unwrap();
        Self { child, channel, addr, http_addr, _data_dir: data_dir }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits up to `limit` for the process to exit; its exit status, or `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().map(|r| r.unwrap())
    }
}

/// A request carrying the admin API key the process was started with.
pub fn with_key<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("x-api-key", API_KEY.parse().unwrap());
    request
}

/// The limit every stop must meet: the grace period plus a second.
fn exit_limit() -> Duration {
    GRACE + Duration::from_secs(1)
}

async fn sigterm_ends_an_idle_server(db: &TestDb) {
    let mut server = ServerProcess::start(db, &[]).await;
    let sent = Instant::now();
    server.terminate();
    let status = server.wait_exit(exit_limit()).await.expect("the idle server must exit within grace + 1 s");
    assert!(status.success(), "clean exit, got {status}");
    eprintln!("idle server exited {:?} after SIGTERM", sent.elapsed());
}

async fn sigterm_ends_open_streams_and_reports_not_serving(db: &TestDb) {
    let mut server = ServerProcess::start(db, &[]).await;
    let mut health = HealthClient::new(server.channel.clone());
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut revocations = TokenServiceClient::new(server.channel.clone())
        .watch_revocations(with_key(pb::WatchRevocationsRequest { after_id: 0 }))
        .await
        .expect("watch revocations")
        .into_inner();

    let sent = Instant::now();
    server.terminate();
    // While draining, a new check is answered, and says NOT_SERVING.
    let mut said_not_serving = false;
    while sent.elapsed() < DRAIN / 2 {
        let status =
            health.check(HealthCheckRequest { service: String::new() }).await.expect("answered while draining");
        if status.into_inner().status == ServingStatus::NotServing as i32 {
            said_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(said_not_serving, "Health.Check must answer NOT_SERVING during the grace period");
    // The watcher sees NOT_SERVING, then its stream ends.
    let mut statuses = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(exit_limit(), watch.message()).await.expect("the watch ends") {
        statuses.push(message.status);
    }
    assert_eq!(statuses.last(), Some(&(ServingStatus::NotServing as i32)), "{statuses:?}");
    let ended = tokio::time::timeout(exit_limit(), revocations.message()).await.expect("the revocation stream ends");
    let status = ended.expect_err("the revocation stream ends with a status telling the watcher to reconnect");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("after_id"), "{status:?}");

    let exit = server.wait_exit(exit_limit()).await.expect("open streams must not hold the process past grace + 1 s");
    assert!(exit.success(), "clean exit, got {exit}");
    // The streams ended when draining began, so nothing held the server to the end of the grace.
    assert!(sent.elapsed() < GRACE, "exited after {:?}", sent.elapsed());
}

async fn sigterm_under_load_exits_within_the_grace(db: &TestDb) {
    // Unlimited, so the load is real work rather than refusals.
    let mut server = ServerProcess::start(db, &[("GATEHOUSE_RATE_LIMITS", "false".into())]).await;
    let client = gatehouse::proto::v1::auth_service_client::AuthServiceClient::new(server.channel.clone());
    client
        .clone()
        .sign_up(pb::SignUpRequest {
            email: "load@example.com".into(),
            password: PASSWORD.into(),
            name: "Load".into(),
            profile: None,
        })
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (mut client, stop) = (client.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut ok = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let request = pb::SignInRequest { email: "load@example.com".into(), password: PASSWORD.into() };
                match client.sign_in(request).await {
                    Ok(_) => ok += 1,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    server.terminate();
    let exit = server.wait_exit(exit_limit()).await.expect("a loaded server must exit within grace + 1 s");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for worker in workers {
        served += worker.await.unwrap();
    }
    assert!(served > 0, "the load was served before the stop");
    assert!(exit.success(), "clean exit, got {exit}");
    eprintln!("loaded server ({served} sign-ins) exited {:?} after SIGTERM", sent.elapsed());
}

crate::backends! {
    (fixture crate::helpers::TestDb):
        sigterm_ends_an_idle_server,
        sigterm_ends_open_streams_and_reports_not_serving,
        sigterm_under_load_exits_within_the_grace;
}
