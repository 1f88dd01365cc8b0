//! `register`: N accounts created through `POST /api/register`; what each costs the
//! server in memory and CPU.
//!
//! An account is a row in the store, but creating one runs Argon2id (19 MiB, two
//! passes): the CPU per registration is the hash, and the memory the server holds while
//! hashing is not the memory the accounts keep. So the server's RSS is read before, right
//! after the last account, and again after `--idle` seconds with nothing to do, and its
//! peak (VmHWM) is reported too; KiB per account is (RSS − RSS before) / N at each point.
//!
//! At most `--concurrency` registrations are in flight: the server hashes a few at a
//! time (one per core by default) and answers `503` with `Retry-After` when a request
//! waits too long for a slot, so more in flight would only measure that queue. Refusals
//! (`429`, `503`) are retried after the time they name, and counted. The server must let
//! this many registrations from one address through (`--auth-per-minute`,
//! `--auth-burst`, `--auth-global-per-minute`, `--auth-global-burst`: `bench/run.sh`).

use super::{Report, new_histogram};
use crate::client::{self, now_micros};
use crate::proc_stats::{cpu_seconds, peak_rss_kib, rss_kib};
use crate::{Args, Protocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What a refusal that names no `Retry-After` is retried after.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
const PASSWORD: &str = "loadgen-password-0123";

/// What one worker saw.
struct Tally {
    created: u64,
    retries: u64,
    failed: u64,
    /// Time from request to `201`, in µs.
    histogram: hdrhistogram::Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            created: 0,
            retries: 0,
            failed: 0,
            histogram: new_histogram(),
        }
    }

    fn add(&mut self, other: Tally) {
        self.created += other.created;
        self.retries += other.retries;
        self.failed += other.failed;
        self.histogram
            .add(other.histogram)
            .expect("merge histograms");
    }
}

enum Outcome {
    Created,
    /// Refused for now (`429`, `503`): try again after this long.
    Later(Duration),
    Failed(String),
}

/// One `POST /api/register`.
async fn register(server: SocketAddr, username: &str) -> Outcome {
    let body = serde_json::json!({"username": username, "password": PASSWORD}).to_string();
    match client::post_json(server, "/api/register", &body).await {
        Ok(answer) if answer.status == 201 => Outcome::Created,
        Ok(answer) if matches!(answer.status, 429 | 503) => Outcome::Later(
            answer
                .header("retry-after")
                .and_then(|secs| secs.parse().ok())
                .map_or(DEFAULT_RETRY, Duration::from_secs),
        ),
        Ok(answer) => Outcome::Failed(format!("status {}", answer.status)),
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

/// Registers accounts `next..accounts` (shared with the other workers) until none are left.
async fn worker(server: SocketAddr, next: Arc<AtomicUsize>, accounts: usize, run: u64) -> Tally {
    let mut tally = Tally::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= accounts {
            return tally;
        }
        let username = format!("lg{run}_{i}");
        loop {
            let sent = Instant::now();
            match register(server, &username).await {
                Outcome::Created => {
                    tally.created += 1;
                    let micros = sent.elapsed().as_micros() as u64;
                    let _ = tally.histogram.record(micros.max(1));
                    break;
                }
                Outcome::Later(wait) => {
                    tally.retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Outcome::Failed(why) => {
                    if tally.failed == 0 {
                        eprintln!("\n  {username}: {why}");
                    }
                    tally.failed += 1;
                    break;
                }
            }
        }
        if (i + 1).is_multiple_of(250) {
            eprint!("\r  registered {}/{accounts}", i + 1);
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(args: &Args, accounts: usize, concurrency: usize, idle: u64) -> Report {
    assert_eq!(
        args.protocol,
        Protocol::Palisade,
        "register needs palisade's API"
    );
    let pid = args.the_server_pid().expect("register needs --server-pid");
    let server = client::server_addr(args.url(0));
    // Names unique to this run, so a second run against the same database creates too.
    let run = now_micros() / 1_000_000 % 1_000_000;
    let rss_before = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "{}: {accounts} registrations, {concurrency} in flight (server RSS {rss_before} KiB before)",
        args.name
    );
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(worker(server, Arc::clone(&next), accounts, run));
    }
    let mut total = Tally::new();
    for tally in workers.join_all().await {
        total.add(tally);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(pid);
    let rss_after = rss_kib(pid).unwrap_or(0);
    eprintln!();
    eprintln!("  waiting {idle} s idle");
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let rss_idle = rss_kib(pid).unwrap_or(0);
    let peak = peak_rss_kib(pid).unwrap_or(0);
    let per_account =
        |rss: u64| rss.saturating_sub(rss_before) as f64 / total.created.max(1) as f64;
    let cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let histogram = &total.histogram;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "  {} created in {seconds:.1} s ({:.1}/s), {} retried, {} failed; server CPU {:.1} ms per account; \
         RSS {:.1} → {:.1} MiB ({:.1} KiB/account), {:.1} MiB after {idle} s idle ({:.1} KiB/account), peak {:.1} MiB",
        total.created,
        total.created as f64 / seconds,
        total.retries,
        total.failed,
        cpu.unwrap_or(f64::NAN) * 1000.0 / total.created.max(1) as f64,
        mib(rss_before),
        mib(rss_after),
        per_account(rss_after),
        mib(rss_idle),
        per_account(rss_idle),
        mib(peak),
    );
    Report {
        scenario: "register".into(),
        params: format!("{accounts} accounts, {concurrency} in flight"),
        sent: accounts as u64,
        expected: accounts as u64,
        delivered: total.created,
        seconds,
        cpu_seconds: cpu,
        cpu_wall_seconds: seconds,
        latency_ms: (total.created > 0).then(|| [ms(0.5), ms(0.99), ms(0.999)]),
        extra: vec![
            ("RSS before MiB", mib(rss_before)),
            ("after MiB", mib(rss_after)),
            ("KiB/account", per_account(rss_after)),
            ("after idle MiB", mib(rss_idle)),
            ("idle KiB/account", per_account(rss_idle)),
            ("peak MiB", mib(peak)),
            (
                "CPU ms/account",
                cpu.unwrap_or(0.0) * 1000.0 / total.created.max(1) as f64,
            ),
            ("server CPU %", 100.0 * cpu.unwrap_or(0.0) / seconds),
            ("retries", total.retries as f64),
            ("failed", total.failed as f64),
        ],
        ..Report::default()
    }
}
