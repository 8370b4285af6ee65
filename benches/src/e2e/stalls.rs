//! The machine's own stalls: how often, and for how long, each CPU is taken from a thread that
//! does nothing but run (other processes, kernel threads, a hypervisor's steal). A user-space
//! datapath thread waits such a gap out with every frame that arrives meanwhile; the kernel
//! bridge forwards inside the sender's system call and does not. Measured once per RFC 2544
//! run, before any switch is up, so the latency tables can be read against it.

use super::blast::monotonic_ns;
use super::{Error, Result};
use std::time::Duration;

/// A gap at least this long is a stall.
pub const STALL_NS: u64 = 1_000_000;

/// What one CPU's spinning thread saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuStalls {
    /// The CPU's number.
    pub cpu: usize,
    /// Gaps of [`STALL_NS`] or more.
    pub count: u32,
    /// Their sum, in milliseconds.
    pub total_ms: f64,
    /// The longest, in milliseconds.
    pub longest_ms: f64,
    /// How long the thread spun, in seconds.
    pub spun_s: f64,
}

impl CpuStalls {
    /// Counts the gap between two readings of the clock, `gap_ns` apart, if it is a stall.
    pub fn record(&mut self, gap_ns: u64) {
        if gap_ns < STALL_NS {
            return;
        }
        let ms = gap_ns as f64 / 1e6;
        self.count += 1;
        self.total_ms += ms;
        self.longest_ms = self.longest_ms.max(ms);
    }

    /// The share of the time spun that the CPU was away in stalls, in percent.
    pub fn percent(&self) -> f64 {
        if self.spun_s > 0.0 {
            self.total_ms / (self.spun_s * 10.0)
        } else {
            0.0
        }
    }
}

/// One thread pinned to each CPU, all at once, each reading `CLOCK_MONOTONIC` in a loop for
/// `duration` and counting the gaps between readings of [`STALL_NS`] or more.
pub fn measure(duration: Duration) -> Result<Vec<CpuStalls>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spin_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            std::thread::Builder::new()
                .name(format!("stalls-cpu{cpu}"))
                .spawn(move || spin_on(cpu, spin_ns))
                .map_err(|e| Error::Unexpected(format!("spawning a thread for CPU {cpu}: {e}")))
        })
        .collect::<Result<_>>()?;
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| Error::Unexpected("a stall probe thread panicked".into()))?
        })
        .collect()
}

fn spin_on(cpu: usize, spin_ns: u64) -> Result<CpuStalls> {
    // SAFETY: cpu_set_t is a plain bit mask for which all-zero is the empty set; CPU_SET and
    // sched_setaffinity(2) on this thread (pid 0) only read and write the set we own.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if pinned != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Unexpected(format!(
            "pinning a thread to CPU {cpu}: {e}"
        )));
    }
    let mut seen = CpuStalls {
        cpu,
        ..CpuStalls::default()
    };
    let start = monotonic_ns();
    let end = start.saturating_add(spin_ns);
    let mut last = start;
    while last < end {
        let now = monotonic_ns();
        seen.record(now.saturating_sub(last));
        last = now;
    }
    seen.spun_s = last.saturating_sub(start) as f64 / 1e9;
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gaps_of_a_millisecond_or_more_are_stalls() {
        let mut s = CpuStalls {
            spun_s: 2.0,
            ..CpuStalls::default()
        };
        for gap in [50, 999_999, 1_000_000, 8_500_000, 2_500_000] {
            s.record(gap);
        }
        assert_eq!(s.count, 3);
        assert!((s.total_ms - 12.0).abs() < 1e-9, "{}", s.total_ms);
        assert!((s.longest_ms - 8.5).abs() < 1e-9);
        // 12 ms of 2 s.
        assert!((s.percent() - 0.6).abs() < 1e-9, "{}", s.percent());
    }

    #[test]
    fn every_cpu_is_probed_for_the_time_asked() {
        let all = measure(Duration::from_millis(20)).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            all.iter().map(|s| s.cpu).collect::<Vec<_>>(),
            (0..cpus).collect::<Vec<_>>()
        );
        for s in &all {
            assert!(s.spun_s >= 0.02, "{s:?}");
            assert!(s.total_ms <= s.spun_s * 1e3, "{s:?}");
        }
    }
}
