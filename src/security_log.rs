//! Throttling of the security log, so a flood of bad requests cannot fill the disk.
//!
//! Every security event is worth a line, but three hundred identical refusals from one
//! address are not worth three hundred. Per (client, event) the first few events of a
//! window are written as usual; the rest are only counted, and when the window ends one
//! line says how many were left out ("N more like this from IP in 10 s"). Clients are
//! keyed like every per-IP limit ([`rate_key`]), and the number of tracked keys is
//! bounded: past it, new clients share one "many addresses" key.

use crate::client_ip::rate_key;
use crate::origin::{OriginRejection, for_log};
use crate::shutdown::Shutdown;
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most (client, event) pairs tracked at once; more would let a flood grow the table.
/// Past it, events from new clients are counted under their event's overflow key
/// (`None`), so the table holds at most this many keys plus one per event kind.
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
pub(crate) struct Suppressed {
    pub client: Option<IpAddr>,
    pub event: &'static str,
    pub count: u64,
}

struct Table {
    windows: HashMap<Key, Window>,
    /// When ended windows were last swept out: a full table is swept at most once a
    /// window, so a flood from ever new addresses (many IPv6 networks) that keeps it
    /// full costs one scan a window, not one per event.
    last_sweep: Instant,
}

pub struct SecurityLog {
    table: Mutex<Table>,
    window: Duration,
    burst: u32,
    v6_prefix: u8,
}

