//! Argon2id hashing with bounded memory and concurrency.
//!
//! Each Argon2id run needs its whole memory cost at once (19 MiB with the defaults).
//! Letting every request hash at will means a burst of logins costs a burst of that
//! memory. Here at most `permits` hashes run at once, each in one of as many block
//! buffers, reused while hashes keep coming, so hashing never takes more than
//! `permits x memory cost`. A caller that cannot get a permit within the configured wait
//! is told the server is busy instead of queueing forever.
//!
//! When the last hash is done and nobody waits, the buffers are freed, and freed so that
//! the memory really goes back to the system (see [`Slot::blocks`]): RSS after a burst
//! of logins returns to what it was before, instead of keeping `permits x memory cost`
//! (152 MiB with 8 permits) for the life of the process.
//!
//! Hashes are standard PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`):
//! verification reads the parameters and salt from the stored string, so hashes made
//! by `argon2`'s own `PasswordHasher` (what palisade stored before) still verify.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every permit stayed taken for the whole wait.
    #[error("password hashing is busy")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The bounded pool every password hash and verification runs through.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    pool: Arc<Mutex<Pool>>,
    wait: Duration,
    params: Params,
}

/// Block buffers between hashes, and how many callers are hashing or waiting to.
#[derive(Default)]
struct Pool {
    spare: Vec<Vec<Block>>,
    wanted: usize,
}

/// One caller counted in [`Pool::wanted`] from its arrival until its hash is done (or it
/// gave up). The last one out drops the spare buffers: kept, they would hold
/// `permits x memory cost` for the life of the process after one burst of logins.
struct Demand(Arc<Mutex<Pool>>);

impl Demand {
    fn new(pool: &Arc<Mutex<Pool>>) -> Self {
        if let Ok(mut pool) = pool.lock() {
            pool.wanted += 1;
        }
        Self(Arc::clone(pool))
    }

    fn put_back(&self, blocks: Vec<Block>) {
        if let Ok(mut pool) = self.0.lock() {
            pool.spare.push(blocks);
        }
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        let idle = match self.0.lock() {
            Ok(mut pool) => {
                pool.wanted -= 1;
                if pool.wanted == 0 {
                    std::mem::take(&mut pool.spare)
                } else {
                    Vec::new()
                }
            }
            Err(_) => Vec::new(),
        };
        // Freed outside the lock.
        drop(idle);
    }
}

/// A permit and a block buffer; the buffer goes back to the pool when this is dropped,
/// after the hash is done, even if the request that asked for it is gone.
struct Slot {
    blocks: Vec<Block>,
    default_blocks: usize,
    _permit: OwnedSemaphorePermit,
    demand: Demand,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        // A buffer grown for a bigger stored hash is not kept at that size.
        if blocks.len() <= self.default_blocks {
            self.demand.put_back(blocks);
        }
        // Then the permit goes back, then the demand: if nobody else is hashing or
        // waiting, the spare buffers are freed.
    }
}

/// What a buffer reserves, in 1 KiB blocks: just over 32 MiB, glibc's highest mmap
/// threshold on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`, see mallopt(3)). glibc serves a
/// request of at least the threshold with its own `mmap` and gives it back with `munmap`
/// when it is freed. The threshold starts at 128 KiB but rises to the size of any mmapped
/// block freed (up to that maximum), so after the first 19 MiB buffer is freed, the next
/// 19 MiB request would come from a thread's arena, and glibc keeps arena memory: RSS
/// after a burst stayed ~40 MiB (2 permits) or ~155 MiB (8 permits) above a fresh process,
/// buffers freed or not. Reserving more than any threshold glibc allows keeps every buffer
/// mmapped, and only the blocks a hash touches become resident, so this costs address
/// space, not memory; an allocator that returns memory by itself is not hurt by it.
const RESERVED_BLOCKS: usize = 32 * 1024 + 1;

/// The most memory a stored hash may ask for, in KiB: verifying a bigger one is refused,
/// so one slot never holds more than this.
const MAX_STORED_M_COST: u32 = 64 * 1024;

impl Slot {
    /// The buffer, grown to `block_count` if a stored hash asks for more memory than
    /// the current parameters (an operator-made hash, at most [`MAX_STORED_M_COST`];
    /// clients cannot choose this). A grown buffer is not kept.
    fn blocks(&mut self, block_count: usize) -> &mut [Block] {
        if self.blocks.len() < block_count {
            if self.blocks.capacity() == 0 {
                self.blocks = Vec::with_capacity(block_count.max(RESERVED_BLOCKS));
            }
            self.blocks.resize(block_count, Block::default());
        }
        &mut self.blocks[..block_count]
    }
}

impl Passwords {
    /// At most `permits` hashes at once (at least one); a caller waits at most `wait`.
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self::with_params(permits, wait, Params::DEFAULT)
    }

    fn with_params(permits: usize, wait: Duration, params: Params) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.clamp(1, Semaphore::MAX_PERMITS))),
            pool: Arc::new(Mutex::new(Pool::default())),
            wait,
            params,
        }
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move |slot| hash_with(slot, &params, &password))
            .await?
    }

    /// Whether `password` matches the stored PHC string (false for a malformed one).
    pub async fn verify(&self, password: SecretString, stored: String) -> Result<bool, HashError> {
        self.run(move |slot| verify_with(slot, &password, &stored))
            .await
    }

    /// Spends the same work as [`Passwords::verify`] on a hash that never matches, so an
    /// unknown name takes as long as a wrong password.
    pub async fn verify_nothing(&self, password: SecretString) -> Result<(), HashError> {
        let params = self.params.clone();
        self.run(move |slot| {
            let salt: [u8; 16] = rand::random();
            let mut out = [0u8; 32];
            let _ = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
                .hash_password_into_with_memory(
                    password.expose_secret().as_bytes(),
                    &salt,
                    &mut out,
                    slot.blocks(params.block_count()),
                );
        })
        .await
    }

    /// Runs `work` on the blocking pool with a permit and a buffer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Slot) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let demand = Demand::new(&self.pool);
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let blocks = self
            .pool
            .lock()
            .map_err(|_| HashError::Failed("buffer pool poisoned".to_owned()))?
            .spare
            .pop()
            .unwrap_or_default();
        let mut slot = Slot {
            blocks,
            default_blocks: self.params.block_count(),
            _permit: permit,
            demand,
        };
        tokio::task::spawn_blocking(move || work(&mut slot))
            .await
            .map_err(|e| HashError::Failed(e.to_string()))
    }
}

