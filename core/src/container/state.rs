//! What a container keeps for its views between reads: the baselines its counters are
//! scaled from (`proc/stat`, `vmstat`, `interrupts`, `softirqs`; the views' `counters`
//! compute them) and the CPU lines `proc/stat` last showed, which it keeps monotonic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One file's counters at a container's first read of it, and the share to scale them by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaled {
    /// The container's age over the host's uptime at that read, in `[0, 1]`.
    pub(crate) share: f64,
    /// The host's nonzero values then, by name (a counter that was 0 is left out).
    pub(crate) first: HashMap<Box<str>, u64>,
}

/// A container's baselines, one per file, made at its first read of the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baselines {
    /// `proc/stat`'s.
    pub stat: Option<Scaled>,
    /// `proc/vmstat`'s.
    pub vmstat: Option<Scaled>,
    /// `proc/interrupts`'.
    pub interrupts: Option<Scaled>,
    /// `proc/softirqs`'.
    pub softirqs: Option<Scaled>,
}

/// One `cpu` line, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuLine {
    /// Time in user mode.
    pub user: u64,
    /// Niced user time.
    pub nice: u64,
    /// Time in kernel mode.
    pub system: u64,
    /// Idle time.
    pub idle: u64,
    /// Waiting for IO.
    pub iowait: u64,
    /// Serving interrupts.
    pub irq: u64,
    /// Serving softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
    /// Running guests.
    pub guest: u64,
    /// Running niced guests.
    pub guest_nice: u64,
}