impl SecurityLog {
    /// Lets `burst` events per client and event through in each `window`.
    pub fn new(window: Duration, burst: u32, v6_prefix: u8) -> Self {
        Self {
            table: Mutex::new(Table {
                windows: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            // Bounded both ways: a zero period cannot tick, a huge one overflows Instant.
            window: window.clamp(Duration::from_millis(1), Duration::from_secs(24 * 3600)),
            burst,
            v6_prefix,
        }
    }

    /// Whether this event should be written now; if not, it is counted for the window's
    /// closing line. Use as `if log.admit(ip, "event") { tracing::warn!(...) }`.
    pub fn admit(&self, client: impl Into<Option<IpAddr>>, event: &'static str) -> bool {
        let (admitted, lines) = self.admit_at(client.into(), event, Instant::now());
        // Written with the lock released: a slow log sink must not hold up every
        // other request that reports a security event.
        write_lines(lines, self.window);
        admitted
    }

    /// The line of a request refused for its `Origin`, throttled like every event: the
    /// same for the handshake and `POST /api/tickets`, which differ only in the event's
    /// name and in naming the `endpoint` (the handshake's event names its door itself).
    /// The origin is shown as [`for_log`] shows it: escaped, quoted, cut short.
    pub fn origin_refused(
        &self,
        ip: IpAddr,
        event: &'static str,
        endpoint: Option<&'static str>,
        reason: OriginRejection,
        headers: &HeaderMap,
    ) {
        if !self.admit(ip, event) {
            return;
        }
        let (origin, reason) = (for_log(headers), reason.as_str());
        match endpoint {
            Some(endpoint) => {
                tracing::warn!(target: "security", event, %ip, endpoint, reason, %origin)
            }
            None => tracing::warn!(target: "security", event, %ip, reason, %origin),
        }
    }

    /// The verdict, and the closing lines of windows that ended on the way, to write.
    fn admit_at(
        &self,
        client: Option<IpAddr>,
        event: &'static str,
        now: Instant,
    ) -> (bool, Vec<Suppressed>) {
        let Ok(mut table) = self.table.lock() else {
            return (true, Vec::new());
        };
        let mut lines = Vec::new();
        let mut key = (client.map(|ip| rate_key(ip, self.v6_prefix)), event);
        if table.windows.len() >= MAX_KEYS && !table.windows.contains_key(&key) {
            if now.saturating_duration_since(table.last_sweep) >= self.window {
                lines = self.sweep(&mut table, now);
            }
            if table.windows.len() >= MAX_KEYS {
                key = (None, event);
            }
        }
        let window = table.windows.entry(key).or_insert(Window {
            started: now,
            written: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(window.started) >= self.window {
            if window.suppressed > 0 {
                lines.push(Suppressed {
                    client: key.0,
                    event,
                    count: window.suppressed,
                });
            }
            *window = Window {
                started: now,
                written: 0,
                suppressed: 0,
            };
        }
        let admitted = if window.written < self.burst {
            window.written += 1;
            true
        } else {
            window.suppressed += 1;
            false
        };
        (admitted, lines)
    }

    /// Writes the closing line of every window that has ended and forgets those windows.
    pub fn flush(&self) {
        write_lines(self.flush_at(Instant::now()), self.window);
    }

    fn flush_at(&self, now: Instant) -> Vec<Suppressed> {
        match self.table.lock() {
            Ok(mut table) => self.sweep(&mut table, now),
            Err(_) => Vec::new(),
        }
    }

    /// Forgets every window that has ended; the closing lines of those that suppressed
    /// something.
    fn sweep(&self, table: &mut Table, now: Instant) -> Vec<Suppressed> {
        table.last_sweep = now;
        let mut lines = Vec::new();
        table.windows.retain(|&(client, event), window| {
            let ended = now.saturating_duration_since(window.started) >= self.window;
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

    fn admit(log: &SecurityLog, client: Option<IpAddr>, event: &'static str, now: Instant) -> bool {
        log.admit_at(client, event, now).0
    }

    fn keys(log: &SecurityLog) -> usize {
        log.table.lock().unwrap().windows.len()
    }

    #[test]
    fn the_first_events_of_a_window_pass_and_the_rest_are_counted_once() {
        let log = log();
        let start = Instant::now();
        let passed = (0..100)
            .filter(|_| admit(&log, ip("203.0.113.9"), "handshake_rejected", start))
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
        assert_eq!(keys(&log), 0);
        assert!(admit(
            &log,
            ip("203.0.113.9"),
            "handshake_rejected",
            start + Duration::from_secs(10)
        ));
    }

    #[test]
    fn a_window_that_ends_on_an_event_hands_back_its_closing_line_to_write() {
        let log = log();
        let start = Instant::now();
        for _ in 0..5 {
            admit(&log, ip("203.0.113.9"), "login_failed", start);
        }
        let (admitted, lines) = log.admit_at(
            ip("203.0.113.9"),
            "login_failed",
            start + Duration::from_secs(10),
        );
        assert!(admitted);
        assert_eq!(
            lines,
            vec![Suppressed {
                client: ip("203.0.113.9"),
                event: "login_failed",
                count: 2
            }]
        );
    }

    #[test]
    fn clients_and_events_are_throttled_apart_and_ipv6_per_network() {
        let log = log();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(admit(&log, ip("2001:db8::1"), "login_failed", now));
        }
        assert!(!admit(&log, ip("2001:db8::2"), "login_failed", now));
        assert!(admit(&log, ip("2001:db8::2"), "rate_limited", now));
        assert!(admit(&log, ip("2001:db8:0:1::2"), "login_failed", now));
    }

    /// A distinct IPv6 /64 for each `n`, as a flooder holding many networks sends from.
    fn network(n: u32) -> Option<IpAddr> {
        let bits = (0x2001_0db8_u128 << 96) | (u128::from(n) << 64) | 1;
        Some(std::net::Ipv6Addr::from(bits).into())
    }

    #[test]
    fn a_full_table_stays_bounded_and_its_overflow_loses_no_count() {
        let log = SecurityLog::new(Duration::from_secs(10), 1, 64);
        let created = log.table.lock().unwrap().last_sweep;
        let start = Instant::now();
        let mut events = 0_u64;
        let mut written = 0_u64;
        let mut send = |n: u32, at: Instant| {
            events += 1;
            let (admitted, lines) = log.admit_at(network(n), "auth_rejected", at);
            written += u64::from(admitted);
            lines
        };
        let mut closing = Vec::new();
        // Fill the table, then keep it full from ever new networks, twice each.
        for n in 0..MAX_KEYS as u32 {
            closing.extend(send(n, start));
        }
        let later = start + Duration::from_secs(1);
        for n in MAX_KEYS as u32..(MAX_KEYS as u32 + 5_000) {
            closing.extend(send(n, later));
            closing.extend(send(n, later));
        }
        assert!(closing.is_empty(), "nothing has ended yet");
        assert_eq!(keys(&log), MAX_KEYS + 1, "one overflow key for the event");
        assert_eq!(
            log.table.lock().unwrap().last_sweep,
            created,
            "within a window, events from new clients never scan the table"
        );
        // Once a window has passed, the next unseen client sweeps the ended windows out
        // and gets a key of its own again.
        let next_window = start + Duration::from_secs(10);
        closing.extend(send(u32::MAX, next_window));
        assert_eq!(keys(&log), 2, "the overflow window and the new client");
        closing.extend(log.flush_at(later + Duration::from_secs(10)));
        assert_eq!(keys(&log), 1);
        let overflow: u64 = closing
            .iter()
            .filter(|line| line.client.is_none())
            .map(|line| line.count)
            .sum();
        assert_eq!(overflow, 2 * 5_000 - 1, "{closing:?}");
        let suppressed: u64 = closing.iter().map(|line| line.count).sum();
        assert_eq!(written + suppressed, events);
    }
}
