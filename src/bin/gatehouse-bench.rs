//! Load generator: starts a `gatehouse` server as a child process, drives it through the
//! generated client with many concurrent streams, and prints throughput, latency percentiles
//! and the server's peak memory. See BENCHMARKS.md for the commands and recorded figures.

use std::{
    future::Future,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use clap::Parser;
use gatehouse::proto::v1::{self as pb, auth_service_client::AuthServiceClient};
use tonic::{Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

#[derive(Debug, Parser)]
#[command(about = "Drive a Gatehouse server and print throughput, latency and memory figures")]
struct Args {
    /// The server binary to start (build it with --release first).
    #[arg(long, default_value = "target/release/gatehouse")]
    server_bin: PathBuf,
    /// Database for the server: a fresh sqlite:// file by default, or a postgres:// URL of an
    /// empty database.
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent request streams for the throughput runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Length of each measured run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Streams of GetSession measured with and without the sign-in storm.
    #[arg(long, default_value_t = 8)]
    probe_concurrency: usize,
    /// Sessions minted (by signing in) for the working-set run, which validates them in random
    /// order rather than one hot token; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Instead of the throughput runs, measure the server's memory while connections hold
    /// abandoned streams (a request's headers and half its message, then nothing), and after
    /// they close: `--abandoned-streams 2000` per connection.
    #[arg(long)]
    abandoned_streams: Option<usize>,
    /// Stream counts of the working-set runs (each also runs GetSession on one token).
    #[arg(long, value_delimiter = ',', default_value = "32,64")]
    working_set_streams: Vec<usize>,
    /// Extra environment for the server (repeatable), e.g.
    /// `--server-env GATEHOUSE_SESSION_CACHE_ENTRIES=0` to measure with the cache off.
    #[arg(long = "server-env", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// Start a second server on the same database and measure how long a session signed out
    /// on it keeps validating on the first (warm) one: p50/p99 over this many revocations.
    #[arg(long, default_value_t = 0)]
    replica_revocations: usize,

    /// Replicas started on the one database (they must share it: a postgres:// URL), with the
    /// connections spread over them round-robin: the scale-out runs.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Connections for `--abandoned-streams`.
    #[arg(long, default_value_t = 16)]
    abandon_connections: usize,
    /// Rounds of `--abandoned-streams`.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Results of one run.
struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[idx]) / 1000.0
    }

    fn print(&self, name: &str, pid: u32) {
        let rss = peak_rss_kib(pid).map_or(0.0, |(_, now)| now as f64 / 1024.0);
        println!(
            "{name:<34} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} ok, {} errors)   RSS {rss:.0} MiB",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.requests,
            self.errors
        );
    }
}

/// Runs `streams` copies of `call` in a loop for `duration`, recording each call's latency.
async fn drive<F, Fut>(streams: usize, duration: Duration, call: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let (call, stop, errors) = (Arc::clone(&call), Arc::clone(&stop), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 14);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if call(i).await {
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap_or_default());
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Run { requests: latencies_us.len() as u64, errors: errors.load(Ordering::Relaxed), elapsed, latencies_us }
}

