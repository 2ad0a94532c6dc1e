//! Listening sockets: a cap on open connections, idle connections closed, and an accept loop
//! that backs off when the process is out of file descriptors instead of spinning. Both the
//! gRPC port and the HTTP side port accept through here.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// File descriptors kept back from the connection cap for the database pool, TLS files,
/// logs and the side port's own sockets.
const RESERVED_FDS: u64 = 128;

/// How a listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; at the cap the listener stops accepting (new clients
    /// wait in the kernel's backlog) and established ones keep being served.
    pub max_connections: usize,
    /// A connection is closed after this long without work: on the gRPC port, with no call
    /// in progress; on the HTTP side port, without a byte from the peer.
    pub idle_timeout: Duration,
}

/// The default connection cap: below the process's open-file limit, shared by the gRPC port
/// and the side port, with room for everything else the process opens.
pub fn default_max_connections() -> usize {
    let soft = open_file_limit().unwrap_or(1024);
    let cap = soft.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(cap.clamp(16, 100_000)).unwrap_or(100_000)
}

/// The soft `RLIMIT_NOFILE`, if the platform tells.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        let done = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
        (done == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What makes a connection idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleRule {
    /// No call in progress (HTTP/2: keepalive pings and their answers do not count as work).
    NoCalls,
    /// No byte read from the peer (HTTP/1.1 keep-alive).
    NoReads,
}

/// Accepts on `listener` within `limits`; yields connections until the receiver is dropped.
pub fn incoming(listener: TcpListener, limits: ConnectionLimits, rule: IdleRule) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                    tokio::select! {
                        permit = Arc::clone(&slots).acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        () = tx.closed() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    // Out of descriptors or memory: retrying at once would spin a core and
                    // starve the connections already open. Wait, longer each time.
                    let pause = backoff.next();
                    tracing::warn!(%error, pause_ms = pause.as_millis(), "accept failed; backing off");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = tx.closed() => return,
                    }
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn::new(stream, peer, permit, limits.idle_timeout, rule);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Errors about one connection (the peer gave up during the handshake): accept the next.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// Doubling pauses from 10 ms to 1 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Work seen on one connection: calls in progress and when the last one ended.
#[derive(Debug)]
struct Activity {
    calls: AtomicUsize,
    /// Milliseconds since `EPOCH` at the last sign of work.
    last_work: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    fn touch(&self) {
        self.last_work.store(now_ms(), Ordering::Relaxed);
    }

    /// How long the connection has been without work, or zero while a call is in progress.
    fn idle_for(&self) -> Duration {
        if self.calls.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(now_ms().saturating_sub(self.last_work.load(Ordering::Relaxed)))
    }
}

/// Open connections by (local, peer) address, so that a call can find its connection's
/// activity from the connect info tonic puts on every request.
static OPEN: LazyLock<Mutex<OpenConnections>> = LazyLock::new(Default::default);

/// Connection key (local, peer) to its activity.
type OpenConnections = HashMap<(SocketAddr, SocketAddr), Arc<Activity>>;

fn open_connections() -> std::sync::MutexGuard<'static, OpenConnections> {
    OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An accepted connection within the cap; closes itself (reads end) once idle.
pub struct Conn {
    stream: TcpStream,
    key: Option<(SocketAddr, SocketAddr)>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    rule: IdleRule,
    idle_check: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        idle_timeout: Duration,
        rule: IdleRule,
    ) -> Self {
        let activity = Arc::new(Activity { calls: AtomicUsize::new(0), last_work: AtomicU64::new(now_ms()) });
        let key = stream.local_addr().ok().map(|local| (local, peer));
        if let Some(key) = key {
            open_connections().insert(key, Arc::clone(&activity));
        }
        let idle_check = Box::pin(tokio::time::sleep(idle_timeout));
        Self { stream, key, activity, idle_timeout, rule, idle_check, _slot: slot }
    }

    /// True once the connection has been idle for the timeout; rearms the check otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle_check.as_mut().poll(cx).is_ready() {
            let idle = self.activity.idle_for();
            if idle >= self.idle_timeout {
                return true;
            }
            let next = tokio::time::Instant::now() + (self.idle_timeout - idle);
            self.idle_check.as_mut().reset(next);
        }
        false
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            open_connections().remove(&key);
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            tracing::debug!(peer = ?self.key.map(|k| k.1), "closing an idle connection");
            // End of stream: the server closes its side as if the peer had.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.rule == IdleRule::NoReads && matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts a call on its connection from start until its response body ends, so that a
/// connection with a call in progress (a long `WatchRevocations` stream included) is never
/// idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTrackingLayer;

impl<S> tower::Layer<S> for CallTrackingLayer {
    type Service = CallTracking<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTracking { inner }
    }
}

/// See [`CallTrackingLayer`].
#[derive(Debug, Clone)]
pub struct CallTracking<S> {
    inner: S,
}

/// Holds a call's place on its connection; dropping it ends the call.
struct CallGuard(Arc<Activity>);

impl CallGuard {
    fn start<B>(request: &http::Request<B>) -> Option<Self> {
        let extensions = request.extensions();
        let info = extensions.get::<TcpConnectInfo>().or_else(|| {
            extensions.get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>().map(|tls| tls.get_ref())
        })?;
        let key = (info.local_addr?, info.remote_addr?);
        let activity = Arc::clone(open_connections().get(&key)?);
        activity.calls.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Some(Self(activity))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> tower::Service<http::Request<B>> for CallTracking<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = CallGuard::start(&request);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let Some(guard) = guard else { return Ok(response) };
            Ok(response.map(|body| tonic::body::Body::new(GuardedBody { inner: body, _guard: guard })))
        })
    }
}

/// A response body that keeps its call counted until it is done or dropped.
struct GuardedBody {
    inner: tonic::body::Body,
    _guard: CallGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The side port's listener for axum, within the same limits.
pub struct AxumListener {
    incoming: ReceiverStream<io::Result<Conn>>,
    local: SocketAddr,
}

impl AxumListener {
    /// Accepts on `listener` within `limits`, idle meaning no byte from the peer.
    pub fn new(listener: TcpListener, limits: ConnectionLimits) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self { incoming: incoming(listener, limits, IdleRule::NoReads), local })
    }
}

impl axum::serve::Listener for AxumListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let peer = conn.key.map_or(self.local, |k| k.1);
                    return (conn, peer);
                }
                Some(Err(_)) => continue,
                // The accept task only stops when this listener is dropped.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
