//! CPU accounting: total, user and system time, per CPU where the kernel splits it.

use std::path::Path;

use super::{CgroupSet, parse};
use crate::cgroup::{CpuTimes, CpuUsage};
use crate::error::{Error, Result};

impl CgroupSet {
    /// CPU time used by the cgroup and its descendants: v1 `cpuacct.usage_all` (per CPU,
    /// user and system in ns), or on kernels without it `cpuacct.usage`, `cpuacct.stat`
    /// (USER_HZ ticks) and `cpuacct.usage_percpu`; v2 `cpu.stat` (microseconds, no per-CPU
    /// split).
    pub fn cpu_usage(&self) -> Result<Option<CpuUsage>> {
        let Some(dir) = &self.cpuacct else {
            return Ok(None);
        };
        let path = dir.path();
        if dir.v2 {
            let Some(text) = self.files.read(&path.join("cpu.stat"))? else {
                return Ok(None);
            };
            return Ok(Some(v2_usage(&text)));
        }
        // `cpuacct.usage_all` alone has everything, precisely (the per-CPU user/system split
        // in ns, which sums to `cpuacct.usage`): one read where the kernel has it.
        let all_path = path.join("cpuacct.usage_all");
        if let Some(text) = self.files.read(&all_path)? {
            let per_cpu =
                usage_all(&text).ok_or_else(|| Error::parse(&all_path, "per-CPU usage table"))?;
            let sum = |f: fn(&CpuTimes) -> u64| per_cpu.iter().map(f).fold(0, u64::saturating_add);
            let (user_ns, system_ns) = (sum(|t| t.user_ns), sum(|t| t.system_ns));
            return Ok(Some(CpuUsage {
                total_ns: user_ns.saturating_add(system_ns),
                user_ns,
                system_ns,
                per_cpu: Some(per_cpu),
            }));
        }
        let Some(total_ns) = self.cpu_usage_ns()? else {
            return Ok(None);
        };
        let ticks_ns = 1_000_000_000 / crate::procfs::clock_ticks_per_sec().max(1);
        let (user_ticks, system_ticks) = match self.files.read(&path.join("cpuacct.stat"))? {
            Some(text) => {
                let get = |k| {
                    parse::flat_keyed(&text)
                        .find(|(key, _)| *key == k)
                        .map(|(_, v)| v)
                };
                (get("user").unwrap_or(0), get("system").unwrap_or(0))
            }
            None => (0, 0),
        };
        let per_cpu = self.percpu_split(&path, user_ticks, system_ticks)?;
        Ok(Some(CpuUsage {
            total_ns,
            user_ns: user_ticks.saturating_mul(ticks_ns),
            system_ns: system_ticks.saturating_mul(ticks_ns),
            per_cpu,
        }))
    }

    /// `cpuacct.usage_percpu`, split into user and system by the ratio of the totals.
    fn percpu_split(&self, dir: &Path, user: u64, system: u64) -> Result<Option<Vec<CpuTimes>>> {
        let path = dir.join("cpuacct.usage_percpu");
        let Some(text) = self.files.read(&path)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for field in text.split_whitespace() {
            let ns: u64 = field
                .parse()
                .map_err(|_| Error::parse(&path, "per-CPU usage"))?;
            let user_ns = if user + system == 0 {
                ns
            } else {
                (ns as u128 * user as u128 / (user + system) as u128) as u64
            };
            out.push(CpuTimes {
                user_ns,
                system_ns: ns - user_ns,
            });
        }
        Ok(Some(out))
    }
}

/// v1 `cpuacct.usage_all`: a `cpu user system` header, then `N user_ns system_ns` lines;
/// indexed by CPU number (missing CPUs zero). `None` when a line does not parse.
pub fn usage_all(text: &str) -> Option<Vec<CpuTimes>> {
    let mut out: Vec<CpuTimes> = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace().map(str::parse::<u64>);
        let (cpu, user_ns, system_ns) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
        let cpu = usize::try_from(cpu).ok().filter(|&c| c < 1 << 16)?;
        if out.len() <= cpu {
            out.resize(cpu + 1, CpuTimes::default());
        }
        out[cpu] = CpuTimes { user_ns, system_ns };
    }
    Some(out)
}

/// v2 `cpu.stat`: `usage_usec`, `user_usec`, `system_usec`.
pub fn v2_usage(text: &str) -> CpuUsage {
    let mut usage = CpuUsage::default();
    for (key, usec) in parse::flat_keyed(text) {
        let ns = usec.saturating_mul(1000);
        match key {
            "usage_usec" => usage.total_ns = ns,
            "user_usec" => usage.user_ns = ns,
            "system_usec" => usage.system_ns = ns,
            _ => {}
        }
    }
    usage
}

impl CgroupSet {
    /// The cgroup's pressure-stall text for `kind` (`cpu.pressure`, ...), from its cgroup2
    /// directory; `None` on v1 placements and where the kernel has no PSI.
    pub fn pressure(&self, kind: crate::cgroup::PressureKind) -> Result<Option<String>> {
        let Some(dir) = self.cpuacct.as_ref().filter(|d| d.v2) else {
            return Ok(None);
        };
        self.files
            .read(&dir.path().join(format!("{}.pressure", kind.name())))
    }
}
