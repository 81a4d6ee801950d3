//! The mount table as `/proc/self/mountinfo` shows it, and detaching mounts the rig made.

use std::os::unix::ffi::OsStrExt;

pub use nsview::mounts::{MountEntry, parse_mountinfo};
use std::path::{Path, PathBuf};

/// The current mount table of this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    parse_mountinfo(&text)
}

/// The absolute, symlink-free form of `path` as mountinfo spells it. Only the parent is
/// canonicalized: resolving the path itself would send a request to a FUSE mount on it,
/// which hangs on a stuck daemon and fails on a stale one.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(absolute),
        _ => absolute,
    }
}

/// Every mount whose mount point is `path`, bottom first (mountinfo lists a mount after the
/// one it covers).
pub fn mounts_at(path: &Path) -> Vec<MountEntry> {
    let path = normalize(path);
    mounts()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

/// The mount that path resolution at `path` reaches: the one no other mount there covers.
pub(crate) fn topmost(at: &[MountEntry]) -> Option<&MountEntry> {
    at.iter()
        .find(|m| !at.iter().any(|other| other.parent_id == m.mount_id))
        .or_else(|| at.last())
}

/// Whether anything is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

/// Lazily detaches the topmost mount at `path` for as long as `ours` says it is one of the
/// rig's (at most a few times); never touches a mount that is not ours.
pub(crate) fn detach_ours(path: &Path, ours: impl Fn(&MountEntry) -> bool) {
    for _ in 0..8 {
        let at = mounts_at(path);
        match topmost(&at) {
            Some(top) if ours(top) => umount_detach(&top.mount_point),
            _ => return,
        }
    }
}

/// Detaches every mount at or beneath `dir` (a directory the caller owns: what a runtime
/// it ran left mounted there), the last mounted first.
pub fn detach_beneath(dir: &Path) {
    let dir = normalize(dir);
    for m in mounts().iter().rev() {
        if m.mount_point.starts_with(&dir) {
            umount_detach(&m.mount_point);
        }
    }
}

/// `umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)`; errors are ignored (drop paths call this).
fn umount_detach(path: &Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
}

/// `major:minor` of a `st_dev` value, as mountinfo prints it (glibc's encoding).
pub(crate) fn dev_pair(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// `dir` bound onto itself and made a shared mount (as on a node whose `/` is shared), with
/// everything beneath detached on drop.
pub struct SharedMount(std::path::PathBuf);

impl SharedMount {
    /// Makes `dir` (a directory the caller owns) a shared mount.
    pub fn make(dir: &Path) -> SharedMount {
        let guard = SharedMount(normalize(dir));
        let mount = |args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new("mount")
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "mount {args:?}");
        };
        mount(&["--bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
        mount(&["--make-shared".as_ref(), dir.as_os_str()]);
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        detach_beneath(&self.0);
    }
}
