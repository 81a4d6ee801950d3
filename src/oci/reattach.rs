//! `nsview reattach`: after a daemon restart, replaces the binds a dead daemon left in
//! registered containers (they answer ENOTCONN) with binds of the live mount.
//!
//! The daemon runs it once at start when its runtime dir holds registered containers; an
//! operator can run it at any time. For each registered container whose init still runs it
//! reads `/proc/<init>/mountinfo` (mount points relative to the container's root) and takes
//! every nsview mount there, whatever the hook's annotation had narrowed the list to: the
//! mount's root field names the file it binds. Sources are cloned in this process's mount
//! namespace; then it joins the container's, lazily unmounts each bind that no longer
//! answers and moves the fresh clone onto the same target, resolved beneath the container's
//! root as the hook does (symlinks refused, nothing outside the root touched). Binds that
//! answer are left alone, so running it twice changes nothing.
//!
//! Descriptors a process in the container opened before the restart still point at the dead
//! connection and keep failing with ENOTCONN: only a new `open` reaches the new daemon.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::inject::{self, Bound};
use crate::cli::ReattachArgs;
use crate::control::{CtlRequest, Registered, ctl_send};
use crate::mounts::{MountEntry, mounts_of};
use crate::serve::is_nsview_mount;

/// How many stale mounts stacked on one target are taken off at most.
const MAX_STACKED: usize = 8;

/// What was done for one container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Stale binds replaced.
    pub replaced: usize,
    /// Binds that still answered, left alone.
    pub live: usize,
    /// Targets that failed, with why.
    pub failed: Vec<String>,
}

/// Runs `nsview reattach`: one line per registered container on stdout; an error when the
/// daemon cannot be asked or any container failed.
pub fn run(args: &ReattachArgs) -> Result<(), String> {
    let response = ctl_send(&args.runtime_dir, &CtlRequest::List).map_err(|e| e.to_string())?;
    if !response.ok {
        return Err(response.error.unwrap_or_else(|| "list refused".into()));
    }
    let containers: Vec<Registered> = serde_json::from_value(response.data.unwrap_or_default())
        .map_err(|e| format!("the daemon's container list: {e}"))?;
    let host_ns = std::fs::File::open("/proc/self/ns/mnt")
        .map(OwnedFd::from)
        .map_err(|e| format!("/proc/self/ns/mnt: {e}"))?;
    let mut failures = 0;
    for container in &containers {
        let result = reattach(&args.mountpoint, container);
        // Back to our own mount namespace for the next container's clones, whatever happened.
        nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("returning to nsview's mount namespace: {e}"))?;
        match result {
            Ok(o) if o.failed.is_empty() => println!(
                "{}: reattached ({} replaced, {} live)",
                container.id, o.replaced, o.live
            ),
            Ok(o) => {
                failures += 1;
                println!(
                    "{}: {} replaced, {} live, {} failed: {}",
                    container.id,
                    o.replaced,
                    o.live,
                    o.failed.len(),
                    o.failed.join("; ")
                );
            }
            Err(e) => {
                failures += 1;
                println!("{}: not reattached: {e}", container.id);
            }
        }
    }
    if failures == 0 {
        Ok(())
    } else {
        Err(format!(
            "{failures} of {} containers not fully reattached",
            containers.len()
        ))
    }
}

/// Reattaches one container; leaves this process in the container's mount namespace when it
/// got that far (the caller returns).
pub fn reattach(mountpoint: &Path, container: &Registered) -> Result<Outcome, String> {
    let pidfd = inject::pidfd_of(container.pid, Some(container.start_ticks))?;
    let mounts =
        mounts_of(container.pid).map_err(|e| format!("/proc/{}/mountinfo: {e}", container.pid))?;
    let binds = nsview_binds(&mounts);
    let mut outcome = Outcome::default();
    let mut clones = Vec::new();
    for (target, rel) in binds {
        match inject::clone_tree(&mountpoint.join(&rel)) {
            Ok(tree) => clones.push((target, rel, tree)),
            Err(e) => outcome.failed.push(format!("{}: {e}", target.display())),
        }
    }
    inject::join_mount_namespace(&pidfd)?;
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("the container's root: {e}"))?;
    for (target, rel, tree) in clones {
        match replace(&root, &target, &rel, &tree) {
            Ok(true) => outcome.replaced += 1,
            Ok(false) => outcome.live += 1,
            Err(e) => outcome.failed.push(format!("{}: {e}", target.display())),
        }
    }
    Ok(outcome)
}

/// The nsview binds among `mounts`: (target in the container, path below nsview's mount),
/// one per target (the topmost, which is what a lookup reaches).
pub fn nsview_binds(mounts: &[MountEntry]) -> Vec<(PathBuf, String)> {
    let mut by_target = BTreeMap::new();
    for m in mounts.iter().filter(|m| is_nsview_mount(m)) {
        let Ok(rel) = m.root.strip_prefix("/") else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        // mountinfo lists a mount after the one it sits on: the last per target is on top.
        by_target.insert(m.mount_point.clone(), rel);
    }
    by_target.into_iter().collect()
}

/// Replaces a stale bind at `target` with `tree`: `Ok(false)` when the bind there answers.
fn replace(root: &OwnedFd, target: &Path, rel: &str, tree: &OwnedFd) -> Result<bool, String> {
    let mut removed = 0;
    loop {
        match nix::sys::statfs::statfs(target) {
            Err(nix::errno::Errno::ENOTCONN) if removed < MAX_STACKED => {
                nix::mount::umount2(
                    target,
                    nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
                )
                .map_err(|e| format!("unmounting the stale bind: {e}"))?;
                removed += 1;
            }
            Err(nix::errno::Errno::ENOTCONN) => return Err("too many stale binds stacked".into()),
            Ok(_) if removed == 0 => return Ok(false),
            Ok(_) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(format!("statfs: {e}")),
        }
    }
    let in_root = target
        .strip_prefix("/")
        .map_err(|_| "not an absolute path".to_owned())?
        .to_string_lossy()
        .into_owned();
    match inject::bind(root, &in_root, inject::takes_writes(rel), tree)? {
        Bound::Mounted => Ok(true),
        Bound::Missing => Err("the target is gone".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::parse_mountinfo;

    #[test]
    fn binds_are_the_nsview_mounts_topmost_per_target() {
        let text = "\
            20 1 0:30 / / rw - overlay overlay rw\n\
            21 20 0:22 / /proc rw - proc proc rw\n\
            30 21 0:60 /proc/meminfo /proc/meminfo ro - fuse nsview rw\n\
            31 21 0:60 /proc/sys /proc/sys rw - fuse nsview rw\n\
            32 30 0:61 /proc/meminfo /proc/meminfo ro - fuse nsview rw\n\
            33 21 0:62 /x /proc/cpuinfo ro - fuse other rw\n\
            34 21 0:60 /../etc /proc/stat ro - fuse nsview rw\n";
        let binds = nsview_binds(&parse_mountinfo(text));
        assert_eq!(
            binds,
            [
                (PathBuf::from("/proc/meminfo"), "proc/meminfo".to_owned()),
                (PathBuf::from("/proc/sys"), "proc/sys".to_owned()),
            ]
        );
    }
}
