//! Memory: limits (the minimum up the tree), usage, `memory.stat`, swap.

use super::{CgroupDir, CgroupSet, OpenFiles, parse};
use crate::cgroup::{Memory, MemoryStat};
use crate::error::{Error, Result};

impl CgroupSet {
    /// Everything `proc/meminfo` needs, with as few reads as the version allows: on v1 the
    /// hierarchical limits come from `memory.stat` itself (`hierarchical_memory_limit`,
    /// `hierarchical_memsw_limit`: the kernel's minimum up the tree), so one read of it, one
    /// of the usage and, with `want_swap`, one of the memsw usage. Without `want_swap` (the
    /// host has no swap) the swap fields are left 0 / `None`.
    pub fn memory(&self, want_swap: bool) -> Result<Option<Memory>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        if dir.v2 {
            let (Some(stat), Some(usage)) = (self.memory_stat()?, self.memory_usage()?) else {
                return Ok(None);
            };
            let (swap_limit, swap_usage) = if want_swap {
                (self.swap_limit()?, self.swap_usage()?.unwrap_or(0))
            } else {
                (None, 0)
            };
            let limit = self.memory_limit()?;
            return Ok(Some(Memory {
                limit,
                usage,
                stat,
                swap_limit,
                swap_usage,
            }));
        }
        let stat_path = dir.path().join("memory.stat");
        let Some(text) = self.files.read(&stat_path)? else {
            return Ok(None);
        };
        let Some(usage) = self.memory_usage()? else {
            return Ok(None);
        };
        let hierarchical = |key: &str| {
            parse::flat_keyed(&text)
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| parse::limit_value(v))
        };
        let limit = hierarchical("hierarchical_memory_limit");
        let (swap_limit, swap_usage) = if want_swap {
            let memsw = hierarchical("hierarchical_memsw_limit");
            let swap_limit = memsw.map(|sw| sw.saturating_sub(limit.unwrap_or(0)));
            (swap_limit, self.swap_usage()?.unwrap_or(0))
        } else {
            (None, 0)
        };
        Ok(Some(Memory {
            limit,
            usage,
            stat: memory_stat(&text, false),
            swap_limit,
            swap_usage,
        }))
    }

    /// The memory limit in bytes, the minimum over the cgroup and its ancestors; `None` when
    /// no level sets one (v2 `max`, v1's sentinel) or no memory controller serves the cgroup.
    pub fn memory_limit(&self) -> Result<Option<u64>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        let file = if dir.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        min_up_the_tree(dir, |cg| read_limit(&self.files, &cg.join(file)))
    }

    /// Memory in use by the cgroup and its descendants, in bytes (v1 `memory.usage_in_bytes`,
    /// v2 `memory.current`).
    pub fn memory_usage(&self) -> Result<Option<u64>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        let file = if dir.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        read_number(&self.files, &dir.path().join(file))
    }

    /// `memory.stat` of the cgroup and its descendants, named as v2 names them (v1's
    /// hierarchical `total_*` keys).
    pub fn memory_stat(&self) -> Result<Option<MemoryStat>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        let Some(text) = self.files.read(&dir.path().join("memory.stat"))? else {
            return Ok(None);
        };
        Ok(Some(memory_stat(&text, dir.v2)))
    }

    /// The event counters of `memory.stat` for the cgroup and its descendants (page faults,
    /// reclaim, swap and working-set events), named as `/proc/vmstat` names them; `None`
    /// without a memory controller. See [`memory_events`].
    pub fn memory_events(&self) -> Result<Option<Vec<(String, u64)>>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        let Some(text) = self.files.read(&dir.path().join("memory.stat"))? else {
            return Ok(None);
        };
        Ok(Some(memory_events(&text, dir.v2)))
    }

    /// The swap limit in bytes, the minimum over the cgroup and its ancestors: v2
    /// `memory.swap.max`; v1 `memory.memsw.limit_in_bytes` − `memory.limit_in_bytes` (memsw
    /// counts memory plus swap). `None` when unlimited or when swap is not accounted.
    pub fn swap_limit(&self) -> Result<Option<u64>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        if dir.v2 {
            return min_up_the_tree(dir, |cg| {
                read_limit(&self.files, &cg.join("memory.swap.max"))
            });
        }
        min_up_the_tree(dir, |cg| {
            let memsw = read_limit(&self.files, &cg.join("memory.memsw.limit_in_bytes"))?;
            let mem = read_limit(&self.files, &cg.join("memory.limit_in_bytes"))?;
            Ok(match (memsw, mem) {
                (Some(memsw), Some(mem)) => Some(memsw.saturating_sub(mem)),
                // memsw limited, memory not: memory alone can use the whole memsw budget.
                (Some(memsw), None) => Some(memsw),
                (None, _) => None,
            })
        })
    }

    /// Swap in use by the cgroup, in bytes: v2 `memory.swap.current`, v1 memsw usage −
    /// memory usage.
    pub fn swap_usage(&self) -> Result<Option<u64>> {
        let Some(dir) = &self.memory else {
            return Ok(None);
        };
        if dir.v2 {
            return read_number(&self.files, &dir.path().join("memory.swap.current"));
        }
        let memsw = read_number(&self.files, &dir.path().join("memory.memsw.usage_in_bytes"))?;
        let mem = read_number(&self.files, &dir.path().join("memory.usage_in_bytes"))?;
        Ok(memsw.map(|sw| sw.saturating_sub(mem.unwrap_or(0))))
    }

    /// v1 `memory.kmem.slabinfo` of the cgroup where the kernel provides it (and it reads).
    pub fn kmem_slabinfo(&self) -> Result<Option<String>> {
        let Some(dir) = self.memory.as_ref().filter(|d| !d.v2) else {
            return Ok(None);
        };
        // Some kernels keep the file but fail reads of it (EIO, ENOTSUPP), and 6.x kernels
        // (no per-cgroup slab caches any more) return it empty: no slabinfo then.
        let text = self.files.read(&dir.path().join("memory.kmem.slabinfo"));
        Ok(text.ok().flatten().filter(|t| !t.trim().is_empty()))
    }
}

