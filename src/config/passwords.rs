//! Password rules, the breached-password check and Argon2id.

use std::time::Duration;

use clap::Args;

use crate::domain::{
    breach::BreachedPasswords,
    password::{HashParams, PasswordPolicy, QueueBound},
};

/// Password rules, the breached-password check and Argon2id.
#[derive(Clone, Args)]
#[command(next_help_heading = "Passwords")]
pub struct PasswordArgs {
    /// Minimum password length in characters (ASVS: 8; NIST 800-63B-4 asks 15 when the password
    /// is the only factor).
    #[arg(long, env = "GATEHOUSE_PASSWORD_MIN_LENGTH", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub password_min_length: u16,

    /// A Have I Been Pwned-style range API (such as https://api.pwnedpasswords.com/) against
    /// which new passwords are checked by k-anonymity: only five hex digits of the password's
    /// SHA-1 are sent. Unset (the default) means no check.
    #[arg(long, env = "GATEHOUSE_BREACHED_PASSWORDS_API")]
    pub breached_passwords_api: Option<String>,

    /// Bound on one breached-password lookup. A lookup that fails or takes longer accepts the
    /// password unchecked (fail open), with a log line and a metric.
    #[arg(long, env = "GATEHOUSE_BREACHED_PASSWORDS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub breached_passwords_timeout: Duration,

    /// Argon2id memory cost in KiB.
    #[arg(long, env = "GATEHOUSE_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations.
    #[arg(long, env = "GATEHOUSE_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Argon2id parallelism.
    #[arg(long, env = "GATEHOUSE_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once [default: number of CPUs].
    #[arg(long, env = "GATEHOUSE_HASH_THREADS")]
    pub hash_threads: Option<usize>,

    /// Password checks allowed to wait for a hashing thread; beyond it, RESOURCE_EXHAUSTED at
    /// once [default: as many as the threads hash in half of GATEHOUSE_REQUEST_TIMEOUT, at the
    /// rate measured at start (at least one per thread, at most 4096)].
    #[arg(long, env = "GATEHOUSE_HASH_QUEUE_LIMIT")]
    pub hash_queue_limit: Option<usize>,
}

impl PasswordArgs {
    /// The rules for new passwords.
    pub fn policy(&self) -> PasswordPolicy {
        PasswordPolicy { min_chars: usize::from(self.password_min_length) }
    }

    /// The Argon2id parameters of new hashes.
    pub fn hash_params(&self) -> HashParams {
        HashParams { m_cost: self.argon2_memory_kib, t_cost: self.argon2_iterations, p_cost: self.argon2_parallelism }
    }

    /// Hashing threads: as configured, or one per CPU.
    pub fn threads(&self) -> usize {
        self.hash_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// How many checks may wait for a thread. A check that waits longer than half the request
    /// timeout would likely time out anyway: refuse it at once, and leave the other half for
    /// the rest of the request.
    pub fn queue_bound(&self, request_timeout: Duration) -> QueueBound {
        self.hash_queue_limit.map_or(QueueBound::Within(request_timeout / 2), QueueBound::Fixed)
    }

    /// The breached-password check, when an API is configured.
    pub fn breached(&self) -> anyhow::Result<Option<BreachedPasswords>> {
        self.breached_passwords_api
            .as_deref()
            .map(|api| BreachedPasswords::new(api, self.breached_passwords_timeout))
            .transpose()
    }
}
