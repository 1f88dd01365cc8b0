//! A PostgreSQL server of a test's own, which the test can crash and start again on the
//! same port and data directory: the machine's PostgreSQL is shared by every other test
//! and cannot be restarted under them (`PrivateRedis` in `cluster_faults.rs` is the same
//! for Redis).
//!
//! It runs the machine's binaries (`/usr/lib/postgresql/<newest>/bin`) on a cluster
//! made by `initdb` in a temporary directory, with trust authentication for `postgres`.
//! PostgreSQL refuses to run as root, so as root (the tests' usual user here) it runs as
//! the `postgres` user through `setpriv`, on a directory handed over to that user.
//!
//! Its processes are found by an environment variable they all inherit (the postmaster's
//! children each start a session of their own, so no process group holds them all),
//! which is how a crash kills every one of them and a drop leaves none running.

use crate::helpers::{WAIT, await_ready_line};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where Debian-style packages put each major version's binaries.
const VERSIONS: &str = "/usr/lib/postgresql";

/// The variable that marks this server's processes; its value is the data directory.
const MARK: &str = "PALISADE_PRIVATE_POSTGRES";

pub(crate) struct PrivatePostgres {
    bin: PathBuf,
    root: tempfile::TempDir,
    port: u16,
    /// The postmaster, while it runs.
    server: Option<tokio::process::Child>,
}

impl PrivatePostgres {
    /// A running server with a fresh cluster; `None` (after saying why) where there are
    /// no PostgreSQL binaries, unless `PALISADE_REQUIRE_SERVICES=1` makes that a failure.
    pub(crate) async fn start() -> Option<Self> {
        let Some(bin) = newest_binaries() else {
            assert!(
                std::env::var("PALISADE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PALISADE_REQUIRE_SERVICES=1 but there are no PostgreSQL binaries in {VERSIONS}/*/bin"
            );
            eprintln!(
                "SKIPPED: no PostgreSQL binaries in {VERSIONS}/*/bin for a server of the test's own"
            );
            return None;
        };
        let root = tempfile::Builder::new()
            .prefix("palisade-pg-")
            .tempdir()
            .expect("a temporary directory");
        if as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(root.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "the directory is handed to postgres");
        }
        let mut server = Self {
            bin,
            root,
            port: 0,
            server: None,
        };
        // No sync of the new cluster: only a crash of the machine could lose what the
        // page cache holds, and the test crashes the server, not the machine.
        let made = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .await
            .expect("initdb runs");
        assert!(
            made.status.success(),
            "initdb failed:\n{}",
            String::from_utf8_lossy(&made.stderr)
        );
        server.port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|free| free.local_addr())
            .expect("a free port")
            .port();
        server.launch().await;
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// One of the binaries, as the user PostgreSQL runs as.
    fn command(&self, binary: &str) -> tokio::process::Command {
        let path = self.bin.join(binary);
        let mut command = if as_root() {
            let mut setpriv = tokio::process::Command::new("setpriv");
            setpriv
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(path);
            setpriv
        } else {
            tokio::process::Command::new(path)
        };
        command
            .current_dir(self.root.path())
            .env("LC_ALL", "C")
            .env(MARK, self.data())
            .stdin(Stdio::null());
        command
    }

    /// Starts the postmaster on the cluster and port and waits for its "ready" line:
    /// what it logged until then (after a crash, its recovery).
    async fn launch(&mut self) -> Vec<String> {
        let port = self.port.to_string();
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &port, "-k"])
            .arg(self.root.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres starts");
        let log = child.stderr.take().expect("its log is piped");
        let what = format!("postgres on port {port}");
        let said = await_ready_line(log, "ready to accept connections", &what).await;
        self.server = Some(child);
        said
    }

    /// A new database on the server: its URL.
    pub(crate) async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("the private server accepts a connection");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("the database is created");
        let _ = admin.close().await;
        self.url(name)
    }

    pub(crate) fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// SIGKILL to the postmaster and every process of it at once, as when the machine
    /// or the OOM killer takes the server: nothing is shut down, no client is told,
    /// and the next start has to recover from the WAL. Returns once none of them runs.
    pub(crate) async fn crash(&mut self) {
        let mut server = self.server.take().expect("the server runs");
        kill_all(&self.data());
        server.wait().await.expect("the postmaster is reaped");
        // The others are not this process's children, so there is nothing to await:
        // checked every few milliseconds (they die at once, being SIGKILLed).
        let deadline = tokio::time::Instant::now() + WAIT;
        while !processes(&self.data()).is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the crashed server's processes are gone within the wait"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the server again on the same port and cluster: what it logged until it
    /// was ready.
    pub(crate) async fn restart(&mut self) -> Vec<String> {
        assert!(self.server.is_none(), "crashed first");
        self.launch().await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // No shutdown to wait for (nothing kept matters), and the directory can go only
        // once nothing writes in it.
        kill_all(&self.data());
        let deadline = std::time::Instant::now() + WAIT;
        while !processes(&self.data()).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = processes(&self.data());
        if !left.is_empty() {
            eprintln!("WARNING: the private PostgreSQL's processes {left:?} still run");
        }
    }
}

/// The directory of the newest major version's binaries, found at run time.
fn newest_binaries() -> Option<PathBuf> {
    std::fs::read_dir(VERSIONS)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// Whether this process runs as root (the owner of `/proc/self` is its user).
fn as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0)
}

/// The processes still running (not zombies: those hold nothing) with the mark of the
/// server of `data`.
fn processes(data: &Path) -> Vec<u32> {
    let mut mark = format!("{MARK}=").into_bytes();
    mark.extend_from_slice(data.as_os_str().as_encoded_bytes());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            // A zombie's environment reads empty; one that just exited reads an error.
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            environ
                .split(|byte| *byte == 0)
                .any(|variable| variable == mark.as_slice())
                .then_some(pid)
        })
        .collect()
}

/// SIGKILL to every running process of the server of `data`.
fn kill_all(data: &Path) {
    let pids = processes(data);
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .status();
}
