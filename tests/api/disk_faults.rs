//! Durability under disk faults: a full disk, a read-only disk and a damaged database,
//! and the one-line errors that refuse a start (each names the file or setting).
//!
//! The faulty disks are real: a 2 MiB tmpfs that fills up, an ext4 loop device that
//! turns read-only as on an I/O error, a read-only bind mount. Mounting needs root;
//! where it is not permitted these tests print `SKIPPED: …` and pass, unless
//! `PALISADE_REQUIRE_FAULTS=1` asks for them (CI).

use crate::helpers::{
    Client, ServerProcess, TestApp, WAIT, generous_budget, now, restart, sign, spawn_app_with,
    sqlite_only,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder with a mount on it, unmounted when dropped (even when the test fails).
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    /// A 2 MiB tmpfs, or `None` (after saying why) where mounting is not permitted.
    fn small_tmpfs() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2M", "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self { dir }),
            Ok(output) => skip(&String::from_utf8_lossy(&output.stderr)),
            Err(error) => skip(&error.to_string()),
        }
    }

    /// `source` mounted again here, read-only.
    fn read_only_view_of(source: &Path) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let bound = Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(dir.path())
            .output();
        match bound {
            Ok(output) if output.status.success() => {}
            Ok(output) => return skip(&String::from_utf8_lossy(&output.stderr)),
            Err(error) => return skip(&error.to_string()),
        }
        let view = Self { dir };
        let status = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(view.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "the bind mount turns read-only");
        Some(view)
    }

    /// A small ext4 file system in a loop device, mounted `errors=remount-ro`.
    fn small_ext4() -> Option<Self> {
        let image_dir = tempfile::tempdir().expect("temp dir");
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(8 << 20))
            .expect("image file");
        let made = Command::new("mkfs.ext4").arg("-qF").arg(&image).output();
        match made {
            Ok(output) if output.status.success() => {}
            Ok(output) => return skip(&String::from_utf8_lossy(&output.stderr)),
            Err(error) => return skip(&format!("mkfs.ext4: {error}")),
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&image)
            .arg(dir.path())
            .output();
        match mounted {
            // The image may go once mounted: the loop device holds it until unmounted.
            Ok(output) if output.status.success() => Some(Self { dir }),
            Ok(output) => skip(&String::from_utf8_lossy(&output.stderr)),
            Err(error) => skip(&error.to_string()),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes ext4 act as on an I/O error: with `errors=remount-ro` it turns read-only
    /// at once, files open for writing or not.
    fn trigger_ext4_error(&self) {
        let source = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(self.path())
            .output()
            .expect("findmnt runs");
        let device = String::from_utf8_lossy(&source.stdout).trim().to_owned();
        let name = device.rsplit('/').next().unwrap_or_default().to_owned();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
            .expect("ext4 error triggered");
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.path().join("palisade.db").display())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a server still holding files open (a failed test) must not keep it mounted.
        let unmounted = Command::new("umount").arg("-l").arg(self.path()).status();
        if !unmounted.as_ref().is_ok_and(|status| status.success()) {
            eprintln!(
                "WARNING: could not unmount the test file system at {}: {unmounted:?}",
                self.path().display()
            );
        }
    }
}

fn skip<T>(why: &str) -> Option<T> {
    let why = why.trim();
    assert!(
        std::env::var("PALISADE_REQUIRE_FAULTS").as_deref() != Ok("1"),
        "PALISADE_REQUIRE_FAULTS=1 but mount is not permitted here: {why}"
    );
    eprintln!("SKIPPED: disk fault test: cannot mount a test file system ({why})");
    None
}

/// Fills the file system holding `dir` until it refuses more: the filler file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler created");
    for chunk in [64 * 1024, 4096, 512] {
        let bytes = vec![0xA5_u8; chunk];
        while file.write_all(&bytes).and_then(|()| file.flush()).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// What one client saw: the acks of its sends and every message delivered to it live.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<u64, String>,
    live: BTreeMap<u64, String>,
}

/// A joined client and what it saw.
struct Member {
    client: Client,
    seen: Seen,
    next_id: u64,
}

impl Member {
    async fn join(app: &TestApp, name: &str) -> Self {
        let (client, _) = app.join(name, "general").await;
        Self {
            client,
            seen: Seen::default(),
            next_id: 1,
        }
    }

    /// Sends one message and reads until its answer (`ack` or `error`), recording the
    /// live messages that arrive meanwhile.
    async fn send(&mut self, body: &str, nonce: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.client
            .send(json!({"type":"send","id":id,"room":"general","body":body,"nonce":nonce}))
            .await;
        loop {
            let frame = self.client.recv().await;
            let frame = self.record(frame);
            if frame["id"] == id {
                if frame["type"] == "ack" {
                    let seq = frame["seq"].as_u64().expect("an ack has a seq");
                    self.seen.acked.insert(seq, body.to_owned());
                }
                return frame;
            }
        }
    }

