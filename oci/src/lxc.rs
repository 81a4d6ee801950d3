//! `nsview lxc-hook`: LXC's `lxc.hook.mount` and `lxc.hook.post-stop` (LXC has no OCI hooks;
//! `deploy/lxc/nsview.conf` sets both). LXC names the container in `LXC_NAME` and says which
//! hook it is in its arguments (`NAME lxc TYPE`) or, with `lxc.hook.version = 1`, in
//! `LXC_HOOK_TYPE`.
//!
//! - `mount` runs in the container's namespaces once LXC has mounted its `/proc` and `/sys`
//!   under `LXC_ROOTFS_MOUNT`, before `pivot_root`: the hook clones nsview's files (its mount
//!   is visible in the container's fresh mount namespace), registers the container by its
//!   init (the hook's parent) and binds the clones, as the OCI hook does. Each bind is only
//!   as writable as what it covers: LXC's `proc:mixed` makes `/proc/sys` read-only with a
//!   writable `/proc/sys/net` beneath, so nsview's `/proc/sys` goes on read-only and its
//!   `/proc/sys/net` writable on top, where `proc:rw` gets a writable `/proc/sys`.
//! - `post-stop` unregisters the container.
//!
//! As for the OCI hook, an unprivileged run (an unprivileged container's hooks run as root
//! of its user namespace) tries nothing, and `--optional` forgives that and an absent nsview.

use std::os::fd::OwnedFd;
use std::path::Path;

use super::hook::{HookError, clone_sources, register_and_bind, unprivileged};
use super::inject::{self, Bound, DEFAULT_FILES};
use crate::cli::LxcHookArgs;
use nsview_proto::control::{Connection, CtlRequest, send as ctl_send};

/// Runs the hook LXC's environment names; `Err` is the one-line message.
pub fn run(args: &LxcHookArgs) -> Result<(), HookError> {
    let var = |name: &'static str| std::env::var(name).map_err(|_| HookError::LxcVar(name));
    // lxc.hook.version 0 (the default) passes the name, the section and the hook type as
    // arguments; version 1 sets LXC_HOOK_TYPE instead.
    let kind = std::env::var("LXC_HOOK_TYPE")
        .ok()
        .or_else(|| args.lxc_args.get(2).cloned())
        .ok_or(HookError::NoLxcHookType)?;
    let name = var("LXC_NAME")?;
    let result = match (unprivileged(), kind.as_str()) {
        (Some(how), _) => Err(HookError::Unprivileged(how)),
        (None, "mount") => mount(args, &name, Path::new(&var("LXC_ROOTFS_MOUNT")?)),
        (None, "post-stop" | "stop") => ctl_send(
            &args.daemon.runtime_dir,
            &CtlRequest::Unregister { id: name.clone() },
        )
        .map(drop)
        .map_err(HookError::from),
        (None, other) => Err(HookError::LxcHookType(other.into())),
    };
    match result {
        Err(e) if args.daemon.optional && e.forgiven_by_optional() => {
            eprintln!(
                "nsview lxc-hook: {}; {name} goes on without nsview",
                nsview_proto::chain(&e)
            );
            Ok(())
        }
        result => result,
    }
}

