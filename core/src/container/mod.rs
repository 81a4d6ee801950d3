//! Containers: the set of tasks sharing a pid namespace, keyed by that namespace's inode, with
//! the facts of the namespace's init (start time, cgroups, namespaces).
//!
//! The [`Containers`] caches a container per pid-namespace inode together with a pidfd to its
//! init. A hit costs one hash lookup and one `poll` on that pidfd; an entry whose init has died
//! is dropped on the next lookup and when any new container is added.

pub mod carried;
mod pidns;
pub mod state;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info};
use parking_lot::{Mutex, RwLock};

pub use pidns::find_init;

use crate::cgroup::{CgroupPaths, CgroupReader, CgroupSet, CpuUsage, parse_proc_cgroup};
use crate::error::{Error, Result};
use crate::procfs::ProcRoot;
use crate::tasks;

pub use state::{Baselines, CpuLine};

/// The boottime offset (seconds) of task `pid`'s time namespace, if it is not the daemon's:
/// `/proc/<pid>/timens_offsets` (Linux 5.6+), `boottime <secs> <nsecs>`.
fn boottime_offset(proc: &ProcRoot, pid: u32) -> Option<f64> {
    let theirs = proc.ns_inode(pid, "time").ok()?;
    if proc.ns_inode(std::process::id(), "time").ok()? == theirs {
        return None;
    }
    let text = crate::procfs::read_to_string(&proc.pid_path(pid, "timens_offsets")).ok()?;
    parse_boottime_offset(&text)
}

/// The boottime line of a `timens_offsets` text, in seconds.
pub fn parse_boottime_offset(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("boottime"))?;
    let mut f = line.split_whitespace().skip(1);
    let secs: i64 = f.next()?.parse().ok()?;
    let nsecs: i64 = f.next()?.parse().ok()?;
    Some(secs as f64 + nsecs as f64 / 1e9)
}

/// How long a container's CPU count (from its cpuset and quota) is reused before it is read
/// again: limits change rarely, and reading them costs several cgroupfs reads.
const CPU_COUNT_TTL: Duration = Duration::from_secs(1);

/// One container, as seen from the daemon's pid namespace: the tasks of a child pid namespace,
/// or (a "host scope") the tasks of one non-root cgroup in the daemon's own pid namespace,
/// which see their cgroup's limits as LXCFS shows them, and the host's age.
#[derive(Debug)]
pub struct Container {
    /// Inode of its pid namespace (the key of a pid-namespace container; the daemon's own for
    /// a host scope).
    pub pidns: u64,
    /// Host pid of its init and a pidfd to it; `None` for a host scope.
    init: Option<(u32, OwnedFd)>,
    /// How deep its pid namespace is below the daemon's (0 for a host scope): a task's pid
    /// in the container is field `ns_level` of its `NSpid` line.
    pub ns_level: usize,
    /// The init's start time, clock ticks since boot (0 for a host scope: as old as the host).
    pub start_ticks: u64,
    /// The init's cgroup paths, as written in `/proc/<init>/cgroup`.
    pub cgroup_paths: CgroupPaths,
    /// The init's cgroups, resolved per controller.
    pub cgroups: CgroupSet,
    /// Where its tasks are found by their pid namespace instead of their cgroup: a container
    /// whose CPU accounting is a hierarchy's root (LXCFS's own tests run so), where the
    /// cgroup would count every task and every CPU second of the host.
    by_pidns: Option<ProcRoot>,
    /// Where its init is in a time namespace of its own: that namespace's boottime offset, in
    /// seconds (negative: the container's boot clock reads less than the host's). The kernel
    /// then shifts the container's `/proc/uptime`, start times and `btime` by it, and so do
    /// the views: the kernel's clock is the truth.
    pub boottime_offset: Option<f64>,
    /// The idle time last served, in hundredths of a second: `/proc/uptime` idle never goes
    /// backwards, even when the CPU count or the accounting changes under it.
    last_idle_cs: AtomicU64,
    visible_cpus: Mutex<Option<(Instant, Arc<[u32]>)>>,
    /// The `proc/stat` per-CPU lines and `cpu` line last served: counters never go back.
    pub last_stat: Mutex<(Vec<CpuLine>, CpuLine)>,
    /// The host-wide counters of its files when it first read them (see
    /// `views::proc::counters`).
    pub baselines: Mutex<Baselines>,
}

