//! Reattaching one mount namespace, in a worker child: find its stale stacks, clone nsview's
//! sources while still in nsview's mount namespace, then join the other one and replace each
//! stack, binding again what lay beneath it (see [`beneath`]).

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nsview_proto::chain;

use super::replace::{Own, StackError, open_target, replace};
use super::{Outcome, ReattachError, Stack, stacks};
use crate::beneath::{self, Remount};
use crate::devices::Dev;
use crate::inject::{self, Bound};
use nsview_core::mounts::is_nsview_mount;
use nsview_core::mounts::{MountEntry, mounts_of};
use nsview_core::procfs::ProcRoot;

/// Why a stack is left alone before anything is tried.
#[derive(Debug, thiserror::Error)]
enum LeftAlone {
    /// Reaching it would ask another FUSE filesystem's server, which may never answer.
    #[error("lies in the FUSE mount at {}", .0.display())]
    InFuse(PathBuf),
    /// Something beneath it would be made again from the container, whose mounts are
    /// another user namespace's root's to make.
    #[error("has mounts of another user namespace's beneath it")]
    ForeignMountsBeneath,
    /// Something beneath it cannot be made again as it was (see [`beneath::plan`]).
    #[error("has {} beneath it, which cannot be made again", .0.display())]
    CannotRemake(PathBuf),
}

/// A stack to replace: the clone of its file, the mounts beneath it to bind again, and the
/// clones of those that are nsview's (in the plan's order).
struct Work {
    stack: Stack,
    tree: OwnedFd,
    plan: Vec<Remount>,
    nsview_trees: Vec<OwnedFd>,
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
) -> Result<Outcome, ReattachError> {
    let pidfd = inject::pidfd_of(pid, Some(start_ticks))?;
    // After the pidfd: the pid cannot have come to name another process meanwhile.
    if ProcRoot::default().ns_inode(pid, "mnt").ok() != Some(ns) {
        return Err(ReattachError::LeftNamespace { pid, ns });
    }
    let mounts = mounts_of(pid).map_err(|source| ReattachError::Mountinfo { pid, source })?;
    let mut outcome = Outcome::default();
    let work = prepare(mountpoint, &mounts, ours, host_owned, &mut outcome);
    // Our own descriptors, reachable after the join: umount through /proc/self/fd/N, mount
    // ids from /proc/self/fdinfo/N.
    let own_dir = |path: &'static str| {
        inject::open_dir(Path::new(path)).map_err(|source| ReattachError::OwnDir { path, source })
    };
    let own_fds = Own {
        fds: own_dir("/proc/self/fd")?,
        fdinfo: own_dir("/proc/self/fdinfo")?,
    };
    inject::join_mount_namespace(&pidfd)?;
    let root = inject::open_dir(Path::new("/")).map_err(ReattachError::Root)?;
    for work in work {
        replace_one(&root, &own_fds, work, &mut outcome);
    }
    Ok(outcome)
}

/// The stacks among `mounts` to replace, with nsview's sources cloned from `mountpoint` (in
/// nsview's mount namespace); a stack left alone or whose sources cannot be cloned is a line
/// of `outcome`'s failures.
fn prepare(
    mountpoint: &Path,
    mounts: &[MountEntry],
    ours: &HashSet<Dev>,
    host_owned: bool,
    outcome: &mut Outcome,
) -> Vec<Work> {
    let mut work = Vec::new();
    // Mount points made again with the stack above them (see `beneath`).
    let mut remade: HashSet<PathBuf> = HashSet::new();
    for stack in stacks(mounts, ours) {
        if remade.contains(&stack.target) {
            continue;
        }
        let plan = match plan_beneath(mounts, &stack, ours, host_owned) {
            Ok(plan) => plan,
            Err(why) => {
                let target = stack.target.display();
                outcome.failed.push(format!("{target}: {why}; left alone"));
                continue;
            }
        };
        match clone_sources(mountpoint, &stack, &plan) {
            Ok(mut trees) => {
                remade.extend(plan.iter().map(|r| r.point.clone()));
                let tree = trees.remove(0);
                work.push(Work {
                    stack,
                    tree,
                    plan,
                    nsview_trees: trees,
                });
            }
            Err(e) => {
                let target = stack.target.display();
                outcome.failed.push(format!("{target}: {}", chain(&e)));
            }
        }
    }
    work
}

/// What lies beneath `stack` and how to make it again, unless the stack is to be left alone.
fn plan_beneath(
    mounts: &[MountEntry],
    stack: &Stack,
    ours: &HashSet<Dev>,
    host_owned: bool,
) -> Result<Vec<Remount>, LeftAlone> {
    if let Some(fuse) = &stack.beneath_fuse {
        return Err(LeftAlone::InFuse(fuse.clone()));
    }
    let ours_rel = |m: &MountEntry| {
        (is_nsview_mount(m) && ours.contains(&m.dev))
            .then(|| Some(m.root.strip_prefix("/").ok()?.to_str()?.to_owned()))
            .flatten()
    };
    let plan = beneath::plan(mounts, &stack.target, ours_rel).map_err(LeftAlone::CannotRemake)?;
    // Mounts of a namespace another user namespace owns are that namespace's root's to
    // make: nothing of theirs is bound again by the host's.
    let from_container = |r: &Remount| matches!(r.source, beneath::Source::Container(_));
    if !host_owned && plan.iter().any(from_container) {
        return Err(LeftAlone::ForeignMountsBeneath);
    }
    Ok(plan)
}

/// Clones of nsview's sources for `stack` (made here, in nsview's mount namespace): its own
/// file first, then each of nsview's files in `plan`.
fn clone_sources(
    mountpoint: &Path,
    stack: &Stack,
    plan: &[Remount],
) -> Result<Vec<OwnedFd>, StackError> {
    std::iter::once(stack.rel.clone())
        .chain(plan.iter().filter_map(|r| match &r.source {
            beneath::Source::Nsview(rel) => Some(rel.clone()),
            beneath::Source::Container(_) => None,
        }))
        .map(|rel| {
            inject::clone_tree(&mountpoint.join(&rel))
                .map_err(|source| StackError::CloneSource { rel, source })
        })
        .collect()
}

/// Replaces one stack in the container's mount namespace (whose root is `root`), then binds
/// again what lay beneath it; counts it in `outcome`.
fn replace_one(root: &OwnedFd, own_fds: &Own, work: Work, outcome: &mut Outcome) {
    let Work {
        stack,
        tree,
        plan,
        nsview_trees,
    } = work;
    let target = stack.target.display();
    // What lies beneath, cloned from where the container sees it before the stack goes.
    let beneath = match beneath::clones(root, &plan, nsview_trees, open_target) {
        Ok(beneath) => beneath,
        Err(e) => {
            outcome
                .failed
                .push(format!("{target}: {}; left alone", chain(&e)));
            return;
        }
    };
    match replace(root, own_fds, &stack, &tree) {
        Ok(true) => {
            outcome.replaced += 1;
            for (rel, writable, tree) in beneath {
                match inject::bind(root, &rel, writable, &tree) {
                    Ok(Bound::Mounted) => outcome.replaced += 1,
                    Ok(Bound::Missing) => outcome
                        .failed
                        .push(format!("/{rel}: gone from the new {target}")),
                    Err(e) => outcome.failed.push(format!("/{rel}: {}", chain(&e))),
                }
            }
        }
        Ok(false) => outcome.live += 1,
        Err(e) => outcome.failed.push(format!("{target}: {}", chain(&e))),
    }
}
