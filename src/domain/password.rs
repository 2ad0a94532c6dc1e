//! Password rules (NIST SP 800-63B) and Argon2id hashing on a bounded pool of low-priority
//! threads, so that a storm of sign-ins neither starves the async runtime nor takes memory
//! per waiting request.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
};

use std::cell::RefCell;

use argon2::{Algorithm, Argon2, Block, Params, Version, password_hash::phc::PasswordHash};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use unicode_normalization::UnicodeNormalization;

use super::error::Error;

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

    fn as_bytes(&self) -> &[u8] {
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

type Job = Box<dyn FnOnce() + Send>;

/// Argon2id hashing and verification on `threads` dedicated threads with a bounded queue.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    params: HashParams,
    jobs: mpsc::SyncSender<Job>,
    queued: AtomicUsize,
    /// A hash of a random password, verified for unknown emails so that their timing matches.
    dummy_hash: String,
}

impl PasswordHasher {
    /// Starts `threads` hashing threads that accept up to `queue_limit` waiting jobs.
    pub fn start(params: HashParams, threads: usize, queue_limit: usize) -> anyhow::Result<Self> {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.m_cost, params.t_cost, params.p_cost, None)
                .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?,
        );
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        // Computed on a throwaway thread, so its Argon2 memory is freed with it rather than kept
        // by whichever runtime thread started the server.
        let dummy_hash = {
            let argon2 = argon2.clone();
            thread::spawn(move || hash_phc(&argon2, &params, &random))
                .join()
                .map_err(|_| anyhow::anyhow!("argon2 thread panicked"))?
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
        };

        let (tx, rx) = mpsc::sync_channel::<Job>(queue_limit);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                lower_thread_priority();
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        // Every sender is gone: the server has shut down.
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Self { inner: Arc::new(Inner { argon2, params, jobs: tx, queued: AtomicUsize::new(0), dummy_hash }) })
    }

    /// Jobs waiting for or running on a hashing thread.
    pub fn queue_depth(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: Password) -> Result<String, Error> {
        self.run(move |inner| hash_phc(&inner.argon2, &inner.params, password.as_bytes())).await
    }

    /// Verifies `password` against `stored`; with no stored hash, verifies against a dummy so
    /// that the caller's timing does not reveal whether an account exists.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<Verification, Error> {
        self.run(move |inner| {
            let (phc, real) = match &stored {
                Some(phc) => (phc.as_str(), true),
                None => (inner.dummy_hash.as_str(), false),
            };
            let Ok(hash) = PasswordHash::new(phc) else {
                return Err(Error::Internal(anyhow::anyhow!("stored password hash is not a PHC string")));
            };
            let valid = verify_phc(&hash, password.as_bytes())? && real;
            Ok(Verification { valid, needs_rehash: valid && !inner.is_current(&hash) })
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let result = span.in_scope(|| work(&inner));
            inner.queued.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(result);
        });
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        if self.inner.jobs.try_send(job).is_err() {
            self.inner.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::ResourceExhausted("too many password checks in progress; retry shortly"));
        }
        rx.await.map_err(|_| Error::Internal(anyhow::anyhow!("hashing thread ended")))?
    }
}

impl Inner {
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

    #[test]
    fn normalizes_nfkc() {
        let composed = Password::new_password("Åström-kqzvmt", &policy(), &[]).map(|p| p.0);
        let decomposed = Password::new_password("A\u{30a}stro\u{308}m-kqzvmt", &policy(), &[]).map(|p| p.0);
        assert_eq!(composed, decomposed);
    }
}
