//! What every store promises, written once and run against each of them.
//!
//! The chat logic only sees the [`Store`] traits, so SQLite and PostgreSQL must answer
//! alike: these scenarios are that contract. Each takes a fresh store; each store's own
//! tests run all of them with [`store_contract!`], and keep beside it only what makes
//! sense for that store alone (SQLite's files and disk, PostgreSQL's nodes and network).
//! The few things a scenario needs from behind a store's back (running a queued batch
//! by hand, counting transactions, refusing writes) are the store's [`Internals`].

use super::group_commit::AppendRequest;
use super::write_health::WriteHealth;
use super::{
    Appended, Ban, NewMessage, OnCommit, ReplayFrom, Revocation, RoomSummary, Store, StoreError,
};
use crate::model::{Role, StoredMessage, UserRef};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// (room, seq) of each message a hook heard, in the order it heard them.
pub(super) type Heard = Arc<std::sync::Mutex<Vec<(String, u64)>>>;

/// For appends whose delivery a test does not look at.
pub(super) fn no_hook() -> OnCommit {
    Box::new(|_| {})
}

/// A hook that notes (room, seq) of each message it hears, in the order it hears them.
pub(super) fn recorder(heard: &Heard) -> OnCommit {
    let heard = Arc::clone(heard);
    Box::new(move |message| {
        heard
            .lock()
            .unwrap()
            .push((message.room.clone(), message.seq));
    })
}

pub(super) fn draft(room: &str, body: &str, nonce: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.to_owned(),
        from: UserRef {
            id: "u1".into(),
            name: "alice".into(),
        },
        body: body.to_owned(),
        nonce: nonce.map(str::to_owned),
        ts: 1_700_000_000_000,
    }
}

/// The `seq`s of messages, in their order.
pub(super) fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

/// The `i`th send to the room "hot", with a nonce of its own.
pub(super) fn nonced(i: usize) -> NewMessage {
    draft("hot", &i.to_string(), Some(&format!("n{i}")))
}

/// What the scenarios need from inside a store: each store's tests implement it.
#[async_trait]
pub(super) trait Internals: Store + Sized {
    /// Runs the store's committer on `queue` until it is empty and closed.
    async fn group_commit(&self, queue: mpsc::Receiver<AppendRequest>);

    /// Starts counting the transactions that commit messages (how depends on the
    /// database); the counter answers how many there were since.
    async fn count_commits(&self) -> Box<dyn CommitCount + '_>;

    /// Makes the database refuse the next writes, as a full or read-only disk would.
    async fn refuse_writes(&self);

    /// Undoes [`Internals::refuse_writes`], if the store's own recovery did not.
    async fn allow_writes(&self);

    /// What a dropped request future leaves: a write connection lent and never settled.
    async fn abandon_a_write(&self);

    /// What the store learnt from its latest writes, for readiness.
    fn write_health(&self) -> &WriteHealth;

    /// How many readiness probes have been written.
    async fn probes_so_far(&self) -> i64;
}

/// Queues every message before the store's committer looks at its queue, as when they
/// all arrive while the previous batch is being written; their answers, in queue order.
pub(super) async fn arrive_together(
    store: &impl Internals,
    messages: Vec<NewMessage>,
    heard: &Heard,
) -> Vec<Result<Appended, StoreError>> {
    let (requests, queue) = mpsc::channel(messages.len());
    let mut answers = Vec::new();
    for message in messages {
        let (reply, answer) = oneshot::channel();
        let on_commit = recorder(heard);
        requests
            .try_send(AppendRequest {
                message,
                on_commit,
                reply,
            })
            .unwrap();
        answers.push(answer);
    }
    drop(requests);
    store.group_commit(queue).await;
    let mut results = Vec::new();
    for answer in answers {
        results.push(answer.await.unwrap());
    }
    results
}

/// See [`Internals::count_commits`].
#[async_trait]
pub(super) trait CommitCount: Send + Sync {
    async fn so_far(&self) -> u64;
}

