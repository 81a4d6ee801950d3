//! Views of files under `proc/`.

pub mod uptime;

use std::path::Path;

use crate::cgroup::CpuSet;

/// The CPUs online on the host, from `<sys>/devices/system/cpu/online`; `None` when that
/// cannot be read or is empty.
pub fn online_cpus(sys: &Path) -> Option<CpuSet> {
    let text = std::fs::read_to_string(sys.join("devices/system/cpu/online")).ok()?;
    CpuSet::parse(&text).filter(|s| !s.is_empty())
}
