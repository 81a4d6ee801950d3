//! Who made a FUSE request.
//!
//! The kernel gives a request the caller's TID as seen from the daemon's pid namespace (0 when
//! the caller is not visible there), plus fsuid and fsgid. Nothing else is trusted for identity.
//!
//! Two depths of identification:
//! - [`pidns_of`]: one `readlink` of `/proc/<tid>/ns/pid`, all a read-only view needs to pick
//!   its container (the hot path of every `open`).
//! - [`Caller::identify`]: the whole picture (pidfd, Tgid, NSpid, every namespace, cgroups),
//!   verified through the pidfd, for operations whose outcome depends on who the caller is.

use std::os::fd::{AsFd, OwnedFd};

use crate::cgroup::{CgroupPaths, parse_proc_cgroup};
use crate::container::NsIds;
use crate::error::{Error, Result};
use crate::procfs::ProcRoot;

/// A fully identified caller.
#[derive(Debug)]
pub struct Caller {
    /// The calling thread, in the daemon's pid namespace.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// A pidfd to the process, which pins its identity.
    pub pidfd: OwnedFd,
    /// Its pid in each pid namespace, outermost first.
    pub nspid: Vec<u32>,
    /// Effective uid and gid (from `status`; FUSE's fsuid/fsgid come with the request).
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Its namespaces.
    pub ns: NsIds,
    /// Its cgroups.
    pub cgroups: CgroupPaths,
}

/// A task held by a pidfd on its process: facts read about the task between [`Pin::new`]
/// and a successful [`Pin::check`] are its own, not those of a later task that reused its id.
#[derive(Debug)]
pub struct Pin {
    tid: u32,
    tgid: u32,
    pidfd: OwnedFd,
}

impl Pin {
    /// Pins task `tid`; a vanished task is [`Error::Gone`].
    pub fn new(proc: &ProcRoot, tid: u32) -> Result<Pin> {
        if tid == 0 {
            return Err(Error::Gone(0));
        }
        let status = proc.status(tid).map_err(|_| Error::Gone(tid))?;
        let pidfd = rustix::process::Pid::from_raw(status.tgid as i32)
            .ok_or(Error::Gone(tid))
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                    .map_err(|_| Error::Gone(tid))
            })?;
        Ok(Pin {
            tid,
            tgid: status.tgid,
            pidfd,
        })
    }

    /// Confirms that the task still belongs to the pinned process, which has not exited:
    /// its id was not reused since [`Pin::new`].
    pub fn check(&self, proc: &ProcRoot) -> Result<()> {
        // The Tgid read before the pidfd existed must still name this thread's process.
        let again = proc.status(self.tid).map_err(|_| Error::Gone(self.tid))?;
        if again.tgid != self.tgid || !alive(&self.pidfd) {
            return Err(Error::Gone(self.tid));
        }
        Ok(())
    }
}

impl Caller {
    /// Identifies task `tid`: pins it, reads `status`, `ns/*` and `cgroup`, then checks the
    /// pin, so no fact comes from a task that reused the pid. A vanished caller is
    /// [`Error::Gone`].
    pub fn identify(proc: &ProcRoot, tid: u32) -> Result<Caller> {
        let pin = Pin::new(proc, tid)?;
        let status = proc.status(tid).map_err(|_| Error::Gone(tid))?;
        let ns = NsIds::read(proc, tid)?;
        let cgroups = parse_proc_cgroup(&proc.cgroup(tid)?);
        pin.check(proc)?;
        Ok(Caller {
            tid,
            tgid: pin.tgid,
            pidfd: pin.pidfd,
            nspid: status.nspid,
            uid: status.euid,
            gid: status.egid,
            ns,
            cgroups,
        })
    }

    /// Whether the caller lives in a pid namespace below the daemon's.
    pub fn in_child_pidns(&self) -> bool {
        self.nspid.len() > 1
    }
}

/// The pid-namespace inode of task `tid`: the hot path of every `open`.
pub fn pidns_of(proc: &ProcRoot, tid: u32) -> Result<u64> {
    if tid == 0 {
        return Err(Error::Gone(0));
    }
    proc.ns_inode(tid, "pid").map_err(|_| Error::Gone(tid))
}

fn alive(pidfd: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_this_test_thread_in_the_real_proc() {
        let proc = ProcRoot::default();
        let tid = nix::unistd::gettid().as_raw() as u32;
        let caller = Caller::identify(&proc, tid).unwrap();
        assert_eq!(caller.tgid, std::process::id());
        assert_eq!(caller.nspid.first(), Some(&tid));
        assert_eq!(caller.ns.pid(), pidns_of(&proc, tid).unwrap());
    }

    #[test]
    fn pid_zero_and_vanished_tasks_are_gone() {
        let proc = ProcRoot::default();
        assert!(matches!(Caller::identify(&proc, 0), Err(Error::Gone(0))));
        assert!(matches!(pidns_of(&proc, 0), Err(Error::Gone(0))));
        // pid_max is at most 2^22: this pid cannot exist.
        assert!(matches!(pidns_of(&proc, 1 << 23), Err(Error::Gone(_))));
    }
}
