//! Password rules (NIST SP 800-63B) and Argon2id hashing on a bounded pool of low-priority
//! threads, so that a storm of sign-ins neither starves the async runtime nor takes memory
//! per waiting request.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::Instant,
};

use std::cell::RefCell;

use argon2::{Algorithm, Argon2, Block, Params, Version, password_hash::phc::PasswordHash};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use unicode_normalization::UnicodeNormalization;

use super::error::Error;
use crate::metrics::METRICS;

/// Longest password accepted, in Unicode code points (no truncation happens below it).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Words a password must not contain because an attacker would try them first.
const SERVICE_WORDS: &[&str] = &["gatehouse"];

/// A password, NFKC-normalised. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The rules a new password must meet.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    /// Minimum length in code points.
    pub min_chars: usize,
}

impl Password {
    /// Normalises a password presented for verification. Only the length bound applies, so
    /// that hashing cost stays bounded; everything else is the hash's job.
    pub fn presented(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        let normalized = normalize(raw)?;
        Ok(Self(normalized))
    }

    /// Parses a new password: length in code points, then the blocklist. `context` holds the
    /// user's own details (email, name), which a password must not contain.
    pub fn new_password(raw: &str, policy: &PasswordPolicy, context: &[&str]) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("is required".into());
        }
        let normalized = normalize(raw)?;
        let chars = normalized.chars().count();
        if chars < policy.min_chars {
            return Err(format!("must be at least {} characters", policy.min_chars));
        }
        let lower = normalized.to_lowercase();
        for word in context.iter().copied().chain(SERVICE_WORDS.iter().copied()) {
            let word = word.trim().to_lowercase();
            if word.chars().count() >= 4 && lower.contains(&word) {
                return Err("must not contain your email, your name or the service name".into());
            }
        }
        // zxcvbn's dictionaries hold the most common passwords; fewer than 10^6 guesses means
        // the password is on or near such a list. This is a blocklist check, not a composition
        // rule: a long random lowercase password passes.
        let entropy = zxcvbn::zxcvbn(&normalized, context);
        if u8::from(entropy.score()) < 2 {
            let why = entropy.feedback().and_then(|f| f.warning()).map(|w| format!(" ({w})")).unwrap_or_default();
            return Err(format!("is too common or too easy to guess{why}"));
        }
        Ok(Self(normalized))
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn normalize(raw: &str) -> Result<String, String> {
    // Bound the work before normalising: 4 bytes per code point is the UTF-8 maximum.
    if raw.len() > MAX_PASSWORD_CHARS * 4 || raw.chars().count() > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    let normalized: String = raw.nfkc().collect();
    if normalized.chars().count() > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    Ok(normalized)
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for HashParams {
    /// The OWASP minimum for Argon2id.
    fn default() -> Self {
        Self { m_cost: 19_456, t_cost: 2, p_cost: 1 }
    }
}

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password matched.
    pub valid: bool,
    /// The hash was made with other parameters and should be replaced.
    pub needs_rehash: bool,
}

/// How many password checks may wait for a hashing thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBound {
    /// Exactly this many.
    Fixed(usize),
    /// As many as the threads hash within this time, at the rate they are hashing now (measured
    /// at start, then a moving average of every job's wall time, so that CPU taken by other work
    /// counts): a check that would wait longer is refused at once rather than left to time out.
    Within(std::time::Duration),
}

/// Most checks a derived bound allows to wait, whatever the measured rate: each waiting check
/// is an open request.
const MAX_DERIVED_QUEUE: usize = 4096;

/// Argon2id hashing and verification on `threads` dedicated threads with a bounded queue.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    worker: Arc<Worker>,
    queue: Arc<Queue>,
    bound: QueueBound,
    threads: usize,
}

/// What a hashing job needs.
struct Worker {
    argon2: Argon2<'static>,
    params: HashParams,
    /// A hash of a random password, verified for unknown emails so that their timing matches.
    dummy_hash: String,
}

/// Jobs waiting for a hashing thread, oldest first.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Jobs waiting or running.
    queued: AtomicUsize,
    /// Moving average of one job's wall time on its thread, in seconds (`f64` bits).
    seconds_per_hash: AtomicU64,
}

struct QueueState {
    jobs: VecDeque<Box<dyn Job>>,
    /// The hasher is gone: threads end once the queue is empty.
    closed: bool,
}