/// One `#[tokio::test]` per scenario for a store, named as the scenario: `$fresh` and
/// `$patient` are async functions answering `Option<(guard, store)>` (`None` skips the
/// test; the guard lives as long as the test). A patient store keeps a write's outcome
/// for readiness for the whole test, however slow the machine, so the scenarios about
/// readiness use it.
macro_rules! store_contract {
    ($fresh:path, $patient:path) => {
        $crate::store::contract_tests::store_contract!(@ $fresh;
            seq_counts_from_one_per_room,
            last_seqs_are_read_for_several_rooms_at_once,
            concurrent_appends_are_batched_without_gaps_or_double_nonces,
            a_hot_room_commits_many_messages_per_batch,
            a_repeated_nonce_returns_the_first_message,
            snapshots_page_and_report_completeness,
            revocations_keep_the_latest_moment,
            a_write_its_caller_abandoned_does_not_make_the_store_look_unwritable,
            a_ban_is_kept_until_lifted_and_leaves_its_revocation_behind,
            accounts_are_found_by_id,
            usernames_are_unique_whatever_their_case,
        );
        $crate::store::contract_tests::store_contract!(@ $patient;
            a_failed_batch_announces_nothing_and_every_sender_may_retry,
            a_flood_of_readiness_checks_writes_one_probe,
            readiness_answers_from_the_latest_write_instead_of_probing,
            a_taken_username_does_not_make_the_store_look_unwritable,
        );
    };
    (@ $open:path; $($scenario:ident,)*) => {
        $(
            // Two workers for all: some scenarios need appends that really race.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let Some((_guard, store)) = $open().await else {
                    return;
                };
                $crate::store::contract_tests::$scenario(store).await;
            }
        )*
    };
}
pub(super) use store_contract;

pub(super) async fn seq_counts_from_one_per_room(store: impl Store) {
    let a1 = store
        .append(draft("a", "1", None), no_hook())
        .await
        .unwrap();
    let a2 = store
        .append(draft("a", "2", None), no_hook())
        .await
        .unwrap();
    let b1 = store
        .append(draft("b", "1", None), no_hook())
        .await
        .unwrap();
    assert_eq!((a1.message.seq, a2.message.seq, b1.message.seq), (1, 2, 1));
    assert_eq!(
        store.rooms().await.unwrap(),
        [
            RoomSummary {
                name: "a".to_owned(),
                last_seq: 2
            },
            RoomSummary {
                name: "b".to_owned(),
                last_seq: 1
            }
        ]
    );
}

pub(super) async fn last_seqs_are_read_for_several_rooms_at_once(store: impl Store) {
    assert!(store.last_seqs(&[]).await.unwrap().is_empty());
    for room in ["a", "a", "a", "b", "other"] {
        store
            .append(draft(room, "x", None), no_hook())
            .await
            .unwrap();
    }
    let asked = ["a", "b", "empty", "it's \"odd\""].map(str::to_owned);
    let mut last = store.last_seqs(&asked).await.unwrap();
    last.sort();
    assert_eq!(
        last,
        [("a".to_owned(), 3), ("b".to_owned(), 1)],
        "only the rooms asked for that have messages"
    );
}

pub(super) async fn concurrent_appends_are_batched_without_gaps_or_double_nonces(
    store: impl Store,
) {
    let store = Arc::new(store);
    let heard = Heard::default();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = Arc::clone(&store);
        let hook = recorder(&heard);
        tasks.push(tokio::spawn(async move {
            // Every room gets 20 messages; "dup" nonces repeat within each room.
            let room = format!("r{}", i % 10);
            let nonce = (i % 20 == 0).then_some("dup");
            store
                .append(draft(&room, &i.to_string(), nonce), hook)
                .await
                .unwrap()
        }));
    }
    let mut appended = Vec::new();
    for task in tasks {
        appended.push(task.await.unwrap());
    }
    for r in 0..10 {
        let room = format!("r{r}");
        let mut seqs: Vec<u64> = appended
            .iter()
            .filter(|a| a.message.room == room && !a.duplicate)
            .map(|a| a.message.seq)
            .collect();
        seqs.sort_unstable();
        let stored = store
            .snapshot(&room, ReplayFrom::Latest(100))
            .await
            .unwrap();
        assert_eq!(
            seqs,
            (1..=stored.last_seq).collect::<Vec<_>>(),
            "room {room}"
        );
        assert_eq!(stored.messages.len() as u64, stored.last_seq);
        let announced: Vec<u64> = heard
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| *r == room)
            .map(|(_, seq)| *seq)
            .collect();
        assert_eq!(
            announced, seqs,
            "the hooks of room {room} hear every stored seq once, in order"
        );
    }
    // Every i % 20 == 0 lands in room r0: ten sends with one nonce, one stored.
    let firsts = appended
        .iter()
        .filter(|a| a.message.nonce.as_deref() == Some("dup"));
    assert_eq!(firsts.clone().filter(|a| !a.duplicate).count(), 1);
    assert_eq!(firsts.count(), 10);
}

