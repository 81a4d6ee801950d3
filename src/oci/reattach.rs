//! `nsview reattach`: after a daemon restart, replaces the binds a dead daemon left in
//! registered containers (they answer ENOTCONN) with binds of the live mount.
//!
//! The daemon runs it once at start when its runtime dir holds registered containers; an
//! operator can run it at any time. For each registered container whose init still runs, in a
//! child process with a deadline (so one container cannot stall the others):
//!
//! 1. read `/proc/<init>/mountinfo` (mount points relative to the container's root) and find
//!    each stack of nsview binds on one mount point, topmost first: the binds the hook made
//!    and any the runtime stacked on them (runc's `readonlyPaths` bind `/proc/sys` onto
//!    itself after the hook). Only the files the hook binds are taken, whatever the
//!    annotation had narrowed the list to; a stack with anything mounted beneath it (a mask
//!    inside a bound directory) is left alone, since a lazy unmount would take that too;
//! 2. clone the sources in nsview's mount namespace, then join the container's;
//! 3. for each stack, open the target beneath the container's root without following
//!    symlinks, check that it still is the topmost bind mountinfo named (by mount id) and
//!    that it answers ENOTCONN, and unmount it through that descriptor (never by path), layer
//!    by layer down to what lies beneath; then bind the fresh clone there, read-only when any
//!    removed layer was (so a runtime's read-only `/proc/sys` stays read-only).
//!
//! Stacks that answer are left alone, so running it twice changes nothing. Descriptors a
//! process in the container opened before the restart still name the dead connection and
//! keep failing with ENOTCONN: only a new `open` reaches the new daemon.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags, openat2, statx};
use serde::{Deserialize, Serialize};

use super::inject::{self, Bound, DEFAULT_FILES};
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
    /// The file of nsview's mount it binds (an entry of [`DEFAULT_FILES`]).
    pub rel: &'static str,
    /// Mount ids of the nsview binds stacked there, topmost first.
    pub layers: Vec<u64>,
    /// Whether any of them is read-only.
    pub read_only: bool,
    /// Whether something is mounted beneath the mount point.
    pub covers_mounts: bool,
    /// The device (`major:minor`) of the topmost bind: which nsview mount it came from.
    pub dev: Dev,
}

/// A filesystem's device number, `(major, minor)`.
pub type Dev = (u32, u32);

/// How many of nsview's past mounts [`our_devices`] remembers.
const DEVICES_KEPT: usize = 8;

/// Runs `nsview reattach`: the registered containers first (a line each), then every other
/// mount namespace on the host that holds nsview binds of the hook's files (binds a user or
/// a runtime made without the hook, `-v /var/lib/nsview/proc/meminfo:/proc/meminfo`, and
/// copies in namespaces nested inside containers; a line each). An error when the daemon
/// cannot be asked or anything failed.
pub fn run(args: &ReattachArgs) -> Result<(), String> {
    let response = ctl_send(&args.runtime_dir, &CtlRequest::List).map_err(|e| e.to_string())?;
    if !response.ok {
        return Err(response.error.unwrap_or_else(|| "list refused".into()));
    }
    let containers: Vec<Registered> = serde_json::from_value(response.data.unwrap_or_default())
        .map_err(|e| format!("the daemon's container list: {e}"))?;
    let ours = our_devices(&args.mountpoint, &args.runtime_dir)?;
    let proc = ProcRoot::default();
    // nsview's own namespace: its mount is the daemon's business (`serve` recovers it).
    let mut visited: HashSet<u64> = proc
        .ns_inode(std::process::id(), "mnt")
        .into_iter()
        .collect();
    let (mut failures, mut total) = (0, 0);
    for container in &containers {
        visited.extend(proc.ns_inode(container.pid, "mnt").ok());
        let result = in_child(DEADLINE, || {
            reattach(
                &args.mountpoint,
                container.pid,
                Some(container.start_ticks),
                None,
            )
        });
        failures += usize::from(!say(&container.id, result));
        total += 1;
    }
    for (ns, pid) in other_mount_namespaces(&proc, &mut visited) {
        // Only binds of this nsview's mounts (another nsview's are its business).
        let has_binds =
            mounts_of(pid).is_ok_and(|m| stacks(&m).iter().any(|s| ours.contains(&s.dev)));
        if !has_binds {
            continue;
        }
        let ticks = proc.start_ticks(pid).ok();
        let result = in_child(DEADLINE, || {
            reattach(&args.mountpoint, pid, ticks, Some(&ours))
        });
        failures += usize::from(!say(&format!("mount namespace {ns} (pid {pid})"), result));
        total += 1;
    }
    if failures == 0 {
        Ok(())
    } else {
        Err(format!("{failures} of {total} not fully reattached"))
    }
}