/// The minimum of `level` over `dir` and its ancestors, ignoring levels without a value.
pub(super) fn min_up_the_tree(
    dir: &CgroupDir,
    mut level: impl FnMut(&std::path::Path) -> Result<Option<u64>>,
) -> Result<Option<u64>> {
    let mut min: Option<u64> = None;
    for cg in dir.lineage() {
        if let Some(value) = level(&cg)? {
            min = Some(min.map_or(value, |m| m.min(value)));
        }
    }
    Ok(min)
}

fn read_limit(files: &OpenFiles, path: &std::path::Path) -> Result<Option<u64>> {
    match files.read(path)? {
        Some(text) => parse::limit(&text).map_err(|()| Error::parse(path, "limit")),
        None => Ok(None),
    }
}

fn read_number(files: &OpenFiles, path: &std::path::Path) -> Result<Option<u64>> {
    match files.read(path)? {
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::parse(path, "unsigned integer")),
        None => Ok(None),
    }
}

/// The `memory.stat` keys that count events under the same name as `/proc/vmstat`: v2's
/// keys that begin so, v1's hierarchical `total_` ones. `pgpgin`/`pgpgout` are left out: v1's
/// count pages charged to the cgroup, where `/proc/vmstat`'s count kilobytes of block IO.
pub fn memory_events(text: &str, v2: bool) -> Vec<(String, u64)> {
    const EVENTS: [&str; 5] = ["pg", "workingset_", "thp_", "zswp", "pswp"];
    parse::flat_keyed(text)
        .filter_map(|(key, value)| {
            let key = if v2 { key } else { key.strip_prefix("total_")? };
            let counted =
                EVENTS.iter().any(|p| key.starts_with(p)) && !matches!(key, "pgpgin" | "pgpgout");
            counted.then(|| (key.to_string(), value))
        })
        .collect()
}

/// Maps `memory.stat` text onto [`MemoryStat`]: v2 keys as they are, v1's hierarchical
/// `total_*` keys onto their v2 names.
pub fn memory_stat(text: &str, v2: bool) -> MemoryStat {
    let mut stat = MemoryStat::default();
    for (key, value) in parse::flat_keyed(text) {
        let key = if v2 {
            key
        } else {
            match key.strip_prefix("total_") {
                Some("cache") => "file",
                Some("rss") => "anon",
                Some("rss_huge") => "anon_thp",
                Some("mapped_file") => "file_mapped",
                Some("dirty") => "file_dirty",
                Some("writeback") => "file_writeback",
                Some(other) => other,
                None => continue,
            }
        };
        let field = match key {
            "anon" => &mut stat.anon,
            "file" => &mut stat.file,
            "shmem" => &mut stat.shmem,
            "file_mapped" => &mut stat.file_mapped,
            "file_dirty" => &mut stat.file_dirty,
            "file_writeback" => &mut stat.file_writeback,
            "anon_thp" => &mut stat.anon_thp,
            "active_anon" => &mut stat.active_anon,
            "inactive_anon" => &mut stat.inactive_anon,
            "active_file" => &mut stat.active_file,
            "inactive_file" => &mut stat.inactive_file,
            "unevictable" => &mut stat.unevictable,
            "slab_reclaimable" => &mut stat.slab_reclaimable,
            "slab_unreclaimable" => &mut stat.slab_unreclaimable,
            _ => continue,
        };
        *field = value;
    }
    stat
}