pub(super) async fn a_hot_room_commits_many_messages_per_batch(store: impl Internals) {
    let commits = store.count_commits().await;
    let heard = Heard::default();
    // 32 sends to one room, and a resend of the sixth within the same batch.
    let mut messages: Vec<_> = (0..32).map(nonced).collect();
    messages.push(nonced(5));

    let results = arrive_together(&store, messages, &heard).await;

    assert_eq!(
        commits.so_far().await,
        1,
        "one transaction (one fsync) for the room's whole batch"
    );
    let answers: Vec<(u64, bool)> = results
        .into_iter()
        .map(|r| r.map(|a| (a.message.seq, a.duplicate)).unwrap())
        .collect();
    let mut expected: Vec<(u64, bool)> = (1..=32).map(|seq| (seq, false)).collect();
    expected.push((6, true));
    assert_eq!(
        answers, expected,
        "seq in queue order; the resend is the sixth"
    );
    let heard = heard.lock().unwrap().clone();
    assert_eq!(
        heard,
        (1..=32)
            .map(|seq| ("hot".to_owned(), seq))
            .collect::<Vec<_>>(),
        "each stored message announced once, in seq order; the resend not again"
    );
}

pub(super) async fn a_failed_batch_announces_nothing_and_every_sender_may_retry(
    store: impl Internals,
) {
    store.refuse_writes().await;
    let heard = Heard::default();

    let failed = arrive_together(&store, (0..5).map(nonced).collect(), &heard).await;
    for answer in &failed {
        assert!(
            matches!(answer, Err(error) if error.is_unavailable()),
            "{answer:?}"
        );
    }
    assert!(heard.lock().unwrap().is_empty(), "nothing was announced");
    assert!(
        store.check_writable().await.is_err(),
        "readiness learnt it from the failed write"
    );

    store.allow_writes().await;
    // The same sends again are stored, once each, from seq 1: the failed batch left
    // nothing behind, not even a bumped counter.
    let retried = arrive_together(&store, (0..5).map(nonced).collect(), &heard).await;
    let seqs: Vec<u64> = retried
        .into_iter()
        .map(|r| r.map(|a| a.message.seq).unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(heard.lock().unwrap().len(), 5);
    store.check_writable().await.unwrap();
}

pub(super) async fn a_repeated_nonce_returns_the_first_message(store: impl Store) {
    let first = store
        .append(draft("a", "hi", Some("n1")), no_hook())
        .await
        .unwrap();
    let again = store
        .append(draft("a", "hi again", Some("n1")), no_hook())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.seq, first.message.seq);
    assert_eq!(again.message.body, "hi");
    let snap = store.snapshot("a", ReplayFrom::Latest(50)).await.unwrap();
    assert_eq!(snap.messages.len(), 1);
    let elsewhere = store
        .append(draft("b", "same nonce, other room", Some("n1")), no_hook())
        .await
        .unwrap();
    assert!(!elsewhere.duplicate, "a nonce is per room");
}

pub(super) async fn snapshots_page_and_report_completeness(store: impl Store) {
    for i in 1..=10 {
        store
            .append(draft("a", &i.to_string(), None), no_hook())
            .await
            .unwrap();
    }
    let latest = store.snapshot("a", ReplayFrom::Latest(3)).await.unwrap();
    assert_eq!(latest.last_seq, 10);
    assert_eq!(seqs(&latest.messages), [8, 9, 10]);
    assert!(!latest.complete);
    let all = store.snapshot("a", ReplayFrom::Latest(50)).await.unwrap();
    assert!(all.complete);
    assert_eq!(all.messages[0].body, "1");
    assert_eq!(all.messages[0].from.name, "alice");
    let since = store
        .snapshot("a", ReplayFrom::Since { seq: 7, max: 100 })
        .await
        .unwrap();
    assert_eq!(seqs(&since.messages), [8, 9, 10]);
    assert!(since.complete);
    let caught_up = store
        .snapshot("a", ReplayFrom::Since { seq: 10, max: 100 })
        .await
        .unwrap();
    assert!(caught_up.messages.is_empty() && caught_up.complete);
    let capped = store
        .snapshot("a", ReplayFrom::Since { seq: 2, max: 2 })
        .await
        .unwrap();
    assert_eq!(seqs(&capped.messages), [9, 10]);
    assert!(!capped.complete);
    let before = store.before("a", 5, 2).await.unwrap();
    assert_eq!(seqs(&before), [3, 4]);
    assert!(store.before("a", 1, 10).await.unwrap().is_empty());
    let empty = store
        .snapshot("nowhere", ReplayFrom::Latest(50))
        .await
        .unwrap();
    assert_eq!((empty.last_seq, empty.complete), (0, true));
}

