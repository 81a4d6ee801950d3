//! Mounts beneath a stale stack of nsview binds, and how reattach puts them back.
//!
//! A stale bind is replaced by unmounting it lazily, which takes every mount beneath it
//! along. Runtimes mount things there after the hook: LXC binds its `boot_id` onto
//! `/proc/sys/kernel/random/boot_id`, inside nsview's `/proc/sys`; LXC's `proc:mixed` has the
//! hook put nsview's writable `/proc/sys/net` inside it too. Such a stack is replaced, and
//! each mount beneath it bound again on top of the new one, when every one of them can be
//! made again:
//!
//! - a bind of nsview's own (a file the hook binds): from nsview's mount;
//! - a bind of a file that another mount of the same filesystem shows outside the stack
//!   (LXC's `boot_id` is `/.lxc-boot-id` of the tmpfs at the container's `/dev`): from
//!   there, as the container sees it.
//!
//! Anything else (a fresh tmpfs masking a directory, a filesystem mounted only there) could
//! not be made again as it was, so the stack is left alone, as before.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::reattach::{StackError, below_root};
use nsview_core::mounts::MountEntry;

/// How to make a mount beneath a stack again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// nsview's file `rel` (below its mountpoint).
    Nsview(String),
    /// The file or directory at this path in the container.
    Container(PathBuf),
}

/// One mount beneath a stack, to bind again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remount {
    /// Its mount point, as the container sees it.
    pub point: PathBuf,
    /// Where it comes from.
    pub source: Source,
    /// Whether it was read-only.
    pub read_only: bool,
}

/// The mounts beneath `target` among `mounts` (in mountinfo order, parents first), each
/// with its source, or the mount point of the first that cannot be made again. `nsview_rel`
/// says which file of nsview's a mount binds, if it is one of its binds.
pub fn plan(
    mounts: &[MountEntry],
    target: &Path,
    nsview_rel: impl Fn(&MountEntry) -> Option<String>,
) -> Result<Vec<Remount>, PathBuf> {
    let under = |m: &MountEntry| m.mount_point != target && m.mount_point.starts_with(target);
    // Another FUSE filesystem (the container's own, say) may have a server that never
    // answers: a lookup there would hold reattach past SIGKILL. Nothing is made again from
    // or through one.
    let foreign_fuse =
        |m: &MountEntry| m.fstype.split('.').next() == Some("fuse") && nsview_rel(m).is_none();
    let through_fuse = |path: &Path| {
        mounts
            .iter()
            .any(|o| foreign_fuse(o) && path.starts_with(&o.mount_point))
    };
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| under(m)) {
        if foreign_fuse(m) {
            return Err(m.mount_point.clone());
        }
        let source = match nsview_rel(m) {
            Some(rel) => Source::Nsview(rel),
            None => Source::Container(
                elsewhere(mounts, m, target)
                    .filter(|path| !through_fuse(path))
                    .ok_or_else(|| m.mount_point.clone())?,
            ),
        };
        out.push(Remount {
            point: m.mount_point.clone(),
            source,
            read_only: m.read_only(),
        });
    }
    Ok(out)
}

/// A path outside the stack at `target` where the container sees what `m` binds: a mount
/// of the same device, neither at nor beneath `target`, whose root holds `m`'s root.
fn elsewhere(mounts: &[MountEntry], m: &MountEntry, target: &Path) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|o| o.dev == m.dev && !o.mount_point.starts_with(target))
        .find_map(|o| {
            let rest = m.root.strip_prefix(&o.root).ok()?;
            Some(o.mount_point.join(rest))
        })
}

