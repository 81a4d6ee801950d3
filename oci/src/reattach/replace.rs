//! Replacing one stale stack: open the target beneath the container's root without
//! following symlinks, check that it still is a layer mountinfo named (by mount id, from
//! fdinfo) and that it answers ENOTCONN, unmount it through that descriptor (never by path),
//! layer by layer down to what lies beneath; then bind the fresh clone there.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};

use super::Stack;
use crate::inject::{self, Bound, InjectError};

/// Why a stack was not replaced, or not wholly: one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A mount point mountinfo gave that is not absolute.
    #[error("{}: not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    /// Cloning nsview's file `rel` from its mount.
    #[error("{rel}")]
    CloneSource {
        /// The file, below nsview's mountpoint.
        rel: String,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// Fewer clones of nsview's files than the mounts beneath the stack need.
    #[error("a clone short")]
    CloneShort,
    /// Cloning a mount beneath the stack from where the container sees it.
    #[error("cloning {}", path.display())]
    CloneBeneath {
        /// Where the container sees it.
        path: PathBuf,
        /// The kernel's refusal.
        #[source]
        source: rustix::io::Errno,
    },
    /// Opening a mount point beneath the container's root.
    #[error("opening it beneath the container's root")]
    Open(#[source] rustix::io::Errno),
    /// The topmost mount is no layer mountinfo showed (nothing was unmounted).
    #[error("changed since its mountinfo was read; left alone")]
    Changed,
    /// The target vanished once the stack was unmounted.
    #[error("the target is gone")]
    TargetGone,
    /// `fstatfs` of a layer failed with something other than ENOTCONN.
    #[error("statfs")]
    Statfs(#[source] rustix::io::Errno),
    /// Opening this process's fdinfo of the target.
    #[error("fdinfo")]
    OpenFdinfo(#[source] rustix::io::Errno),
    /// Reading it.
    #[error("fdinfo")]
    ReadFdinfo(#[source] std::io::Error),
    /// It has no `mnt_id` line.
    #[error("fdinfo: no mnt_id")]
    NoMntId,
    /// `fchdir` to this process's `/proc/self/fd`.
    #[error("fchdir")]
    Fchdir(#[source] nix::errno::Errno),
    /// The lazy unmount of a stale layer.
    #[error("unmounting the stale bind")]
    Unmount(#[source] nix::errno::Errno),
    /// Binding the clone.
    #[error(transparent)]
    Bind(#[from] InjectError),
    /// Some layers were unmounted, then a step failed: the clone was bound on top of what
    /// was left, read-only where a removed layer was.
    #[error("bound on top of what was left")]
    BoundOnTop(#[source] Box<StackError>),
}

/// `path` (absolute, as the container sees it) below the container's root.
pub(crate) fn below_root(path: &Path) -> Result<String, StackError> {
    Ok(path
        .strip_prefix("/")
        .map_err(|_| StackError::NotAbsolute(path.to_owned()))?
        .to_string_lossy()
        .into_owned())
}

/// Replaces the stale stack `stack` with `tree`: `Ok(false)` when its topmost bind answers.
pub(super) fn replace(
    root: &OwnedFd,
    own_fds: &Own,
    stack: &Stack,
    tree: &OwnedFd,
) -> Result<bool, StackError> {
    let in_root = below_root(&stack.target)?;
    let mut removed = 0;
    let mut trouble = None;
    // At most one unmount per layer mountinfo showed (mount ids are reused).
    for _ in 0..stack.layers.len() {
        match peel(root, own_fds, stack, &in_root) {
            Ok(Peeled::Stale) => removed += 1,
            Ok(Peeled::Live) if removed == 0 => return Ok(false),
            // A live bind of ours beneath the stale ones serves the file already.
            Ok(Peeled::Live) => return Ok(true),
            Ok(Peeled::NotOurs) if removed == 0 => return Err(StackError::Changed),
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
        (Bound::Mounted, Some(e)) => Err(StackError::BoundOnTop(Box::new(e))),
        (Bound::Missing, _) => Err(StackError::TargetGone),
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
fn peel(root: &OwnedFd, own: &Own, stack: &Stack, in_root: &str) -> Result<Peeled, StackError> {
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
        Err(e) => Err(StackError::Statfs(e)),
    }
}

/// This process's `/proc/self/fd` and `/proc/self/fdinfo`, opened before it joined a
/// container's mount namespace (whose procfs does not show it).
pub(super) struct Own {
    pub(super) fds: OwnedFd,
    pub(super) fdinfo: OwnedFd,
}

/// The id of the mount `target` is on, from its fdinfo: no request reaches the filesystem
/// (statx asks a FUSE daemon for attributes on older kernels, which a dead one answers with
/// ENOTCONN, and a stuck one never).
fn mount_id(own: &Own, target: &OwnedFd) -> Result<u64, StackError> {
    let name = target.as_raw_fd().to_string();
    let fd = rustix::fs::openat(
        &own.fdinfo,
        name.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(StackError::OpenFdinfo)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)
        .map_err(StackError::ReadFdinfo)?;
    parse_mnt_id(&text).ok_or(StackError::NoMntId)
}

/// The `mnt_id:` field of an fdinfo text.
fn parse_mnt_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The mount point `rel` beneath `root`, opened O_PATH without following any symlink.
pub(crate) fn open_target(root: &OwnedFd, rel: &str) -> Result<OwnedFd, StackError> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    openat2(
        root,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )
    .map_err(StackError::Open)
}

/// Lazily unmounts the mount whose root `target` is, through `/proc/self/fd/<target>` (the
/// directory `own_fds`): no path is resolved again, so nothing can swap the mount meanwhile.
fn unmount(own_fds: &OwnedFd, target: &OwnedFd) -> Result<(), StackError> {
    nix::unistd::fchdir(own_fds).map_err(StackError::Fchdir)?;
    nix::mount::umount2(
        target.as_raw_fd().to_string().as_str(),
        nix::mount::MntFlags::MNT_DETACH,
    )
    .map_err(StackError::Unmount)
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

    #[test]
    fn a_target_below_the_root_is_its_path_without_the_slash() {
        assert_eq!(below_root(Path::new("/proc/sys")).unwrap(), "proc/sys");
        assert!(matches!(
            below_root(Path::new("proc/sys")),
            Err(StackError::NotAbsolute(p)) if p == Path::new("proc/sys")
        ));
    }
}
