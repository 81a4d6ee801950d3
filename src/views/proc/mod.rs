//! Views of files under `proc/`.

pub mod uptime;

use crate::cgroup::CpuSet;
use crate::procfs::ProcRoot;

/// Number of CPUs online on the host, from `<proc>/../sys/devices/system/cpu/online` when the
/// procfs is the real one, else `None`.
pub fn online_cpus(proc: &ProcRoot) -> Option<usize> {
    let sys = proc.path().parent()?.join("sys/devices/system/cpu/online");
    let text = std::fs::read_to_string(sys).ok()?;
    CpuSet::parse(&text).map(|s| s.len()).filter(|&n| n > 0)
}
