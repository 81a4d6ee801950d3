//! What the semantic cgroup API returns: plain values, the same on v1, v2 and hybrid hosts.
//! Views build on these and never on file names.

/// Memory statistics of a cgroup and its descendants, in bytes, named after cgroup v2's
/// `memory.stat` keys. On v1 they come from the hierarchical `total_*` keys of `memory.stat`
/// (`total_cache` → `file`, `total_rss` → `anon`, `total_rss_huge` → `anon_thp`,
/// `total_mapped_file` → `file_mapped`, ...). A key the host's kernel does not provide is 0
/// (v1 has no slab split: both slab fields are 0 there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// Anonymous memory (v1 `total_rss`).
    pub anon: u64,
    /// Page cache (v1 `total_cache`).
    pub file: u64,
    /// Shared memory and tmpfs (v1 `total_shmem`).
    pub shmem: u64,
    /// Page cache mapped into processes (v1 `total_mapped_file`).
    pub file_mapped: u64,
    /// Dirty page cache (v1 `total_dirty`).
    pub file_dirty: u64,
    /// Page cache under writeback (v1 `total_writeback`).
    pub file_writeback: u64,
    /// Anonymous transparent huge pages (v1 `total_rss_huge`).
    pub anon_thp: u64,
    /// LRU lists.
    pub active_anon: u64,
    /// LRU lists.
    pub inactive_anon: u64,
    /// LRU lists.
    pub active_file: u64,
    /// LRU lists.
    pub inactive_file: u64,
    /// Unevictable (mlocked, ramfs...) pages.
    pub unevictable: u64,
    /// Reclaimable slab (v2 only).
    pub slab_reclaimable: u64,
    /// Unreclaimable slab (v2 only).
    pub slab_unreclaimable: u64,
}

/// What a cgroup says about memory, in bytes: all `proc/meminfo` needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// The memory limit, the minimum up the tree; `None` for unlimited.
    pub limit: Option<u64>,
    /// Memory in use.
    pub usage: u64,
    /// `memory.stat`.
    pub stat: MemoryStat,
    /// The swap limit; `None` for unlimited (or not asked for).
    pub swap_limit: Option<u64>,
    /// Swap in use (0 when not asked for).
    pub swap_usage: u64,
}

/// CPU time of one CPU, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time in user mode.
    pub user_ns: u64,
    /// Time in kernel mode.
    pub system_ns: u64,
}

/// CPU time used by a cgroup and its descendants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// All CPU time (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`).
    pub total_ns: u64,
    /// User time (v1 `cpuacct.stat` `user`, in USER_HZ ticks there; v2 `user_usec`).
    pub user_ns: u64,
    /// System time (v1 `cpuacct.stat` `system`; v2 `system_usec`).
    pub system_ns: u64,
    /// Per host CPU, indexed by CPU number, where the accounting splits by CPU (v1
    /// `cpuacct.usage_all`, or `cpuacct.usage_percpu` with the user/system ratio of the
    /// totals); `None` on v2, which does not.
    pub per_cpu: Option<Vec<CpuTimes>>,
}

/// IO of a cgroup and its descendants on one block device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStat {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations completed.
    pub read_ios: u64,
    /// Write operations completed.
    pub write_ios: u64,
    /// Reads merged (v1 CFQ/BFQ `io_merged`; 0 where unknown).
    pub read_merged: u64,
    /// Writes merged (0 where unknown).
    pub write_merged: u64,
    /// Milliseconds spent reading (v1 CFQ/BFQ `io_service_time`; 0 where unknown).
    pub read_ms: u64,
    /// Milliseconds spent writing (0 where unknown).
    pub write_ms: u64,
    /// Discard operations (v2 `dios`; 0 where unknown).
    pub discard_ios: u64,
    /// Bytes discarded (v2 `dbytes`; 0 where unknown).
    pub discard_bytes: u64,
}

/// The resources of a pressure-stall file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PressureKind {
    /// `cpu.pressure`.
    Cpu,
    /// `memory.pressure`.
    Memory,
    /// `io.pressure`.
    Io,
}

impl PressureKind {
    /// The file's name under `/proc/pressure/`.
    pub fn name(self) -> &'static str {
        match self {
            PressureKind::Cpu => "cpu",
            PressureKind::Memory => "memory",
            PressureKind::Io => "io",
        }
    }
}