impl Container {
    /// A host scope: the tasks of cgroups `cgroups` in the daemon's pid namespace `pidns`.
    pub fn host_scope(pidns: u64, cgroup_paths: CgroupPaths, cgroups: CgroupSet) -> Container {
        Container {
            pidns,
            init: None,
            ns_level: 0,
            start_ticks: 0,
            cgroup_paths,
            cgroups,
            by_pidns: None,
            boottime_offset: None,
            last_idle_cs: AtomicU64::new(0),
            visible_cpus: Mutex::new(None),
            last_stat: Mutex::new((Vec::new(), CpuLine::default())),
            baselines: Mutex::default(),
        }
    }

    /// Host pid of its init; `None` for a host scope.
    pub fn init_pid(&self) -> Option<u32> {
        self.init.as_ref().map(|(pid, _)| *pid)
    }

    /// A pidfd of its init (readable once the init has exited); `None` for a host scope.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.init.as_ref().map(|(_, fd)| fd.as_fd())
    }

    /// A key unique among live containers: the pid-namespace inode, or for a host scope a
    /// hash of its cgroup paths with the top bit set (namespace inodes are 32-bit).
    pub fn key(&self) -> u64 {
        if self.is_host_scope() {
            crate::vfs::inode_of(&format!("{:?}", self.cgroup_paths)) | (1 << 63)
        } else {
            self.pidns
        }
    }

    /// Whether this is a host scope rather than a pid namespace.
    pub fn is_host_scope(&self) -> bool {
        self.init.is_none()
    }

    /// Host TIDs of every thread of the container: its cgroup subtree's, or, where the cgroup
    /// is a hierarchy's root, its pid namespace's.
    pub fn tasks(&self) -> Result<Vec<u32>> {
        match &self.by_pidns {
            Some(proc) => Ok(tasks::threads_of(
                proc,
                &tasks::pidns_members(proc, self.pidns),
            )),
            None => self.cgroups.tasks(),
        }
    }

    /// The CPU time the container used: its cgroup's accounting, or, where that is a
    /// hierarchy's root (the host's), what its live processes and their reaped children used.
    pub fn cpu_usage(&self) -> Result<Option<CpuUsage>> {
        match &self.by_pidns {
            Some(proc) => {
                let members = tasks::pidns_members(proc, self.pidns);
                let ticks = crate::procfs::clock_ticks_per_sec();
                Ok(Some(tasks::cpu_usage_of(proc, &members, ticks)))
            }
            None => self.cgroups.cpu_usage(),
        }
    }

    /// [`Container::cpu_usage`]'s total alone, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> Result<Option<u64>> {
        match &self.by_pidns {
            Some(_) => Ok(self.cpu_usage()?.map(|u| u.total_ns)),
            None => self.cgroups.cpu_usage_ns(),
        }
    }

    /// Whether the init is still running (a pidfd becomes readable when its process exits);
    /// a host scope is always alive.
    pub fn is_alive(&self) -> bool {
        self.init
            .as_ref()
            .is_none_or(|(_, pidfd)| crate::caller::pidfd_alive(pidfd))
    }

    /// Raises the served idle time to `candidate_cs` if that is larger and returns the value to
    /// serve, so idle never decreases from one read to the next.
    pub fn monotonic_idle_cs(&self, candidate_cs: u64) -> u64 {
        let previous = self.last_idle_cs.fetch_max(candidate_cs, Ordering::Relaxed);
        previous.max(candidate_cs)
    }

    /// The host CPUs the container sees, computed by `compute` at most once per second.
    pub fn cached_cpus(&self, compute: impl FnOnce() -> Result<Vec<u32>>) -> Result<Arc<[u32]>> {
        let mut slot = self.visible_cpus.lock();
        if let Some((at, cpus)) = &*slot
            && at.elapsed() < CPU_COUNT_TTL
        {
            return Ok(cpus.clone());
        }
        let cpus: Arc<[u32]> = compute()?.into();
        *slot = Some((Instant::now(), cpus.clone()));
        Ok(cpus)
    }
}

/// The containers seen so far, by pid-namespace inode.
#[derive(Debug)]
pub struct Containers {
    proc: ProcRoot,
    cgroups: CgroupReader,
    map: RwLock<HashMap<u64, Arc<Container>>>,
    /// Host scopes by the text of `/proc/<pid>/cgroup` their tasks show.
    host_scopes: Mutex<HashMap<String, Arc<Container>>>,
    /// What a predecessor daemon kept of the containers' views (see [`carried`]).
    carried: std::sync::OnceLock<Arc<carried::Carried>>,
}

