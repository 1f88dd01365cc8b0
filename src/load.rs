//! How busy the server is, for the work that should change with it.
//!
//! Writers gather frames for a few milliseconds before writing only while the server is
//! busy ([`crate::ws::writer`]): most of what a delivery costs is the kernel's work per
//! packet, so on a loaded server fewer, larger writes leave more CPU for everyone, and
//! on a quiet one a frame leaves at once instead of paying that wait in latency.
//!
//! "Busy" is the share of time tokio's worker threads spent running tasks rather than
//! parked, sampled every [`SAMPLE`]: the runtime's own measure of its load, which counts
//! exactly the work a gathered write saves and needs no platform-specific probe.

use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeMetrics};
use tokio::time::Instant;

/// How often the load is measured: short enough that a burst is seen within a few
/// deliveries' worth of time, long enough that one slow task does not flip it.
pub(crate) const SAMPLE: Duration = Duration::from_millis(50);

/// How many samples in a row below the quiet level make a busy server quiet again (one
/// second): longer than a gathering wait (`--coalesce-ms`, at most 100 ms), because
/// connections that gather flush together, in a burst every wait, and a sample between
/// two bursts sees almost nothing to do on a server that is busy all the same.
const QUIET_SAMPLES: u32 = 20;

/// Whether the server counts as busy now, as last measured.
#[derive(Debug)]
pub struct ServerLoad {
    busy: AtomicBool,
    /// Busy share (percent of the workers' time) from which the server counts as busy;
    /// 0: always busy, and nothing is measured.
    threshold_percent: u8,
}

impl ServerLoad {
    /// A load that turns busy at `threshold_percent` (at most 100) of the workers' time,
    /// and quiet again after a second below a third of that (see [`Load::next`]).
    pub fn new(threshold_percent: u8) -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicBool::new(threshold_percent == 0),
            threshold_percent: threshold_percent.min(100),
        })
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Measures the current runtime's load every [`SAMPLE`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        if self.threshold_percent == 0 {
            return;
        }
        let metrics = Handle::current().metrics();
        let mut ticks = tokio::time::interval(SAMPLE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (Instant::now(), total_busy(&metrics));
        let mut state = Load::Quiet;
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                _ = ticks.tick() => {}
            }
            let now = (Instant::now(), total_busy(&metrics));
            let share = busy_share(
                now.1.saturating_sub(last.1),
                now.0.duration_since(last.0),
                metrics.num_workers(),
            );
            state = state.next(share, self.threshold_percent);
            self.busy.store(state != Load::Quiet, Ordering::Relaxed);
            last = now;
        }
    }
}

/// The sampler's verdict, with what it needs to change its mind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    Quiet,
    /// Busy, and for how many samples in a row it has looked quiet.
    Busy {
        quiet_samples: u32,
    },
}

impl Load {
    /// The verdict after a sample with this busy `share`: busy from the threshold up
    /// at once (a burst is served with fewer packets from its start); once busy, quiet
    /// again only after [`QUIET_SAMPLES`] samples in a row below a third of it.
    ///
    /// A third, not the threshold: gathering lowers the very load it answers. At 1 000
    /// members × 50 msg/s it cut the CPU per delivery from 8.0 to 3.5 µs (to 44 %), so a
    /// server that turned busy at the threshold runs below half of it while it gathers;
    /// with "quiet below half", and with each sample judged alone, that server flipped
    /// between gathering and not, and paid the latency of gathering for half its saving.
    fn next(self, share: f64, threshold_percent: u8) -> Self {
        let threshold = f64::from(threshold_percent) / 100.0;
        match self {
            Self::Quiet if share >= threshold => Self::Busy { quiet_samples: 0 },
            Self::Quiet => Self::Quiet,
            Self::Busy { .. } if share >= threshold / 3.0 => Self::Busy { quiet_samples: 0 },
            Self::Busy { quiet_samples } if quiet_samples + 1 >= QUIET_SAMPLES => Self::Quiet,
            Self::Busy { quiet_samples } => Self::Busy {
                quiet_samples: quiet_samples + 1,
            },
        }
    }
}

