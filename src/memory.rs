//! The peak memory of a computation, for benchmarks and progress lines.
//!
//! GPU backends report their allocator's pool ([`Device::memory_pool_usage`]); burn's CPU
//! backend (`flex`) reports nothing, and there the process's peak resident set size (Linux's
//! `VmHWM` in `/proc/self/status`) is the figure that says whether a run fits in RAM.
//! [`PeakMemory`] takes the first where the device has it, the second otherwise, and says
//! which one it is:
//!
//! ```
//! use burn::prelude::*;
//! use flow_rl::memory::{MemoryPeak, PeakMemory};
//!
//! let device = Device::default();
//! let mut peak = PeakMemory::new(&device);
//! let x = Tensor::<2>::ones([256, 256], &device);
//! let _ = x.clone().matmul(x).sum().into_scalar::<f32>();
//! peak.sample(); // after each step: a pool's figures go down again when tensors are freed
//! match peak.peak() {
//!     Some(MemoryPeak::DevicePool { reserved, .. }) => assert!(reserved > 0),
//!     Some(MemoryPeak::ProcessRss(bytes)) => assert!(bytes > 0), // flex, on Linux
//!     None => {}                                                 // flex elsewhere
//! }
//! println!("peak memory: {}", peak.report()); // e.g. "0.05 GiB peak process RSS"
//! ```

use std::fmt;

use burn::prelude::*;

/// A peak memory figure and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryPeak {
    /// The device's memory pool: the largest `bytes_reserved` (the pages it holds, at least
    /// the bytes in use since it last grew) and the largest `bytes_in_use` (live tensors,
    /// padding excluded) seen by [`PeakMemory::sample`], in bytes.
    DevicePool {
        /// Peak bytes reserved by the pool: what the device had to give the process.
        reserved: u64,
        /// Peak bytes of live allocations.
        in_use: u64,
    },
    /// The process's peak resident set since it started (Linux `VmHWM`), in bytes: the
    /// figure on backends without a pool report, such as `flex`. It includes everything the
    /// process ever held at once, not only tensors.
    ProcessRss(u64),
}

impl MemoryPeak {
    /// The headline figure in bytes: the pool's reserved bytes, or the peak resident set.
    pub fn bytes(&self) -> u64 {
        match *self {
            MemoryPeak::DevicePool { reserved, .. } => reserved,
            MemoryPeak::ProcessRss(bytes) => bytes,
        }
    }
}

impl fmt::Display for MemoryPeak {
    /// `"1.23 GiB reserved by the device pool (0.98 GiB in use)"` or
    /// `"1.23 GiB peak process RSS"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryPeak::DevicePool { reserved, in_use } => write!(
                f,
                "{} reserved by the device pool ({} in use)",
                gib(reserved),
                gib(in_use)
            ),
            MemoryPeak::ProcessRss(bytes) => write!(f, "{} peak process RSS", gib(bytes)),
        }
    }
}

/// Samples a device's memory pool and keeps the peak; falls back to the process's peak
/// resident set where the device reports no pool.
///
/// A pool's usage falls again when tensors are freed, so call [`PeakMemory::sample`] where
/// the most is alive (after a forward pass, before its outputs are dropped). The resident-set
/// fallback is kept by the kernel and needs no sampling.
#[derive(Debug, Clone)]
pub struct PeakMemory {
    device: Device,
    pool: Option<(u64, u64)>,
}

impl PeakMemory {
    /// A sampler for `device` that has seen nothing yet.
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            pool: None,
        }
    }

    /// Reads the device's pool now and keeps the larger of each figure; does nothing on a
    /// backend without a pool report.
    pub fn sample(&mut self) {
        if let Some(usage) = self.device.memory_pool_usage() {
            let (reserved, in_use) = self.pool.unwrap_or((0, 0));
            self.pool = Some((
                reserved.max(usage.bytes_reserved),
                in_use.max(usage.bytes_in_use),
            ));
        }
    }

    /// The pool's peaks if a sample saw a pool, else the process's peak resident set, else
    /// `None` (no pool and not Linux).
    pub fn peak(&self) -> Option<MemoryPeak> {
        match self.pool {
            Some((reserved, in_use)) => Some(MemoryPeak::DevicePool { reserved, in_use }),
            None => process_peak_rss().map(MemoryPeak::ProcessRss),
        }
    }

    /// [`PeakMemory::peak`] as text, `"not reported"` when there is none.
    pub fn report(&self) -> String {
        self.peak()
            .map_or_else(|| "not reported".to_owned(), |peak| peak.to_string())
    }
}