    /// Reads until the message with this seq has been delivered.
    async fn read_through(&mut self, seq: u64) {
        while !self.seen.live.contains_key(&seq) {
            let frame = self.client.recv().await;
            self.record(frame);
        }
    }

    fn record(&mut self, frame: Value) -> Value {
        if frame["type"] == "message" {
            let seq = frame["seq"].as_u64().expect("a message has a seq");
            let body = frame["body"].as_str().unwrap_or_default().to_owned();
            let again = self.seen.live.insert(seq, body);
            assert!(again.is_none(), "seq {seq} delivered twice");
        }
        frame
    }
}

fn assert_unavailable(answer: &Value) {
    assert_eq!(
        answer["type"], "error",
        "no ack while the disk is full: {answer}"
    );
    assert_eq!(answer["code"], "unavailable", "{answer}");
    assert_eq!(answer["retry_after_ms"], 1000, "{answer}");
}

async fn readyz(app: &TestApp) -> u16 {
    app.http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .status()
        .as_u16()
}

/// Every message of the room as stored, read by a fresh client: seq → body.
async fn stored_messages(app: &TestApp) -> BTreeMap<u64, String> {
    let mut reader = app.connect("auditor").await;
    reader
        .send(json!({"type":"join","room":"general","since":0}))
        .await;
    let joined = reader.recv_type("joined").await;
    assert_eq!(joined["complete"], true, "{joined}");
    let mut stored = BTreeMap::new();
    for message in joined["messages"].as_array().expect("messages") {
        let seq = message["seq"].as_u64().expect("seq");
        let body = message["body"].as_str().unwrap_or_default().to_owned();
        assert!(stored.insert(seq, body).is_none(), "seq {seq} stored twice");
    }
    stored
}

#[tokio::test]
async fn a_small_disk_does_not_fill_up_with_write_ahead_log() {
    if sqlite_only("its write-ahead log on a small tmpfs") {
        return;
    }
    let Some(disk) = Mount::small_tmpfs() else {
        return;
    };
    let url = disk.database_url();
    let app = spawn_app_with(|settings| {
        settings.database_url = url;
        generous_budget(settings);
    })
    .await;
    let mut member = Member::join(&app, "alice").await;
    // About 250 KB of messages, one commit each: far less than the disk holds, but with
    // SQLite's default checkpoint point (4 MiB of log) the log alone would fill it.
    for i in 0..250 {
        let body = format!("{i:04}-{}", "x".repeat(800));
        let nonce = format!("n{i}");
        let answer = member.send(&body, &nonce).await;
        assert_eq!(answer["type"], "ack", "message {i}: {answer}");
    }
    assert_eq!(readyz(&app).await, 200);
}

#[tokio::test]
async fn a_full_disk_answers_sends_with_unavailable_and_every_acked_message_survives() {
    if sqlite_only("its file on a tmpfs that fills up") {
        return;
    }
    let Some(disk) = Mount::small_tmpfs() else {
        return;
    };
    let url = disk.database_url();
    let app = spawn_app_with(|settings| {
        settings.database_url = url;
        generous_budget(settings);
    })
    .await;
    let names = ["alice", "bob", "carol"];
    let mut members = Vec::new();
    for name in names {
        members.push(Member::join(&app, name).await);
    }

    let mut sent = BTreeSet::new();
    // Room to write: every send is acked.
    for round in 0..3 {
        for (member, name) in members.iter_mut().zip(names) {
            let body = format!("before-{name}-{round}");
            let answer = member.send(&body, &body).await;
            assert_eq!(answer["type"], "ack", "{answer}");
            sent.insert(body);
        }
    }
    assert_eq!(readyz(&app).await, 200);

    // The disk fills up. A commit that still fits in space SQLite already holds may
    // succeed; from the first refusal on, no send is acked and each says to retry.
    let filler = fill(disk.path());
    let mut refused = Vec::new();
    for attempt in 0.. {
        assert!(attempt < 50, "a full disk never refused a write");
        let body = format!("filling-{attempt}");
        sent.insert(body.clone());
        let answer = members[0].send(&body, &body).await;
        if answer["type"] != "ack" {
            assert_unavailable(&answer);
            refused.push((0, body));
            break;
        }
    }
    for round in 0..4 {
        for (i, (member, name)) in members.iter_mut().zip(names).enumerate() {
            let body = format!("during-{name}-{round}");
            assert_unavailable(&member.send(&body, &body).await);
            sent.insert(body.clone());
            refused.push((i, body));
        }
    }
    assert_eq!(
        readyz(&app).await,
        503,
        "a node that cannot write is not ready"
    );
    // A nonce stored before the disk filled is answered from the store without writing
    // anything: that must not make the full disk look writable.
    let again = members[0].send("before-alice-0", "before-alice-0").await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        readyz(&app).await,
        503,
        "a write that wrote nothing says nothing about the disk"
    );

    // Space returns: without a restart, the very next sends are acked, and resending a
    // refused message with its nonce stores it once.
    std::fs::remove_file(&filler).expect("filler removed");
    for (i, body) in &refused {
        let answer = members[*i].send(body, body).await;
        assert_eq!(
            answer["type"], "ack",
            "writes resume by themselves: {answer}"
        );
        assert_eq!(answer["duplicate"], false, "{answer}");
    }
    for (member, name) in members.iter_mut().zip(names) {
        let body = format!("after-{name}");
        assert_eq!(member.send(&body, &body).await["type"], "ack");
        sent.insert(body);
    }
    assert_eq!(readyz(&app).await, 200);

    let last_seq = members
        .iter()
        .flat_map(|m| m.seen.acked.keys())
        .copied()
        .max()
        .expect("acks");
    for member in &mut members {
        member.read_through(last_seq).await;
    }
    let stopped = app.stop().await;
    let app = restart(&stopped).await;
    let stored = stored_messages(&app).await;

    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "seqs contiguous from 1"
    );
    for member in &members {
        for (seq, body) in member.seen.acked.iter().chain(&member.seen.live) {
            assert_eq!(stored.get(seq), Some(body), "seq {seq} acked or seen live");
        }
        assert_eq!(
            member.seen.live, stored,
            "each member saw the whole room live"
        );
    }
    let bodies: BTreeSet<String> = stored.values().cloned().collect();
    assert_eq!(bodies.len(), stored.len(), "no message stored twice");
    assert_eq!(
        bodies, sent,
        "every message, acked once space returned, is stored"
    );
}

