//! A real `nsview serve` process on a temporary (or given) mountpoint.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::mounts::{self, MountEntry};
use super::{nsview_bin, require_root, signal_child, stop_child, wait_child_for};

/// How long a daemon may take to mount (a hang detector: the cgroup v2 VM emulates its
/// CPUs and once took over 10 s), and to exit after SIGTERM in [`Daemon::terminate`].
const START_LIMIT: Duration = Duration::from_secs(30);
const TERMINATE_LIMIT: Duration = Duration::from_secs(10);
/// How long [`Drop`] gives SIGTERM before it uses SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// How long a mount may take to list its root before it counts as dead.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// A mount's identity while it exists: its mount id and device. The kernel reuses both once
/// a mount is gone (a recovered stale mount's successor often gets the very same pair), so
/// the rig never uses a recorded identity to find a mount that may have been replaced.
type MountId = (u32, (u32, u32));

fn id_of(m: &MountEntry) -> MountId {
    (m.mount_id, m.dev)
}

/// Whether `m` is an nsview mount: `fuse.nsview` when the daemon mounts with
/// `subtype=nsview`, else plain `fuse` with the fsname `nsview` as its source.
fn is_nsview(m: &MountEntry) -> bool {
    m.fstype == "fuse.nsview" || (m.fstype == "fuse" && m.source == "nsview")
}

/// A running `nsview serve <mountpoint> --runtime-dir <dir>`, its output captured in a log.
///
/// Drop stops it (SIGTERM, 5 s, SIGKILL), detaches its mount if it is still there and
/// removes the directories it owns.
pub struct Daemon {
    child: Option<Child>,
    mountpoint: PathBuf,
    runtime_dir: PathBuf,
    /// A live nsview mount that was already at the mountpoint (another daemon's): never
    /// taken for this one's. A stale one needs no such care: it cannot answer.
    foreign: Option<MountId>,
    /// This daemon's mount, once it answered.
    ours: Option<MountId>,
    /// Whether drop detaches dead nsview mounts (false once a [`StaleMount`] owns them).
    detach_on_drop: bool,
    /// Whether drop ends a keeper left without a daemon (false once [`Crashed`] owns it).
    keeper_on_drop: bool,
    /// Set when the rig created the mountpoint, which it then removes with `rmdir` only
    /// (never a recursive removal that could walk into a mount).
    owned_mountpoint: bool,
    _owned_runtime_dir: Option<TempDir>,
    log_dir: TempDir,
}

impl Daemon {
    /// Starts a daemon on a fresh temporary mountpoint and runtime dir.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Like [`Daemon::start`], with extra arguments after `serve`'s own.
    pub fn start_with(extra_args: &[&str]) -> Daemon {
        require_root();
        let mountpoint = tempfile::Builder::new()
            .prefix("nsview-mnt-")
            .tempdir()
            .expect("create a mountpoint")
            .keep();
        let runtime = tempfile::Builder::new()
            .prefix("nsview-run-")
            .tempdir()
            .expect("create a runtime dir");
        let mut daemon = Daemon::new(&mountpoint, runtime.path(), extra_args);
        daemon.owned_mountpoint = true;
        daemon._owned_runtime_dir = Some(runtime);
        daemon.wait_until_mounted();
        daemon
    }

    /// Starts a daemon on directories the caller owns (restart and second-daemon tests); the
    /// daemon never removes them.
    pub fn start_on(mountpoint: &Path, runtime_dir: &Path, extra_args: &[&str]) -> Daemon {
        require_root();
        let mut daemon = Daemon::new(mountpoint, runtime_dir, extra_args);
        daemon.wait_until_mounted();
        daemon
    }

    /// Spawns the process; the returned guard already cleans up if a later step panics.
    fn new(mountpoint: &Path, runtime_dir: &Path, extra_args: &[&str]) -> Daemon {
        let mountpoint = mounts::normalize(mountpoint);
        let log_dir = tempfile::Builder::new()
            .prefix("nsview-log-")
            .tempdir()
            .expect("create a log dir");
        let log = File::create(log_dir.path().join("daemon.log")).expect("create the log");
        let foreign = topmost_nsview(&mountpoint)
            .filter(|_| list_within(&mountpoint, PROBE_LIMIT).is_some())
            .map(|m| id_of(&m));
        let child = Command::new(nsview_bin())
            .arg("serve")
            .arg(&mountpoint)
            .arg("--runtime-dir")
            .arg(runtime_dir)
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn nsview serve");
        Daemon {
            child: Some(child),
            mountpoint,
            runtime_dir: runtime_dir.to_path_buf(),
            foreign,
            ours: None,
            detach_on_drop: true,
            keeper_on_drop: true,
            owned_mountpoint: false,
            _owned_runtime_dir: None,
            log_dir,
        }
    }

