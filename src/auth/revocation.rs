//! Revoked and disabled users.
//!
//! Revocation voids the tokens issued at or before its moment; the user may sign in again
//! right after. Disabling is a ban: every token of the user is refused, whenever issued,
//! until an admin enables the account again, and login is refused too. Disabling also
//! revokes, so enabling does not bring back the tokens held before the ban.
//!
//! Kept in memory for the check on every way in, written through to the store so a
//! restart does not resurrect revoked tokens or lift a ban. The comparison is on whole
//! seconds (`iat` has no finer grain), so a token issued in the same second as the
//! revocation is void too: a revoked user can sign in again from the next second on.
//!
//! In cluster mode every node keeps its own copy, kept current by the control events
//! other nodes publish (`crate::cluster`) and, since those are at most once, read again
//! from the shared store whenever the node (re)connects to Redis ([`Revocations::reload`]).

use super::Identity;
use crate::store::{Ban, Revocation};
use dashmap::DashMap;

#[derive(Default)]
pub struct Revocations {
    revoked_at: DashMap<String, i64>,
    disabled_at: DashMap<String, i64>,
}

impl Revocations {
    /// The revocations the store kept.
    pub fn new(entries: impl IntoIterator<Item = Revocation>) -> Self {
        let revocations = Self::default();
        for Revocation { user_id, at } in entries {
            revocations.record(&user_id, at);
        }
        revocations
    }

    /// Adds the accounts disabled in the store.
    pub fn with_disabled(self, bans: impl IntoIterator<Item = Ban>) -> Self {
        for Ban { user_id, at } in bans {
            self.disable(&user_id, at);
        }
        self
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

    /// Bans the user from `at` on, and voids their tokens issued up to then.
    pub fn disable(&self, user_id: &str, at: i64) {
        self.record(user_id, at);
        self.disabled_at.insert(user_id.to_owned(), at);
    }

    /// Catches up with the store, read from `read_at` (Unix seconds) on: adds the
    /// revocations and bans it has, lifts the bans it no longer has (enabled on another
    /// node while this one did not hear). A ban dated from `read_at - slack_secs` on is
    /// kept even when the read missed it: it may have been stored and applied here while
    /// the read ran. The users whose tokens this voided or who are banned now and were
    /// not before: their live connections must close.
    pub fn reload(
        &self,
        entries: impl IntoIterator<Item = Revocation>,
        bans: impl IntoIterator<Item = Ban>,
        read_at: i64,
        slack_secs: i64,
    ) -> Vec<String> {
        let mut tightened = Vec::new();
        for Revocation { user_id, at } in entries {
            if self
                .revoked_at
                .get(&user_id)
                .is_none_or(|known| *known < at)
            {
                self.record(&user_id, at);
                tightened.push(user_id);
            }
        }
        let mut banned = std::collections::HashSet::new();
        for Ban { user_id, at } in bans {
            if !self.is_disabled(&user_id) {
                self.disable(&user_id, at);
                tightened.push(user_id.clone());
            }
            banned.insert(user_id);
        }
        let recent = read_at.saturating_sub(slack_secs);
        self.disabled_at
            .retain(|user_id, at| banned.contains(user_id) || *at >= recent);
        tightened.sort_unstable();
        tightened.dedup();
        tightened
    }

    /// Lifts a ban; whether there was one.
    pub fn enable(&self, user_id: &str) -> bool {
        self.disabled_at.remove(user_id).is_some()
    }

    pub fn is_disabled(&self, user_id: &str) -> bool {
        self.disabled_at.contains_key(user_id)
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
            minted_by: Default::default(),
        }
    }

    #[test]
    fn tokens_up_to_the_moment_are_void_and_later_ones_are_not() {
        let revocations = Revocations::new([Revocation {
            user_id: "u".to_owned(),
            at: 100,
        }]);
        assert!(revocations.is_revoked(&issued_at(99)));
        assert!(revocations.is_revoked(&issued_at(100)));
        assert!(!revocations.is_revoked(&issued_at(101)));
        revocations.record("u", 50);
        assert!(
            revocations.is_revoked(&issued_at(100)),
            "an older revocation does not undo a newer one"
        );
    }

    #[test]
    fn disabling_bans_until_enabled_and_voids_the_tokens_held_before() {
        let revocations = Revocations::default().with_disabled([Ban {
            user_id: "u".to_owned(),
            at: 100,
        }]);
        assert!(revocations.is_disabled("u") && !revocations.is_disabled("v"));
        assert!(revocations.is_revoked(&issued_at(100)));
        assert!(revocations.enable("u"));
        assert!(!revocations.enable("u"), "enabling twice finds no ban");
        assert!(!revocations.is_disabled("u"));
        assert!(revocations.is_revoked(&issued_at(100)));
        assert!(!revocations.is_revoked(&issued_at(101)));
    }

    #[test]
    fn a_reload_adds_what_was_missed_lifts_lifted_bans_and_keeps_recent_ones() {
        let revocations = Revocations::default();
        revocations.record("known", 100);
        revocations.disable("lifted", 100);
        revocations.disable("just-banned", 1000);
        let tightened = revocations.reload(
            [
                Revocation {
                    user_id: "known".to_owned(),
                    at: 100,
                },
                Revocation {
                    user_id: "missed".to_owned(),
                    at: 200,
                },
            ],
            [Ban {
                user_id: "banned".to_owned(),
                at: 300,
            }],
            1000,
            10,
        );
        assert_eq!(tightened, ["banned", "missed"], "only what changed");
        assert!(revocations.is_revoked(&Identity {
            user: UserRef {
                id: "missed".into(),
                name: "n".into()
            },
            ..issued_at(200)
        }));
        assert!(revocations.is_disabled("banned"));
        assert!(!revocations.is_disabled("lifted"), "enabled elsewhere");
        assert!(
            revocations.is_disabled("just-banned"),
            "stored while the read ran"
        );
    }
}