#[tokio::test]
async fn registrations_and_revocations_on_a_full_disk_answer_503_and_none_is_undone_later() {
    if sqlite_only("its file on a tmpfs that fills up") {
        return;
    }
    let Some(disk) = Mount::small_tmpfs() else {
        return;
    };
    let url = disk.database_url();
    let app = spawn_app_with(|settings| settings.database_url = url).await;
    let admin =
        sign(&json!({"sub":"root","name":"root","iat":now(),"exp":now() + 900,"role":"admin"}));
    assert_eq!(app.register("before", "long enough").await.status(), 201);

    let filler = fill(disk.path());
    let refused = app.register("during", "long enough").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: Value = refused.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let mut bob = app.connect("bob").await;
    let revocation = app.revoke(&admin, "id-bob").await;
    assert_eq!(
        revocation.status(),
        503,
        "a revocation that was not saved is not a 200"
    );
    bob.send(json!({"type":"join","id":1,"room":"general"}))
        .await;
    assert_eq!(
        bob.recv_type("joined").await["id"],
        1,
        "an unsaved revocation is not half applied"
    );

    std::fs::remove_file(&filler).expect("filler removed");
    assert_eq!(app.register("after", "long enough").await.status(), 201);
    assert_eq!(app.revoke(&admin, "id-carol").await.status(), 200);

    let stopped = app.stop().await;
    let app = restart(&stopped).await;
    for (name, status) in [("before", 200), ("during", 401), ("after", 200)] {
        assert_eq!(
            app.login(name, "long enough").await.status(),
            status,
            "{name}"
        );
    }
    let carol_token =
        sign(&json!({"sub":"id-carol","name":"carol","iat":now() - 5,"exp":now() + 900}));
    assert_eq!(
        app.refused(&carol_token).await.status,
        401,
        "the revocation that answered 200 survived the restart"
    );
}

#[tokio::test]
async fn a_disk_that_turns_read_only_makes_readyz_fail_and_sends_unavailable() {
    if sqlite_only("its file on a disk that turns read-only") {
        return;
    }
    let Some(disk) = Mount::small_ext4() else {
        return;
    };
    // The real binary: a fault in the file system must not take the test runner down.
    let server = ServerProcess::start(&disk.database_url(), &[]).await;
    let readyz = || async {
        reqwest::get(format!("http://{}/readyz", server.addr))
            .await
            .expect("the server still answers")
            .status()
            .as_u16()
    };
    let mut alice = server.connect("alice").await;
    alice
        .send(json!({"type":"join","id":1,"room":"general"}))
        .await;
    alice.recv_type("joined").await;
    assert_eq!(alice.say("general", "written").await["seq"], 1);
    assert_eq!(readyz().await, 200);

    // What ext4 does on an I/O error with errors=remount-ro, files open or not.
    disk.trigger_ext4_error();
    alice
        .send(json!({"type":"send","id":2,"room":"general","body":"refused"}))
        .await;
    assert_unavailable(&alice.recv_type("error").await);
    assert_eq!(readyz().await, 503, "a read-only store is not ready");
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .expect("the server still answers")
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|line| line == "palisade_ready 0"),
        "the scrape says ready while /readyz does not:\n{metrics}"
    );
    alice
        .send(json!({"type":"history","id":3,"room":"general"}))
        .await;
    let history = alice.recv_type("history").await;
    assert_eq!(
        history["messages"][0]["body"], "written",
        "reads still work"
    );
}