    /// Polls every 10 ms until the topmost mount at the mountpoint is an nsview mount (not a
    /// foreign live one) that lists its root, `proc` included, and `<mountpoint>/proc` is on
    /// it; panics with the log if the daemon exits first or 10 s pass.
    fn wait_until_mounted(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nsview serve exited ({status}) before mounting; log:\n{}",
                    self.log()
                );
            }
            if let Some(top) = topmost_nsview(&self.mountpoint) {
                if Some(id_of(&top)) != self.foreign && self.serves(&top, deadline) {
                    self.ours = Some(id_of(&top));
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "nsview serve did not mount {} within {START_LIMIT:?}; log:\n{}\n\
                     where its threads, its children's and this process's FUSE waiters are:\n{}",
                    self.mountpoint.display(),
                    self.log(),
                    self.child
                        .as_ref()
                        .map(|c| where_threads_are(c.id()))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether `mount` answers: its root lists `proc` (a real request: a stale mount could
    /// still stat from the attribute cache) and `<mountpoint>/proc` is on it.
    fn serves(&self, mount: &MountEntry, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        let listed = list_within(&self.mountpoint, left).unwrap_or_default();
        let left = deadline.saturating_duration_since(Instant::now());
        listed.iter().any(|n| n == "proc")
            && stat_dev_within(&self.mountpoint.join("proc"), left) == Some(mount.dev)
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The daemon's `--runtime-dir`.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// `rel` under the mountpoint, e.g. `path("proc/uptime")`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// Runs `nsview ctl --runtime-dir <its dir> <args>`, which must succeed; its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(nsview_bin())
            .arg("ctl")
            .arg("--runtime-dir")
            .arg(&self.runtime_dir)
            .args(args)
            .output()
            .expect("run nsview ctl");
        assert!(
            out.status.success(),
            "nsview ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers `c` (its init) as container `id`, with extra `ctl register` arguments.
    pub fn register(&self, id: &str, init_pid: u32, extra: &[&str]) {
        let pid = init_pid.to_string();
        let mut args = vec!["register", "--id", id, "--pid", &pid];
        args.extend_from_slice(extra);
        self.ctl(&args);
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the daemon wrote to stdout and stderr so far (`RUST_LOG=info`).
    pub fn log(&self) -> String {
        let bytes = std::fs::read(self.log_dir.path().join("daemon.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the daemon to exit; returns its status, how
    /// long it took and its log. Panics if it does not exit or leaves its mount behind.
    pub fn terminate(self) -> (ExitStatus, Duration, String) {
        self.stop_with(libc::SIGTERM)
    }

    /// [`Daemon::terminate`] with signal `sig` instead of SIGTERM.
    pub fn stop_with(mut self, sig: libc::c_int) -> (ExitStatus, Duration, String) {
        let mut child = self.child.take().expect("daemon already stopped");
        let start = Instant::now();
        signal_child(&child, sig);
        let Some(status) = wait_child_for(&mut child, TERMINATE_LIMIT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "nsview serve ignored signal {sig} for {TERMINATE_LIMIT:?}; log:\n{}",
                self.log()
            );
        };
        let took = start.elapsed();
        // While our mount exists its id and device cannot be reused, so a match is ours.
        let left: Vec<MountEntry> = mounts::mounts_at(&self.mountpoint)
            .into_iter()
            .filter(|m| Some(id_of(m)) == self.ours)
            .collect();
        assert!(
            left.is_empty(),
            "nsview serve exited ({status}) but left its mount {left:?}; log:\n{}",
            self.log()
        );
        (status, took, self.log())
    }

    /// SIGKILLs the daemon, leaving its mount stale (`ENOTCONN`); the returned guard owns
    /// that mount (and the mountpoint, if the rig created it) and cleans both up on drop.
    pub fn kill_leaving_stale_mount(mut self) -> StaleMount {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its keeper too: the connection ends with the last holder (a crash with no keeper).
        kill_orphaned_keeper(&self.runtime_dir);
        self.detach_on_drop = false;
        let owns_dir = std::mem::replace(&mut self.owned_mountpoint, false);
        StaleMount {
            path: self.mountpoint.clone(),
            owns_dir,
        }
    }

    /// SIGKILLs the daemon and leaves its keeper holding the connection (the mount waits for
    /// the next daemon, which [`Daemon::start_on`] the same directories makes). The returned
    /// guard ends the keeper and detaches the mount on drop unless a live daemon serves it
    /// then: declare it before that successor, so that it is dropped after it.
    pub fn crash(mut self) -> Crashed {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.detach_on_drop = false;
        self.keeper_on_drop = false;
        let owns_dir = std::mem::replace(&mut self.owned_mountpoint, false);
        Crashed {
            mountpoint: self.mountpoint.clone(),
            runtime_dir: self.runtime_dir.clone(),
            owns_dir,
        }
    }

    /// The pid of the keeper holding this daemon's connection, once it has one.
    pub fn keeper_pid(&self) -> Option<u32> {
        keeper_pid(&self.runtime_dir)
    }
}

/// A crashed daemon's directories (see [`Daemon::crash`]).
pub struct Crashed {
    mountpoint: PathBuf,
    runtime_dir: PathBuf,
    owns_dir: bool,
}

impl Drop for Crashed {
    fn drop(&mut self) {
        kill_orphaned_keeper(&self.runtime_dir);
        detach_dead_nsview_mounts(&self.mountpoint);
        if self.owns_dir {
            let _ = std::fs::remove_dir(&self.mountpoint);
        }
    }
}

/// The live keeper of `runtime_dir`, by its pid file, checked against its command line (a
/// pid is never signalled on the strength of a stale file).
fn keeper_pid(runtime_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(runtime_dir.join("keeper.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir = runtime_dir.as_os_str().as_encoded_bytes();
    (args.get(1) == Some(&&b"keeper"[..]) && args.contains(&dir)).then_some(pid)
}

/// Ends the keeper of `runtime_dir` unless a live daemon serves with it (a daemon stopped
/// with SIGTERM has released it and it ends by itself; one killed leaves it holding the
/// mount for its timeout).
fn kill_orphaned_keeper(runtime_dir: &Path) {
    let daemon_alive = std::fs::read_to_string(runtime_dir.join("nsview.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .is_some_and(|cmd| cmd.split(|b| *b == 0).nth(1) == Some(&b"serve"[..]));
    if daemon_alive {
        return;
    }
    if let Some(pid) = keeper_pid(runtime_dir) {
        // SAFETY: kill(2) on a pid just checked to be this runtime dir's keeper.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGTERM, DROP_GRACE);
        }
        if self.keeper_on_drop {
            kill_orphaned_keeper(&self.runtime_dir);
        }
        if self.detach_on_drop {
            detach_dead_nsview_mounts(&self.mountpoint);
        }
        if self.owned_mountpoint {
            let _ = std::fs::remove_dir(&self.mountpoint);
        }
    }
}

/// The stale mount a SIGKILLed daemon left behind. Drop detaches it (if nothing else
/// recovered it meanwhile) and removes the mountpoint if the rig created it.
pub struct StaleMount {
    path: PathBuf,
    owns_dir: bool,
}

impl StaleMount {
    /// The mountpoint, where the stale mount is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StaleMount {
    fn drop(&mut self) {
        detach_dead_nsview_mounts(&self.path);
        if self.owns_dir {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// The topmost mount at `path` if it is an nsview mount.
/// For a hang's report: every thread of `pid` and of its children, and this process's
/// threads waiting in FUSE, each with its state, wait channel and kernel stack.
fn where_threads_are(pid: u32) -> String {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        });
    let mut report = String::new();
    let own = std::process::id();
    for proc_pid in std::iter::once(pid)
        .chain(children)
        .chain(std::iter::once(own))
    {
        let tasks = std::fs::read_dir(format!("/proc/{proc_pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let read =
                |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
            let stack = read("stack");
            if proc_pid == own && !stack.contains("fuse") {
                continue;
            }
            let stat = read("stat");
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("?");
            report.push_str(&format!(
                "{proc_pid}/{} {} {state} wchan={}\n{stack}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan"),
            ));
        }
    }
    report
}

fn topmost_nsview(path: &Path) -> Option<MountEntry> {
    mounts::topmost(&mounts::mounts_at(path))
        .filter(|m| is_nsview(m))
        .cloned()
}

/// Detaches the topmost mount at `path` as long as it is an nsview mount that does not
/// answer: the rig's own daemons are dead by then, so whatever of theirs is left is stale,
/// and a live daemon's mount (another guard's) is never touched. A stale mount some other
/// guard also owns is only detached early; that guard then finds nothing to do.
fn detach_dead_nsview_mounts(path: &Path) {
    mounts::detach_ours(path, |m| {
        is_nsview(m) && list_within(path, PROBE_LIMIT).is_none()
    });
}

/// The names in directory `path`, or `None` on error or when the listing does not finish
/// within `limit` (a FUSE request to a daemon that never answers blocks forever; such a
/// helper thread ends once the daemon is killed).
fn list_within(path: &Path, limit: Duration) -> Option<Vec<OsString>> {
    let path = path.to_path_buf();
    within(limit, move || {
        let names = std::fs::read_dir(&path).ok()?;
        names.map(|e| e.ok().map(|e| e.file_name())).collect()
    })
}

/// `st_dev` of `path` as `major:minor`, or `None` on error or after `limit`.
fn stat_dev_within(path: &Path, limit: Duration) -> Option<(u32, u32)> {
    let path = path.to_path_buf();
    within(limit, move || {
        std::fs::metadata(&path)
            .ok()
            .map(|m| mounts::dev_pair(m.dev()))
    })
}

/// Runs `f` on a helper thread and gives up on it after `limit`.
fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok().flatten()
}