/// A queued password check.
trait Job: Send {
    /// The caller stopped waiting (its request ended or timed out).
    fn abandoned(&self) -> bool;
    /// Hashes and hands the result to the caller.
    fn run(self: Box<Self>);
}

struct Pending<T, F> {
    tx: tokio::sync::oneshot::Sender<Result<T, Error>>,
    work: F,
    span: tracing::Span,
}

impl<T: Send, F: FnOnce() -> Result<T, Error> + Send> Job for Pending<T, F> {
    fn abandoned(&self) -> bool {
        self.tx.is_closed()
    }

    fn run(self: Box<Self>) {
        let Pending { tx, work, span } = *self;
        let _ = tx.send(span.in_scope(work));
    }
}

impl Queue {
    /// Queues `job` unless `limit` jobs are already waiting for callers still there.
    fn push(&self, job: Box<dyn Job>, limit: usize) -> bool {
        let Ok(mut state) = self.state.lock() else { return false };
        if state.jobs.len() >= limit {
            // Jobs whose callers have gone hold no place.
            let before = state.jobs.len();
            state.jobs.retain(|job| !job.abandoned());
            self.abandoned(before - state.jobs.len());
        }
        if state.jobs.len() >= limit {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// The next job, waiting for one; `None` once the hasher is gone and the queue is empty.
    fn pop(&self) -> Option<Box<dyn Job>> {
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).ok()?;
        }
    }

    fn abandoned(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            METRICS.password_hashes_abandoned(n);
        }
    }

    /// A hashing thread: runs jobs until the hasher is gone.
    fn serve(&self) {
        lower_thread_priority();
        while let Some(job) = self.pop() {
            // The check is made as late as possible: a storm of callers with short deadlines
            // leaves a queue of jobs nobody waits for, and skipping them costs nothing.
            if job.abandoned() {
                self.abandoned(1);
                continue;
            }
            let started = Instant::now();
            job.run();
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.record(started.elapsed().as_secs_f64());
        }
    }

    /// Folds one job's wall time into the moving average (weight 1/8 for the newest). Two
    /// threads racing may lose one sample; that is harmless for an average.
    fn record(&self, seconds: f64) {
        let old = f64::from_bits(self.seconds_per_hash.load(Ordering::Relaxed));
        let new = old + (seconds - old) / 8.0;
        self.seconds_per_hash.store(new.to_bits(), Ordering::Relaxed);
    }

    fn seconds_per_hash(&self) -> f64 {
        f64::from_bits(self.seconds_per_hash.load(Ordering::Relaxed)).max(1e-6)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut state) = self.queue.state.lock() {
            state.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

impl PasswordHasher {
    /// Starts `threads` hashing threads whose queue is bounded by `bound`.
    pub fn start(params: HashParams, threads: usize, bound: QueueBound) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.m_cost, params.t_cost, params.p_cost, None)
                .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?,
        );
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        // Computed on a throwaway thread, so its Argon2 memory is freed with it rather than kept
        // by whichever runtime thread started the server. The same thread times a second,
        // warm, hash: the rate the queue bound is derived from.
        let (dummy_hash, one_hash) = {
            let argon2 = argon2.clone();
            thread::spawn(move || {
                let dummy = hash_phc(&argon2, &params, &random)?;
                let started = Instant::now();
                hash_phc(&argon2, &params, &random)?;
                Ok::<_, Error>((dummy, started.elapsed()))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("argon2 thread panicked"))?
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
        };
        // Until jobs are measured: threads beyond the cores would add no throughput, so a hash
        // on each of more threads than cores takes proportionally longer.
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let start_estimate = one_hash.as_secs_f64() * (threads as f64 / cores as f64).max(1.0);

        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState { jobs: VecDeque::new(), closed: false }),
            ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            seconds_per_hash: AtomicU64::new(start_estimate.to_bits()),
        });
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            thread::Builder::new().name(format!("argon2-{i}")).spawn(move || queue.serve())?;
        }
        let worker = Arc::new(Worker { argon2, params, dummy_hash });
        Ok(Self { inner: Arc::new(Inner { worker, queue, bound, threads }) })
    }

    /// Jobs waiting for or running on a hashing thread.
    pub fn queue_depth(&self) -> usize {
        self.inner.queue.queued.load(Ordering::Relaxed)
    }

    /// How many checks may wait for a thread now.
    pub fn queue_limit(&self) -> usize {
        match self.inner.bound {
            QueueBound::Fixed(n) => n,
            // At least one waiting check per thread, so that light load is never refused.
            QueueBound::Within(wait) => {
                ((self.hashes_per_second() * wait.as_secs_f64()) as usize).clamp(self.inner.threads, MAX_DERIVED_QUEUE)
            }
        }
    }

    /// Hashes per second all threads together manage now (see [`QueueBound::Within`]).
    pub fn hashes_per_second(&self) -> f64 {
        self.inner.threads as f64 / self.inner.queue.seconds_per_hash()
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: Password) -> Result<String, Error> {
        self.run(move |w| hash_phc(&w.argon2, &w.params, password.as_bytes())).await
    }

    /// Verifies `password` against `stored`; with no stored hash, verifies against a dummy so
    /// that the caller's timing does not reveal whether an account exists.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<Verification, Error> {
        self.run(move |w| {
            let (phc, real) = match &stored {
                Some(phc) => (phc.as_str(), true),
                None => (w.dummy_hash.as_str(), false),
            };
            let Ok(hash) = PasswordHash::new(phc) else {
                return Err(Error::Internal(anyhow::anyhow!("stored password hash is not a PHC string")));
            };
            let valid = verify_phc(&hash, password.as_bytes())? && real;
            Ok(Verification { valid, needs_rehash: valid && !w.is_current(&hash) })
        })
        .await
    }

    /// Queues `work`. If the caller stops waiting (its request is dropped at its deadline or
    /// by the client), the receiver goes with it and the job is skipped unhashed.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Worker) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = Arc::clone(&self.inner.worker);
        let job = Pending { tx, work: move || work(&worker), span: tracing::Span::current() };
        if !self.inner.queue.push(Box::new(job), self.queue_limit()) {
            return Err(Error::ResourceExhausted("too many password checks in progress; retry shortly"));
        }
        rx.await.map_err(|_| Error::Internal(anyhow::anyhow!("hashing thread ended")))?
    }
}

