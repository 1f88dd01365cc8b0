//! Argon2id hashing with bounded memory and concurrency.
//!
//! Each Argon2id run needs its whole memory cost at once (19 MiB with the defaults).
//! Letting every request hash at will means a burst of logins costs a burst of that
//! memory, and glibc keeps freed blocks in per-thread arenas, so RSS stays high for good.
//! Here at most `permits` hashes run at once, each in one of as many block buffers that
//! are allocated once and reused, so hashing never takes more than
//! `permits x memory cost` for the life of the process. A caller that cannot get a permit
//! within the configured wait is told the server is busy instead of queueing forever.
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
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    wait: Duration,
    params: Params,
}

/// A permit and a block buffer; the buffer goes back to the pool when this is dropped,
/// after the hash is done, even if the request that asked for it is gone.
struct Slot {
    _permit: OwnedSemaphorePermit,
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    blocks: Vec<Block>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        if let Ok(mut pool) = self.buffers.lock() {
            pool.push(blocks);
        }
    }
}

impl Slot {
    /// The buffer, grown to `block_count` if a stored hash asks for more memory than
    /// the current parameters (an operator-made hash; clients cannot choose this).
    fn blocks(&mut self, block_count: usize) -> &mut [Block] {
        if self.blocks.len() < block_count {
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
            buffers: Arc::new(Mutex::new(Vec::new())),
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
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let blocks = self
            .buffers
            .lock()
            .map_err(|_| HashError::Failed("buffer pool poisoned".to_owned()))?
            .pop()
            .unwrap_or_default();
        let mut slot = Slot {
            _permit: permit,
            buffers: Arc::clone(&self.buffers),
            blocks,
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
    async fn a_stored_hash_with_other_parameters_verifies() {
        let pool = Passwords::with_params(
            1,
            Duration::from_secs(10),
            Params::new(64, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let bigger = Params::new(256, 2, 2, None).unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, bigger)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(pool.verify(secret("pw"), stored).await.unwrap());
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
    async fn buffers_are_reused_never_more_than_the_permits() {
        let pool = Passwords::with_params(
            2,
            Duration::from_secs(10),
            Params::new(64, 1, 1, None).unwrap(),
        );
        let hashes = (0..8).map(|i| pool.hash(secret(&format!("pw{i}"))));
        for hash in futures_util::future::join_all(hashes).await {
            hash.unwrap();
        }
        assert!(pool.buffers.lock().unwrap().len() <= 2);
    }
}