/// Most host scopes kept; beyond that the cache starts over (host scopes only hold the
/// monotonic state of their views, so forgetting them costs little).
const MAX_HOST_SCOPES: usize = 1024;

impl Containers {
    /// An empty registry reading through `proc` and `cgroups`.
    pub fn new(proc: ProcRoot, cgroups: CgroupReader) -> Self {
        Containers {
            proc,
            cgroups,
            map: RwLock::new(HashMap::new()),
            host_scopes: Mutex::new(HashMap::new()),
            carried: std::sync::OnceLock::new(),
        }
    }

    /// Gives each container first seen from now on the baselines `carried` kept for it, and
    /// has `carried` forget those of containers that end.
    pub fn carry_from(&self, carried: Arc<carried::Carried>) {
        let _ = self.carried.set(carried);
    }

    /// The containers cached now.
    pub fn all(&self) -> Vec<Arc<Container>> {
        self.map.read().values().cloned().collect()
    }

    /// The host scope of task `tid`, which lives in the daemon's pid namespace `pidns`: `None`
    /// when the task sits in the root cgroup of every hierarchy nsview reads (it sees the
    /// host's files), else the scope of its cgroups, shared by every task in the same ones.
    pub fn host_scope(&self, pidns: u64, tid: u32) -> Result<Option<Arc<Container>>> {
        let text = self.proc.cgroup(tid)?;
        let paths = parse_proc_cgroup(&text);
        if paths.is_root() {
            return Ok(None);
        }
        let mut scopes = self.host_scopes.lock();
        if let Some(scope) = scopes.get(&text) {
            return Ok(Some(scope.clone()));
        }
        if scopes.len() >= MAX_HOST_SCOPES {
            scopes.clear();
        }
        let cgroups = self.cgroups.resolve(&paths);
        let scope = Arc::new(Container::host_scope(pidns, paths, cgroups));
        scopes.insert(text, scope.clone());
        Ok(Some(scope))
    }

    /// The container of pid namespace `pidns`, which task `member` belongs to. The slow path
    /// (a namespace not seen before, or whose init died) finds the init without forking; a
    /// container whose cgroup is gone is looked up again in the cgroups its init is in now.
    pub fn get(&self, pidns: u64, member: u32) -> Result<Arc<Container>> {
        let cached = self.map.read().get(&pidns).cloned();
        if let Some(c) = cached.filter(|c| c.is_alive()) {
            if !c.cgroups.gone() {
                return Ok(c);
            }
            return self.recgroup(&c);
        }
        let container = Arc::new(self.discover(pidns, member)?);
        let mut map = self.map.write();
        map.retain(|_, c| c.is_alive());
        if let Some(existing) = map.get(&pidns) {
            // Another request discovered it meanwhile; keep one entry.
            return Ok(existing.clone());
        }
        if let (Some(carried), Some(id)) = (self.carried.get(), carried::Identity::of(&container))
            && let Some(baselines) = carried.take_baselines(id)
        {
            *container.baselines.lock() = baselines;
        }
        info!(
            "container seen: pidns {pidns}, init pid {}, cgroup {:?}",
            container.init_pid().unwrap_or(0),
            container.cgroup_paths.shown()
        );
        map.insert(pidns, container.clone());
        Ok(container)
    }

    /// Forgets the containers whose init has exited and the host scopes whose cgroups were
    /// removed, so that their descriptors into those cgroups close (a removed cgroup held
    /// open stays in the kernel as a dying one). What else holds such a container (a request
    /// in flight, the load sampler until its next round) lets it go on its own.
    pub fn prune(&self) {
        let dead: Vec<Arc<Container>> = {
            let mut map = self.map.write();
            let dead = map.values().filter(|c| !c.is_alive()).cloned().collect();
            map.retain(|_, c| c.is_alive());
            dead
        };
        if let Some(carried) = self.carried.get() {
            for id in dead.iter().filter_map(|c| carried::Identity::of(c)) {
                carried.forget(id);
            }
        }
        let mut scopes = self.host_scopes.lock();
        let before = scopes.len();
        scopes.retain(|_, s| !s.cgroups.gone());
        let scopes_gone = before - scopes.len();
        drop(scopes);
        if !dead.is_empty() || scopes_gone > 0 {
            debug!(
                "forgot {} exited containers and {scopes_gone} host scopes of removed cgroups",
                dead.len()
            );
        }
    }

