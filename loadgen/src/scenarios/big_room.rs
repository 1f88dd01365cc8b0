//! `big-room`: N members connect and join one room; how long until all have `joined`.
//!
//! Every member keeps reading what the server sends (presence, counts) from the moment it
//! has joined, as a browser would, so the server never sees a slow consumer. At most
//! [`CONNECT_BATCH`] joins are in flight at once. The report gives the time from the first
//! connect to the last `joined`, the time per member, and the server's CPU seconds over
//! the whole run, settling included.

use super::{CONNECT_BATCH, Report};
use crate::client;
use crate::{Args, Protocol};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long members keep reading after the last `joined`, so the server's CPU time
/// includes delivering what the joins caused.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(args: &Args, members: usize) -> Report {
    assert_eq!(
        args.protocol,
        Protocol::Palisade,
        "big-room needs palisade's join"
    );
    eprintln!("{}: {members} members join one room", args.name);
    let args = Arc::new(super::args_clone(args));
    let gate = Arc::new(Semaphore::new(CONNECT_BATCH));
    let frames = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let cpu_before = args.server_cpu();
    let started = Instant::now();
    let mut joins = JoinSet::new();
    for i in 0..members {
        let (args, gate, frames) = (Arc::clone(&args), Arc::clone(&gate), Arc::clone(&frames));
        let mut stopped = stopped.clone();
        joins.spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate stays open");
            let (sink, mut stream) = client::connect(&args, i, "big-room").await;
            drop(permit);
            let joined_at = started.elapsed();
            // Keep reading until told to stop, counting what arrives.
            tokio::spawn(async move {
                let _keep_open = sink;
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => break,
                        next = stream.next() => match next {
                            Some(Ok(Message::Text(_))) => {
                                frames.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        }
                    }
                }
            });
            joined_at
        });
    }
    let mut last = Duration::ZERO;
    let mut done = 0;
    while let Some(joined_at) = joins.join_next().await {
        last = last.max(joined_at.expect("a member joins"));
        done += 1;
        if done % 500 == 0 {
            eprint!("\r  joined {done}/{members}");
        }
    }
    eprintln!();
    tokio::time::sleep(SETTLE).await;
    let cpu_after = args.server_cpu();
    let frames = frames.load(Ordering::Relaxed);
    let _ = stop.send(true);
    let seconds = last.as_secs_f64();
    eprintln!(
        "  all joined in {seconds:.2} s ({:.3} ms per member); {frames} frames received after joining",
        seconds * 1000.0 / members as f64
    );
    Report {
        scenario: "big-room".into(),
        params: format!("{members} members"),
        sent: members as u64,
        expected: members as u64,
        delivered: members as u64,
        seconds,
        cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        extra: vec![("ms/member", seconds * 1000.0 / members as f64)],
        ..Report::default()
    }
}
