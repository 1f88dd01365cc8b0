//! Revoked users: tokens issued at or before the moment of revocation are void.
//!
//! Kept in memory for the check on every way in, written through to the store so a
//! restart does not resurrect revoked tokens. The comparison is on whole seconds (`iat`
//! has no finer grain), so a token issued in the same second as the revocation is void
//! too: a revoked user can sign in again from the next second on.

use super::Identity;
use dashmap::DashMap;

#[derive(Default)]
pub struct Revocations {
    revoked_at: DashMap<String, i64>,
}

impl Revocations {
    pub fn new(entries: impl IntoIterator<Item = (String, i64)>) -> Self {
        let revocations = Self::default();
        for (user, at) in entries {
            revocations.record(&user, at);
        }
        revocations
    }

    /// Voids the user's tokens issued at or before `at`.
    pub fn record(&self, user_id: &str, at: i64) {
        let mut entry = self.revoked_at.entry(user_id.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
    }

    pub fn is_revoked(&self, identity: &Identity) -> bool {
        self.revoked_at
            .get(&identity.user.id)
            .is_some_and(|at| identity.issued_at <= *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, UserRef};

    fn issued_at(at: i64) -> Identity {
        Identity {
            user: UserRef {
                id: "u".into(),
                name: "n".into(),
            },
            role: Role::User,
            rooms: None,
            expires_at: at + 900,
            issued_at: at,
        }
    }

    #[test]
    fn tokens_up_to_the_moment_are_void_and_later_ones_are_not() {
        let revocations = Revocations::new([("u".to_owned(), 100)]);
        assert!(revocations.is_revoked(&issued_at(99)));
        assert!(revocations.is_revoked(&issued_at(100)));
        assert!(!revocations.is_revoked(&issued_at(101)));
        revocations.record("u", 50);
        assert!(
            revocations.is_revoked(&issued_at(100)),
            "an older revocation does not undo a newer one"
        );
    }
}
