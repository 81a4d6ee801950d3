//! Who made a FUSE request.
//!
//! The kernel gives a request the caller's TID as seen from the daemon's pid namespace (0 when
//! the caller is not visible there), plus fsuid and fsgid. Nothing else is trusted for identity.
//!
//! Two depths of identification, by what a mistaken one would cost:
//! - [`pidns_of`]: one `readlink` of `/proc/<tid>/ns/pid`, all a read needs to pick its
//!   container (the hot path of every `open`). It is not pinned, and need not be: the caller
//!   is blocked in the system call the request serves, so its TID names it until the reply,
//!   unless a fatal signal ends it meanwhile. Then the TID may be reused (after the whole pid
//!   space has cycled), a view may be rendered for the new task's container, and the reply
//!   goes to nobody: the kernel drops the answer of an interrupted request with the task.
//! - [`Pin`]: a pidfd taken before and checked after the facts are read, for every decision
//!   with an effect (a write through an agent, to a store or to a host-global file), so that
//!   no fact of a task that reused the id decides a change.

use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Error, Result};
use crate::procfs::ProcRoot;

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
        if again.tgid != self.tgid || !pidfd_alive(&self.pidfd) {
            return Err(Error::Gone(self.tid));
        }
        Ok(())
    }
}

/// The pid-namespace inode of task `tid`: the hot path of every `open`.
pub fn pidns_of(proc: &ProcRoot, tid: u32) -> Result<u64> {
    if tid == 0 {
        return Err(Error::Gone(0));
    }
    proc.ns_inode(tid, "pid").map_err(|_| Error::Gone(tid))
}

/// Whether the process of `pidfd` still runs (a pidfd becomes readable when it exits).
pub fn pidfd_alive(pidfd: &OwnedFd) -> bool {
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
    fn a_pin_holds_while_its_process_lives_and_fails_once_it_ended() {
        let proc = ProcRoot::default();
        let tid = nix::unistd::gettid().as_raw() as u32;
        Pin::new(&proc, tid).unwrap().check(&proc).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pin = Pin::new(&proc, child.id()).unwrap();
        pin.check(&proc).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(pin.check(&proc), Err(Error::Gone(_))));
    }

    #[test]
    fn pid_zero_and_vanished_tasks_are_gone() {
        let proc = ProcRoot::default();
        assert!(matches!(Pin::new(&proc, 0), Err(Error::Gone(0))));
        assert!(matches!(pidns_of(&proc, 0), Err(Error::Gone(0))));
        // pid_max is at most 2^22: this pid cannot exist.
        assert!(matches!(pidns_of(&proc, 1 << 23), Err(Error::Gone(_))));
    }
}