/// The mounts of `plan` as (path below the root, writable, detached clone), in its order:
/// nsview's from `nsview_trees` (cloned before the join, in order), the others cloned now
/// from where the container (whose root is `root`) sees them, each opened with
/// `open_target` (beneath the root, no symlink followed).
pub fn clones(
    root: &OwnedFd,
    plan: &[Remount],
    nsview_trees: Vec<OwnedFd>,
    open_target: impl Fn(&OwnedFd, &str) -> Result<OwnedFd, StackError>,
) -> Result<Vec<(String, bool, OwnedFd)>, StackError> {
    let mut nsview_trees = nsview_trees.into_iter();
    plan.iter()
        .map(|r| {
            let rel = below_root(&r.point)?;
            let (writable, tree) = match &r.source {
                Source::Nsview(file) => {
                    let tree = nsview_trees.next().ok_or(StackError::CloneShort)?;
                    (super::inject::takes_writes(file) && !r.read_only, tree)
                }
                Source::Container(path) => {
                    let at = open_target(root, &below_root(path)?)?;
                    let tree = rustix::mount::open_tree(
                        &at,
                        "",
                        rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                            | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
                            | rustix::mount::OpenTreeFlags::AT_EMPTY_PATH,
                    )
                    .map_err(|source| StackError::CloneBeneath {
                        path: path.clone(),
                        source,
                    })?;
                    (!r.read_only, tree)
                }
            };
            Ok((rel, writable, tree))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<MountEntry> {
        nsview_core::mounts::parse_mountinfo(text)
    }

    /// An LXC container with `proc:mixed` after the hook, as its mountinfo showed.
    const LXC: &str = "\
69 67 0:30 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
70 69 0:42 / /dev rw,relatime shared:2 - tmpfs none rw,size=492k,mode=755
73 69 0:30 /sys /proc/sys ro,relatime - proc proc rw
90 73 0:51 /proc/sys /proc/sys ro,nosuid,nodev,relatime - fuse nsview rw
109 90 0:51 /proc/sys/net /proc/sys/net rw,nosuid,nodev,relatime - fuse nsview rw
48 90 0:42 /.lxc-boot-id /proc/sys/kernel/random/boot_id ro,nosuid,nodev,noexec,relatime shared:2 - tmpfs none rw
";

    fn ours(m: &MountEntry) -> Option<String> {
        (m.fstype == "fuse").then(|| m.root.strip_prefix("/").unwrap().to_str().unwrap().into())
    }

    #[test]
    fn lxcs_net_and_boot_id_are_made_again_from_nsview_and_from_dev() {
        let plan = plan(&parse(LXC), Path::new("/proc/sys"), ours).unwrap();
        assert_eq!(
            plan,
            [
                Remount {
                    point: "/proc/sys/net".into(),
                    source: Source::Nsview("proc/sys/net".into()),
                    read_only: false,
                },
                Remount {
                    point: "/proc/sys/kernel/random/boot_id".into(),
                    source: Source::Container("/dev/.lxc-boot-id".into()),
                    read_only: true,
                },
            ]
        );
    }

    #[test]
    fn nothing_is_made_again_from_or_through_another_fuse_filesystem() {
        // The container's own FUSE mount at /f, a file of it bound into nsview's /proc/sys:
        // reattach would look it up in a server that may never answer.
        let text = "\
90 73 0:51 /proc/sys /proc/sys ro - fuse nsview rw
95 60 0:77 / /f rw - fuse.trap trap rw
96 90 0:77 /x /proc/sys/kernel/hostname rw - fuse.trap trap rw
";
        assert_eq!(
            plan(&parse(text), Path::new("/proc/sys"), ours),
            Err(PathBuf::from("/proc/sys/kernel/hostname"))
        );
        // A tmpfs file bound in, whose only other mount lies inside that FUSE mount.
        let text = "\
90 73 0:51 /proc/sys /proc/sys ro - fuse nsview rw
95 60 0:77 / /f rw - fuse.trap trap rw
97 95 0:42 / /f/t rw - tmpfs none rw
98 90 0:42 /x /proc/sys/kernel/hostname rw - tmpfs none rw
";
        assert_eq!(
            plan(&parse(text), Path::new("/proc/sys"), ours),
            Err(PathBuf::from("/proc/sys/kernel/hostname"))
        );
    }

    #[test]
    fn a_mount_of_nothing_seen_elsewhere_leaves_the_stack_alone() {
        // runc's mask of a CPU directory: a tmpfs mounted there and nowhere else.
        let text = "\
80 60 0:51 /sys/devices/system/cpu /sys/devices/system/cpu ro - fuse nsview rw
81 80 0:60 / /sys/devices/system/cpu/cpu0 ro - tmpfs tmpfs ro
";
        assert_eq!(
            plan(&parse(text), Path::new("/sys/devices/system/cpu"), ours),
            Err(PathBuf::from("/sys/devices/system/cpu/cpu0"))
        );
        // Nothing beneath: nothing to do.
        assert_eq!(
            plan(&parse(text), Path::new("/proc/meminfo"), ours),
            Ok(vec![])
        );
    }
}
