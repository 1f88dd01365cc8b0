//! Throttling of the security log, so a flood of bad requests cannot fill the disk.
//!
//! Every security event is worth a line, but three hundred identical refusals from one
//! address are not worth three hundred. Per (client, event) the first few events of a
//! window are written as usual; the rest are only counted, and when the window ends one
//! line says how many were left out ("N more like this from IP in 10 s"). Clients are
//! keyed like every per-IP limit ([`rate_key`]), and the number of tracked keys is
//! bounded: past it, new clients share one "many addresses" key.

use crate::client_ip::rate_key;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most (client, event) pairs tracked at once; more would let a flood grow the table.
const MAX_KEYS: usize = 10_000;

/// Who an event is about: a client key, or `None` when the client is not known (or the
/// table is full).
type Key = (Option<IpAddr>, &'static str);

struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

/// One "N more like this" line: what [`SecurityLog::flush_at`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub client: Option<IpAddr>,
    pub event: &'static str,
    pub count: u64,
}

pub struct SecurityLog {
    windows: Mutex<HashMap<Key, Window>>,
    window: Duration,
    burst: u32,
    v6_prefix: u8,
}

impl SecurityLog {
    /// Lets `burst` events per client and event through in each `window`.
    pub fn new(window: Duration, burst: u32, v6_prefix: u8) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            // Bounded both ways: a zero period cannot tick, a huge one overflows Instant.
            window: window.clamp(Duration::from_millis(1), Duration::from_secs(24 * 3600)),
            burst,
            v6_prefix,
        }
    }

    /// Whether this event should be written now; if not, it is counted for the window's
    /// closing line. Use as `if log.admit(ip, "event") { tracing::warn!(...) }`.
    pub fn admit(&self, client: impl Into<Option<IpAddr>>, event: &'static str) -> bool {
        self.admit_at(client.into(), event, Instant::now())
    }

    fn admit_at(&self, client: Option<IpAddr>, event: &'static str, now: Instant) -> bool {
        let Ok(mut windows) = self.windows.lock() else {
            return true;
        };
        let mut key = (client.map(|ip| rate_key(ip, self.v6_prefix)), event);
        if windows.len() >= MAX_KEYS && !windows.contains_key(&key) {
            write_lines(self.take_ended(&mut windows, now), self.window);
            if windows.len() >= MAX_KEYS {
                key = (None, event);
            }
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= self.window {
            if window.suppressed > 0 {
                write_lines(
                    vec![Suppressed {
                        client: key.0,
                        event,
                        count: window.suppressed,
                    }],
                    self.window,
                );
            }
            *window = Window {
                started: now,
                written: 0,
                suppressed: 0,
            };
        }
        if window.written < self.burst {
            window.written += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// Writes the closing line of every window that has ended and forgets those windows.
    pub fn flush(&self) {
        write_lines(self.flush_at(Instant::now()), self.window);
    }

    fn flush_at(&self, now: Instant) -> Vec<Suppressed> {
        match self.windows.lock() {
            Ok(mut windows) => self.take_ended(&mut windows, now),
            Err(_) => Vec::new(),
        }
    }

    fn take_ended(&self, windows: &mut HashMap<Key, Window>, now: Instant) -> Vec<Suppressed> {
        let mut lines = Vec::new();
        windows.retain(|&(client, event), window| {
            let ended = now.duration_since(window.started) >= self.window;
            if ended && window.suppressed > 0 {
                lines.push(Suppressed {
                    client,
                    event,
                    count: window.suppressed,
                });
            }
            !ended
        });
        lines
    }

    /// Flushes once a window until `shutdown`, so the count of a flood that has stopped
    /// is still written.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.window);
        loop {
            tokio::select! {
                () = shutdown.triggered() => break,
                _ = tick.tick() => self.flush(),
            }
        }
        write_lines(self.flush_at(Instant::now() + self.window), self.window);
    }
}

fn write_lines(lines: Vec<Suppressed>, window: Duration) {
    let secs = window.as_secs_f64();
    for Suppressed {
        client,
        event,
        count,
    } in lines
    {
        let from = client.map_or_else(|| "many addresses".to_owned(), |ip| ip.to_string());
        tracing::warn!(target: "security", event = "suppressed", of = event, ip = %from, count,
            "{count} more like this from {from} in {secs} s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn log() -> SecurityLog {
        SecurityLog::new(Duration::from_secs(10), 3, 64)
    }

    #[test]
    fn the_first_events_of_a_window_pass_and_the_rest_are_counted_once() {
        let log = log();
        let start = Instant::now();
        let passed = (0..100)
            .filter(|_| log.admit_at(ip("203.0.113.9"), "handshake_rejected", start))
            .count();
        assert_eq!(passed, 3);
        assert!(log.flush_at(start + Duration::from_secs(9)).is_empty());
        assert_eq!(
            log.flush_at(start + Duration::from_secs(10)),
            vec![Suppressed {
                client: ip("203.0.113.9"),
                event: "handshake_rejected",
                count: 97
            }]
        );
        assert!(log.windows.lock().unwrap().is_empty());
        assert!(log.admit_at(
            ip("203.0.113.9"),
            "handshake_rejected",
            start + Duration::from_secs(10)
        ));
    }

    #[test]
    fn clients_and_events_are_throttled_apart_and_ipv6_per_network() {
        let log = log();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(log.admit_at(ip("2001:db8::1"), "login_failed", now));
        }
        assert!(!log.admit_at(ip("2001:db8::2"), "login_failed", now));
        assert!(log.admit_at(ip("2001:db8::2"), "rate_limited", now));
        assert!(log.admit_at(ip("2001:db8:0:1::2"), "login_failed", now));
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let log = SecurityLog::new(Duration::from_secs(10), 1, 128);
        let now = Instant::now();
        for n in 0..(MAX_KEYS as u32 + 500) {
            log.admit_at(Some(IpAddr::from(n.to_be_bytes())), "login_failed", now);
        }
        assert!(log.windows.lock().unwrap().len() <= MAX_KEYS + 1);
        let lines = log.flush_at(now + Duration::from_secs(10));
        assert!(
            lines
                .iter()
                .any(|line| line.client.is_none() && line.count > 0),
            "{lines:?}"
        );
    }
}
