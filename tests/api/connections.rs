//! Connection and stream limits: the real binary as a child process, held open by idle
//! sockets, by more connections than its cap or its file limit allows, and by more streams
//! than one connection may carry; on SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use gatehouse::proto::v1::{self as pb, token_service_client::TokenServiceClient};
use tokio::{io::AsyncReadExt, net::TcpStream};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    helpers::TestDb,
    shutdown::{ServerProcess, with_key},
};

/// Reads from a socket the server should close: how long until it did, or `None` if it was
/// still open after `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            // The server's HTTP/2 preface (SETTINGS) arrives before anything else.
            Ok(Ok(_)) => {}
        }
    }
}

async fn health_check(channel: Channel, limit: Duration) -> bool {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest { service: String::new() });
    matches!(tokio::time::timeout(limit, call).await, Ok(Ok(_)))
}

async fn fresh_channel(server: &ServerProcess) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// Open sockets that never send a byte are closed after the idle timeout, on both ports; a
/// connection with a call in progress (a `WatchRevocations` stream) is not.
async fn idle_connections_are_closed_but_not_busy_ones(db: &TestDb) {
    let idle = Duration::from_secs(1);
    let server =
        ServerProcess::start(db, &[("GATEHOUSE_CONNECTION_IDLE_TIMEOUT", format!("{}ms", idle.as_millis()))]).await;
    let mut grpc = TcpStream::connect(server.addr).await.unwrap();
    let mut http = TcpStream::connect(server.http_addr).await.unwrap();
    let mut stream = TokenServiceClient::new(server.channel.clone())
        .watch_revocations(with_key(pb::WatchRevocationsRequest { after_id: 0 }))
        .await
        .expect("watch revocations")
        .into_inner();

    let grpc_closed = closed_within(&mut grpc, Duration::from_secs(5)).await.expect("idle gRPC socket closed");
    let http_closed = closed_within(&mut http, Duration::from_secs(5)).await.expect("idle HTTP socket closed");
    assert!(grpc_closed >= idle / 2, "closed for idleness, not at once: {grpc_closed:?}");
    eprintln!("idle sockets closed after {grpc_closed:?} (gRPC) and {http_closed:?} (HTTP), timeout {idle:?}");

    // Three idle timeouts after it opened, the stream (nothing due on it) is still open.
    assert!(
        tokio::time::timeout(idle * 2, stream.message()).await.is_err(),
        "the busy connection must stay open with its stream"
    );
    assert!(health_check(server.channel.clone(), Duration::from_secs(2)).await, "the busy connection still serves");
}

/// At the connection cap, established clients keep being served while new connections wait,
/// and a waiting client is served once the attacker's sockets close.
async fn at_the_connection_cap_established_clients_are_served(db: &TestDb) {
    let cap = 8;
    let server = ServerProcess::start(db, &[("GATEHOUSE_MAX_CONNECTIONS", cap.to_string())]).await;
    assert!(health_check(server.channel.clone(), Duration::from_secs(2)).await);
    let mut attackers = Vec::new();
    for _ in 0..cap * 3 {
        attackers.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        assert!(
            health_check(server.channel.clone(), Duration::from_secs(1)).await,
            "an established client is served at the cap"
        );
    }
    let newcomer = fresh_channel(&server).await;
    assert!(!health_check(newcomer.clone(), Duration::from_secs(1)).await, "a new connection waits at the cap");
    drop(attackers);
    let started = Instant::now();
    let mut served = false;
    while started.elapsed() < Duration::from_secs(5) && !served {
        served = health_check(newcomer.clone(), Duration::from_secs(1)).await;
    }
    assert!(served, "served once connections closed");
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Out of file descriptors (a cap set above the file limit), the accept loop backs off
/// instead of spinning a core, and established clients keep being served.
async fn out_of_file_descriptors_the_accept_loop_backs_off(db: &TestDb) {
    let server = ServerProcess::start_limited(db, &[("GATEHOUSE_MAX_CONNECTIONS", "100000".into())], Some(192)).await;
    assert!(health_check(server.channel.clone(), Duration::from_secs(2)).await);
    let mut attackers = Vec::new();
    for _ in 0..260 {
        match TcpStream::connect(server.addr).await {
            Ok(socket) => attackers.push(socket),
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id().unwrap();
    let before = cpu_seconds(pid);
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < window {
        if health_check(server.channel.clone(), Duration::from_secs(1)).await {
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let used = cpu_seconds(pid) - before;
    let share = used / started.elapsed().as_secs_f64();
    eprintln!("at the file limit: {share:.2} of a core over {window:?}, {served} checks served");
    assert!(served >= 8, "established clients are served at the file limit ({served})");
    assert!(share < 0.35, "the accept loop must back off, not spin: {share:.2} of a core");
    drop(attackers);
    let newcomer = fresh_channel(&server).await;
    let started = Instant::now();
    let mut ok = false;
    while started.elapsed() < Duration::from_secs(5) && !ok {
        ok = health_check(newcomer.clone(), Duration::from_secs(1)).await;
    }
    assert!(ok, "new clients are served once descriptors are free");
}

/// One connection carries at most GATEHOUSE_MAX_STREAMS_PER_CONNECTION calls at once; more
/// wait for a stream to end instead of piling up on the server.
async fn one_connection_carries_at_most_the_stream_limit(db: &TestDb) {
    let server = ServerProcess::start(db, &[("GATEHOUSE_MAX_STREAMS_PER_CONNECTION", "4".into())]).await;
    let mut health = HealthClient::new(server.channel.clone());
    let mut watches = Vec::new();
    for _ in 0..4 {
        let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        watch.message().await.unwrap().unwrap();
        watches.push(watch);
    }
    assert!(!health_check(server.channel.clone(), Duration::from_secs(1)).await, "a fifth stream waits");
    watches.pop();
    assert!(health_check(server.channel.clone(), Duration::from_secs(2)).await, "served once a stream ended");
}

crate::backends! {
    (fixture crate::helpers::TestDb):
        idle_connections_are_closed_but_not_busy_ones,
        at_the_connection_cap_established_clients_are_served,
        out_of_file_descriptors_the_accept_loop_backs_off,
        one_connection_carries_at_most_the_stream_limit;
}
