//! CPU accounting: total, user and system time, per CPU where the kernel splits it.

use std::path::Path;

use super::{CgroupSet, parse};
use crate::cgroup::{CpuTimes, CpuUsage};
use crate::error::{Error, Result};

impl CgroupSet {
    /// CPU time used by the cgroup and its descendants.
    ///
    /// v1: the precise totals are `cpuacct.usage_percpu` (ns per CPU, summing to
    /// `cpuacct.usage`); the user/system split comes from `cpuacct.usage_all` per CPU, or
    /// from `cpuacct.stat`. That split is tick-sampled on current kernels and its sum lags the
    /// precise total by a few percent, so it only apportions the total, never replaces it (a
    /// total taken from it would disagree with `proc/uptime`, which uses `cpuacct.usage`).
    /// v2: `cpu.stat` (microseconds, no per-CPU split).
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
        let percpu_path = path.join("cpuacct.usage_percpu");
        let Some(percpu) = self.files.read(&percpu_path)? else {
            return self.v1_totals_only(&path);
        };
        let totals =
            parse_percpu(&percpu).ok_or_else(|| Error::parse(&percpu_path, "per-CPU usage"))?;
        let all_path = path.join("cpuacct.usage_all");
        let split: Vec<CpuTimes> = match self.files.read(&all_path)? {
            Some(text) => {
                usage_all(&text).ok_or_else(|| Error::parse(&all_path, "per-CPU usage table"))?
            }
            None => {
                let (user, system) = self.v1_stat_ticks(&path)?;
                vec![
                    CpuTimes {
                        user_ns: user,
                        system_ns: system
                    };
                    totals.len()
                ]
            }
        };
        let per_cpu: Vec<CpuTimes> = totals
            .iter()
            .enumerate()
            .map(|(cpu, &total)| apportion(total, split.get(cpu).copied().unwrap_or_default()))
            .collect();
        let sum = |f: fn(&CpuTimes) -> u64| per_cpu.iter().map(f).fold(0, u64::saturating_add);
        let (user_ns, system_ns) = (sum(|t| t.user_ns), sum(|t| t.system_ns));
        Ok(Some(CpuUsage {
            total_ns: user_ns.saturating_add(system_ns),
            user_ns,
            system_ns,
            per_cpu: Some(per_cpu),
        }))
    }

    /// Kernels without per-CPU files: `cpuacct.usage`, split by `cpuacct.stat`.
    fn v1_totals_only(&self, path: &Path) -> Result<Option<CpuUsage>> {
        let Some(total_ns) = self.cpu_usage_ns()? else {
            return Ok(None);
        };
        let (user, system) = self.v1_stat_ticks(path)?;
        let t = apportion(
            total_ns,
            CpuTimes {
                user_ns: user,
                system_ns: system,
            },
        );
        Ok(Some(CpuUsage {
            total_ns,
            user_ns: t.user_ns,
            system_ns: t.system_ns,
            per_cpu: None,
        }))
    }

    /// `cpuacct.stat` user and system ticks (0, 0 without the file).
    fn v1_stat_ticks(&self, path: &Path) -> Result<(u64, u64)> {
        Ok(match self.files.read(&path.join("cpuacct.stat"))? {
            Some(text) => {
                let get = |k| {
                    parse::flat_keyed(&text)
                        .find(|(key, _)| *key == k)
                        .map(|(_, v)| v)
                };
                (get("user").unwrap_or(0), get("system").unwrap_or(0))
            }
            None => (0, 0),
        })
    }
}

/// `total` split into user and system in the ratio of `ratio` (all user without one).
fn apportion(total: u64, ratio: CpuTimes) -> CpuTimes {
    let sum = ratio.user_ns.saturating_add(ratio.system_ns);
    let user_ns = if sum == 0 {
        total
    } else {
        (u128::from(total) * u128::from(ratio.user_ns) / u128::from(sum)) as u64
    };
    CpuTimes {
        user_ns,
        system_ns: total - user_ns,
    }
}

/// `cpuacct.usage_percpu`: ns per CPU, space-separated.
fn parse_percpu(text: &str) -> Option<Vec<u64>> {
    text.split_whitespace().map(|f| f.parse().ok()).collect()
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
        let Some(path) = self.pressure_file(kind) else {
            return Ok(None);
        };
        self.files.read(&path)
    }

    /// The cgroup's pressure file for `kind` in its cgroup2 directory (where triggers are
    /// made); `None` on v1 placements.
    pub fn pressure_file(&self, kind: crate::cgroup::PressureKind) -> Option<std::path::PathBuf> {
        let dir = self.cpuacct.as_ref().filter(|d| d.v2)?;
        Some(dir.path().join(format!("{}.pressure", kind.name())))
    }
}
