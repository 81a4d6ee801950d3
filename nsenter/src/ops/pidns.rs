//! Requests about a file of the *reader's* pid namespace, which the agent (outside that
//! namespace) cannot answer itself: each runs in a child forked into the namespace, and
//! `ns_last_pid` is read as the reader would see it natively, without the pids those children
//! took.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;

use super::Server;
use super::error::{OpError, reply};
use super::watch::readable_before_gone;
use nsview_proto::agent::{MAX_LINE, Op, Payload, Response, decode, encode};

/// Files whose handler reads or writes the value of the *reader's* pid namespace: the
/// namespaces table's pid line (`kernel/pid_max` is per namespace from Linux 6.14).
/// `kernel/cad_pid` is not written by containers, but it prints a pid as the reader's
/// namespace numbers it (0 where the host's init is not in it).
pub(super) const OF_THE_READERS_PID_NAMESPACE: [&str; 3] = [
    NS_LAST_PID,
    "proc/sys/kernel/pid_max",
    "proc/sys/kernel/cad_pid",
];

/// The pid namespace's last pid, as the kernel prints it.
const NS_LAST_PID: &str = "proc/sys/kernel/ns_last_pid";

/// How many of the agent's own children in the pid namespace [`before_helpers`] knows.
const HELPERS_KEPT: usize = 8;

impl Server {
    /// Executes `op` about `path` (one of [`OF_THE_READERS_PID_NAMESPACE`]) in a child in the
    /// pid namespace joined, and keeps the pid that child had there (see [`before_helpers`]).
    pub(super) fn execute_in_pid_namespace(&self, path: &str, op: Op) -> Result<Payload, OpError> {
        let last_pid = path == NS_LAST_PID && matches!(op, Op::Read { .. });
        let set_last_pid = path == NS_LAST_PID && matches!(op, Op::Write { .. });
        let (result, helper) = in_child(&self.gone, || self.execute_here(op));
        let mut helpers = self.helpers.borrow_mut();
        // Pids are handed out upwards: one below the last child's means the count was set
        // back (a write, a wrap), and the pids known so far say nothing of what lies below.
        if set_last_pid || helpers.back().is_some_and(|&last| helper < last) {
            helpers.clear();
        }
        if helpers.len() == HELPERS_KEPT {
            helpers.pop_front();
        }
        if !set_last_pid {
            helpers.push_back(helper);
        }
        match result {
            Ok(Payload::Data(data)) if last_pid => Ok(Payload::Data(before_helpers(
                &data,
                helpers.make_contiguous(),
            ))),
            other => other,
        }
    }
}

/// Runs `f` in a child, which is in the pid namespace the agent joined for its children, and
/// returns what it answered (through a pipe, as a protocol response whose id is the child's
/// pid in that namespace), and that pid.
/// While it waits for the child, it also watches `gone` (the pidfds
/// [`UntilGone`](super::UntilGone) watches): a child the container stopped must not keep the
/// agent alive once the daemon is gone.
pub(super) fn in_child(
    gone: &[OwnedFd],
    f: impl FnOnce() -> Result<Payload, OpError>,
) -> (Result<Payload, OpError>, u64) {
    use nix::unistd::{ForkResult, fork, pipe2};
    let (from_child, to_parent) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(e) => return (Err(OpError::Pipe(e)), 0),
    };
    // SAFETY: the agent is single-threaded, so the child may run any code after fork.
    let forked = match unsafe { fork() } {
        Ok(forked) => forked,
        Err(e) => return (Err(OpError::Fork(e)), 0),
    };
    match forked {
        ForkResult::Child => {
            drop(from_child);
            let id = nix::unistd::getpid().as_raw() as u64;
            let _ = std::fs::File::from(to_parent).write_all(&encode(&reply(id, f())));
            // SAFETY: ending the child at once, without running the agent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(to_parent);
            // A poll failure is no sign the daemon is gone: the read below decides then.
            if !readable_before_gone(from_child.as_fd(), gone).unwrap_or(true) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return (Err(OpError::Gone), 0);
            }
            let mut line = Vec::new();
            let read = std::fs::File::from(from_child)
                .take(MAX_LINE as u64)
                .read_to_end(&mut line);
            let _ = nix::sys::wait::waitpid(child, None);
            match read.ok().and_then(|_| decode::<Response>(&line).ok()) {
                Some(Response::Ok { payload, id }) => (Ok(payload), id),
                Some(Response::Err { errno, message, id }) => {
                    (Err(OpError::InNamespace { errno, message }), id)
                }
                None => (Err(OpError::NoAnswer), 0),
            }
        }
    }
}

/// `ns_last_pid` as the reader would see it natively: the value a child of the agent read
/// (`data`), less the pids the agent's own children took last (`helpers`), which the reader
/// never forked: a lookup and a read each take one, so a native `cat` reads its own pid where
/// the child would read its own. Pids are handed out upwards, so the reader's last pid is the
/// first below the value that is no child's. Anything but a number is left as it is.
fn before_helpers(data: &[u8], helpers: &[u64]) -> Vec<u8> {
    let Some(mut pid) = std::str::from_utf8(data)
        .ok()
        .and_then(|text| text.strip_suffix('\n'))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return data.to_vec();
    };
    while pid > 1 && helpers.contains(&pid) {
        pid -= 1;
    }
    format!("{pid}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_pid_skips_the_agents_own_children() {
        assert_eq!(before_helpers(b"102\n", &[101, 102]), b"100\n");
        assert_eq!(before_helpers(b"102\n", &[102]), b"101\n");
        // A reader forked after the agent's child: its own pid is the last.
        assert_eq!(before_helpers(b"103\n", &[101, 102]), b"103\n");
        assert_eq!(before_helpers(b"2\n", &[1, 2]), b"1\n");
        assert_eq!(before_helpers(b"x\n", &[1]), b"x\n");
        assert_eq!(before_helpers(b"", &[]), b"");
    }
}
