//! `nsview reattach`: after a daemon restart, replaces the binds a dead daemon left (they
//! answer ENOTCONN) with binds of the live mount.
//!
//! The daemon runs it at every start; an operator can run it at any time. It visits the
//! registered containers, then every other mount namespace owned by the host's user
//! namespace that holds such binds (containers whose runtime bound the files itself,
//! namespaces nested in containers; a namespace owned by another user namespace is its
//! owner's business, and could serve a FUSE mount that never answers). Only binds on a
//! device of this nsview's mounts count (see [`super::devices`]): never a second nsview's.
//! Each namespace is handled in a child process with a deadline, and the whole run has one:
//!
//! 1. read `/proc/<pid>/mountinfo` (mount points relative to the process's root) and find
//!    each stack of our binds on one mount point, topmost first: the binds the hook made and
//!    any the runtime stacked on them (runc's `readonlyPaths` bind `/proc/sys` onto itself
//!    after the hook). Only the files the hook binds are taken. The lazy unmount below takes
//!    every mount beneath a stack along: those are bound again on top of the new one where
//!    they can be made again (LXC's `boot_id` inside `/proc/sys`, see [`super::beneath`]);
//!    a stack with anything else beneath it (a mask inside a bound directory) is left
//!    alone, and so is one inside another FUSE mount, whose server might not answer;
//! 2. clone the sources in nsview's mount namespace, then join the other one;
//! 3. for each stack, open the target beneath the root without following symlinks, check
//!    that it still is a layer mountinfo named (by mount id) and that it answers ENOTCONN,
//!    and unmount it through that descriptor (never by path), layer by layer down to what
//!    lies beneath; then bind the fresh clone there, read-only when any removed layer was (so
//!    a runtime's read-only `/proc/sys` stays read-only).
//!
//! Stacks that answer are left alone, so running it twice changes nothing. Descriptors a
//! process opened before the restart still name the dead connection and keep failing with
//! ENOTCONN: only a new `open` reaches the new daemon.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use serde::{Deserialize, Serialize};

use super::beneath;
use super::devices::{self, Dev};
use super::inject::{self, Bound};
use crate::cli::ReattachArgs;
use crate::control::{CtlRequest, Registered, ctl_send};
use crate::mounts::{MountEntry, mounts_of};
use crate::procfs::ProcRoot;
use crate::serve::is_nsview_mount;

/// How long one container may take.
const DEADLINE: Duration = Duration::from_secs(5);

/// What was done for one container.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Stale binds replaced.
    pub replaced: usize,
    /// Binds that still answered, left alone.
    pub live: usize,
    /// Targets that failed or were left alone, with why.
    pub failed: Vec<String>,
}

/// A stack of nsview binds on one mount point of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The mount point, as the container sees it.
    pub target: PathBuf,
    /// The file of nsview's mount it binds (see [`inject::is_bound_file`]).
    pub rel: String,
    /// Mount ids of the nsview binds stacked there, topmost first.
    pub layers: Vec<u64>,
    /// Whether any of them is read-only.
    pub read_only: bool,
    /// Whether something is mounted beneath the mount point.
    pub covers_mounts: bool,
    /// A FUSE mount (not nsview's) the mount point lies in: reaching it would ask that
    /// filesystem's server, which may never answer.
    pub beneath_fuse: Option<PathBuf>,
    /// The device (`major:minor`) of the topmost bind: which nsview mount it came from.
    pub dev: Dev,
}