#[tokio::test]
async fn a_database_on_a_read_only_disk_is_refused_at_start_with_one_line_naming_it() {
    if sqlite_only("its file on a read-only disk") {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let Some(view) = Mount::read_only_view_of(folder.path()) else {
        return;
    };
    let database = view.path().join("palisade.db");
    let (status, log) = start_binary_on(&database).await;
    assert_refused_naming(status, &log, &database, "writable");
}

/// Starts the real binary on this database and returns its exit status and output.
async fn start_binary_on(database: &Path) -> (Option<i32>, String) {
    start_binary(database, "127.0.0.1:0").await
}

async fn start_binary(database: &Path, listen: &str) -> (Option<i32>, String) {
    let url = format!("sqlite://{}", database.display());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["--listen", listen, "--database-url", &url])
        .env("PALISADE_JWT_SECRET", crate::helpers::TEST_SECRET)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, child)
        .await
        .expect("the server gives up in time")
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

fn assert_refused_naming(status: Option<i32>, log: &str, database: &Path, symptom: &str) {
    assert_refused_saying(status, log, &[&database.display().to_string(), symptom]);
}

/// The server exited non-zero without serving, with one error line saying all of these.
fn assert_refused_saying(status: Option<i32>, log: &str, words: &[&str]) {
    assert!(
        status.is_some_and(|code| code != 0),
        "exits non-zero: {status:?}\n{log}"
    );
    assert!(!log.contains("listening on"), "never serves:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    for word in words {
        assert!(
            errors[0].contains(word),
            "the error says {word:?}: {}",
            errors[0]
        );
    }
}

#[tokio::test]
async fn a_port_in_use_is_refused_at_start_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (status, log) = start_binary(&dir.path().join("palisade.db"), &address).await;
    assert_refused_saying(status, &log, &[&address, "--listen"]);
}

#[tokio::test]
async fn a_database_file_of_garbage_is_refused_at_start_with_one_line_naming_it() {
    if sqlite_only("a damaged database file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("palisade.db");
    let garbage: Vec<u8> = (0..64 * 1024_u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&database, garbage).unwrap();
    let (status, log) = start_binary_on(&database).await;
    assert_refused_naming(status, &log, &database, "damaged");
    assert!(log.contains("not a database"), "{log}");
}

#[tokio::test]
async fn a_truncated_database_file_is_refused_at_start_with_one_line_naming_it() {
    if sqlite_only("a truncated database file") {
        return;
    }
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("palisade.db");
    // A database of a few hundred pages, cut in half (a copy that did not finish).
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&database)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE filler (n INTEGER PRIMARY KEY, body BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
         INSERT INTO filler SELECT i, randomblob(2000) FROM n;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let length = std::fs::metadata(&database).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&database)
        .unwrap();
    file.set_len(length / 2).unwrap();
    drop(file);

    let (status, log) = start_binary_on(&database).await;
    assert_refused_naming(status, &log, &database, "damaged");
}

#[tokio::test]
async fn a_database_with_one_damaged_page_is_refused_at_start_though_it_opens() {
    if sqlite_only("a damaged page of its file") {
        return;
    }
    use palisade::model::UserRef;
    use palisade::store::{MessageLog, NewMessage, sqlite::SqliteStore};
    use std::io::{Seek, SeekFrom};
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("palisade.db");
    let url = format!("sqlite://{}", database.display());
    // A real palisade database whose history fills a few hundred pages.
    let store = SqliteStore::open(&url).await.unwrap();
    for i in 0..300 {
        let from = UserRef {
            id: "id-alice".into(),
            name: "alice".into(),
        };
        let body = format!("{i}{}", "x".repeat(1500));
        let message = NewMessage {
            room: "general".into(),
            from,
            body,
            nonce: None,
            ts: 0,
        };
        store.append(message, Box::new(|_| {})).await.unwrap();
    }
    drop(store);
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Garbage over one page of history: opening and migrating never read it.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&database)
        .unwrap();
    let length = file.metadata().unwrap().len();
    assert!(
        length > 100 * 4096,
        "the history is in the main file: {length}"
    );
    file.seek(SeekFrom::Start(length / 2 / 4096 * 4096))
        .unwrap();
    file.write_all(&[0x5A; 4096]).unwrap();
    drop(file);

    let (status, log) = start_binary_on(&database).await;
    assert_refused_naming(status, &log, &database, "quick_check");
}
