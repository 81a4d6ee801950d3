//! `nsview reattach`: after a daemon restart, replaces the binds a dead daemon left (they
//! answer ENOTCONN) with binds of the live mount.
//!
//! The daemon runs it at every start; an operator can run it at any time. It visits the
//! registered containers, then every other mount namespace owned by the host's user
//! namespace that holds such binds (containers whose runtime bound the files itself,
//! namespaces nested in containers; a namespace owned by another user namespace is its
//! owner's business, and could serve a FUSE mount that never answers). Only binds on a
//! device of this nsview's mounts count (see [`super::devices`]): never a second nsview's.
//! Each namespace is handled in a child process with a deadline (`worker`), and the whole
//! run has one:
//!
//! 1. read `/proc/<pid>/mountinfo` (mount points relative to the process's root) and find
//!    each stack of our binds on one mount point, topmost first: the binds the hook made and
//!    any the runtime stacked on them (runc's `readonlyPaths` bind `/proc/sys` onto itself
//!    after the hook). Only the files the hook binds are taken. The lazy unmount below takes
//!    every mount beneath a stack along: those are bound again on top of the new one where
//!    they can be made again (LXC's `boot_id` inside `/proc/sys`, see [`super::beneath`]);
//!    a stack with anything else beneath it (a mask inside a bound directory) is left
//!    alone, and so is one inside another FUSE mount, whose server might not answer
//!    (`stacks`);
//! 2. clone the sources in nsview's mount namespace, then join the other one (`namespace`);
//! 3. for each stack (`replace`), open the target beneath the root without following
//!    symlinks, check that it still is a layer mountinfo named (by mount id) and that it
//!    answers ENOTCONN, and unmount it through that descriptor (never by path), layer by layer
//!    down to what lies beneath; then bind the fresh clone there, read-only when any removed
//!    layer was (so a runtime's read-only `/proc/sys` stays read-only).
//!
//! Stacks that answer are left alone, so running it twice changes nothing. Descriptors a
//! process opened before the restart still name the dead connection and keep failing with
//! ENOTCONN: only a new `open` reaches the new daemon.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::devices::{self, Dev};
use super::inject::InjectError;
use crate::cli::ReattachArgs;
use nsview_core::mounts::mounts_of;
use nsview_core::nsfs::Ns;
use nsview_core::procfs::ProcRoot;
use nsview_proto::control::{CtlData, CtlError, CtlRequest, Registered, send as ctl_send};

mod namespace;
mod replace;
mod stacks;
mod worker;

pub use namespace::reattach;
pub(super) use replace::{StackError, below_root};
pub use stacks::{Stack, stacks};

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

/// Why a run, or the reattaching of one mount namespace, failed: one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    /// The daemon could not be asked for its containers.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// The daemon refused the list (its own words).
    #[error("{0}")]
    ListRefused(String),
    /// The daemon's answer is not a container list.
    #[error("the daemon answered the container list with something else")]
    ContainerList,
    /// Some namespaces were not fully reattached (each said why on its line).
    #[error("{failures} of {total} not fully reattached")]
    Incomplete {
        /// How many.
        failures: usize,
        /// Of how many.
        total: usize,
    },
    /// The run's deadline passed before this namespace's turn.
    #[error("skipped: the run took too long")]
    RunDeadline,
    /// The pipe the worker answers through.
    #[error("pipe")]
    Pipe(#[source] Errno),
    /// Forking the worker.
    #[error("fork")]
    Fork(#[source] Errno),
    /// The worker panicked.
    #[error("the worker panicked")]
    Panicked,
    /// The worker's failure, as it sent it (its text crossed a pipe).
    #[error("{0}")]
    Worker(String),
    /// The worker ended without a readable answer.
    #[error("the worker died without an answer")]
    NoAnswer,
    /// The worker did not answer in time (it was killed).
    #[error("no answer within {} s", .0.as_secs())]
    Deadline(Duration),
    /// Reaching the namespace's process or joining its mount namespace.
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// The process is in another mount namespace now than the one found.
    #[error("pid {pid} left mount namespace {ns}")]
    LeftNamespace {
        /// The process.
        pid: u32,
        /// The namespace's inode.
        ns: u64,
    },
    /// Its mountinfo cannot be read.
    #[error("/proc/{pid}/mountinfo")]
    Mountinfo {
        /// The process.
        pid: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// This process's `/proc/self/fd` or `/proc/self/fdinfo`, opened before the join.
    #[error("{path}")]
    OwnDir {
        /// Which.
        path: &'static str,
        /// Why.
        #[source]
        source: rustix::io::Errno,
    },
    /// The container's root, once in its mount namespace.
    #[error("the container's root")]
    Root(#[source] rustix::io::Errno),
}

/// How long a whole run may take; namespaces left then are reported and skipped.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `nsview reattach`: the registered containers first (a line each), then every other
/// mount namespace on the host that holds nsview binds of the hook's files (binds a user or
/// a runtime made without the hook, `-v /var/lib/nsview/proc/meminfo:/proc/meminfo`, and
/// copies in namespaces nested inside containers; a line each). An error when the daemon
/// cannot be asked or anything failed.
pub fn run(args: &ReattachArgs) -> Result<(), ReattachError> {
    let response = ctl_send(&args.runtime_dir, &CtlRequest::List {})?;
    if !response.ok {
        return Err(ReattachError::ListRefused(
            response.error.unwrap_or_else(|| "list refused".into()),
        ));
    }
    let containers: Vec<Registered> = match response.data {
        Some(CtlData::Containers(list)) => list,
        _ => return Err(ReattachError::ContainerList),
    };
    let ours: HashSet<Dev> = devices::load(&args.runtime_dir)
        .into_iter()
        .filter(|d| devices::made_by_root(*d))
        .collect();
    let proc = ProcRoot::default();
    let own = std::process::id();
    // nsview's own namespace: its mount is the daemon's business (`serve` recovers it).
    let mut visited: HashSet<u64> = proc.ns_inode(own, "mnt").into_iter().collect();
    let own_userns = namespace_owner(&proc, own);
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
        if own_userns.is_none() || namespace_owner(&proc, pid) != own_userns {
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
            Err(ReattachError::RunDeadline)
        } else {
            // Mounts of a namespace another user namespace owns are that namespace's root's
            // to make: nothing of theirs is bound again by the host's (see `beneath`).
            let host_owned = own_userns.is_some() && namespace_owner(&proc, pid) == own_userns;
            worker::in_child(DEADLINE, || {
                reattach(&args.mountpoint, pid, ticks, ns, &ours, host_owned)
            })
        };
        failures += usize::from(!say(&who, result));
    }
    if failures == 0 {
        Ok(())
    } else {
        Err(ReattachError::Incomplete { failures, total })
    }
}

/// The inode of the user namespace owning the mount namespace of `pid` (`NS_GET_USERNS`).
fn namespace_owner(proc: &ProcRoot, pid: u32) -> Option<u64> {
    Ns::of(proc, pid, "mnt").ok()?.owner().ok()?.inode().ok()
}

/// Prints the line for `who`; whether everything was reattached.
fn say(who: &str, result: Result<Outcome, ReattachError>) -> bool {
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
        Err(e) => (
            false,
            format!("not reattached: {}", nsview_proto::chain(&e)),
        ),
    };
    // The daemon reads these lines; without it there is no one to tell.
    let _ = nsview_proto::print_stdout(&format!("{who}: {line}\n"));
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
