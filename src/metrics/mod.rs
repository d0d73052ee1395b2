//! Measurements the pipeline takes of itself: latency histograms, peak memory, heap allocations.
//!
//! Why here and fixed-size: `lookout bench` reports per-stage and end-to-end percentiles and the
//! allocations per frame of the real pipeline, and a measurement that allocated per frame would be the
//! allocation it reports. A [`Histogram`] is a fixed array of 10 µs buckets allocated once.

pub mod alloc;
pub mod runplan;

use std::time::Duration;

/// Bucket width of a [`Histogram`].
const BUCKET_US: u64 = 10;
/// Buckets: 0..100 ms in 10 µs steps; longer samples land in the last.
const BUCKETS: usize = 10_000;

/// Durations in 10 µs buckets up to 100 ms (the last bucket holds everything longer).
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32]>,
    n: u64,
    sum_us: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={}, p50={:?}, p99={:?})", self.n, self.percentile(0.5), self.percentile(0.99))
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), n: 0, sum_us: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let b = usize::try_from(us / BUCKET_US).unwrap_or(usize::MAX).min(BUCKETS - 1);
        if let Some(c) = self.counts.get_mut(b) {
            *c = c.saturating_add(1);
        }
        self.n = self.n.saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.sum_us.checked_div(self.n).unwrap_or(0))
    }

    /// The `p` quantile (0..=1) as the middle of its bucket; zero with no samples.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.n == 0 {
            return Duration::ZERO;
        }
        let rank = ((self.n as f64 * p.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(u64::from(c));
            if seen >= rank {
                return Duration::from_micros(i as u64 * BUCKET_US + BUCKET_US / 2);
            }
        }
        Duration::from_micros(BUCKETS as u64 * BUCKET_US)
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.n = self.n.saturating_add(other.n);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// Per-stage latencies of a run: what `lookout bench` reports.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Motion gate check.
    pub gate: Histogram,
    /// Preprocess (convert, resize, normalize into an engine input).
    pub preprocess: Histogram,
    /// tract's run.
    pub inference: Histogram,
    /// Decode + NMS.
    pub decode: Histogram,
    /// Track + rules + handing alerts to the output stage.
    pub decide: Histogram,
    /// Frame captured (the capture side began reading it) to its decision made.
    pub end_to_end: Histogram,
}

/// This process's peak resident memory (VmHWM), in KiB; 0 where /proc cannot tell.
pub fn peak_rss_kb() -> u64 {
    status_kb("VmHWM:")
}

/// Gives memory freed at start-up (the ONNX graph, tract's optimization passes) back to the system, and
/// the code pages start-up touched ([`release_code_pages`]).
///
/// The C heap is otherwise left as glibc sets it up: each thread that allocates gets an arena of its own,
/// so each engine's tract run (about 770 allocations, the same sizes in the same order every frame) lays
/// its small blocks out the same way every frame (its large ones are planned: [`runplan`]), and the
/// resident size is fixed from the first frames on. One arena for all threads (`M_ARENA_MAX` 1, what this
/// did before) interleaves two engines' runs
/// in one heap in an order that depends on timing; under load the heap then grew by a tensor's size
/// (2.9 MB, MaxPool's input) now and then, long after warm-up: a 12000-frame soak with two busy loops
/// beside it grew 2420 KiB with one arena and 0 with one per thread (peak RSS alike: 62576-65052 KiB).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    release_code_pages();
}

/// Takes this binary's code and constants out of the process's resident set; returns how many KiB the
/// resident set shrank by. They stay in the page cache, and a page used again comes back on its first
/// touch (a minor fault, no disk read).
///
/// Why: about 14 MB of the binary's 22 MB of code is resident once a model is loaded (`smaps`), most of
/// it tract's ONNX reader, type inference and optimizer, which never run again (the kernel maps code in
/// 64 KiB runs around each page touched), and 4 MB of constants (the built-in models' bytes among
/// them, copied into tract's tensors by then). Dropped after loading (16.5 MB at once), the steady state
/// brings back only what a frame runs (7.6 MB of code): `lookout bench` peak RSS on the shipped clip
/// 43.3-43.9 MB against 54.0-54.5 without, the same frames a second (two runs each, idle machine).
///
/// Which pages: the mapping of this executable that holds this function's code, and the read-only ones
/// before it in the file (the ELF headers, `.rodata`, `.eh_frame`). Neither is ever written: a Rust PIE
/// has no text relocations, and every relocated constant is in `.data.rel.ro`, which the linker places
/// after the code (written by the loader, then made read-only): that one and the writable data are kept,
/// as dropping them would give back the file's bytes without their relocations. (`Private_Dirty` cannot
/// tell them apart: the kernel this was written on, 6.18 in a Firecracker VM, reports every resident page
/// of the code mapping private and dirty.)
pub fn release_code_pages() -> u64 {
    let here = release_code_pages as *const () as usize;
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else { return 0 };
    // (start, end, writable, offset, path)
    let maps: Vec<(usize, usize, bool, u64, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (a, b) = f.next()?.split_once('-')?;
            let writable = f.next()?.contains('w');
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let path = f.nth(2).unwrap_or("");
            Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?, writable, offset, path))
        })
        .collect();
    let Some(&(_, _, false, code_offset, exe)) = maps.iter().find(|m| (m.0..m.1).contains(&here)) else {
        return 0;
    };
    if exe.is_empty() {
        return 0;
    }
    let before = rss_kb();
    for &(a, b, writable, offset, path) in &maps {
        if path != exe || writable || offset > code_offset {
            continue;
        }
        // SAFETY: a private mapping of this executable that is never written (see above): dropping its
        // pages only makes the next use read them again from the file.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
    }
    before.saturating_sub(rss_kb())
}

/// Logs (at debug level) the resident memory now and at its peak, after `stage`.
pub fn log_memory(stage: &str) {
    // Reads /proc: only when the line is wanted.
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    log::debug!(
        "after {stage}: {:.0} ms since the process started, {} KiB resident, {} KiB at the peak",
        ms_since_process_start().unwrap_or(0.0),
        rss_kb(),
        peak_rss_kb()
    );
}

/// This process's resident memory now (VmRSS), in KiB.
pub fn rss_kb() -> u64 {
    status_kb("VmRSS:")
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Milliseconds from this process's start (the kernel's start time, 10 ms steps) to now.
pub fn ms_since_process_start() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime, clock ticks after boot), counted after the command name's closing parenthesis.
    let start_ticks: f64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf and clock_gettime only read; the timespec is ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 || hz <= 0.0 {
        return None;
    }
    let now = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    Some((now - start_ticks / hz) * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        h.record(Duration::from_secs(5));
        assert_eq!(h.count(), 101);
        assert_eq!(h.percentile(0.5), Duration::from_micros(51_005));
        assert_eq!(h.percentile(0.99), Duration::from_micros(100_000 - 5));
        let mut g = Histogram::default();
        g.merge(&h);
        assert_eq!(g.percentile(0.005), Duration::from_micros(1_005));
        assert!(ms_since_process_start().is_some_and(|ms| ms > 0.0));
        // The resident size first: other tests' threads may grow it between two reads.
        let rss = rss_kb();
        assert!(peak_rss_kb() >= rss && rss > 0);
    }
}