/// The `mount` hook: register and bind, each bind no more writable than what it covers.
fn mount(args: &LxcHookArgs, name: &str, rootfs: &Path) -> Result<(), HookError> {
    // We're dealing with mount points: LXC's rootfs mount may be reached through a link.
    let rootfs = rootfs
        .canonicalize()
        .map_err(|source| HookError::LxcRootfs {
            path: rootfs.to_owned(),
            source,
        })?;
    // "self": getpid() is this process's pid in the container's pid namespace, while the
    // procfs at /proc is still the host's.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| nsview_core::mounts::parse_mountinfo(&text))
        .map_err(HookError::Mountinfo)?;
    let files: Vec<(&'static str, bool)> = DEFAULT_FILES
        .iter()
        .map(|&(rel, writable)| (rel, writable && !read_only_at(&mounts, &rootfs.join(rel))))
        .collect();
    // Writable mounts LXC made below a read-only one nsview covers (proc:mixed's
    // /proc/sys/net): nsview's file there goes on top, writable.
    let reopened: Vec<String> = files
        .iter()
        .filter(|&&(rel, writable)| !writable && inject::takes_writes(rel))
        .flat_map(|&(rel, _)| writable_below(&mounts, &rootfs, rel))
        .collect();
    let mut clones = clone_sources(&args.daemon.mountpoint, files)?;
    for rel in &reopened {
        let path = args.daemon.mountpoint.join(rel);
        let tree =
            inject::clone_tree(&path).map_err(|source| HookError::CloneSource { path, source })?;
        let bind = inject::Bind {
            source: rel.clone(),
            target: rel.clone(),
            writable: true,
        };
        clones.push((bind, tree));
    }
    let mut daemon = Connection::open(&args.daemon.runtime_dir)?;
    // The hook's parent is the container's init, waiting for its hooks before it execs.
    let init = parent_pid().map_err(HookError::LxcInit)?;
    register_and_bind(&mut daemon, name, init, true, || {
        bind_all(&inject::open_rootfs(&rootfs)?, clones)
    })
}

/// Binds every clone under `root` (the current mount namespace's): what was bound and
/// what skipped.
fn bind_all(
    root: &OwnedFd,
    clones: super::hook::Clones,
) -> Result<(Vec<String>, Vec<String>), HookError> {
    let (mut bound, mut skipped) = (Vec::new(), Vec::new());
    for (bind, tree) in clones {
        let rel = bind.target.as_str();
        match inject::bind(root, rel, bind.writable, &tree)? {
            Bound::Mounted => bound.push(format!("/{rel}")),
            Bound::Missing => skipped.push(format!("/{rel}")),
        }
    }
    Ok((bound, skipped))
}

/// Whether the mount that `path` lies in (the last one mounted at it or above it) is
/// read-only.
fn read_only_at(mounts: &[nsview_core::mounts::MountEntry], path: &Path) -> bool {
    mounts
        .iter()
        .rev()
        .find(|m| path.starts_with(&m.mount_point))
        .is_some_and(nsview_core::mounts::MountEntry::read_only)
}

/// The paths (relative to `rootfs`, below `rel`) where a writable mount lies.
fn writable_below(
    mounts: &[nsview_core::mounts::MountEntry],
    rootfs: &Path,
    rel: &str,
) -> Vec<String> {
    let top = rootfs.join(rel);
    let mut out: Vec<String> = mounts
        .iter()
        .filter(|m| m.mount_point != top && m.mount_point.starts_with(&top) && !m.read_only())
        .filter_map(|m| {
            let below = m.mount_point.strip_prefix(rootfs).ok()?;
            Some(below.to_str()?.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// This process's parent, by its host pid (the procfs at `/proc` before `pivot_root` is the
/// host's).
fn parent_pid() -> std::io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no PPid in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(point: &str, options: &str) -> nsview_core::mounts::MountEntry {
        let line = format!("1 0 0:1 / {point} {options} - proc proc rw");
        nsview_core::mounts::parse_mountinfo(&line).remove(0)
    }

    #[test]
    fn proc_mixed_reads_as_a_read_only_proc_sys_with_a_writable_net() {
        let r = "/r";
        let mounts = [
            entry("/r/proc", "rw,nosuid"),
            entry("/r/proc/sys", "ro,relatime"),
            entry("/r/proc/sys/net", "rw,nosuid"),
            entry("/r/proc/sys/kernel/random/boot_id", "ro"),
        ];
        assert!(read_only_at(&mounts, Path::new("/r/proc/sys")));
        assert!(!read_only_at(&mounts, Path::new("/r/proc/meminfo")));
        assert_eq!(
            writable_below(&mounts, Path::new(r), "proc/sys"),
            ["proc/sys/net"]
        );
        // proc:rw: nothing read-only, nothing to reopen.
        let rw = [entry("/r/proc", "rw")];
        assert!(!read_only_at(&rw, Path::new("/r/proc/sys")));
        assert!(writable_below(&rw, Path::new(r), "proc/sys").is_empty());
    }
}
