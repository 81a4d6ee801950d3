//! Putting nsview's files into a container's mount namespace, safely; shared by the hook
//! (before `pivot_root`, under the bundle's rootfs) and by reattach (after it, under the
//! container's root).
//!
//! Each source is cloned from the caller's mount namespace with `open_tree(OPEN_TREE_CLONE)`
//! first; then the caller joins the container's mount namespace through a pidfd, resolves
//! each target beneath the root with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)` (a
//! symlinked target is refused, a missing one skipped, nothing outside the root is ever
//! touched: the bug class of LXC CVE-2015-1335 and the runc symlink races), makes the clone
//! read-only where the file takes no writes, and `move_mount`s it onto the target.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

/// The files bound by default: (path below the mountpoint and the rootfs, writable).
pub const DEFAULT_FILES: &[(&str, bool)] = &[
    ("proc/cpuinfo", false),
    ("proc/meminfo", false),
    ("proc/stat", false),
    ("proc/uptime", false),
    ("proc/loadavg", false),
    ("proc/diskstats", false),
    ("proc/swaps", false),
    ("proc/slabinfo", false),
    ("proc/pressure/cpu", false),
    ("proc/pressure/memory", false),
    ("proc/pressure/io", false),
    ("proc/sys", true),
    ("sys/devices/system/cpu", false),
    ("sys/devices/system/node", false),
    ("sys/kernel", false),
    ("sys/devices/virtual/net", false),
    ("sys/devices/virtual/dmi/id/product_uuid", false),
    ("sys/module/nf_conntrack/parameters/hashsize", true),
];

/// Whether a bind of `rel` (a path below the mountpoint, `""` for all of it) must stay
/// writable: it is, or holds, a file that takes writes.
pub fn takes_writes(rel: &str) -> bool {
    DEFAULT_FILES.iter().any(|(file, writable)| {
        *writable
            && (rel.is_empty()
                || *file == rel
                || file.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
                || rel.strip_prefix(file).is_some_and(|r| r.starts_with('/')))
    })
}

/// A detached copy of the mount at `source` (`open_tree(OPEN_TREE_CLONE)`), made in the
/// caller's mount namespace; dropping it unmounts it.
pub fn clone_tree(source: &Path) -> std::io::Result<OwnedFd> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    Ok(open_tree(CWD, source, flags)?)
}

/// A pidfd for `pid`, checked to still be the process that started at `start_ticks` (when
/// given): after the check the pidfd cannot come to name another process.
pub fn pidfd_of(pid: u32, start_ticks: Option<u64>) -> Result<OwnedFd, String> {
    let raw = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| format!("pid {pid} is not a process id"))?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(
        |e| match e {
            rustix::io::Errno::SRCH => format!("the container's init (pid {pid}) does not exist"),
            e => format!("pidfd of pid {pid}: {e}"),
        },
    )?;
    if let Some(expected) = start_ticks {
        let now = crate::procfs::ProcRoot::default().start_ticks(pid).ok();
        if now != Some(expected) {
            return Err(format!(
                "pid {pid} is no longer the container's init (it exited)"
            ));
        }
    }
    Ok(pidfd)
}

/// Joins the mount namespace of the process behind `pidfd` (root and working directory
/// become that namespace's root). The calling process must be single-threaded.
pub fn join_mount_namespace(pidfd: &OwnedFd) -> Result<(), String> {
    nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("joining the container's mount namespace: {e}"))
}

/// The target `rel` beneath `root`, opened O_PATH without following any symlink on the way
/// (`RESOLVE_IN_ROOT`: `..` and absolute links cannot leave the root either). `Ok(None)`
/// when it does not exist; an error when it, or a directory on the way, is a symlink.
pub fn resolve_target(root: &OwnedFd, rel: &str) -> Result<Option<OwnedFd>, String> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let target = match openat2(root, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(format!(
                "/{rel} in the container's rootfs is a symbolic link: refused"
            ));
        }
        Err(e) => return Err(format!("/{rel} in the container's rootfs: {e}")),
    };
    // O_PATH|O_NOFOLLOW opens a final symlink itself rather than failing: refuse it here.
    let is_link = rustix::fs::fstat(&target).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    });
    if is_link {
        return Err(format!(
            "/{rel} in the container's rootfs is a symbolic link: refused"
        ));
    }
    Ok(Some(target))
}

/// What [`bind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The tree is mounted on the target.
    Mounted,
    /// The target does not exist: nothing was done.
    Missing,
}

/// Moves `tree` onto `rel` beneath `root`, refusing a symlinked target and skipping a
/// missing one; read-only unless `writable`.
pub fn bind(root: &OwnedFd, rel: &str, writable: bool, tree: &OwnedFd) -> Result<Bound, String> {
    let Some(target) = resolve_target(root, rel)? else {
        return Ok(Bound::Missing);
    };
    if !writable {
        make_read_only(tree).map_err(|e| format!("read-only bind of /{rel}: {e}"))?;
    }
    move_mount(
        tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| format!("binding /{rel}: {e}"))?;
    Ok(Bound::Mounted)
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, {MOUNT_ATTR_RDONLY})`.
fn make_read_only(tree: &OwnedFd) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `tree` is an open mount fd, `empty` a valid NUL-terminated string, `attr` a
    // properly laid out `struct mount_attr` whose size is passed; all outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_holding_writable_files_stay_writable() {
        assert!(takes_writes("proc/sys"));
        assert!(takes_writes("proc/sys/net/ipv4/ip_forward"));
        assert!(takes_writes("proc"));
        assert!(takes_writes(""));
        assert!(takes_writes("sys/module/nf_conntrack/parameters/hashsize"));
        assert!(!takes_writes("proc/meminfo"));
        assert!(!takes_writes("proc/system"));
        assert!(!takes_writes("sys/devices/system/cpu"));
    }

    #[test]
    fn targets_never_follow_symlinks_out_of_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        std::fs::write(&victim, "host\n").unwrap();
        let rootfs = host.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("proc")).unwrap();
        std::fs::write(rootfs.join("proc/uptime"), "").unwrap();
        std::os::unix::fs::symlink(&victim, rootfs.join("proc/meminfo")).unwrap();
        std::os::unix::fs::symlink("/etc", rootfs.join("sys")).unwrap();
        let root: OwnedFd = std::fs::File::open(&rootfs).unwrap().into();
        assert!(resolve_target(&root, "proc/uptime").unwrap().is_some());
        assert!(
            resolve_target(&root, "proc/meminfo")
                .unwrap_err()
                .contains("symbolic link")
        );
        assert!(
            resolve_target(&root, "sys/kernel")
                .unwrap_err()
                .contains("symbolic link")
        );
        assert!(resolve_target(&root, "proc/stat").unwrap().is_none());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host\n");
    }
}