pub(super) async fn revocations_keep_the_latest_moment(store: impl Store) {
    store.revoke("u1", 100).await.unwrap();
    store.revoke("u1", 50).await.unwrap();
    store.revoke("u2", 7).await.unwrap();
    let mut all = store.revocations().await.unwrap();
    all.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(
        all,
        [
            Revocation {
                user_id: "u1".to_owned(),
                at: 100
            },
            Revocation {
                user_id: "u2".to_owned(),
                at: 7
            }
        ]
    );
}

pub(super) async fn a_flood_of_readiness_checks_writes_one_probe(store: impl Internals) {
    let store = Arc::new(store);
    store.ping().await.unwrap();
    let checks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.check_writable().await })
        })
        .collect();
    for check in checks {
        check.await.unwrap().unwrap();
    }
    assert_eq!(store.probes_so_far().await, 1);
}

pub(super) async fn readiness_answers_from_the_latest_write_instead_of_probing(
    store: impl Internals,
) {
    store
        .append(draft("a", "1", None), no_hook())
        .await
        .unwrap();
    store.check_writable().await.unwrap();
    assert_eq!(store.probes_so_far().await, 0);
}

pub(super) async fn a_write_its_caller_abandoned_does_not_make_the_store_look_unwritable(
    store: impl Internals,
) {
    store.abandon_a_write().await;
    assert_eq!(store.write_health().fresh(), None, "nothing was learnt");
    store.check_writable().await.unwrap();
    store
        .append(draft("a", "after", None), no_hook())
        .await
        .unwrap();
}

pub(super) async fn a_taken_username_does_not_make_the_store_look_unwritable(store: impl Store) {
    store.create_user("1", "alice", "h").await.unwrap();
    assert!(matches!(
        store.create_user("2", "alice", "h").await,
        Err(StoreError::UsernameTaken)
    ));
    store.check_writable().await.unwrap();
}

pub(super) async fn a_ban_is_kept_until_lifted_and_leaves_its_revocation_behind(store: impl Store) {
    store.disable("u1", 100).await.unwrap();
    store.disable("u1", 200).await.unwrap();
    assert_eq!(
        store.disabled_users().await.unwrap(),
        [Ban {
            user_id: "u1".to_owned(),
            at: 100
        }]
    );
    assert_eq!(
        store.revocations().await.unwrap(),
        [Revocation {
            user_id: "u1".to_owned(),
            at: 200
        }]
    );
    assert!(store.enable("u1").await.unwrap());
    assert!(!store.enable("u1").await.unwrap());
    assert!(store.disabled_users().await.unwrap().is_empty());
    assert_eq!(
        store.revocations().await.unwrap(),
        [Revocation {
            user_id: "u1".to_owned(),
            at: 200
        }]
    );
}

pub(super) async fn accounts_are_found_by_id(store: impl Store) {
    store.create_user("1", "alice", "h").await.unwrap();
    let found = store.find_user_by_id("1").await.unwrap().unwrap();
    assert_eq!(
        (
            found.user.name.as_str(),
            found.password_hash.as_str(),
            found.role
        ),
        ("alice", "h", Role::User)
    );
    assert!(store.find_user_by_id("2").await.unwrap().is_none());
}

pub(super) async fn usernames_are_unique_whatever_their_case(store: impl Store) {
    store.create_user("1", "alice", "h").await.unwrap();
    assert!(matches!(
        store.create_user("2", "ALICE", "h").await,
        Err(StoreError::UsernameTaken)
    ));
    let found = store.find_user_by_name("Alice").await.unwrap().unwrap();
    assert_eq!(found.user.id, "1");
    assert!(store.find_user_by_name("bob").await.unwrap().is_none());
}
