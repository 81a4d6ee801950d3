//! A read-only, semantic cgroup reader for v1, v2 and hybrid hosts.
//!
//! Views ask [`CgroupSet::cpu_usage_ns`], [`CgroupSet::cpuset`], [`CgroupSet::cpu_quota`]; they
//! never see file names or cgroup versions. A [`CgroupReader`] knows where the hierarchies are
//! mounted (its root is injectable: `/sys/fs/cgroup` in the daemon, a fixture tree in tests) and
//! turns the text of `/proc/<pid>/cgroup` into a [`CgroupSet`]: one directory per controller,
//! resolved once, on whichever hierarchy holds that controller.

mod cpu;
mod cpuset;
mod files;
mod io;
mod memory;
pub(crate) mod parse;
mod paths;
mod tasks;
mod types;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cpuset::CpuSet;
pub use files::{MAX_OPEN, OpenFiles, budget as kept_files_budget, kept as kept_files};
pub use paths::{CgroupPaths, parse_proc_cgroup};
pub use tasks::MAX_TASKS;
pub use types::{CpuTimes, CpuUsage, IoStat, Memory, MemoryStat, PressureKind};

use crate::error::{Error, Result};

/// The controllers nsview reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// CPU bandwidth (quota/period).
    Cpu,
    /// CPU accounting (v1 `cpuacct`; `cpu.stat` on v2, which every v2 cgroup has).
    Cpuacct,
    /// CPU and memory-node placement.
    Cpuset,
    /// Memory limits and accounting.
    Memory,
    /// Block IO accounting (v1 `blkio`, v2 `io`).
    Blkio,
}

impl Controller {
    fn v1_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Blkio => "blkio",
        }
    }

    /// The v2 controller that provides it; `None` for files every v2 cgroup has.
    fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Cpu => Some("cpu"),
            Controller::Cpuacct => None,
            Controller::Cpuset => Some("cpuset"),
            Controller::Memory => Some("memory"),
            Controller::Blkio => Some("io"),
        }
    }
}

/// Where the hierarchies live.
#[derive(Debug, Clone)]
enum Layout {
    /// Only cgroup2, mounted at the root.
    Unified,
    /// v1 controllers at `<root>/<name>`, and maybe a cgroup2 at `<root>/unified` (hybrid)
    /// enabling the controllers listed.
    Legacy {
        unified: Option<PathBuf>,
        unified_controllers: Vec<String>,
    },
}

/// Knows the cgroup mounts under one root and resolves a task's cgroups there.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    layout: Layout,
}

/// One controller's directory for one cgroup: the hierarchy's mount point and the cgroup's path
/// relative to it (so ancestors can be walked up to the mount, never above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    mount: PathBuf,
    rel: PathBuf,
    v2: bool,
}

impl CgroupDir {
    /// The cgroup's own directory.
    pub fn path(&self) -> PathBuf {
        self.mount.join(&self.rel)
    }

    /// The cgroup's directory and those of its ancestors up to the hierarchy root, innermost first.
    fn lineage(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.rel.ancestors().map(|rel| self.mount.join(rel))
    }
}

/// A task's cgroups, one directory per controller nsview reads, and the files of them kept
/// open for re-reading (clones share them).
#[derive(Debug, Clone, Default)]
pub struct CgroupSet {
    cpu: Option<CgroupDir>,
    cpuacct: Option<CgroupDir>,
    cpuset: Option<CgroupDir>,
    memory: Option<CgroupDir>,
    blkio: Option<CgroupDir>,
    files: Arc<OpenFiles>,
}

impl CgroupSet {
    /// Whether a directory of these cgroups is gone (the runtime removed the cgroup, and the
    /// tasks that were in it live elsewhere now): one `stat` per distinct directory.
    pub fn gone(&self) -> bool {
        let mut seen: Vec<PathBuf> = Vec::new();
        [
            &self.cpu,
            &self.cpuacct,
            &self.cpuset,
            &self.memory,
            &self.blkio,
        ]
        .into_iter()
        .flatten()
        .any(|dir| {
            let path = dir.path();
            if seen.contains(&path) {
                return false;
            }
            let gone = !path.is_dir();
            seen.push(path);
            gone
        })
    }
}

