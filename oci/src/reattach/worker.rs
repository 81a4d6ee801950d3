//! Each namespace's work in a forked child with a deadline: the child may join a mount
//! namespace and get stuck in a FUSE request there; the run goes on without it.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::{Outcome, ReattachError};

/// Runs `work` in a forked child (which may join namespaces and change directory freely)
/// and returns its result, or an error when it takes longer than `deadline` (it is killed).
/// The child's error crosses the pipe as its text ([`ReattachError::Worker`]).
/// The calling process must be single-threaded.
pub(super) fn in_child(
    deadline: Duration,
    work: impl FnOnce() -> Result<Outcome, ReattachError>,
) -> Result<Outcome, ReattachError> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(ReattachError::Pipe)?;
    // SAFETY: `nsview reattach` is single-threaded (no other thread can hold a lock the
    // child needs), and the child leaves with `_exit` without returning to the caller.
    match unsafe { nix::unistd::fork() }.map_err(ReattachError::Fork)? {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            // Not the parent's stdout and stderr: should the worker ever be stuck where
            // SIGKILL cannot reach it, it must not hold the pipes the daemon reads to EOF.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
                let _ = nix::unistd::dup2_stderr(&null);
            }
            let result: Result<Outcome, String> =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                    .unwrap_or(Err(ReattachError::Panicked))
                    .map_err(|e| nsview_proto::chain(&e));
            let line = nsview_proto::agent::encode(&result);
            let _ = std::fs::File::from(write_end).write_all(&line);
            // SAFETY: ends the child at once, without running the parent's exit handlers or
            // flushing buffers it inherited.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let answer = read_within(read_end, deadline);
            if answer.is_none() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            reap_within(child, Duration::from_secs(1));
            match answer {
                Some(text) => serde_json::from_slice::<Result<Outcome, String>>(&text)
                    .map_err(|_| ReattachError::NoAnswer)?
                    .map_err(ReattachError::Worker),
                None => Err(ReattachError::Deadline(deadline)),
            }
        }
    }
}

/// Everything readable from `fd` until EOF, or `None` when that takes longer than `deadline`.
fn read_within(fd: OwnedFd, deadline: Duration) -> Option<Vec<u8>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let end = Instant::now() + deadline;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return None,
        }
        match file.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Reaps `child`, waiting at most `grace` (a process stuck in a FUSE request that was
/// already read by its server ignores SIGKILL): such a child is left to init.
fn reap_within(child: nix::unistd::Pid, grace: Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let end = Instant::now() + grace;
    while let Ok(WaitStatus::StillAlive) = waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
