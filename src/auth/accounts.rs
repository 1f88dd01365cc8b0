//! Accounts: registration and password checks with Argon2id.
//!
//! Hashing is CPU-heavy by design, so it runs on the blocking pool. Login for an unknown
//! name still verifies against a dummy hash, so response time does not reveal which names
//! exist.

use crate::model::{Role, UserRef};
use crate::store::{Store, StoreError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, LazyLock};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("username taken")]
    UsernameTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => AccountError::UsernameTaken,
            other => AccountError::Store(other),
        }
    }
}

/// A hash of a random password: what unknown names are checked against.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let random: [u8; 16] = rand::random();
    hash_blocking(&SecretString::from(format!("{random:?}"))).ok()
});

fn hash_blocking(password: &SecretString) -> Result<String, AccountError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| AccountError::Hashing(e.to_string()))?;
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Hashing(e.to_string()))
}

fn verify_blocking(password: &SecretString, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok()
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AccountError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AccountError::Hashing(e.to_string()))
}

/// Creates an account (name and password already validated).
pub async fn register(
    store: &Arc<dyn Store>,
    name: &str,
    password: SecretString,
) -> Result<UserRef, AccountError> {
    let hash = blocking(move || hash_blocking(&password)).await??;
    let id = uuid::Uuid::new_v4().to_string();
    Ok(store.create_user(&id, name, &hash).await?.user)
}

/// Checks a name and password; the same error for an unknown name and a wrong password.
pub async fn login(
    store: &Arc<dyn Store>,
    name: &str,
    password: SecretString,
) -> Result<(UserRef, Role), AccountError> {
    let record = store.find_user_by_name(name).await?;
    let hash = record.as_ref().map(|r| r.password_hash.clone());
    let matches = blocking(move || match hash {
        Some(hash) => verify_blocking(&password, &hash),
        None => {
            if let Some(dummy) = DUMMY_HASH.as_deref() {
                verify_blocking(&password, dummy);
            }
            false
        }
    })
    .await?;
    match record {
        Some(record) if matches => Ok((record.user, record.role)),
        _ => Err(AccountError::InvalidCredentials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_own_password() {
        let hash = hash_blocking(&SecretString::from("correct horse")).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_blocking(&SecretString::from("correct horse"), &hash));
        assert!(!verify_blocking(&SecretString::from("wrong horse"), &hash));
        assert!(!verify_blocking(&SecretString::from("x"), "not a hash"));
    }
}
