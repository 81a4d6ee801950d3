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
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

/// Why a container's process could not be reached or a bind not made: one variant per step,
/// with the pid or the target (below the container's root) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A pid that no process can have (above `i32::MAX`, or 0).
    #[error("pid {0} is not a process id")]
    NotAPid(u32),
    /// The container's init is gone (`ESRCH` from `pidfd_open`), said in words.
    #[error("the container's init (pid {0}) does not exist")]
    NoInit(u32),
    /// `pidfd_open` failed otherwise.
    #[error("pidfd of pid {pid}")]
    Pidfd {
        /// The process.
        pid: u32,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// The pid names another process now than the one that started at the time recorded.
    #[error("pid {0} is no longer the container's init (it exited)")]
    InitExited(u32),
    /// `setns(CLONE_NEWNS)` through the pidfd.
    #[error("joining the container's mount namespace")]
    JoinMountNamespace(#[source] nix::errno::Errno),
    /// Opening the container's root filesystem.
    #[error("rootfs {path}")]
    Rootfs {
        /// The rootfs, in the caller's mount namespace.
        path: std::path::PathBuf,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// The target, or a directory on the way to it, is a symbolic link: refused, never
    /// followed.
    #[error("/{0} in the container's rootfs is a symbolic link: refused")]
    Symlink(String),
    /// Resolving the target failed otherwise.
    #[error("/{rel} in the container's rootfs")]
    Target {
        /// The target, below the root.
        rel: String,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// `mount_setattr(MOUNT_ATTR_RDONLY)` of the clone.
    #[error("read-only bind of /{rel}")]
    ReadOnly {
        /// The target, below the root.
        rel: String,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// `move_mount` of the clone onto the target.
    #[error("binding /{rel}")]
    Move {
        /// The target, below the root.
        rel: String,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
}

/// The files bound by default: (path below the mountpoint and the rootfs, writable).
pub const DEFAULT_FILES: &[(&str, bool)] = &[
    ("proc/cpuinfo", false),
    ("proc/meminfo", false),
    ("proc/stat", false),
    ("proc/uptime", false),
    ("proc/loadavg", false),
    ("proc/diskstats", false),
    ("proc/vmstat", false),
    ("proc/interrupts", false),
    ("proc/softirqs", false),
    ("proc/swaps", false),
    ("proc/slabinfo", false),
    ("proc/pressure/cpu", false),
    ("proc/pressure/memory", false),
    ("proc/pressure/io", false),
    ("proc/sys", true),
    ("sys/devices/system/cpu", false),
    ("sys/devices/system/node", false),
    ("sys/kernel", false),
    // Not bound whole: each device's `stat` goes onto its real directory (see `binds`).
    (BLOCK, false),
    ("sys/devices/virtual/net", false),
    ("sys/devices/virtual/dmi/id/product_uuid", false),
    ("sys/module/nf_conntrack/parameters/hashsize", true),
];

/// The entry of [`DEFAULT_FILES`] bound per block device.
pub const BLOCK: &str = "sys/block";

/// Most block devices whose `stat` is bound into one container (a host may have hundreds
/// of loop devices; each bind is a mount).
pub const MAX_BLOCK_BINDS: usize = 64;

/// One bind: nsview's file `source` (below the mountpoint) onto `target` (below the
/// rootfs), read-only unless `writable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Below nsview's mountpoint.
    pub source: String,
    /// Below the container's root.
    pub target: String,
    /// Whether it stays writable.
    pub writable: bool,
}

/// The binds for `files` (entries of [`DEFAULT_FILES`]): each onto the same path, but
/// [`BLOCK`], which becomes one bind per block device and partition the host's sysfs `sys`
/// has, nsview's `sys/block/<dev>[/<part>]/stat` onto the device's real directory
/// (`/sys/block/<dev>` is a symlink, and a target may not be one), at most
/// [`MAX_BLOCK_BINDS`].
pub fn binds(files: &[(&'static str, bool)], sys: &Path) -> Vec<Bind> {
    let mut out = Vec::new();
    for &(file, writable) in files {
        if file != BLOCK {
            out.push(Bind {
                source: file.into(),
                target: file.into(),
                writable,
            });
            continue;
        }
        out.extend(
            block_stat_binds(sys)
                .into_iter()
                .map(|(source, target)| Bind {
                    source,
                    target,
                    writable: false,
                }),
        );
    }
    out
}

/// (source, target) of each block device's and partition's `stat` below `sys`.
fn block_stat_binds(sys: &Path) -> Vec<(String, String)> {
    let Ok(items) = std::fs::read_dir(sys.join("block")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = items
        .filter_map(|i| i.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for dev in names {
        // `../devices/.../block/vda`, relative to `sys/block`.
        let Ok(link) = std::fs::read_link(sys.join("block").join(&dev)) else {
            continue;
        };
        let Some(real) = normalize(Path::new("sys/block"), &link).filter(|r| r.starts_with("sys/"))
        else {
            continue;
        };
        out.push((format!("{BLOCK}/{dev}/stat"), format!("{real}/stat")));
        let disk = sys.join("block").join(&dev);
        let mut parts: Vec<String> = std::fs::read_dir(&disk)
            .into_iter()
            .flatten()
            .filter_map(|i| i.ok()?.file_name().into_string().ok())
            .filter(|p| disk.join(p).join("partition").is_file())
            .collect();
        parts.sort();
        for part in parts {
            out.push((
                format!("{BLOCK}/{dev}/{part}/stat"),
                format!("{real}/{part}/stat"),
            ));
        }
    }
    out.truncate(MAX_BLOCK_BINDS);
    out
}

/// `base` joined with the relative `link`, `..` resolved, as a relative path; `None` when it
/// would leave `base`'s root or is absolute.
fn normalize(base: &Path, link: &Path) -> Option<String> {
    use std::path::Component;
    if link.is_absolute() {
        return None;
    }
    let mut parts: Vec<String> = base
        .components()
        .map(|c| c.as_os_str().to_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    for c in link.components() {
        match c {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(n) => parts.push(n.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Whether `rel` (a path below nsview's mountpoint) is one of the files [`binds`] binds:
/// an entry of [`DEFAULT_FILES`] other than [`BLOCK`], or a block device's `stat`.
pub fn is_bound_file(rel: &str) -> bool {
    if let Some(rest) = rel.strip_prefix(BLOCK).and_then(|r| r.strip_prefix('/')) {
        let parts: Vec<&str> = rest.split('/').collect();
        return matches!(parts.len(), 2 | 3)
            && parts.last() == Some(&"stat")
            && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'));
    }
    DEFAULT_FILES.iter().any(|(f, _)| *f == rel && *f != BLOCK)
}

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
pub fn pidfd_of(pid: u32, start_ticks: Option<u64>) -> Result<OwnedFd, InjectError> {
    let raw = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(InjectError::NotAPid(pid))?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(
        |source| match source {
            Errno::SRCH => InjectError::NoInit(pid),
            source => InjectError::Pidfd { pid, source },
        },
    )?;
    if let Some(expected) = start_ticks {
        let now = nsview_core::procfs::ProcRoot::default()
            .start_ticks(pid)
            .ok();
        if now != Some(expected) {
            return Err(InjectError::InitExited(pid));
        }
    }
    Ok(pidfd)
}

/// Joins the mount namespace of the process behind `pidfd` (root and working directory
/// become that namespace's root). The calling process must be single-threaded.
pub fn join_mount_namespace(pidfd: &OwnedFd) -> Result<(), InjectError> {
    nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(InjectError::JoinMountNamespace)
}

/// The directory `path` (in the current mount namespace), opened `O_PATH` to resolve
/// targets beneath it.
pub fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The container's root filesystem at `rootfs` (see [`open_dir`]).
pub fn open_rootfs(rootfs: &Path) -> Result<OwnedFd, InjectError> {
    open_dir(rootfs).map_err(|source| InjectError::Rootfs {
        path: rootfs.to_owned(),
        source,
    })
}

/// The target `rel` beneath `root`, opened O_PATH without following any symlink on the way
/// (`RESOLVE_IN_ROOT`: `..` and absolute links cannot leave the root either). `Ok(None)`
/// when it does not exist; an error when it, or a directory on the way, is a symlink.
pub fn resolve_target(root: &OwnedFd, rel: &str) -> Result<Option<OwnedFd>, InjectError> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let target = match openat2(root, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(InjectError::Symlink(rel.into())),
        Err(source) => {
            return Err(InjectError::Target {
                rel: rel.into(),
                source,
            });
        }
    };
    // O_PATH|O_NOFOLLOW opens a final symlink itself rather than failing: refuse it here.
    let is_link = rustix::fs::fstat(&target).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    });
    if is_link {
        return Err(InjectError::Symlink(rel.into()));
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
pub fn bind(
    root: &OwnedFd,
    rel: &str,
    writable: bool,
    tree: &OwnedFd,
) -> Result<Bound, InjectError> {
    let Some(target) = resolve_target(root, rel)? else {
        return Ok(Bound::Missing);
    };
    if !writable {
        make_read_only(tree).map_err(|source| InjectError::ReadOnly {
            rel: rel.into(),
            source,
        })?;
    }
    move_mount(
        tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|source| InjectError::Move {
        rel: rel.into(),
        source,
    })?;
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
    fn block_devices_bind_their_stat_onto_the_real_directory() {
        let sys = tempfile::tempdir().unwrap();
        let real = sys.path().join("devices/pci0/virtio1/block/vda");
        std::fs::create_dir_all(real.join("vda1")).unwrap();
        std::fs::create_dir_all(real.join("queue")).unwrap();
        std::fs::write(real.join("vda1/partition"), "1\n").unwrap();
        std::fs::create_dir_all(sys.path().join("block")).unwrap();
        std::os::unix::fs::symlink(
            "../devices/pci0/virtio1/block/vda",
            sys.path().join("block/vda"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc", sys.path().join("block/evil")).unwrap();
        std::os::unix::fs::symlink("../../../etc", sys.path().join("block/up")).unwrap();
        let got = binds(&[("proc/meminfo", false), (BLOCK, false)], sys.path());
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|b| (b.source.as_str(), b.target.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("proc/meminfo", "proc/meminfo"),
                (
                    "sys/block/vda/stat",
                    "sys/devices/pci0/virtio1/block/vda/stat"
                ),
                (
                    "sys/block/vda/vda1/stat",
                    "sys/devices/pci0/virtio1/block/vda/vda1/stat"
                ),
            ]
        );
        assert!(is_bound_file("sys/block/vda/stat"));
        assert!(is_bound_file("sys/block/vda/vda1/stat"));
        assert!(is_bound_file("proc/meminfo"));
        assert!(!is_bound_file("sys/block"));
        assert!(!is_bound_file("sys/block/vda"));
        assert!(!is_bound_file("sys/block/../stat"));
        assert!(!takes_writes("sys/block/vda/stat"));
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
        assert!(matches!(
            resolve_target(&root, "proc/meminfo"),
            Err(InjectError::Symlink(rel)) if rel == "proc/meminfo"
        ));
        assert!(matches!(
            resolve_target(&root, "sys/kernel"),
            Err(InjectError::Symlink(rel)) if rel == "sys/kernel"
        ));
        assert!(resolve_target(&root, "proc/stat").unwrap().is_none());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host\n");
    }
}