fn total_busy(metrics: &RuntimeMetrics) -> Duration {
    (0..metrics.num_workers())
        .map(|worker| metrics.worker_total_busy_duration(worker))
        .sum()
}

/// The share of `workers` threads' time over `wall` that `busy` (their time spent
/// running tasks, summed) makes: 0.0 to 1.0.
fn busy_share(busy: Duration, wall: Duration, workers: usize) -> f64 {
    let available = wall.as_secs_f64() * workers.max(1) as f64;
    if available <= 0.0 {
        return 0.0;
    }
    (busy.as_secs_f64() / available).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_share_is_time_running_tasks_over_the_workers_time() {
        let ms = Duration::from_millis;
        assert_eq!(busy_share(ms(25), ms(50), 1), 0.5);
        assert_eq!(busy_share(ms(25), ms(50), 2), 0.25);
        assert_eq!(busy_share(ms(100), ms(50), 2), 1.0);
        assert_eq!(busy_share(ms(0), ms(50), 4), 0.0);
        assert_eq!(
            busy_share(ms(10), ms(0), 2),
            0.0,
            "no time passed: not busy"
        );
        assert_eq!(busy_share(ms(10), ms(20), 0), 0.5, "no workers read as one");
    }

    #[test]
    fn busy_starts_at_the_threshold_and_ends_after_a_second_below_a_third_of_it() {
        assert_eq!(Load::Quiet.next(0.29, 30), Load::Quiet);
        let busy = Load::Quiet.next(0.30, 30);
        assert_eq!(busy, Load::Busy { quiet_samples: 0 });
        assert_eq!(
            busy.next(0.13, 30),
            busy,
            "gathering brought the load down to 44 %: still busy"
        );

        let mut load = busy;
        for _ in 1..QUIET_SAMPLES {
            load = load.next(0.02, 30);
            assert_ne!(load, Load::Quiet, "a quiet sample between two bursts");
        }
        assert_eq!(
            load.next(0.10, 30),
            busy,
            "one sample at a third of the threshold: busy, and the count starts again"
        );
        for _ in 0..QUIET_SAMPLES {
            load = load.next(0.09, 30);
        }
        assert_eq!(load, Load::Quiet, "a second below a third of it");
    }

    #[test]
    fn a_threshold_of_zero_means_always_busy() {
        assert!(ServerLoad::new(0).is_busy());
        assert!(!ServerLoad::new(50).is_busy(), "not busy until measured");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_runtime_kept_running_reads_as_busy_and_an_idle_one_does_not() {
        let load = ServerLoad::new(50);
        let shutdown = Shutdown::new();
        let sampler = tokio::spawn(Arc::clone(&load).run(shutdown.clone()));

        // Idle: the only task sleeps between samples.
        let idle_until = Instant::now() + SAMPLE * 4;
        tokio::time::sleep_until(idle_until).await;
        assert!(!load.is_busy(), "a sleeping runtime is not busy");

        // Busy: a task on the worker (the test body itself runs outside the workers)
        // spins, yielding so the sampler still runs, until the sampler sees it; the
        // bound is generous so a slow machine cannot fail it.
        let spinner = tokio::spawn({
            let load = Arc::clone(&load);
            async move {
                let spin_until = Instant::now() + Duration::from_secs(10);
                while !load.is_busy() && Instant::now() < spin_until {
                    std::hint::black_box((0..10_000u64).sum::<u64>());
                    tokio::task::yield_now().await;
                }
            }
        });
        spinner.await.expect("the spinner ends");
        assert!(load.is_busy(), "a spinning runtime reads as busy");

        shutdown.trigger();
        sampler.await.expect("the sampler stops with the shutdown");
    }
}