/// The process's peak resident set size in bytes (`VmHWM` in `/proc/self/status`), `None`
/// where that file does not exist (not Linux) or has no such line.
pub fn process_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmHWM:").map(|kib| kib * 1024)
}

/// The process's resident set at one moment, split as Linux counts it, in bytes.
///
/// The peak resident set ([`process_peak_rss`]) counts file-backed pages too: the pages of a
/// memory-mapped safetensors file that a load has read stay resident while the map lives,
/// though the kernel may drop them under memory pressure and read them again. `anonymous`
/// is the memory the process itself holds (tensors, buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentSet {
    /// Anonymous pages (`RssAnon`): heap, tensors.
    pub anonymous: u64,
    /// File-backed pages (`RssFile`): mapped files, including weights read through a map.
    pub file_backed: u64,
    /// Shared memory (`RssShmem`).
    pub shared: u64,
}

impl fmt::Display for ResidentSet {
    /// `"2.61 GiB anonymous, 1.02 GiB file-backed"` (shared memory only where there is some).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} anonymous, {} file-backed",
            gib(self.anonymous),
            gib(self.file_backed)
        )?;
        if self.shared > 0 {
            write!(f, ", {} shared", gib(self.shared))?;
        }
        Ok(())
    }
}

/// The process's resident set now (`RssAnon`, `RssFile`, `RssShmem` in `/proc/self/status`),
/// `None` where that file does not exist (not Linux) or lacks one of the lines.
pub fn process_resident_set() -> Option<ResidentSet> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let bytes = |field: &str| status_kib(&status, field).map(|kib| kib * 1024);
    Some(ResidentSet {
        anonymous: bytes("RssAnon:")?,
        file_backed: bytes("RssFile:")?,
        shared: bytes("RssShmem:")?,
    })
}

/// The value of a `/proc/<pid>/status` line such as `VmHWM:   123456 kB`, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tbench\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(123456));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1000));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmHWM:\t12 MB\n", "VmHWM:"), None);
        assert_eq!(status_kib("VmHWM:\tlots kB\n", "VmHWM:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_peak_resident_set_counts_touched_memory_in_bytes() {
        const SIZE: usize = 64 << 20;
        // Written, so every page is resident (an untouched allocation would not count).
        let buffer = vec![1u8; SIZE];
        // The resident set first, then the peak: other tests' threads allocate meanwhile, and
        // only a peak read later is bound to cover the resident set read before it.
        let now = process_resident_set().expect("Linux has RssAnon, RssFile and RssShmem");
        let peak = process_peak_rss().expect("Linux has VmHWM");
        assert!(peak >= SIZE as u64, "peak {peak} B below the {SIZE} B held");
        assert!(
            now.anonymous >= SIZE as u64,
            "{now:?} below the {SIZE} B held"
        );
        assert!(
            peak >= now.anonymous + now.file_backed,
            "{peak} B, now {now:?}"
        );
        assert!(std::hint::black_box(&buffer).iter().all(|&byte| byte == 1));
    }

    #[test]
    fn peaks_print_their_source() {
        let pool = MemoryPeak::DevicePool {
            reserved: 3 << 29,
            in_use: 1 << 30,
        };
        assert_eq!(pool.bytes(), 3 << 29);
        assert_eq!(
            pool.to_string(),
            "1.50 GiB reserved by the device pool (1.00 GiB in use)"
        );
        let resident = ResidentSet {
            anonymous: 1 << 30,
            file_backed: 1 << 29,
            shared: 0,
        };
        assert_eq!(
            resident.to_string(),
            "1.00 GiB anonymous, 0.50 GiB file-backed"
        );
        let rss = MemoryPeak::ProcessRss(1 << 29);
        assert_eq!(rss.bytes(), 1 << 29);
        assert_eq!(rss.to_string(), "0.50 GiB peak process RSS");
    }

    #[cfg(all(feature = "flex", target_os = "linux"))]
    #[test]
    fn flex_reports_the_process_peak() {
        let mut peak = PeakMemory::new(&Device::flex());
        peak.sample();
        assert!(matches!(peak.peak(), Some(MemoryPeak::ProcessRss(bytes)) if bytes > 0));
        assert!(
            peak.report().ends_with("peak process RSS"),
            "{}",
            peak.report()
        );
    }
}
