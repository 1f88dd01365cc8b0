//! Accounts: registration and password checks with Argon2id, and who is an admin.
//!
//! Hashing is CPU-heavy by design, so it runs on the blocking pool. Login for an unknown
//! name still verifies against a dummy hash, so response time does not reveal which names
//! exist.
//!
//! Admin rights come only from what the operator controls: an account id listed in
//! `--admin-users` (ids are random and given out by register, so nobody can claim one in
//! advance, unlike a name) or `role = 'admin'` written into the account's row. They are
//! worked out again at every login, renewal and admin request, never copied from a token.

use crate::model::{Role, UserRef};
use crate::store::{Store, StoreError, UserRecord};
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

/// The role an account has now: admin when the operator listed its id or set its row's
/// role to admin.
pub fn role_of(record: &UserRecord, admin_ids: &[String]) -> Role {
    if record.role == Role::Admin || admin_ids.contains(&record.user.id) {
        Role::Admin
    } else {
        Role::User
    }
}

/// The account a palisade token names, with its current role; `None` when it is gone.
pub async fn current(
    store: &Arc<dyn Store>,
    admin_ids: &[String],
    user_id: &str,
) -> Result<Option<(UserRef, Role)>, StoreError> {
    Ok(store
        .find_user_by_id(user_id)
        .await?
        .map(|record| (record.user.clone(), role_of(&record, admin_ids))))
}

/// Checks a name and password; the same error for an unknown name and a wrong password.
pub async fn login(
    store: &Arc<dyn Store>,
    name: &str,
    password: SecretString,
) -> Result<UserRecord, AccountError> {
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
        Some(record) if matches => Ok(record),
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

    fn record(id: &str, name: &str, role: Role) -> UserRecord {
        UserRecord {
            user: UserRef {
                id: id.into(),
                name: name.into(),
            },
            password_hash: String::new(),
            role,
        }
    }

    #[test]
    fn admin_comes_from_a_listed_id_or_the_stored_role_never_from_the_name() {
        let listed = ["0b8c6f0e-4d0a-4a53-9d8e-0f6f1c2a9b10".to_owned()];
        let by_id = record(&listed[0], "anyone", Role::User);
        assert_eq!(role_of(&by_id, &listed), Role::Admin);
        let by_row = record("x", "anyone", Role::Admin);
        assert_eq!(role_of(&by_row, &[]), Role::Admin);
        let named_like_an_id = record("y", &listed[0], Role::User);
        assert_eq!(role_of(&named_like_an_id, &listed), Role::User);
    }
}