    /// `old` in the cgroups its init is in now (its own were removed under it), with the
    /// counters it served kept, so that nothing it showed goes backwards.
    fn recgroup(&self, old: &Arc<Container>) -> Result<Arc<Container>> {
        let (init_pid, pidfd) = old.init.as_ref().ok_or(Error::Gone(0))?;
        let cgroup_paths = parse_proc_cgroup(&self.proc.cgroup(*init_pid)?);
        let pidfd = pidfd
            .try_clone()
            .map_err(|e| Error::task("dup pidfd", *init_pid, e))?;
        let container = Arc::new(Container {
            pidns: old.pidns,
            init: Some((*init_pid, pidfd)),
            ns_level: old.ns_level,
            start_ticks: old.start_ticks,
            cgroups: self.cgroups.resolve(&cgroup_paths),
            by_pidns: self.by_pidns(&cgroup_paths),
            boottime_offset: old.boottime_offset,
            cgroup_paths,
            last_idle_cs: AtomicU64::new(old.last_idle_cs.load(Ordering::Relaxed)),
            visible_cpus: Mutex::new(None),
            last_stat: Mutex::new(old.last_stat.lock().clone()),
            baselines: Mutex::new(old.baselines.lock().clone()),
        });
        let mut map = self.map.write();
        match map.get(&old.pidns) {
            // Another request moved it on meanwhile.
            Some(current) if !Arc::ptr_eq(current, old) => return Ok(current.clone()),
            _ => {}
        }
        info!(
            "container pidns {}: its cgroup {:?} is gone; now {:?}",
            old.pidns,
            old.cgroup_paths.unified.as_deref().or_else(|| old
                .cgroup_paths
                .v1
                .first()
                .map(|(_, p)| p.as_str())),
            container
                .cgroup_paths
                .unified
                .as_deref()
                .or_else(|| container.cgroup_paths.v1.first().map(|(_, p)| p.as_str())),
        );
        map.insert(old.pidns, container.clone());
        Ok(container)
    }

    /// Number of containers cached.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether no container is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For a container in `paths`: the procfs to find its tasks in by pid namespace, where
    /// its CPU accounting is a hierarchy's root.
    fn by_pidns(&self, paths: &CgroupPaths) -> Option<ProcRoot> {
        paths.accounts_at_root().then(|| self.proc.clone())
    }

    fn discover(&self, pidns: u64, member: u32) -> Result<Container> {
        let init_pid = find_init(&self.proc, member, pidns)?;
        let pidfd = rustix::process::Pid::from_raw(init_pid as i32)
            .ok_or(Error::Gone(init_pid))
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .map_err(|e| Error::task("pidfd_open", init_pid, e.into()))
            })?;
        // Read the facts through /proc, then check through the pidfd that the process is still
        // the one we resolved: if it had died and its pid been reused, its namespace would
        // differ (checked here) or the pidfd would report it exited (checked last).
        if self.proc.ns_inode(init_pid, "pid")? != pidns {
            return Err(Error::Gone(init_pid));
        }
        let start_ticks = self.proc.start_ticks(init_pid)?;
        let cgroup_paths = parse_proc_cgroup(&self.proc.cgroup(init_pid)?);
        let container = Container {
            pidns,
            init: Some((init_pid, pidfd)),
            ns_level: self.proc.status(init_pid)?.nspid.len().saturating_sub(1),
            start_ticks,
            cgroups: self.cgroups.resolve(&cgroup_paths),
            by_pidns: self.by_pidns(&cgroup_paths),
            boottime_offset: boottime_offset(&self.proc, init_pid),
            cgroup_paths,
            last_idle_cs: AtomicU64::new(0),
            visible_cpus: Mutex::new(None),
            last_stat: Mutex::new((Vec::new(), CpuLine::default())),
            baselines: Mutex::default(),
        };
        if !container.is_alive() {
            debug!("init {init_pid} of pidns {pidns} exited during discovery");
            return Err(Error::Gone(init_pid));
        }
        Ok(container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boottime_offset_is_read_with_its_nanoseconds() {
        let text = "monotonic           0         0\nboottime        -1000 500000000\n";
        assert_eq!(parse_boottime_offset(text), Some(-999.5));
        assert_eq!(parse_boottime_offset("monotonic 0 0\n"), None);
        assert_eq!(parse_boottime_offset("boottime x 0\n"), None);
    }
}