/// The devices of this nsview's mounts: the live one at `mountpoint` and the last few before
/// it, kept in `<runtime_dir>/mounts` (which gains the live one). Stale binds on these
/// devices are this nsview's to replace.
fn our_devices(mountpoint: &Path, runtime_dir: &Path) -> Result<HashSet<Dev>, String> {
    let st = rustix::fs::stat(mountpoint)
        .map_err(|e| format!("nsview's mount at {}: {e}", mountpoint.display()))?;
    let current = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let path = runtime_dir.join("mounts");
    let mut devices: Vec<Dev> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (major, minor) = l.trim().split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .filter(|d| *d != current)
        .collect();
    devices.push(current);
    let keep = devices.len().saturating_sub(DEVICES_KEPT);
    devices.drain(..keep);
    let text: String = devices.iter().map(|(a, b)| format!("{a}:{b}\n")).collect();
    let tmp = runtime_dir.join("mounts.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(devices.into_iter().collect())
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
    println!("{who}: {line}");
    ok
}

/// One process of each mount namespace not in `visited` (which gains them): (namespace
/// inode, pid).
fn other_mount_namespaces(proc: &ProcRoot, visited: &mut HashSet<u64>) -> Vec<(u64, u32)> {
    let Ok(entries) = std::fs::read_dir(proc.path()) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
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
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err("the worker panicked".into()));
            let mut line = serde_json::to_vec(&result).unwrap_or_default();
            line.push(b'\n');
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
            let _ = nix::sys::wait::waitpid(child, None);
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
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return None,
            Ok(_) | Err(Errno::EINTR) => {}
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

/// Reattaches the mount namespace of process `pid` (checked to have started at
/// `start_ticks`): meant for a child process, which it leaves in that namespace.
/// With `only`, only stacks whose topmost bind is on one of those devices are touched.
pub fn reattach(
    mountpoint: &Path,
    pid: u32,
    start_ticks: Option<u64>,
    only: Option<&HashSet<Dev>>,
) -> Result<Outcome, String> {
    let pidfd = inject::pidfd_of(pid, start_ticks)?;
    let mounts = mounts_of(pid).map_err(|e| format!("/proc/{pid}/mountinfo: {e}"))?;
    let mut outcome = Outcome::default();
    let mut work = Vec::new();
    let mine = |s: &Stack| only.is_none_or(|devs| devs.contains(&s.dev));
    for stack in stacks(&mounts).into_iter().filter(mine) {
        if stack.covers_mounts {
            outcome.failed.push(format!(
                "{}: has mounts beneath it; left alone",
                stack.target.display()
            ));
            continue;
        }
        match inject::clone_tree(&mountpoint.join(stack.rel)) {
            Ok(tree) => work.push((stack, tree)),
            Err(e) => outcome
                .failed
                .push(format!("{}: {e}", stack.target.display())),
        }
    }
    // Our own descriptors, reachable after the join: umount through /proc/self/fd/N.
    let own_fds = rustix::fs::open(
        "/proc/self/fd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("/proc/self/fd: {e}"))?;
    inject::join_mount_namespace(&pidfd)?;
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("the container's root: {e}"))?;
    for (stack, tree) in work {
        match replace(&root, &own_fds, &stack, &tree) {
            Ok(true) => outcome.replaced += 1,
            Ok(false) => outcome.live += 1,
            Err(e) => outcome
                .failed
                .push(format!("{}: {e}", stack.target.display())),
        }
    }
    Ok(outcome)
}

/// The stacks of nsview binds among `mounts` whose topmost mount is nsview's and binds a file
/// the hook binds.
pub fn stacks(mounts: &[MountEntry]) -> Vec<Stack> {
    let mut at: BTreeMap<&Path, Vec<&MountEntry>> = BTreeMap::new();
    for m in mounts {
        at.entry(m.mount_point.as_path()).or_default().push(m);
    }
    let mut out = Vec::new();
    for (target, here) in &at {
        if !here.iter().any(|m| is_nsview_mount(m)) {
            continue;
        }
        // The topmost: the one no other mount here sits on.
        let Some(mut top) = here
            .iter()
            .find(|m| !here.iter().any(|o| o.parent_id == m.mount_id))
        else {
            continue;
        };
        let mut layers = Vec::new();
        let mut read_only = false;
        let mut rel = None;
        while is_nsview_mount(top) {
            let file = top
                .root
                .strip_prefix("/")
                .ok()
                .and_then(|r| DEFAULT_FILES.iter().find(|(f, _)| Path::new(f) == r));
            let Some((file, _)) = file else { break };
            if rel.is_some_and(|r| r != *file) {
                break;
            }
            rel = Some(*file);
            layers.push(u64::from(top.mount_id));
            read_only |= top.read_only();
            match here.iter().find(|m| m.mount_id == top.parent_id) {
                Some(below) => top = below,
                None => break,
            }
        }
        let Some(rel) = rel else { continue };
        let layers_top = layers[0];
        let covers_mounts = mounts
            .iter()
            .any(|m| m.mount_point.starts_with(target) && m.mount_point != **target);
        out.push(Stack {
            target: target.to_path_buf(),
            rel,
            layers,
            read_only,
            covers_mounts,
            dev: here
                .iter()
                .find(|m| u64::from(m.mount_id) == layers_top)
                .map_or((0, 0), |m| m.dev),
        });
    }
    out
}

/// Replaces the stale stack `stack` with `tree`: `Ok(false)` when its topmost bind answers.
fn replace(
    root: &OwnedFd,
    own_fds: &OwnedFd,
    stack: &Stack,
    tree: &OwnedFd,
) -> Result<bool, String> {
    let in_root = stack
        .target
        .strip_prefix("/")
        .map_err(|_| "not an absolute path".to_owned())?
        .to_string_lossy()
        .into_owned();
    let mut removed = 0;
    loop {
        let target = open_target(root, &in_root)?;
        let id = statx(&target, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
            .map_err(|e| format!("statx: {e}"))?
            .stx_mnt_id;
        if !stack.layers.contains(&id) {
            if removed == 0 {
                return Err("changed since its mountinfo was read; left alone".into());
            }
            break;
        }
        match rustix::fs::fstatfs(&target) {
            Ok(_) if removed == 0 => return Ok(false),
            // A live bind of ours beneath the stale ones: it serves the file already.
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::NOTCONN) => unmount(own_fds, &target)?,
            Err(e) => return Err(format!("statfs: {e}")),
        }
        removed += 1;
    }
    let writable = inject::takes_writes(stack.rel) && !stack.read_only;
    match inject::bind(root, &in_root, writable, tree)? {
        Bound::Mounted => Ok(true),
        Bound::Missing => Err("the target is gone".into()),
    }
}

/// The mount point `rel` beneath `root`, opened O_PATH without following any symlink.
fn open_target(root: &OwnedFd, rel: &str) -> Result<OwnedFd, String> {
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
    use crate::mounts::parse_mountinfo;

    #[test]
    fn stacks_are_the_nsview_binds_of_known_files_topmost_first() {
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
            40 20 0:23 / /sys rw - sysfs sysfs rw\n\
            41 40 0:60 /sys/devices/system/cpu /sys/devices/system/cpu ro - fuse nsview rw\n\
            42 41 0:24 / /sys/devices/system/cpu/cpu0 ro - tmpfs tmpfs rw\n";
        let found = stacks(&parse_mountinfo(text));
        let by_target = |t: &str| found.iter().find(|s| s.target == Path::new(t)).cloned();
        assert_eq!(
            by_target("/proc/meminfo"),
            Some(Stack {
                target: "/proc/meminfo".into(),
                rel: "proc/meminfo",
                layers: vec![30],
                read_only: true,
                covers_mounts: false,
                dev: (0, 60),
            })
        );
        // runc's read-only bind of /proc/sys onto the hook's: both go, and ro is kept.
        let sys = by_target("/proc/sys").unwrap();
        assert_eq!((sys.layers, sys.read_only), (vec![32, 31], true));
        // Not nsview's, outside its files, the whole mount, or covered by another mount.
        for t in [
            "/proc/cpuinfo",
            "/proc/stat",
            "/proc/uptime",
            "/proc/loadavg",
        ] {
            assert_eq!(by_target(t), None, "{t}");
        }
        assert!(by_target("/sys/devices/system/cpu").unwrap().covers_mounts);
        assert_eq!(found.len(), 3);
    }
}
