//! Accounts: registration and password checks with Argon2id, and who is an admin.
//!
//! Hashing goes through the bounded [`Passwords`] pool (blocking threads, reused memory).
//! Login for an unknown name still spends one verification, so response time does not
//! reveal which names exist.
//!
//! Admin rights come only from what the operator controls: an account id listed in
//! `--admin-users` (ids are random and given out by register, so nobody can claim one in
//! advance, unlike a name) or `role = 'admin'` written into the account's row. They are
//! worked out again at every login, renewal and admin request, never copied from a token.

use crate::auth::passwords::{HashError, Passwords};
use crate::model::{Role, UserRef};
use crate::store::{Store, StoreError, UserRecord};
use secrecy::SecretString;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
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
pub(crate) async fn register(
    store: &Arc<dyn Store>,
    passwords: &Passwords,
    name: &str,
    password: SecretString,
) -> Result<UserRef, AccountError> {
    let hash = passwords.hash(password).await?;
    let id = uuid::Uuid::new_v4().to_string();
    Ok(store.create_user(&id, name, &hash).await?.user)
}

/// The role an account has now: admin when the operator listed its id or set its row's
/// role to admin.
pub(crate) fn role_of(record: &UserRecord, admin_ids: &[String]) -> Role {
    if record.role == Role::Admin || admin_ids.contains(&record.user.id) {
        Role::Admin
    } else {
        Role::User
    }
}

/// The account a palisade token names, with its current role; `None` when it is gone.
pub(crate) async fn current(
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
pub(crate) async fn login(
    store: &Arc<dyn Store>,
    passwords: &Passwords,
    name: &str,
    password: SecretString,
) -> Result<UserRecord, AccountError> {
    let Some(record) = store.find_user_by_name(name).await? else {
        passwords.verify_nothing(password).await?;
        return Err(AccountError::InvalidCredentials);
    };
    if passwords
        .verify(password, record.password_hash.clone())
        .await?
    {
        Ok(record)
    } else {
        Err(AccountError::InvalidCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
