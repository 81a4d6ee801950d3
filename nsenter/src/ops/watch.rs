//! Watching the processes whose end ends the agent: the daemon, and the init of the pid
//! namespace served when the agent is outside it. The kernel ends neither an agent outside
//! the namespace with its init nor any agent with the daemon (a stream another process still
//! held would stay open), so the agent polls their pidfds beside whatever it waits for.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

/// The daemon's stream, which reads as ended once any of `gone` (pidfds: the daemon's, and
/// the init of the pid namespace served when the agent is outside it) says its process
/// exited.
#[derive(Debug)]
pub struct UntilGone<R> {
    /// The stream.
    pub input: R,
    /// Its descriptor, polled with `gone`.
    pub fd: std::os::fd::RawFd,
    /// The pidfds watched.
    pub gone: std::rc::Rc<[OwnedFd]>,
}

impl<R: Read> Read for UntilGone<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: `fd` is the stream's descriptor, open for as long as `input` is.
        let input = unsafe { BorrowedFd::borrow_raw(self.fd) };
        if !readable_before_gone(input, &self.gone)? {
            return Ok(0);
        }
        self.input.read(buf)
    }
}

/// Waits until `fd` has something to read (or its writer closed it), or a process of `gone`
/// (pidfds) has exited; false for the latter.
pub(super) fn readable_before_gone(fd: BorrowedFd<'_>, gone: &[OwnedFd]) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds: Vec<PollFd<'_>> = std::iter::once(fd)
        .chain(gone.iter().map(AsFd::as_fd))
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let ended = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
    Ok(!fds[1..].iter().any(ended))
}