/// How long a whole run may take; namespaces left then are reported and skipped.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `nsview reattach`: the registered containers first (a line each), then every other
/// mount namespace on the host that holds nsview binds of the hook's files (binds a user or
/// a runtime made without the hook, `-v /var/lib/nsview/proc/meminfo:/proc/meminfo`, and
/// copies in namespaces nested inside containers; a line each). An error when the daemon
/// cannot be asked or anything failed.
pub fn run(args: &ReattachArgs) -> Result<(), String> {
    let response = ctl_send(&args.runtime_dir, &CtlRequest::List {}).map_err(|e| e.to_string())?;
    if !response.ok {
        return Err(response.error.unwrap_or_else(|| "list refused".into()));
    }
    let containers: Vec<Registered> = serde_json::from_value(response.data.unwrap_or_default())
        .map_err(|e| format!("the daemon's container list: {e}"))?;
    let ours: HashSet<Dev> = devices::load(&args.runtime_dir)
        .into_iter()
        .filter(|d| devices::made_by_root(*d))
        .collect();
    let proc = ProcRoot::default();
    let own = std::process::id();
    // nsview's own namespace: its mount is the daemon's business (`serve` recovers it).
    let mut visited: HashSet<u64> = proc.ns_inode(own, "mnt").into_iter().collect();
    let own_userns = namespace_owner(own);
    let mut jobs: Vec<(String, u32, u64, u64)> = Vec::new();
    for c in &containers {
        if let Ok(ns) = proc.ns_inode(c.pid, "mnt")
            && visited.insert(ns)
        {
            jobs.push((c.id.clone(), c.pid, c.start_ticks, ns));
        }
    }
    // Then every other namespace made by the host's root (one owned by another user
    // namespace is its owner's to fix, and could be serving a FUSE mount that never
    // answers), if it holds binds of ours.
    for (ns, pid) in other_mount_namespaces(&proc, &mut visited) {
        let Ok(ticks) = proc.start_ticks(pid) else {
            continue;
        };
        if own_userns.is_none() || namespace_owner(pid) != own_userns {
            continue;
        }
        if mounts_of(pid).is_ok_and(|m| !stacks(&m, &ours).is_empty()) {
            jobs.push((format!("mount namespace {ns} (pid {pid})"), pid, ticks, ns));
        }
    }
    let started = Instant::now();
    let total = jobs.len();
    let mut failures = 0;
    for (who, pid, ticks, ns) in jobs {
        let result = if started.elapsed() > RUN_DEADLINE {
            Err("skipped: the run took too long".into())
        } else {
            // Mounts of a namespace another user namespace owns are that namespace's root's
            // to make: nothing of theirs is bound again by the host's (see `beneath`).
            let host_owned = own_userns.is_some() && namespace_owner(pid) == own_userns;
            in_child(DEADLINE, || {
                reattach(&args.mountpoint, pid, ticks, ns, &ours, host_owned)
            })
        };
        failures += usize::from(!say(&who, result));
    }
    if failures == 0 {
        Ok(())
    } else {
        Err(format!("{failures} of {total} not fully reattached"))
    }
}

/// The inode of the user namespace owning the mount namespace of `pid` (`NS_GET_USERNS`).
fn namespace_owner(pid: u32) -> Option<u64> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    // NS_GET_USERNS is _IO(0xb7, 0x1).
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: the ioctl takes no argument and returns a new descriptor or -1; `ns` is open.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    let owner = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    rustix::fs::fstat(&owner).ok().map(|st| st.st_ino)
}

/// Prints the line for `who`; whether everything was reattached.
fn say(who: &str, result: Result<Outcome, String>) -> bool {
    let (ok, line) = match result {
        Ok(o) if o.failed.is_empty() => (
            true,
            format!("reattached ({} replaced, {} live)", o.replaced, o.live),
        ),
        Ok(o) => (
            false,
            format!(
                "{} replaced, {} live, {} not: {}",
                o.replaced,
                o.live,
                o.failed.len(),
                o.failed.join("; ")
            ),
        ),
        Err(e) => (false, format!("not reattached: {e}")),
    };
    // The daemon reads these lines; without it there is no one to tell.
    let _ = crate::cli::print_stdout(&format!("{who}: {line}\n"));
    ok
}

/// One process of each mount namespace not in `visited` (which gains them): (namespace
/// inode, pid).
fn other_mount_namespaces(proc: &ProcRoot, visited: &mut HashSet<u64>) -> Vec<(u64, u32)> {
    let mut pids = proc.pids().unwrap_or_default();
    pids.sort_unstable();
    pids.into_iter()
        .filter_map(|pid| {
            let ns = proc.ns_inode(pid, "mnt").ok()?;
            visited.insert(ns).then_some((ns, pid))
        })
        .collect()
}

