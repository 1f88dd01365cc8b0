//! `light-load`: one room of N members at a low rate (10–50 msg/s), on a server that is
//! mostly idle; how late each message reaches every member.
//!
//! The fan-out scenarios measure cost under load, where palisade's writer trades a few
//! milliseconds of latency for fewer, larger TCP packets (a connection that flushed in
//! the last 40 ms gathers frames for up to `--coalesce-ms` after that flush, while the
//! server is busy). This one asks what a message costs in latency when there is no load
//! to save: the p50/p99/p999 of send → receive for every member, with the server's CPU %
//! to show the load really is light, run against the Node `ws` peer in the same
//! `bench/run.sh` for comparison.
//!
//! Sends arrive at random by default (`--arrivals poisson`), as people chat: a fixed
//! schedule would hide the short gaps where a frame might wait for the next one.

use super::{Load, Report, broadcast};
use crate::Args;

pub async fn run(args: &Args, load: &Load) -> Report {
    let mut report = broadcast(args, load).await;
    let arrivals = format!("{:?}", load.arrivals).to_lowercase();
    report.scenario = "light-load".into();
    report.params = format!(
        "{} members, {} msg/s {arrivals}",
        load.subscribers, load.rate
    );
    if let Some(percent) = report.cpu_percent() {
        report.extra.push(("server CPU %", percent));
    }
    let [p50, p99, p999] = report.latency_ms.unwrap_or_default();
    eprintln!(
        "  {}: delivered {:.2} %, p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms, server CPU {:.1} %",
        args.name,
        report.ratio(),
        report.cpu_percent().unwrap_or(f64::NAN),
    );
    report
}
