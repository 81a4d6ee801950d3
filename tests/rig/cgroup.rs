//! One logical test cgroup, `nsview-test-<pid>-<n>`, across every hierarchy that matters.
//!
//! cgroup v1 (and hybrid) hosts get one directory per controller hierarchy directly under
//! its root, plus one in the hybrid `unified` cgroup2 tree when there is one (runc does the
//! same, so `0::` in `/proc/<pid>/cgroup` looks like a runc container's). A pure cgroup v2
//! host (`/sys/fs/cgroup/cgroup.controllers` exists) gets `/sys/fs/cgroup/<name>`.
//! Nothing outside those directories is ever written.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{PidFd, require_root};

const ROOT: &str = "/sys/fs/cgroup";
/// The v1 controllers a test cgroup joins, in creation order.
const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"];
/// The default CFS period, used on v2 when only a quota is given.
const DEFAULT_PERIOD_US: u64 = 100_000;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Resource limits of a test cgroup; the default is unlimited.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `memory.limit_in_bytes` (v1) / `memory.max` (v2).
    pub memory_bytes: Option<u64>,
    /// `cpu.cfs_quota_us` (v1) / the quota of `cpu.max` (v2); -1 means none.
    pub cpu_quota_us: Option<i64>,
    /// `cpu.cfs_period_us` (v1) / the period of `cpu.max` (v2).
    pub cpu_period_us: Option<u64>,
    /// `cpuset.cpus`, e.g. `"0"` or `"0-1"`; the parent's CPUs when `None`.
    pub cpuset_cpus: Option<String>,
    /// Swap on top of the memory limit: `memory.swap.max` (v2) / `memory.memsw.limit_in_bytes`
    /// less the memory limit (v1, which then needs `memory_bytes`).
    pub swap_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A test cgroup; drop kills whatever is still in it and removes its directories.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    version: Version,
    /// Controller name -> directory (v1 co-mounted controllers share one directory).
    controllers: Vec<(String, PathBuf)>,
    /// Every directory created, in creation order, each once.
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates the cgroup directories with `limits` applied. Panics (after removing what it
    /// created) if a directory cannot be made or a limit cannot be set.
    pub fn create(limits: &Limits) -> Cgroup {
        Cgroup::create_nested(None, limits)
    }

    /// Like [`Cgroup::create`]; with `outer`, the cgroup is `<name>/inner`, and `<name>` has
    /// the `outer` limits (a container in a pod's or a slice's cgroup). Tasks go into the
    /// inner one.
    pub fn create_nested(outer: Option<&Limits>, limits: &Limits) -> Cgroup {
        let mut cgroup = match outer {
            None => Cgroup::create_one(limits),
            Some(outer) => Cgroup::create_one(outer),
        };
        if outer.is_some() {
            cgroup.descend(limits);
        }
        cgroup
    }

    /// Makes `inner` below every directory and moves there, with `limits` applied.
    fn descend(&mut self, limits: &Limits) {
        if self.version == Version::V2 {
            let outer = self.dirs[0].clone();
            // The controllers the root delegates, delegated on to the inner cgroup.
            let delegated = read(&Path::new(ROOT).join("cgroup.subtree_control"));
            let wanted: Vec<String> = delegated
                .split_whitespace()
                .filter(|c| ["memory", "cpu", "cpuset", "io", "pids"].contains(c))
                .map(|c| format!("+{c}"))
                .collect();
            write(&outer.join("cgroup.subtree_control"), &wanted.join(" "));
            self.mkdir(&outer.join("inner"));
            self.apply_v2(&outer.join("inner"), limits);
            return;
        }
        let outer: Vec<(String, PathBuf)> = self.controllers.clone();
        self.controllers.clear();
        for (controller, dir) in outer {
            let inner = dir.join("inner");
            if !self.dirs.contains(&inner) {
                self.mkdir(&inner);
            }
            self.controllers.push((controller, inner));
        }
        self.apply_v1(limits);
    }

    fn create_one(limits: &Limits) -> Cgroup {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("nsview-test-{}-{n}", std::process::id());
        let v2 = Path::new(ROOT).join("cgroup.controllers").exists();
        let mut cgroup = Cgroup {
            name,
            version: if v2 { Version::V2 } else { Version::V1 },
            controllers: Vec::new(),
            dirs: Vec::new(),
        };
        if v2 {
            cgroup.create_v2(limits);
        } else {
            cgroup.create_v1(limits);
        }
        cgroup
    }

    fn create_v1(&mut self, limits: &Limits) {
        for controller in V1_CONTROLLERS {
            let root = Path::new(ROOT).join(controller);
            if !root.join("cgroup.procs").exists() {
                assert!(
                    !needs(limits, controller),
                    "the {controller} controller is not mounted at {}",
                    root.display()
                );
                continue;
            }
            // `cpu` and `cpuacct` are often symlinks to one `cpu,cpuacct` hierarchy.
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            let dir = root.join(&self.name);
            if !self.dirs.contains(&dir) {
                self.mkdir(&dir);
            }
            self.controllers.push((controller.to_owned(), dir));
        }
        let unified = Path::new(ROOT).join("unified");
        if unified.join("cgroup.procs").exists() {
            let dir = unified.join(&self.name);
            self.mkdir(&dir);
            self.controllers.push(("unified".to_owned(), dir));
        }
        self.apply_v1(limits);
    }

    fn apply_v1(&self, limits: &Limits) {
        if let Some(bytes) = limits.memory_bytes {
            write(
                &self.path("memory").join("memory.limit_in_bytes"),
                &bytes.to_string(),
            );
        }
        if let Some(swap) = limits.swap_bytes {
            let memory = limits
                .memory_bytes
                .expect("a v1 swap limit needs a memory limit");
            write(
                &self.path("memory").join("memory.memsw.limit_in_bytes"),
                &(memory + swap).to_string(),
            );
        }
        if let Some(period) = limits.cpu_period_us {
            write(
                &self.path("cpu").join("cpu.cfs_period_us"),
                &period.to_string(),
            );
        }
        if let Some(quota) = limits.cpu_quota_us {
            write(
                &self.path("cpu").join("cpu.cfs_quota_us"),
                &quota.to_string(),
            );
        }
        // A new v1 cpuset has no CPUs and no memory nodes, and refuses tasks until both are
        // set; `cgroup.clone_children` is 0 at the root, so copy them from the parent.
        if self.has("cpuset") {
            let dir = self.path("cpuset");
            let parent = dir.parent().expect("a cgroup dir has a parent");
            let cpus = match &limits.cpuset_cpus {
                Some(cpus) => cpus.clone(),
                None => read(&parent.join("cpuset.cpus")),
            };
            write(&dir.join("cpuset.cpus"), cpus.trim());
            write(
                &dir.join("cpuset.mems"),
                read(&parent.join("cpuset.mems")).trim(),
            );
        }
    }

    fn create_v2(&mut self, limits: &Limits) {
        let root = Path::new(ROOT);
        // Enabling controllers in the root's subtree_control would change the whole host, so
        // a limit on a controller the root does not delegate is a clear failure instead.
        let delegated = read(&root.join("cgroup.subtree_control"));
        for controller in ["memory", "cpu", "cpuset"] {
            assert!(
                !needs(limits, controller) || delegated.split_whitespace().any(|c| c == controller),
                "cgroup v2: the root does not enable the {controller} controller for its \
                 children ({}/cgroup.subtree_control is {:?})",
                ROOT,
                delegated.trim()
            );
        }
        let dir = root.join(&self.name);
        self.mkdir(&dir);
        self.apply_v2(&dir, limits);
    }

    fn apply_v2(&self, dir: &Path, limits: &Limits) {
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string());
        }
        if let Some(bytes) = limits.swap_bytes {
            write(&dir.join("memory.swap.max"), &bytes.to_string());
        }
        if limits.cpu_quota_us.is_some() || limits.cpu_period_us.is_some() {
            let quota = match limits.cpu_quota_us {
                Some(q) if q >= 0 => q.to_string(),
                _ => "max".to_owned(),
            };
            let period = limits.cpu_period_us.unwrap_or(DEFAULT_PERIOD_US);
            write(&dir.join("cpu.max"), &format!("{quota} {period}"));
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            write(&dir.join("cpuset.cpus"), cpus);
        }
    }

    fn mkdir(&mut self, dir: &Path) {
        if let Err(e) = std::fs::create_dir(dir) {
            panic!("mkdir {}: {e}", dir.display());
        }
        self.dirs.push(dir.to_path_buf());
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|(c, _)| c == controller)
    }

    /// The cgroup's name, `nsview-test-<pid>-<n>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory of `controller` (`"memory"`, `"cpu"`, ..., or `"unified"` for the hybrid
    /// cgroup2 tree); on a pure v2 host, the one directory whatever the controller.
    pub fn path(&self, controller: &str) -> PathBuf {
        if self.version == Version::V2 {
            return self.dirs.last().expect("a cgroup has a directory").clone();
        }
        match self.controllers.iter().find(|(c, _)| c == controller) {
            Some((_, dir)) => dir.clone(),
            None => panic!("cgroup {} has no {controller} directory", self.name),
        }
    }

    /// Whether this is a cgroup v2 (single hierarchy) cgroup.
    pub fn is_v2(&self) -> bool {
        self.version == Version::V2
    }

    /// Every `cgroup.procs` a process must be written into to be fully inside this cgroup
    /// (its innermost directories).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.innermost()
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The directories tasks go into: the inner ones of a nested cgroup.
    fn innermost(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|d| !self.dirs.iter().any(|o| o.parent() == Some(d.as_path())))
            .cloned()
            .collect()
    }

    /// The pids (in the host pid namespace) in any of this cgroup's directories or the ones
    /// beneath them (a runtime given this cgroup as its parent makes its own there), sorted.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .flat_map(|d| beneath(d).into_iter().chain(std::iter::once(d.clone())))
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Moves every task of this cgroup into the parent cgroups and removes its directories,
    /// as if a runtime had torn the cgroup down under a running container. The container's
    /// processes live on (their owner still ends them on drop).
    pub fn evacuate_and_remove(&self) {
        // Innermost first: a nested cgroup's tasks go up twice, to the hierarchy's root.
        for dir in self.dirs.iter().rev() {
            let parent = dir
                .parent()
                .expect("a cgroup has a parent")
                .join("cgroup.procs");
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                // A task may exit meanwhile: ESRCH is fine.
                let _ = std::fs::write(&parent, pid);
            }
        }
        for dir in self.dirs.iter().rev() {
            rmdir_retrying(dir, Duration::from_secs(2));
        }
    }

    /// Moves every task of the innermost directories of a nested cgroup into the outer ones
    /// and removes the inner directories, as a runtime moving a container out of a cgroup it
    /// then removes would; the outer cgroup stays (drop removes it).
    pub fn evacuate_inner(&mut self) {
        let inner = self.innermost();
        assert!(
            inner.iter().all(|d| d.ends_with("inner")),
            "not a nested cgroup: {inner:?}"
        );
        for dir in &inner {
            let outer = dir.parent().expect("a cgroup has a parent");
            // cgroup v2 takes no tasks into a cgroup that hands controllers to children:
            // take them back first, as a runtime folding the cgroup in would.
            if self.version == Version::V2 {
                let enabled = read(&outer.join("cgroup.subtree_control"));
                let off: Vec<String> = enabled
                    .split_whitespace()
                    .map(|c| format!("-{c}"))
                    .collect();
                if !off.is_empty() {
                    write(&outer.join("cgroup.subtree_control"), &off.join(" "));
                }
            }
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                match std::fs::write(outer.join("cgroup.procs"), pid) {
                    // The task ended meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => panic!("move {pid} to {}: {e}", outer.display()),
                    Ok(()) => {}
                }
            }
        }
        for dir in &inner {
            rmdir_retrying(dir, Duration::from_secs(2));
        }
        self.dirs.retain(|d| !inner.contains(d));
        for (_, dir) in &mut self.controllers {
            if inner.contains(dir) {
                *dir = dir.parent().expect("a cgroup has a parent").to_path_buf();
            }
        }
    }

    /// SIGKILLs `pid` if it is (still) in this cgroup: the pidfd pins the process, so the
    /// membership check and the signal are about the same process even if the pid is reused.
    fn kill_member(&self, pid: u32) {
        let Ok(pidfd) = PidFd::open(pid) else {
            return;
        };
        let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return;
        };
        let own = format!("/{}", self.name);
        let member = cgroups.lines().any(|line| {
            let path = line.splitn(3, ':').nth(2).unwrap_or("");
            path == own || path.starts_with(&format!("{own}/"))
        });
        if member {
            let _ = pidfd.signal(libc::SIGKILL);
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                self.kill_member(pid);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // A runtime given this cgroup as a parent also makes it in hierarchies the rig does
        // not use (podman: name=systemd); the name is this cgroup's own in each of them.
        let elsewhere = std::fs::read_dir(ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(&self.name))
            .filter(|d| d.is_dir() && !self.dirs.contains(d));
        let dirs: Vec<PathBuf> = self.dirs.iter().cloned().chain(elsewhere).collect();
        for dir in dirs.iter().rev() {
            for inner in beneath(dir) {
                rmdir_retrying(&inner, Duration::from_secs(2));
            }
            rmdir_retrying(dir, Duration::from_secs(2));
        }
    }
}

/// The cgroup directories beneath `dir`, innermost first (children before their parents).
fn beneath(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let children = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for child in children.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
        found.extend(beneath(&child.path()));
        found.push(child.path());
    }
    found
}

/// `rmdir`, retried every 10 ms while the kernel still reports the cgroup busy (its last
/// tasks may still be exiting).
fn rmdir_retrying(dir: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match std::fs::remove_dir(dir) {
            Err(e) if e.kind() != ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// Whether `limits` sets something in `controller`.
fn needs(limits: &Limits, controller: &str) -> bool {
    match controller {
        "memory" => limits.memory_bytes.is_some() || limits.swap_bytes.is_some(),
        "cpu" => limits.cpu_quota_us.is_some() || limits.cpu_period_us.is_some(),
        "cpuset" => limits.cpuset_cpus.is_some(),
        _ => false,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, value: &str) {
    if let Err(e) = std::fs::write(path, value) {
        panic!("write {value:?} to {}: {e}", path.display());
    }
}