/// Runs `work` in a forked child (which may join namespaces and change directory freely)
/// and returns its result, or an error when it takes longer than `deadline` (it is killed).
/// The calling process must be single-threaded.
fn in_child(
    deadline: Duration,
    work: impl FnOnce() -> Result<Outcome, String>,
) -> Result<Outcome, String> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: `nsview reattach` is single-threaded (no other thread can hold a lock the
    // child needs), and the child leaves with `_exit` without returning to the caller.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            // Not the parent's stdout and stderr: should the worker ever be stuck where
            // SIGKILL cannot reach it, it must not hold the pipes the daemon reads to EOF.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err("the worker panicked".into()));
            let line = nsview_nsenter::protocol::encode(&result);
            let _ = std::fs::File::from(write_end).write_all(&line);
            // SAFETY: ends the child at once, without running the parent's exit handlers or
            // flushing buffers it inherited.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let answer = read_within(read_end, deadline);
            if answer.is_none() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            reap_within(child, Duration::from_secs(1));
            match answer {
                Some(text) => serde_json::from_slice(&text)
                    .unwrap_or_else(|_| Err("the worker died without an answer".into())),
                None => Err(format!("no answer within {} s", deadline.as_secs())),
            }
        }
    }
}

/// Everything readable from `fd` until EOF, or `None` when that takes longer than `deadline`.
fn read_within(fd: OwnedFd, deadline: Duration) -> Option<Vec<u8>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let end = Instant::now() + deadline;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return None,
        }
        match file.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Reaps `child`, waiting at most `grace` (a process stuck in a FUSE request that was
/// already read by its server ignores SIGKILL): such a child is left to init.
fn reap_within(child: nix::unistd::Pid, grace: Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let end = Instant::now() + grace;
    while let Ok(WaitStatus::StillAlive) = waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reattaches mount namespace `ns` through its process `pid` (checked to have started at
/// `start_ticks` and to still be in `ns`), replacing only stale binds on the devices `ours`:
/// meant for a child process, which it leaves in that namespace.
pub fn reattach(
    mountpoint: &Path,
    pid: u32,
    start_ticks: u64,
    ns: u64,
    ours: &HashSet<Dev>,
    host_owned: bool,
) -> Result<Outcome, String> {
    let pidfd = inject::pidfd_of(pid, Some(start_ticks))?;
    // After the pidfd: the pid cannot have come to name another process meanwhile.
    if ProcRoot::default().ns_inode(pid, "mnt").ok() != Some(ns) {
        return Err(format!("pid {pid} left mount namespace {ns}"));
    }
    let mounts = mounts_of(pid).map_err(|e| format!("/proc/{pid}/mountinfo: {e}"))?;
    let mut outcome = Outcome::default();
    let mut work = Vec::new();
    // Mount points made again with the stack above them (see `beneath`).
    let mut remade: HashSet<PathBuf> = HashSet::new();
    let ours_rel = |m: &MountEntry| {
        (is_nsview_mount(m) && ours.contains(&m.dev))
            .then(|| Some(m.root.strip_prefix("/").ok()?.to_str()?.to_owned()))
            .flatten()
    };
    for stack in stacks(&mounts, ours) {
        if remade.contains(&stack.target) {
            continue;
        }
        if let Some(fuse) = &stack.beneath_fuse {
            outcome.failed.push(format!(
                "{}: lies in the FUSE mount at {}; left alone",
                stack.target.display(),
                fuse.display()
            ));
            continue;
        }
        let plan = match beneath::plan(&mounts, &stack.target, ours_rel) {
            Ok(plan)
                if !host_owned
                    && plan
                        .iter()
                        .any(|r| matches!(r.source, beneath::Source::Container(_))) =>
            {
                outcome.failed.push(format!(
                    "{}: has mounts of another user namespace's beneath it; left alone",
                    stack.target.display()
                ));
                continue;
            }
            Ok(plan) => plan,
            Err(point) => {
                outcome.failed.push(format!(
                    "{}: has {} beneath it, which cannot be made again; left alone",
                    stack.target.display(),
                    point.display()
                ));
                continue;
            }
        };
        // nsview's sources, cloned here in nsview's mount namespace.
        let cloned: Result<Vec<_>, String> = std::iter::once(stack.rel.clone())
            .chain(plan.iter().filter_map(|r| match &r.source {
                beneath::Source::Nsview(rel) => Some(rel.clone()),
                beneath::Source::Container(_) => None,
            }))
            .map(|rel| {
                inject::clone_tree(&mountpoint.join(&rel)).map_err(|e| format!("{rel}: {e}"))
            })
            .collect();
        match cloned {
            Ok(mut trees) => {
                remade.extend(plan.iter().map(|r| r.point.clone()));
                let tree = trees.remove(0);
                work.push((stack, tree, plan, trees));
            }
            Err(e) => outcome
                .failed
                .push(format!("{}: {e}", stack.target.display())),
        }
    }
    // Our own descriptors, reachable after the join: umount through /proc/self/fd/N, mount
    // ids from /proc/self/fdinfo/N.
    let own_dir = |path: &str| {
        rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{path}: {e}"))
    };
    let own_fds = Own {
        fds: own_dir("/proc/self/fd")?,
        fdinfo: own_dir("/proc/self/fdinfo")?,
    };
    inject::join_mount_namespace(&pidfd)?;
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("the container's root: {e}"))?;
    for (stack, tree, plan, nsview_trees) in work {
        // What lies beneath, cloned from where the container sees it before the stack goes.
        let beneath = match beneath::clones(&root, &plan, nsview_trees, open_target) {
            Ok(beneath) => beneath,
            Err(e) => {
                outcome
                    .failed
                    .push(format!("{}: {e}; left alone", stack.target.display()));
                continue;
            }
        };
        match replace(&root, &own_fds, &stack, &tree) {
            Ok(true) => {
                outcome.replaced += 1;
                for (rel, writable, tree) in beneath {
                    match inject::bind(&root, &rel, writable, &tree) {
                        Ok(Bound::Mounted) => outcome.replaced += 1,
                        Ok(Bound::Missing) => outcome.failed.push(format!(
                            "/{rel}: gone from the new {}",
                            stack.target.display()
                        )),
                        Err(e) => outcome.failed.push(format!("/{rel}: {e}")),
                    }
                }
            }
            Ok(false) => outcome.live += 1,
            Err(e) => outcome
                .failed
                .push(format!("{}: {e}", stack.target.display())),
        }
    }
    Ok(outcome)
}

/// The stacks of binds on the devices `ours` among `mounts` whose topmost mount is such a
/// bind of a file the hook binds. O(n log n) in the mounts: a namespace may hold many.
pub fn stacks(mounts: &[MountEntry], ours: &HashSet<Dev>) -> Vec<Stack> {
    fn file_of<'m>(m: &'m MountEntry, ours: &HashSet<Dev>) -> Option<&'m str> {
        if !is_nsview_mount(m) || !ours.contains(&m.dev) {
            return None;
        }
        let rel = m.root.strip_prefix("/").ok()?.to_str()?;
        inject::is_bound_file(rel).then_some(rel)
    }
    let file_of = |m| file_of(m, ours);
    let points: BTreeSet<&Path> = mounts
        .iter()
        .filter(|m| file_of(m).is_some())
        .map(|m| m.mount_point.as_path())
        .collect();
    let mut at: BTreeMap<&Path, Vec<&MountEntry>> = BTreeMap::new();
    for m in mounts
        .iter()
        .filter(|m| points.contains(m.mount_point.as_path()))
    {
        at.entry(m.mount_point.as_path()).or_default().push(m);
    }
    let all_points: BTreeSet<&Path> = mounts.iter().map(|m| m.mount_point.as_path()).collect();
    let other_fuse: BTreeSet<&Path> = mounts
        .iter()
        .filter(|m| m.fstype.split('.').next() == Some("fuse") && !is_nsview_mount(m))
        .map(|m| m.mount_point.as_path())
        .collect();
    let mut out = Vec::new();
    for (target, here) in at {
        // The topmost: the one no other mount here sits on.
        let Some(top) = here
            .iter()
            .find(|m| !here.iter().any(|o| o.parent_id == m.mount_id))
        else {
            continue;
        };
        let Some(rel) = file_of(top) else { continue };
        let (mut layers, mut read_only, mut layer) = (Vec::new(), false, *top);
        // Down through the binds of the same file, at most one step per mount here.
        for _ in 0..here.len() {
            if file_of(layer) != Some(rel) {
                break;
            }
            layers.push(u64::from(layer.mount_id));
            read_only |= layer.read_only();
            match here.iter().find(|m| m.mount_id == layer.parent_id) {
                Some(below) => layer = below,
                None => break,
            }
        }
        let covers_mounts = all_points
            .range::<Path, _>((
                std::ops::Bound::Excluded(target),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|p| p.starts_with(target));
        let beneath_fuse = target
            .ancestors()
            .skip(1)
            .find(|a| other_fuse.contains(a))
            .map(Path::to_path_buf);
        out.push(Stack {
            target: target.to_path_buf(),
            rel: rel.to_owned(),
            layers,
            read_only,
            covers_mounts,
            beneath_fuse,
            dev: top.dev,
        });
    }
    out
}

/// Replaces the stale stack `stack` with `tree`: `Ok(false)` when its topmost bind answers.
fn replace(root: &OwnedFd, own_fds: &Own, stack: &Stack, tree: &OwnedFd) -> Result<bool, String> {
    let in_root = stack
        .target
        .strip_prefix("/")
        .map_err(|_| "not an absolute path".to_owned())?
        .to_string_lossy()
        .into_owned();
    let mut removed = 0;
    let mut trouble = None;
    // At most one unmount per layer mountinfo showed (mount ids are reused).
    for _ in 0..stack.layers.len() {
        match peel(root, own_fds, stack, &in_root) {
            Ok(Peeled::Stale) => removed += 1,
            Ok(Peeled::Live) if removed == 0 => return Ok(false),
            // A live bind of ours beneath the stale ones serves the file already.
            Ok(Peeled::Live) => return Ok(true),
            Ok(Peeled::NotOurs) if removed == 0 => {
                return Err("changed since its mountinfo was read; left alone".into());
            }
            Ok(Peeled::NotOurs) => break,
            Err(e) if removed == 0 => return Err(e),
            // Some layers are gone already: bind anyway, with the removed ones' read-only.
            Err(e) => {
                trouble = Some(e);
                break;
            }
        }
    }
    let writable = inject::takes_writes(&stack.rel) && !stack.read_only;
    match (inject::bind(root, &in_root, writable, tree)?, trouble) {
        (Bound::Mounted, None) => Ok(true),
        (Bound::Mounted, Some(e)) => Err(format!("{e}; bound on top of what was left")),
        (Bound::Missing, _) => Err("the target is gone".into()),
    }
}

/// What [`peel`] found on top of a target.
enum Peeled {
    /// A stale layer of the stack, now unmounted.
    Stale,
    /// A layer of the stack that answers.
    Live,
    /// No layer of the stack.
    NotOurs,
}

/// Looks at the topmost mount on the target and unmounts it if it is a stale layer.
fn peel(root: &OwnedFd, own: &Own, stack: &Stack, in_root: &str) -> Result<Peeled, String> {
    let target = open_target(root, in_root)?;
    if !stack.layers.contains(&mount_id(own, &target)?) {
        return Ok(Peeled::NotOurs);
    }
    match rustix::fs::fstatfs(&target) {
        Ok(_) => Ok(Peeled::Live),
        Err(rustix::io::Errno::NOTCONN) => {
            unmount(&own.fds, &target)?;
            Ok(Peeled::Stale)
        }
        Err(e) => Err(format!("statfs: {e}")),
    }
}

/// This process's `/proc/self/fd` and `/proc/self/fdinfo`, opened before it joined a
/// container's mount namespace (whose procfs does not show it).
struct Own {
    fds: OwnedFd,
    fdinfo: OwnedFd,
}

/// The id of the mount `target` is on, from its fdinfo: no request reaches the filesystem
/// (statx asks a FUSE daemon for attributes on older kernels, which a dead one answers with
/// ENOTCONN, and a stuck one never).
fn mount_id(own: &Own, target: &OwnedFd) -> Result<u64, String> {
    let name = target.as_raw_fd().to_string();
    let fd = rustix::fs::openat(
        &own.fdinfo,
        name.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("fdinfo: {e}"))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)
        .map_err(|e| format!("fdinfo: {e}"))?;
    parse_mnt_id(&text).ok_or_else(|| "fdinfo: no mnt_id".to_owned())
}

