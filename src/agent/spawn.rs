//! One agent process: started by fork+exec of the agent binary with the caller's namespace
//! descriptors, spoken to over a socket pair, ended by SIGKILL and reaped.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nsview_proto::agent::{MAX_LINE, Op, Payload, Request, Response, VERSION, decode, encode};

use super::{PoolConfig, into_result};
use crate::error::{AgentFailure, Error, Result};
use crate::procfs::ProcRoot;

pub use nsview_core::ns::{NsKey, NsKind};

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    /// Shared with its set's worker, which waits for its hangup (the agent's end).
    stream: std::sync::Arc<UnixStream>,
    /// Its answer to the hello.
    hello: Payload,
}

impl Agent {
    /// Starts an agent in the namespaces of task `tid` (whose key is `key`), joining only the
    /// kinds that differ from the daemon's own `own` (joining one's own user namespace fails).
    pub fn spawn(
        cfg: &PoolConfig,
        proc: &ProcRoot,
        tid: u32,
        key: NsKey,
        own: &NsKey,
    ) -> Result<Agent> {
        let mut files: Vec<(NsKind, File)> = Vec::new();
        for kind in NsKind::ALL {
            if key.get(kind) != own.get(kind) {
                let path = proc.pid_path(tid, &format!("ns/{}", kind.name()));
                let file = File::open(&path).map_err(|e| Error::read(&path, e))?;
                files.push((kind, file));
            }
        }
        // The namespaces opened must be the key's: the task may have exited and its pid been
        // reused meanwhile.
        if NsKey::of(proc, tid)? != key {
            return Err(Error::Gone(tid));
        }
        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::task("socketpair", tid, e))?;
        let mut cmd = Command::new(&cfg.exe);
        for (n, (kind, _)) in files.iter().enumerate() {
            cmd.arg("--ns").arg(format!("{}={}", kind.name(), 3 + n));
        }
        if cfg.allow_faults {
            cmd.arg("--allow-faults");
        }
        let theirs_out: OwnedFd = theirs
            .try_clone()
            .map_err(|e| Error::task("dup", tid, e))?
            .into();
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(theirs_out))
            .stderr(Stdio::inherit());
        let sources: Vec<RawFd> = files.iter().map(|(_, f)| f.as_raw_fd()).collect();
        // SAFETY: the hook runs in the forked child before exec and only calls fcntl and dup2
        // (async-signal-safe) on descriptors that `files` keeps open until spawn returns; it
        // allocates nothing (`sources` is moved in, iterated in place).
        unsafe { cmd.pre_exec(move || place_fds(&sources)) };
        let child = cmd
            .spawn()
            .map_err(|e| Error::task("spawn agent", tid, e))?;
        drop(files);
        // A request is one short line: the socket's timeout bounds sending it. Reading the
        // response is bounded by each call's deadline (`read_response`).
        ours.set_write_timeout(Some(cfg.timeout))
            .map_err(|e| Error::task("socket timeout", tid, e))?;
        let mut agent = Agent {
            child,
            stream: std::sync::Arc::new(ours),
            hello: Payload::Hello {
                version: VERSION,
                pid: 0,
                netns_cookie: None,
            },
        };
        match agent.call(0, Op::Hello { version: VERSION }, cfg.timeout) {
            Ok(hello @ Payload::Hello { version, .. }) if version == VERSION => {
                agent.hello = hello;
                Ok(agent)
            }
            other => {
                log::warn!("agent for task {tid} did not start: {other:?}");
                agent.end();
                Err(Error::Agent(AgentFailure::NotStarted))
            }
        }
    }

    /// The agent's pid (in the daemon's pid namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its answer to the hello at start (its version, pid and network namespace cookie).
    pub fn hello(&self) -> Payload {
        self.hello.clone()
    }

    /// The daemon's end of the agent's socket: it hangs up once the agent has ended.
    pub fn socket(&self) -> std::sync::Arc<UnixStream> {
        self.stream.clone()
    }

    /// Whether the agent's end of the socket is closed: it has ended, or is about to (or
    /// broke the protocol by closing it), and is no use.
    pub fn hung_up(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::empty())];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
            && fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `op` as request `id` and waits at most `timeout` for its response. Any breach
    /// (deadline, end of stream, a line that does not parse or is too long, bytes after it,
    /// a wrong id) is [`Error::Agent`] saying which: the pool then ends the agent.
    pub fn call(&mut self, id: u64, op: Op, timeout: Duration) -> Result<Payload> {
        crate::stats::agent(crate::stats::Agent::Exchange);
        let deadline = Instant::now() + timeout;
        let line = encode(&Request { id, op });
        let sent = (&*self.stream).write_all(&line);
        if sent.is_err() {
            return Err(Error::Agent(AgentFailure::Send));
        }
        self.read_response(deadline)
            .map_err(Error::Agent)
            .and_then(|response| into_result(response, id))
    }

    /// The response: one line. What the agent has sent is taken before the deadline is
    /// looked at, and the deadline only ends a wait for more. So an answer that came while
    /// the daemon itself was not running (stopped by SIGSTOP, a frozen cgroup, a paused VM)
    /// counts, while bytes trickling in are cut off at the deadline, which is checked each
    /// time the queue runs dry (and a line is at most `MAX_LINE`).
    fn read_response(&mut self, deadline: Instant) -> std::result::Result<Response, AgentFailure> {
        use nix::errno::Errno;
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::socket::{MsgFlags, recv};
        let mut line = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match recv(self.stream.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return Err(AgentFailure::Hangup),
                Ok(n) => {
                    let searched = line.len();
                    line.extend_from_slice(&chunk[..n]);
                    if let Some(at) = line[searched..].iter().position(|&b| b == b'\n') {
                        let end = searched + at;
                        let whole = end + 1 == line.len() && end <= MAX_LINE;
                        if !whole {
                            return Err(AgentFailure::Malformed);
                        }
                        return decode(&line).map_err(|_| AgentFailure::Malformed);
                    }
                    if line.len() > MAX_LINE {
                        return Err(AgentFailure::Malformed);
                    }
                    continue;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => return Err(AgentFailure::Hangup),
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(AgentFailure::Deadline)?;
            // Rounded up: a wait of 0 ms would spin until the deadline.
            let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return Err(AgentFailure::Hangup),
            }
        }
    }

    /// Kills the agent (its pid-namespace child follows through its parent-death signal) and
    /// reaps it: what dropping it does, said where it is meant.
    pub fn end(self) {
        drop(self);
    }
}

impl Drop for Agent {
    /// An agent is never left behind: one dropped anywhere (a request that found its slot
    /// evicted or reaped under it, an unwinding thread) is killed and reaped, not left a
    /// zombie of the daemon. A reaped agent's kill signals nothing.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the child before exec: moves the namespace descriptors to 3, 4, ... in order. They go
/// through copies above any target first, so no source is overwritten before it is moved.
fn place_fds(sources: &[RawFd]) -> std::io::Result<()> {
    let top = 3 + sources.len() as RawFd;
    let mut copies = [0 as RawFd; 8];
    for (i, fd) in sources.iter().enumerate().take(copies.len()) {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an open descriptor; async-signal-safe.
        let copy = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, top) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        copies[i] = copy;
    }
    for (i, copy) in copies.iter().take(sources.len()).enumerate() {
        // SAFETY: dup2 of an open descriptor onto 3 + i; the copy is closed at exec (CLOEXEC)
        // while the target, dup2's result, is inherited.
        if unsafe { libc::dup2(*copy, 3 + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