fn hash_with(
    slot: &mut Slot,
    params: &Params,
    password: &SecretString,
) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Failed(e.to_string());
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| failed(&e))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            &salt_bytes,
            &mut out,
            slot.blocks(params.block_count()),
        )
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: params.try_into().map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

fn verify_with(slot: &mut Slot, password: &SecretString, stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    if params.m_cost() > MAX_STORED_M_COST {
        tracing::warn!(
            m_cost = params.m_cost(),
            "a stored password hash asks for more memory than {MAX_STORED_M_COST} KiB: not verified"
        );
        return false;
    }
    let (Some(expected), Some(salt)) = (phc.hash, phc.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let block_count = params.block_count();
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.expose_secret().as_bytes(),
        salt,
        &mut out,
        slot.blocks(block_count),
    );
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn passwords() -> Passwords {
        Passwords::new(2, Duration::from_secs(10))
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let pool = passwords();
        let hash = pool.hash(secret("correct horse")).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            pool.verify(secret("correct horse"), hash.clone())
                .await
                .unwrap()
        );
        assert!(!pool.verify(secret("wrong horse"), hash).await.unwrap());
        assert!(!pool.verify(secret("x"), "not a hash".into()).await.unwrap());
        pool.verify_nothing(secret("x")).await.unwrap();
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_still_verify_and_ours_verify_there() {
        let pool = passwords();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let old = Argon2::default()
            .hash_password(b"stored before", &salt)
            .unwrap()
            .to_string();
        assert!(
            pool.verify(secret("stored before"), old.clone())
                .await
                .unwrap()
        );
        assert!(!pool.verify(secret("stored after"), old).await.unwrap());

        let ours = pool.hash(secret("made here")).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"made here", &parsed)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_stored_hash_with_other_parameters_verifies_and_its_bigger_buffer_is_not_kept() {
        let pool = Passwords::with_params(
            1,
            Duration::from_secs(10),
            Params::new(64, 1, 1, None).unwrap(),
        );
        // Someone still waiting: the spare buffers stay unless they are too big.
        let _waiting = Demand::new(&pool.pool);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let bigger = Params::new(256, 2, 2, None).unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, bigger)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(pool.verify(secret("pw"), stored).await.unwrap());
        assert!(pool.pool.lock().unwrap().spare.is_empty());
        pool.hash(secret("pw")).await.unwrap();
        assert_eq!(pool.pool.lock().unwrap().spare[0].len(), 64);
    }

    #[tokio::test]
    async fn a_stored_hash_asking_for_too_much_memory_is_refused() {
        let pool = passwords();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let small = Params::new(64, 1, 1, None).unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, small)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let huge = stored.replace("m=64,", &format!("m={},", MAX_STORED_M_COST + 1));
        assert_ne!(huge, stored);
        assert!(!pool.verify(secret("pw"), huge).await.unwrap());
    }

    #[tokio::test]
    async fn a_caller_that_cannot_get_a_permit_in_time_is_told_busy() {
        let pool = Passwords::with_params(1, Duration::from_millis(1), Params::DEFAULT);
        let held = Arc::clone(&pool.permits).acquire_owned().await.unwrap();
        assert!(matches!(
            pool.verify(secret("x"), "y".into()).await,
            Err(HashError::Busy)
        ));
        drop(held);
        assert!(!pool.verify(secret("x"), "y".into()).await.unwrap());
    }

    #[tokio::test]
    async fn buffers_are_reused_never_more_than_the_permits_and_freed_when_idle() {
        let pool = Passwords::with_params(
            2,
            Duration::from_secs(10),
            Params::new(64, 1, 1, None).unwrap(),
        );
        let waiting = Demand::new(&pool.pool);
        let hashes = (0..8).map(|i| pool.hash(secret(&format!("pw{i}"))));
        for hash in futures_util::future::join_all(hashes).await {
            hash.unwrap();
        }
        let spare = pool.pool.lock().unwrap().spare.len();
        assert!((1..=2).contains(&spare), "{spare} spare buffers");
        // The last caller gone, nothing is kept.
        drop(waiting);
        let idle = pool.pool.lock().unwrap();
        assert_eq!((idle.spare.len(), idle.wanted), (0, 0));
    }

    #[tokio::test]
    async fn a_caller_told_busy_does_not_keep_the_buffers_alive() {
        let pool = Passwords::with_params(1, Duration::from_millis(1), Params::DEFAULT);
        let held = Arc::clone(&pool.permits).acquire_owned().await.unwrap();
        assert!(matches!(
            pool.verify_nothing(secret("x")).await,
            Err(HashError::Busy)
        ));
        drop(held);
        assert_eq!(pool.pool.lock().unwrap().wanted, 0);
    }
}