/// The `mnt_id:` field of an fdinfo text.
fn parse_mnt_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The mount point `rel` beneath `root`, opened O_PATH without following any symlink.
pub(super) fn open_target(root: &OwnedFd, rel: &str) -> Result<OwnedFd, String> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    openat2(
        root,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )
    .map_err(|e| format!("opening it beneath the container's root: {e}"))
}

/// Lazily unmounts the mount whose root `target` is, through `/proc/self/fd/<target>` (the
/// directory `own_fds`): no path is resolved again, so nothing can swap the mount meanwhile.
fn unmount(own_fds: &OwnedFd, target: &OwnedFd) -> Result<(), String> {
    nix::unistd::fchdir(own_fds).map_err(|e| format!("fchdir: {e}"))?;
    nix::mount::umount2(
        target.as_raw_fd().to_string().as_str(),
        nix::mount::MntFlags::MNT_DETACH,
    )
    .map_err(|e| format!("unmounting the stale bind: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_id_comes_from_fdinfo() {
        assert_eq!(
            parse_mnt_id("pos:\t0\nflags:\t02000000\nmnt_id:\t29\nino:\t1\n"),
            Some(29)
        );
        assert_eq!(parse_mnt_id("pos:\t0\n"), None);
        // And agrees with statx for this process's own root.
        let own = Own {
            fds: rustix::fs::open(
                "/proc/self/fd",
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap(),
            fdinfo: rustix::fs::open(
                "/proc/self/fdinfo",
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap(),
        };
        let root = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let statx = rustix::fs::statx(
            &root,
            "",
            rustix::fs::AtFlags::EMPTY_PATH,
            rustix::fs::StatxFlags::MNT_ID,
        )
        .unwrap();
        assert_eq!(mount_id(&own, &root).unwrap(), statx.stx_mnt_id);
    }
    use crate::mounts::parse_mountinfo;

    #[test]
    fn stacks_are_binds_of_our_devices_and_known_files_topmost_first() {
        let text = "\
            20 1 0:30 / / rw - overlay overlay rw\n\
            21 20 0:22 / /proc rw - proc proc rw\n\
            30 21 0:60 /proc/meminfo /proc/meminfo ro - fuse nsview rw\n\
            31 21 0:60 /proc/sys /proc/sys rw - fuse nsview rw\n\
            32 31 0:60 /proc/sys /proc/sys ro - fuse nsview rw\n\
            33 21 0:62 /x /proc/cpuinfo ro - fuse other rw\n\
            34 21 0:60 /../etc /proc/stat ro - fuse nsview rw\n\
            35 21 0:60 / /proc/uptime ro - fuse nsview rw\n\
            36 21 0:60 /proc/loadavg /proc/loadavg ro - fuse nsview rw\n\
            37 36 0:5 / /proc/loadavg rw - tmpfs tmpfs rw\n\
            38 21 0:61 /proc/diskstats /proc/diskstats ro - fuse nsview rw\n\
            40 20 0:23 / /sys rw - sysfs sysfs rw\n\
            41 40 0:60 /sys/devices/system/cpu /sys/devices/system/cpu ro - fuse nsview rw\n\
            42 41 0:24 / /sys/devices/system/cpu/cpu0 ro - tmpfs tmpfs rw\n\
            50 20 0:70 / /home rw - fuse.sshfs sshfs rw\n\
            51 50 0:60 /proc/swaps /home/u/swaps ro - fuse nsview rw\n";
        let ours = HashSet::from([(0, 60)]);
        let found = stacks(&parse_mountinfo(text), &ours);
        let by_target = |t: &str| found.iter().find(|s| s.target == Path::new(t)).cloned();
        assert_eq!(
            by_target("/proc/meminfo"),
            Some(Stack {
                target: "/proc/meminfo".into(),
                rel: "proc/meminfo".into(),
                layers: vec![30],
                read_only: true,
                covers_mounts: false,
                beneath_fuse: None,
                dev: (0, 60),
            })
        );
        // runc's read-only bind of /proc/sys onto the hook's: both go, and ro is kept.
        let sys = by_target("/proc/sys").unwrap();
        assert_eq!((sys.layers, sys.read_only), (vec![32, 31], true));
        // Not nsview's, outside its files, the whole mount, covered by another mount, or
        // another device (a second nsview's).
        for t in [
            "/proc/cpuinfo",
            "/proc/stat",
            "/proc/uptime",
            "/proc/loadavg",
            "/proc/diskstats",
        ] {
            assert_eq!(by_target(t), None, "{t}");
        }
        assert!(by_target("/sys/devices/system/cpu").unwrap().covers_mounts);
        assert_eq!(
            by_target("/home/u/swaps").unwrap().beneath_fuse,
            Some(PathBuf::from("/home"))
        );
        assert_eq!(found.len(), 4);
        assert!(stacks(&parse_mountinfo(text), &HashSet::new()).is_empty());
    }
}