/// Argon2id verifications per second on all cores, outside the server: the ceiling for SignIn.
fn raw_verifications_per_second(duration: Duration) -> anyhow::Result<f64> {
    let argon2 =
        Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19_456, 2, 1, None).map_err(anyhow::Error::msg)?);
    let phc = argon2.hash_password(b"benchmark password").map_err(anyhow::Error::msg)?.to_string();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (phc, count) = (phc.clone(), Arc::clone(&count));
            std::thread::spawn(move || {
                let argon2 = Argon2::default();
                let hash = PasswordHash::new(&phc).ok();
                while start.elapsed() < duration {
                    if let Some(hash) = &hash {
                        let _ = argon2.verify_password(b"benchmark password", hash);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn peak_rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile_dir()?;
    let database_url =
        args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", dir.display()));
    let (port, mut child) = start_server(&args, &database_url, &dir)?;
    let pid = child.id().context("server pid")?;
    let backend = database_url.split(':').next().unwrap_or("?").to_owned();

    let endpoint = format!("http://127.0.0.1:{port}");
    let mut endpoints = vec![endpoint];
    let mut others = Vec::new();
    for _ in 1..args.replicas.max(1) {
        // Started once the first has migrated the database.
        connect_when_serving(&endpoints[0]).await?;
        let dir = tempfile_dir()?;
        let (port, child) = start_server(&args, &database_url, &dir)?;
        endpoints.push(format!("http://127.0.0.1:{port}"));
        others.push((child, dir));
    }
    let mut channels = Vec::new();
    for i in 0..args.connections.max(1) * endpoints.len() {
        channels.push(connect_when_serving(&endpoints[i % endpoints.len()]).await?);
    }
    let channels = Arc::new(channels);
    let (_, idle_rss) = peak_rss_kib(pid).unwrap_or_default();
    if let Some(streams) = args.abandoned_streams {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        abandoned_streams(addr, pid, idle_rss, args.abandon_connections, streams, args.rounds).await?;
        stop(pid, &mut child).await;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    println!(
        "gatehouse-bench: backend {backend}, {} replica(s), {} streams over {} connections, {:?} per run, {} cores",
        endpoints.len(),
        args.concurrency,
        channels.len(),
        args.duration,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // One user per sign-in stream, so no row is a hotspot; one token for GetSession.
    let password = "benchmark passphrase that is long";
    let mut auth = AuthServiceClient::new(channels[0].clone());
    let mut emails = Vec::new();
    let mut token = String::new();
    for i in 0..args.concurrency {
        let email = format!("bench{i}@example.com");
        let up = auth
            .sign_up(pb::SignUpRequest {
                email: email.clone(),
                password: password.into(),
                name: format!("Bench {i}"),
                profile: None,
            })
            .await?
            .into_inner();
        if i == 0 {
            token = up.session_token;
        }
        emails.push(email);
    }
    let token: Arc<str> = token.into();
    let emails: Arc<Vec<String>> = Arc::new(emails);

    let health = {
        let channels = Arc::clone(&channels);
        drive(args.concurrency, args.duration, move |i| {
            let mut client = HealthClient::new(channels[i % channels.len()].clone());
            async move { client.check(HealthCheckRequest { service: String::new() }).await.is_ok() }
        })
        .await
    };
    health.print("Health/Check (empty RPC floor)", pid);

    let get_session = |streams: usize| {
        let channels = Arc::clone(&channels);
        let token = Arc::clone(&token);
        drive(streams, args.duration, move |i| {
            let mut client = AuthServiceClient::new(channels[i % channels.len()].clone());
            let request = bearer(pb::GetSessionRequest {}, &token);
            async move { client.get_session(request).await.is_ok() }
        })
    };
    let quiet = get_session(args.concurrency).await;
    quiet.print("GetSession", pid);
    for &streams in &args.working_set_streams {
        get_session(streams).await.print(&format!("GetSession one token x{streams}"), pid);
    }
    let mut working_set = None;
    let mut minted = None;
    if args.sessions > 0 {
        let tokens = mint_sessions(&channels, &emails, password, args.sessions, args.concurrency).await?;
        let (peak, now) = peak_rss_kib(pid).unwrap_or_default();
        println!("server RSS after minting: now {:.1} MiB, peak {:.1} MiB", now as f64 / 1024.0, peak as f64 / 1024.0);
        for &streams in &args.working_set_streams {
            let run = {
                let channels = Arc::clone(&channels);
                let tokens = Arc::clone(&tokens);
                let next = Arc::new(AtomicU64::new(0));
                drive(streams, args.duration, move |i| {
                    let mut client = AuthServiceClient::new(channels[i % channels.len()].clone());
                    // A scrambled counter: every stream walks the whole set in a different order.
                    let pick = splitmix64(next.fetch_add(1, Ordering::Relaxed)) % tokens.len() as u64;
                    let request = bearer(pb::GetSessionRequest {}, &tokens[pick as usize]);
                    async move { client.get_session(request).await.is_ok() }
                })
                .await
            };
            run.print(&format!("GetSession over {} sessions x{streams}", tokens.len()), pid);
            if working_set.is_none() {
                working_set = Some((tokens.len(), streams, run));
            }
        }
        minted = Some(tokens);
    }
    if args.replica_revocations > 0
        && let Some(tokens) = &minted
    {
        replica_revocations(&args, &database_url, &channels, tokens, args.replica_revocations).await?;
    }

    let sign_in = |streams: usize| {
        let channels = Arc::clone(&channels);
        let emails = Arc::clone(&emails);
        drive(streams, args.duration, move |i| {
            let mut client = AuthServiceClient::new(channels[i % channels.len()].clone());
            let request = pb::SignInRequest { email: emails[i % emails.len()].clone(), password: password.into() };
            async move { client.sign_in(request).await.is_ok() }
        })
    };
    let raw = tokio::task::spawn_blocking({
        let d = args.duration;
        move || raw_verifications_per_second(d)
    })
    .await??;
    let sign_ins = sign_in(args.concurrency).await;
    sign_ins.print("SignIn", pid);
    println!("{:<34} {:>9.1} verifications/s (all cores, no server)", "raw Argon2id", raw);

    let probe_quiet = get_session(args.probe_concurrency).await;
    probe_quiet.print(&format!("GetSession x{} quiet", args.probe_concurrency), pid);
    let (probe_storm, storm) = tokio::join!(get_session(args.probe_concurrency), sign_in(args.concurrency));
    probe_storm.print(&format!("GetSession x{} during storm", args.probe_concurrency), pid);
    storm.print(&format!("  SignIn x{} (the storm)", args.concurrency), pid);

    let (peak, now) = peak_rss_kib(pid).unwrap_or_default();
    println!(
        "server RSS: idle {:.1} MiB, now {:.1} MiB, peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!();
    println!("GetSession / empty RPC throughput : {:.2} (target >= 0.50)", quiet.rate() / health.rate());
    if let Some((n, streams, run)) = &working_set {
        println!(
            "GetSession over {n} sessions x{streams} / empty RPC : {:.2} (target >= 0.60), p99 {:.2} ms (target < 3 ms)",
            run.rate() / health.rate(),
            run.percentile(0.99)
        );
    }
    println!("SignIn / raw Argon2id capacity    : {:.2} (target >= 0.85)", sign_ins.rate() / raw);
    println!(
        "GetSession p99 storm / quiet      : {:.2} (target <= 3.0)",
        probe_storm.percentile(0.99) / probe_quiet.percentile(0.99)
    );

    for (mut other, other_dir) in others {
        if let Some(pid) = other.id() {
            stop(pid, &mut other).await;
        }
        let _ = std::fs::remove_dir_all(&other_dir);
    }
    stop(pid, &mut child).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s}: expected KEY=VALUE"))
}

/// Starts the server binary on `database_url` on a free port; returns the port and the child.
fn start_server(
    args: &Args,
    database_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(u16, tokio::process::Child)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = tokio::process::Command::new(&args.server_bin)
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("GATEHOUSE_DATA_DIR", dir)
        .env("GATEHOUSE_SECRET", "benchmark-secret-benchmark-secret-0123")
        .env("RUST_LOG", "warn")
        // The runs measure capacity: a per-account limit of 5 sign-ins a minute would hide it.
        .env("GATEHOUSE_RATE_LIMITS", "false")
        .env("GATEHOUSE_HTTP_LISTEN", "127.0.0.1:0")
        .envs(args.server_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.server_bin.display()))?;
    Ok((port, child))
}

/// Starts a second server on the same database; for each of `n` sessions (warm on the first
/// server), signs it out on the second and measures until the first refuses it.
async fn replica_revocations(
    args: &Args,
    database_url: &str,
    first: &Arc<Vec<Channel>>,
    tokens: &Arc<Vec<String>>,
    n: usize,
) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (port, mut child) = start_server(args, database_url, &dir)?;
    let pid = child.id().context("second server pid")?;
    let second = connect_when_serving(&format!("http://127.0.0.1:{port}")).await?;
    let mut on_first = AuthServiceClient::new(first[0].clone());
    let mut on_second = AuthServiceClient::new(second);
    let mut delays_us = Vec::with_capacity(n);
    let mut timeouts = 0;
    for token in tokens.iter().take(n) {
        // Warm on the first server (the working-set runs already did, unless it was refilled).
        on_first.get_session(bearer(pb::GetSessionRequest {}, token)).await?;
        on_second.sign_out(bearer(pb::SignOutRequest {}, token)).await?;
        let start = Instant::now();
        loop {
            if on_first.get_session(bearer(pb::GetSessionRequest {}, token)).await.is_err() {
                delays_us.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
                break;
            }
            if start.elapsed() > Duration::from_secs(5) {
                timeouts += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    delays_us.sort_unstable();
    let at = |p: f64| {
        let idx = ((delays_us.len() as f64 - 1.0) * p).round() as usize;
        delays_us.get(idx).map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    };
    println!(
        "cross-replica revocation: {} revocations, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {timeouts} not refused within 5 s (target p99 < 100 ms)",
        delays_us.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    stop(pid, &mut child).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Signs in `n` times, spread over the users and `streams` parallel streams, and returns the
/// session tokens.
async fn mint_sessions(
    channels: &Arc<Vec<Channel>>,
    emails: &Arc<Vec<String>>,
    password: &'static str,
    n: usize,
    streams: usize,
) -> anyhow::Result<Arc<Vec<String>>> {
    let start = Instant::now();
    let streams = streams.clamp(1, n);
    let mut tasks = Vec::with_capacity(streams);
    for s in 0..streams {
        let mut client = AuthServiceClient::new(channels[s % channels.len()].clone());
        let emails = Arc::clone(emails);
        let count = n / streams + usize::from(s < n % streams);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::with_capacity(count);
            for k in 0..count {
                let email = emails[(s + k * streams) % emails.len()].clone();
                let answer = client.sign_in(pb::SignInRequest { email, password: password.into() }).await?;
                tokens.push(answer.into_inner().session_token);
            }
            Ok::<_, tonic::Status>(tokens)
        }));
    }
    let mut tokens = Vec::with_capacity(n);
    for task in tasks {
        tokens.extend(task.await??);
    }
    println!("minted {} sessions in {:.1} s", tokens.len(), start.elapsed().as_secs_f64());
    Ok(Arc::new(tokens))
}

/// A fixed scrambling of `x` (splitmix64's finaliser), to visit a set in a spread-out order.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SIGTERM, then the graceful shutdown path.
async fn stop(pid: u32, child: &mut tokio::process::Child) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap_or(0), libc::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
}

/// Rounds of `connections` HTTP/2 connections, each opening up to `streams` SignIn streams
/// that send their headers and half of a 1 KiB message and then nothing, as a client that
/// abandons its calls without resetting them. Prints the streams sent (beyond the server's
/// SETTINGS_MAX_CONCURRENT_STREAMS, h2 holds them back client-side, as a conforming client
/// does; the server refuses any a client sends anyway) and the server's RSS while they are
/// held and after the connections close.
async fn abandoned_streams(
    addr: std::net::SocketAddr,
    pid: u32,
    idle_rss: u64,
    connections: usize,
    streams: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    println!(
        "gatehouse-bench: abandoned streams, {connections} connections x {streams} streams, {rounds} rounds; \
         server RSS idle {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    for round in 1..=rounds {
        let started = Instant::now();
        let mut held = Vec::new();
        for _ in 0..connections {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let (client, connection) = h2::client::handshake(tcp).await?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            held.push((tokio::spawn(open_abandoned(client, addr, streams)), driver));
        }
        let mut open = 0;
        let mut kept = Vec::new();
        let mut drivers = Vec::new();
        for (opener, driver) in held {
            let (n, streams) = opener.await?;
            open += n;
            kept.push(streams);
            drivers.push(driver);
        }
        // Give the server a moment to read what was sent.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, holding) = peak_rss_kib(pid).unwrap_or_default();
        drop(kept);
        for driver in drivers {
            driver.abort();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (peak, after) = peak_rss_kib(pid).unwrap_or_default();
        println!(
            "round {round}: {open} streams sent in {:.1} s; RSS holding {:.1} MiB, 3 s after closing {:.1} MiB, \
             peak {:.1} MiB",
            started.elapsed().as_secs_f64(),
            holding as f64 / 1024.0,
            after as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    Ok(())
}

type Abandoned = Vec<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>)>;

/// Opens up to `n` abandoned streams on one connection; stops when the server's stream limit
/// holds the next one back for half a second.
async fn open_abandoned(
    mut client: h2::client::SendRequest<bytes::Bytes>,
    addr: std::net::SocketAddr,
    n: usize,
) -> (usize, Abandoned) {
    // A gRPC message header announcing 1024 bytes, and 512 of them.
    let mut partial = vec![0u8, 0, 0, 4, 0];
    partial.extend_from_slice(&[0x0a; 512]);
    let partial = bytes::Bytes::from(partial);
    let mut kept = Vec::new();
    for _ in 0..n {
        client = match tokio::time::timeout(Duration::from_millis(500), client.ready()).await {
            Ok(Ok(ready)) => ready,
            _ => break,
        };
        let Ok(request) = http::Request::post(format!("http://{addr}/gatehouse.v1.AuthService/SignIn"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
        else {
            break;
        };
        let Ok((response, mut body)) = client.send_request(request, false) else { break };
        if body.send_data(partial.clone(), false).is_err() {
            break;
        }
        kept.push((response, body));
    }
    (kept.len(), kept)
}

async fn connect_when_serving(endpoint: &str) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = Channel::from_shared(endpoint.to_owned())?.connect().await {
            let mut health = HealthClient::new(channel.clone());
            let status = health.check(HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                return Ok(channel);
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not become SERVING within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