impl Worker {
    fn is_current(&self, hash: &PasswordHash) -> bool {
        let Ok(params) = Params::try_from(hash) else {
            return false;
        };
        hash.algorithm.as_str() == "argon2id"
            && hash.version == Some(Version::V0x13.into())
            && params.m_cost() == self.params.m_cost
            && params.t_cost() == self.params.t_cost
            && params.p_cost() == self.params.p_cost
    }
}

thread_local! {
    /// Each hashing thread's Argon2 memory, allocated once and reused: allocating and freeing
    /// 19 MiB of aligned memory per hash makes the allocator keep it, and RSS grows with every
    /// sign-in until it plateaus hundreds of MiB up.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2 with this thread's reusable memory.
fn with_memory<T>(blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        work(&mut memory[..blocks])
    })
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("argon2: {e}"))
}

/// Argon2id of `password` with a new random salt, as a PHC string.
fn hash_phc(argon2: &Argon2<'_>, params: &HashParams, password: &[u8]) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(failed)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks = Params::new(params.m_cost, params.t_cost, params.p_cost, None).map_err(failed)?.block_count();
    with_memory(blocks, |memory| argon2.hash_password_into_with_memory(password, &salt, &mut out, memory))
        .map_err(failed)?;
    // PHC strings use base64 without padding ("B64").
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost,
        params.t_cost,
        params.p_cost,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Whether `password` matches the stored hash, with the hash's own parameters.
fn verify_phc(hash: &PasswordHash, password: &[u8]) -> Result<bool, Error> {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return Ok(false) };
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(failed)?;
    let version = hash.version.map_or(Ok(Version::V0x13), Version::try_from).map_err(failed)?;
    let params = Params::try_from(hash).map_err(failed)?;
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    with_memory(blocks, |memory| argon2.hash_password_into_with_memory(password, salt, &mut out, memory))
        .map_err(failed)?;
    // Constant time: no early exit on the first differing byte.
    let diff = out.iter().zip(expected.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    Ok(diff == 0)
}

/// Hashing threads run at a lower priority so that, under a sign-in storm, the async runtime
/// (and with it `GetSession`) is scheduled first; idle CPU still goes to hashing.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory-safety preconditions; on Linux, `who = 0` with
    // PRIO_PROCESS names the calling thread only.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy { min_chars: 8 }
    }

    #[test]
    fn counts_code_points() {
        // Eight emoji are 32 bytes but 8 characters.
        let emoji = "🦀🐍🦊🐙🦉🐢🦄🐝";
        assert!(Password::new_password(emoji, &policy(), &[]).is_ok());
        assert!(Password::new_password("🦀🐍🦊🐙🦉🐢🦄", &policy(), &[]).is_err());
        assert!(Password::new_password(&"x".repeat(129), &policy(), &[]).is_err());
        let random: String = (0..4).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
        assert!(Password::new_password(&random, &policy(), &[]).is_ok());
        // Repetition is what a guesser tries first.
        assert!(Password::new_password(&"qzv".repeat(42), &policy(), &[]).is_err());
    }

    #[test]
    fn rejects_common_and_personal() {
        assert!(Password::new_password("password1234", &policy(), &[]).is_err());
        assert!(Password::new_password("kqzvmtrbwx", &policy(), &[]).is_ok());
        assert!(Password::new_password("ada.lovelace-2x9q", &policy(), &["ada.lovelace"]).is_err());
        assert!(Password::new_password("my-gatehouse-pw-2x9q", &policy(), &[]).is_err());
    }

    #[test]
    fn phc_strings_interoperate_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = HashParams { m_cost: 1024, t_cost: 2, p_cost: 1 };
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.m_cost, params.t_cost, params.p_cost, None).unwrap(),
        );
        let ours = hash_phc(&argon2, &params, b"hunter2 hunter2").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2.verify_password(b"hunter2 hunter2", &parsed).is_ok());
        assert!(verify_phc(&parsed, b"hunter2 hunter2").unwrap());
        assert!(!verify_phc(&parsed, b"hunter3 hunter3").unwrap());
        let theirs = argon2.hash_password(b"correct horse").unwrap().to_string();
        let theirs = PasswordHash::new(&theirs).unwrap();
        assert!(verify_phc(&theirs, b"correct horse").unwrap());
        assert!(!verify_phc(&theirs, b"wrong horse").unwrap());
    }

    /// A few milliseconds per hash, even on a fast machine.
    const SLOW: HashParams = HashParams { m_cost: 4096, t_cost: 24, p_cost: 1 };

    fn presented() -> Password {
        Password::presented("a password to check").unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        // A bound far below one hash: one check may run and one wait (at least one per thread).
        let hasher = PasswordHasher::start(SLOW, 1, QueueBound::Within(std::time::Duration::from_micros(1))).unwrap();
        assert_eq!(hasher.queue_limit(), 1);
        let one_hash = std::time::Duration::from_secs_f64(1.0 / hasher.hashes_per_second());
        let checks: Vec<_> = (0..10)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    (hasher.verify(presented(), None).await, started.elapsed())
                })
            })
            .collect();
        let mut refused = 0;
        for check in checks {
            let (result, took) = check.await.unwrap();
            if let Err(Error::ResourceExhausted(_)) = result {
                refused += 1;
                assert!(took < one_hash, "refused at once, not after {took:?}");
            }
        }
        assert!(refused >= 5, "{refused} of 10 refused");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_of_callers_who_have_gone_are_skipped() {
        let hasher = PasswordHasher::start(SLOW, 1, QueueBound::Fixed(100)).unwrap();
        let started = Instant::now();
        hasher.verify(presented(), None).await.unwrap();
        let one_hash = started.elapsed();
        // One check runs; twenty callers queue behind it and give up.
        let running = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.verify(presented(), None).await }
        });
        for _ in 0..20 {
            let _ = tokio::time::timeout(std::time::Duration::from_micros(10), hasher.verify(presented(), None)).await;
        }
        let started = Instant::now();
        hasher.verify(presented(), None).await.unwrap();
        let took = started.elapsed();
        running.await.unwrap().unwrap();
        // The running hash, then this one; not 20 more.
        assert!(took < one_hash * 8, "took {took:?} with one hash at {one_hash:?}");
        // A worker hands over its result before it counts the job done: give it a moment.
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while hasher.queue_depth() != 0 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(hasher.queue_depth(), 0);
    }

    #[test]
    fn normalizes_nfkc() {
        let composed = Password::new_password("Åström-kqzvmt", &policy(), &[]).map(|p| p.0);
        let decomposed = Password::new_password("A\u{30a}stro\u{308}m-kqzvmt", &policy(), &[]).map(|p| p.0);
        assert_eq!(composed, decomposed);
    }
}
