//! Views of files under `proc/`.

pub mod counters;
pub mod cpuinfo;
pub mod disks;
pub mod meminfo;
pub mod resources;
pub mod stat;
pub mod uptime;
pub mod vmstat;

use std::path::Path;

use crate::cgroup::CpuSet;

/// The CPUs online on the host, from `<sys>/devices/system/cpu/online`; `None` when that
/// cannot be read or is empty.
pub fn online_cpus(sys: &Path) -> Option<CpuSet> {
    let text = std::fs::read_to_string(sys.join("devices/system/cpu/online")).ok()?;
    CpuSet::parse(&text).filter(|s| !s.is_empty())
}

/// The host's meminfo value of `key`, in bytes (0 when the line is missing).
pub fn host_meminfo_bytes(env: &crate::views::Env, key: &str) -> crate::error::Result<u64> {
    let text = env.host("meminfo")?;
    let kb = text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        (k == key).then(|| rest.split_whitespace().next()?.parse::<u64>().ok())?
    });
    Ok(kb.unwrap_or(0).saturating_mul(1024))
}