impl CgroupReader {
    /// A reader of the hierarchies mounted under `root` (normally `/sys/fs/cgroup`). A root
    /// holding `cgroup.controllers` is a pure cgroup2 host; otherwise v1 controllers are
    /// expected at `<root>/<controller>` and a cgroup2 at `<root>/unified` makes it hybrid.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let layout = if root.join("cgroup.controllers").exists() {
            Layout::Unified
        } else {
            let unified = root.join("unified");
            let controllers = fs::read_to_string(unified.join("cgroup.controllers"));
            match controllers {
                Ok(text) => Layout::Legacy {
                    unified: Some(unified),
                    unified_controllers: text.split_whitespace().map(str::to_owned).collect(),
                },
                Err(_) => Layout::Legacy {
                    unified: None,
                    unified_controllers: Vec::new(),
                },
            }
        };
        CgroupReader { root, layout }
    }

    /// The root this reader was made with.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves the paths of `/proc/<pid>/cgroup` to one directory per controller.
    pub fn resolve(&self, paths: &CgroupPaths) -> CgroupSet {
        let dir = |c| self.dir_for(c, paths);
        CgroupSet {
            cpu: dir(Controller::Cpu),
            cpuacct: dir(Controller::Cpuacct),
            cpuset: dir(Controller::Cpuset),
            memory: dir(Controller::Memory),
            blkio: dir(Controller::Blkio),
            files: Arc::default(),
        }
    }

    fn dir_for(&self, controller: Controller, paths: &CgroupPaths) -> Option<CgroupDir> {
        match &self.layout {
            Layout::Unified => self.v2_dir(&self.root, controller, paths, &[]),
            Layout::Legacy {
                unified,
                unified_controllers,
            } => self.v1_dir(controller, paths).or_else(|| {
                let unified = unified.as_ref()?;
                self.v2_dir(unified, controller, paths, unified_controllers)
            }),
        }
    }

    fn v1_dir(&self, controller: Controller, paths: &CgroupPaths) -> Option<CgroupDir> {
        let name = controller.v1_name();
        let (hierarchy, path) = paths.v1_hierarchy(name)?;
        // A co-mounted hierarchy (`cpu,cpuacct`) is mounted under its joined name, usually with
        // a symlink per controller; try both.
        let mount = [self.root.join(hierarchy), self.root.join(name)]
            .into_iter()
            .find(|m| m.is_dir())?;
        Some(CgroupDir {
            mount,
            rel: relative(path)?,
            v2: false,
        })
    }

    fn v2_dir(
        &self,
        mount: &Path,
        controller: Controller,
        paths: &CgroupPaths,
        enabled: &[String],
    ) -> Option<CgroupDir> {
        let path = paths.unified.as_deref()?;
        if let (Some(name), false) = (controller.v2_name(), enabled.is_empty()) {
            // On a hybrid host the unified hierarchy only serves what it has enabled.
            enabled.iter().find(|c| *c == name)?;
        }
        Some(CgroupDir {
            mount: mount.to_path_buf(),
            rel: relative(path)?,
            v2: true,
        })
    }
}

/// A cgroup path relative to its hierarchy's mount; `None` for a path that climbs out of it
/// (`/../..`, which `/proc/<pid>/cgroup` shows for cgroups outside the reader's cgroup
/// namespace: a daemon in a private cgroup namespace cannot place them).
fn relative(path: &str) -> Option<PathBuf> {
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    Some(PathBuf::from(path.trim_start_matches('/')))
}

impl CgroupSet {
    /// CPU time used by the cgroup and its descendants, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Result<Option<u64>> {
        let Some(dir) = &self.cpuacct else {
            return Ok(None);
        };
        if dir.v2 {
            let usec = self
                .files
                .read(&dir.path().join("cpu.stat"))?
                .and_then(|text| stat_value(&text, "usage_usec"));
            Ok(usec.map(|u| u.saturating_mul(1000)))
        } else {
            let path = dir.path().join("cpuacct.usage");
            self.files
                .read(&path)?
                .map(|t| parse_u64(&path, &t))
                .transpose()
        }
    }

    /// The CPUs the cgroup may run on (the effective cpuset; the nearest non-empty ancestor's
    /// when a v1 cgroup's own is empty). `None` when no cpuset controller serves it.
    pub fn cpuset(&self) -> Result<Option<CpuSet>> {
        let Some(dir) = &self.cpuset else {
            return Ok(None);
        };
        let files: &[&str] = if dir.v2 {
            &["cpuset.cpus.effective"]
        } else {
            &["cpuset.effective_cpus", "cpuset.cpus"]
        };
        for cg in dir.lineage() {
            for file in files {
                let path = cg.join(file);
                if let Some(text) = self.files.read(&path)? {
                    let set =
                        CpuSet::parse(&text).ok_or_else(|| Error::parse(&path, "cpu list"))?;
                    if !set.is_empty() {
                        return Ok(Some(set));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The CPU bandwidth limit in CPUs (quota / period), the minimum over the cgroup and its
    /// ancestors; `None` when no level sets one (v2 `max`, v1 quota `-1`).
    pub fn cpu_quota(&self) -> Result<Option<f64>> {
        let Some(dir) = &self.cpu else {
            return Ok(None);
        };
        let mut limit: Option<f64> = None;
        for cg in dir.lineage() {
            let level = if dir.v2 {
                self.files
                    .read(&cg.join("cpu.max"))?
                    .and_then(|t| parse_cpu_max(&t))
            } else {
                v1_quota(&self.files, &cg)?
            };
            if let Some(cpus) = level {
                limit = Some(limit.map_or(cpus, |l| l.min(cpus)));
            }
        }
        Ok(limit)
    }
}

fn v1_quota(files: &OpenFiles, cg: &Path) -> Result<Option<f64>> {
    let quota_path = cg.join("cpu.cfs_quota_us");
    let Some(quota) = files.read(&quota_path)? else {
        return Ok(None);
    };
    let quota: i64 = quota
        .trim()
        .parse()
        .map_err(|_| Error::parse(&quota_path, "integer"))?;
    let period_path = cg.join("cpu.cfs_period_us");
    let period = match files.read(&period_path)? {
        Some(p) => parse_u64(&period_path, &p)?,
        None => return Ok(None),
    };
    if quota <= 0 || period == 0 {
        return Ok(None);
    }
    Ok(Some(quota as f64 / period as f64))
}

/// `cpu.max`: `max 100000` (unlimited) or `<quota> <period>`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period: u64 = fields.next()?.parse().ok()?;
    (period > 0).then(|| quota as f64 / period as f64)
}

/// The value of `key` in a flat-keyed file such as `cpu.stat`.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.trim()
        .parse()
        .map_err(|_| Error::parse(path, "unsigned integer"))
}

#[cfg(test)]
mod tests;
