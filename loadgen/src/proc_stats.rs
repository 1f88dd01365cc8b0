//! A server's CPU time and memory, from /proc.

use std::collections::HashMap;

/// Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Resident memory in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory the process has had at any moment, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU seconds used by the processes of some services (PostgreSQL, Redis) over a window:
/// what a cluster spends outside its nodes. Processes are found by name, so PostgreSQL's
/// many backends count; one that exits within the window is missed, one that starts in it
/// counts from its start.
pub struct ServicesCpu {
    names: Vec<String>,
    at_start: HashMap<u32, f64>,
}

impl ServicesCpu {
    /// Starts the window; with no names it measures nothing.
    pub fn start(names: &[String]) -> Self {
        Self {
            names: names.to_vec(),
            at_start: cpu_by_pid(names),
        }
    }

    /// CPU seconds since [`ServicesCpu::start`], or `None` when there are no services.
    pub fn seconds(&self) -> Option<f64> {
        if self.names.is_empty() {
            return None;
        }
        let now = cpu_by_pid(&self.names);
        Some(
            now.iter()
                .map(|(pid, cpu)| cpu - self.at_start.get(pid).copied().unwrap_or(0.0))
                .sum(),
        )
    }
}

/// Every process whose name is one of `names`, with its CPU seconds.
fn cpu_by_pid(names: &[String]) -> HashMap<u32, f64> {
    let mut found = HashMap::new();
    if names.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if names.iter().any(|name| name == comm.trim())
            && let Some(cpu) = cpu_seconds(pid)
        {
            found.insert(pid, cpu);
        }
    }
    found
}
