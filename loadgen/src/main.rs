//! loadgen: drives palisade (or a peer server) over real WebSockets and reports what it
//! delivered, how fast, and at what cost to the server.
//!
//! Scenarios:
//! - `fanout`: N subscribers in one room, publishers at a fixed total rate R;
//! - `rooms`: many small rooms, one publisher each;
//! - `ingest`: acked durable sends per second (palisade only);
//! - `idle`: C authenticated, joined connections; server memory per connection;
//! - `big-room`: N members connect and join one room; time to all joined, per member.
//! - `room-ingest`: P publishers in ONE room; acked durable msg/s and ack latency.
//! - `light-load`: a room of N members at a low rate; delivery latency and server CPU %.
//! - `register`: N accounts through `POST /api/register`; server memory and CPU per account.
//!
//! Latency is measured from each message's *scheduled* send time, so queueing in the
//! sender is not hidden. Connections spread over source addresses 127.0.0.1–127.0.0.4 to
//! get four ephemeral port ranges. Against a cluster, `--url` lists the nodes and
//! connections go round-robin over them; `--services postgres,redis-server` adds what
//! those processes spend to the report, apart from the nodes' own CPU. Progress goes to
//! stderr, a markdown table row to stdout, and the full result as JSON to `--json`.
#![forbid(unsafe_code)]

mod client;
mod proc_stats;
mod scenarios;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Load generator for palisade and its peers")]
pub struct Args {
    /// WebSocket URL of the server; for a cluster, its nodes' URLs separated by commas:
    /// connection `i` goes to the `i mod n`-th, so clients spread evenly over the nodes.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8000/ws")]
    pub url: Vec<String>,
    /// What the server speaks: palisade's protocol, or a bare broadcast server.
    #[arg(long, value_enum, default_value = "palisade")]
    pub protocol: Protocol,
    /// Name of the server in the report.
    #[arg(long, default_value = "palisade")]
    pub name: String,
    /// HS256 secret to mint palisade tokens with (the server's PALISADE_JWT_SECRET).
    #[arg(long, env = "PALISADE_JWT_SECRET", default_value = "")]
    pub jwt_secret: String,
    /// PID of the server, to read its CPU time and memory from /proc; for a cluster, its
    /// nodes' PIDs separated by commas (their CPU is added up).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Names of the processes of the services the server uses (e.g. `postgres,redis-server`):
    /// their CPU over the same window is reported apart, so a cluster's cost per message
    /// counts its PostgreSQL and Redis too.
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
    /// Append the result as a JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Palisade,
    Raw,
}

/// How sends are spread in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arrivals {
    /// On a fixed schedule, evenly spaced.
    Even,
    /// At random (a Poisson process, as people chatting): some gaps are short.
    Poisson,
}

#[derive(Subcommand, Clone, Debug)]
pub enum Scenario {
    /// Subscribers in one room, publishers at a fixed total rate.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Messages per second, all publishers together.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Message body size in bytes.
        #[arg(long, default_value_t = 64)]
        body_bytes: usize,
    },
    /// Many small rooms, one publisher each.
    Rooms {
        #[arg(long, default_value_t = 200)]
        rooms: usize,
        #[arg(long, default_value_t = 5)]
        members: usize,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Acked durable sends per second.
    Ingest {
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Sends in flight per connection.
        #[arg(long, default_value_t = 32)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Idle authenticated, joined connections.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Members connecting and joining one room: time until all have joined.
    BigRoom {
        #[arg(long, default_value_t = 1000)]
        members: usize,
    },
    /// Publishers in ONE room: acked durable sends per second and ack latency.
    RoomIngest {
        #[arg(long, default_value_t = 32)]
        publishers: usize,
        /// Messages per second, all publishers together; 0 = closed loop (see --window).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Closed loop: unacked sends per publisher.
        #[arg(long, default_value_t = 8)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 100)]
        body_bytes: usize,
    },
    /// Members of one room at a low rate: delivery latency on an unloaded server.
    LightLoad {
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Messages per second, all publishers together.
        #[arg(long, default_value_t = 20)]
        rate: u64,
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        #[arg(long, value_enum, default_value = "poisson")]
        arrivals: Arrivals,
        #[arg(long, default_value_t = 30)]
        duration: u64,
    },
    /// Accounts registered through the HTTP API: server memory and CPU per account.
    Register {
        #[arg(long, default_value_t = 2000)]
        accounts: usize,
        /// Registrations in flight at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Seconds to wait, idle, before reading the server's memory a last time.
        #[arg(long, default_value_t = 10)]
        idle: u64,
    },
}

impl Args {
    /// The URL connection number `index` goes to.
    pub fn url(&self, index: usize) -> &str {
        &self.url[index % self.url.len()]
    }

    /// The one server's PID, for scenarios that read its memory.
    pub fn the_server_pid(&self) -> Option<u32> {
        self.server_pid.first().copied()
    }

    /// CPU seconds of every server process together (`None` when one is unreadable).
    pub fn server_cpu(&self) -> Option<f64> {
        if self.server_pid.is_empty() {
            return None;
        }
        self.server_pid
            .iter()
            .map(|pid| proc_stats::cpu_seconds(*pid))
            .sum()
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let result = scenarios::run(&args).await;
    println!("{}", result.markdown_row());
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the JSON output");
        writeln!(file, "{}", result.json()).expect("write the JSON output");
    }
}
