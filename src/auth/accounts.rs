//! Accounts: registration and password checks with Argon2id.
//!
//! Hashing goes through the bounded [`Passwords`] pool (blocking threads, reused memory).
//! Login for an unknown name still spends one verification, so response time does not
//! reveal which names exist.

use crate::auth::passwords::{HashError, Passwords};
use crate::model::{Role, UserRef};
use crate::store::{Store, StoreError};
use secrecy::SecretString;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("username taken")]
    UsernameTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    /// No hashing permit within the wait: the caller should come back shortly.
    #[error("password hashing is busy")]
    Busy,
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

impl From<HashError> for AccountError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => AccountError::Busy,
            HashError::Failed(detail) => AccountError::Hashing(detail),
        }
    }
}

/// Creates an account (name and password already validated).
pub async fn register(
    store: &Arc<dyn Store>,
    passwords: &Passwords,
    name: &str,
    password: SecretString,
) -> Result<UserRef, AccountError> {
    let hash = passwords.hash(password).await?;
    let id = uuid::Uuid::new_v4().to_string();
    Ok(store.create_user(&id, name, &hash).await?.user)
}

/// Checks a name and password; the same error for an unknown name and a wrong password.
pub async fn login(
    store: &Arc<dyn Store>,
    passwords: &Passwords,
    name: &str,
    password: SecretString,
) -> Result<(UserRef, Role), AccountError> {
    let Some(record) = store.find_user_by_name(name).await? else {
        passwords.verify_nothing(password).await?;
        return Err(AccountError::InvalidCredentials);
    };
    if passwords
        .verify(password, record.password_hash.clone())
        .await?
    {
        Ok((record.user, record.role))
    } else {
        Err(AccountError::InvalidCredentials)
    }
}
