//! Serving requests: one line in, one line out, until the daemon closes the stream.
//!
//! Every path is resolved beneath the agent's own root (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` after [`check_path`], which allows only its
//! `proc/sys` and `sys/devices/virtual/net`). Reads, access checks and
//! writes run with the caller's fsuid, fsgid and effective capabilities (set for the one
//! operation, then restored), so the kernel's own permission checks decide exactly as they
//! would for the caller. Supplementary groups are not carried over (sysctl files are
//! root-owned; a group grant on them is unheard of).

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, SFlag, fstatat};
use rustix::fs::{ResolveFlags, openat2};
use rustix::thread::{CapabilitySet, CapabilitySets, capabilities, set_capabilities};

use crate::protocol::{
    Creds, DirItem, Fault, Kind, MAX_LINE, MAX_READ, MAX_WRITE, Op, Payload, Request, Response,
    Stat, VERSION, check_path, decode, encode,
};

/// A failed operation: errno and message.
type Failure = (i32, String);

/// Files whose handler reads or writes the value of the *reader's* pid namespace: the
/// namespaces table's pid line (`kernel/pid_max` is per namespace from Linux 6.14).
/// `kernel/cad_pid` is not written by containers, but it prints a pid as the reader's
/// namespace numbers it (0 where the host's init is not in it).
const OF_THE_READERS_PID_NAMESPACE: [&str; 3] = [
    NS_LAST_PID,
    "proc/sys/kernel/pid_max",
    "proc/sys/kernel/cad_pid",
];

/// The daemon's stream, which reads as ended once any of `gone` (pidfds: the daemon's, and
/// the init of the pid namespace served when the agent is outside it) says its process
/// exited: the kernel ends neither an agent outside the namespace with its init nor any
/// agent with the daemon (a stream another process still held would stay open).
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

/// Runs `f` in a child, which is in the pid namespace the agent joined for its children, and
/// returns what it answered (through a pipe, as a protocol response whose id is the child's
/// pid in that namespace), and that pid.
/// While it waits for the child, it also watches `gone` (the pidfds [`UntilGone`] watches): a
/// child the container stopped must not keep the agent alive once the daemon is gone.
fn in_child(
    gone: &[OwnedFd],
    f: impl FnOnce() -> Result<Payload, Failure>,
) -> (Result<Payload, Failure>, u64) {
    use nix::unistd::{ForkResult, fork, pipe2};
    let (from_child, to_parent) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(e) => return (Err(fail(e, "pipe")), 0),
    };
    // SAFETY: the agent is single-threaded, so the child may run any code after fork.
    let forked = match unsafe { fork() } {
        Ok(forked) => forked,
        Err(e) => return (Err(fail(e, "fork into the pid namespace")), 0),
    };
    match forked {
        ForkResult::Child => {
            drop(from_child);
            let id = nix::unistd::getpid().as_raw() as u64;
            let reply = match f() {
                Ok(payload) => Response::Ok { id, payload },
                Err((errno, message)) => Response::Err { id, errno, message },
            };
            let _ = std::fs::File::from(to_parent).write_all(&encode(&reply));
            // SAFETY: ending the child at once, without running the agent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(to_parent);
            // A poll failure is no sign the daemon is gone: the read below decides then.
            if !readable_before_gone(from_child.as_fd(), gone).unwrap_or(true) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return (
                    Err((libc::EIO, "the daemon or the namespace is gone".into())),
                    0,
                );
            }
            let mut line = Vec::new();
            let read = std::fs::File::from(from_child)
                .take(MAX_LINE as u64)
                .read_to_end(&mut line);
            let _ = nix::sys::wait::waitpid(child, None);
            match read.ok().and_then(|_| decode::<Response>(&line).ok()) {
                Some(Response::Ok { payload, id }) => (Ok(payload), id),
                Some(Response::Err { errno, message, id }) => (Err((errno, message)), id),
                None => (
                    Err((libc::EIO, "no answer from the pid namespace".into())),
                    0,
                ),
            }
        }
    }
}

/// The pid namespace's last pid, as the kernel prints it.
const NS_LAST_PID: &str = "proc/sys/kernel/ns_last_pid";

/// How many of the agent's own children in the pid namespace [`before_helpers`] knows.
const HELPERS_KEPT: usize = 8;

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

/// Waits until `fd` has something to read (or its writer closed it), or a process of `gone`
/// (pidfds) has exited; false for the latter.
fn readable_before_gone(fd: BorrowedFd<'_>, gone: &[OwnedFd]) -> std::io::Result<bool> {
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

fn fail(errno: Errno, what: impl std::fmt::Display) -> Failure {
    (errno as i32, format!("{what}: {}", errno.desc()))
}

fn io_fail(e: std::io::Error, what: impl std::fmt::Display) -> Failure {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    (errno, format!("{what}: {e}"))
}

/// The agent's request loop (the daemon's handle on an agent is `nsview::agent::Agent`): the
/// root it resolves paths beneath, the cookie of the network namespace it is in, and whether
/// faults are obeyed.
#[derive(Debug)]
pub struct Server {
    root: OwnedFd,
    netns_cookie: Option<u64>,
    allow_faults: bool,
    /// The buffer reads go through ([`MAX_READ`] bytes, made once).
    buffer: std::cell::RefCell<Vec<u8>>,
    /// The pids the last children in the pid namespace had there (see [`before_helpers`]).
    helpers: std::cell::RefCell<std::collections::VecDeque<u64>>,
    /// The processes whose end ends the agent (see [`UntilGone`]).
    gone: std::rc::Rc<[OwnedFd]>,
}

impl Server {
    /// A server resolving paths beneath `root` (its private root directory), in the network
    /// namespace whose cookie is `netns_cookie`.
    pub fn new(root: OwnedFd, netns_cookie: Option<u64>, allow_faults: bool) -> Server {
        Server {
            root,
            buffer: std::cell::RefCell::new(vec![0; MAX_READ]),
            helpers: Default::default(),
            gone: std::rc::Rc::from(Vec::new()),
            netns_cookie,
            allow_faults,
        }
    }

    /// The server watching `gone` (see [`UntilGone`]) while a child in the pid namespace
    /// works for it.
    pub fn watching(mut self, gone: std::rc::Rc<[OwnedFd]>) -> Server {
        self.gone = gone;
        self
    }

    /// Serves lines from `input` to `output` until end of input or a line it cannot resync
    /// after; returns the process exit status.
    pub fn serve(&self, input: impl Read, mut output: impl Write) -> i32 {
        let mut input = std::io::BufReader::new(input);
        let mut greeted = false;
        loop {
            let line = match crate::protocol::read_line(&mut input, MAX_LINE) {
                Ok(Some(line)) => line,
                Ok(None) => return 0,
                Err(e) => {
                    // A line too long to parse cannot be skipped safely: say so and stop.
                    let _ = output.write_all(&encode(&Response::Err {
                        id: 0,
                        errno: libc::EINVAL,
                        message: e.to_string(),
                    }));
                    return 1;
                }
            };
            let request = match decode::<Request>(&line) {
                Ok(r) => r,
                Err(e) => {
                    let reply = Response::Err {
                        id: 0,
                        errno: libc::EINVAL,
                        message: e.to_string(),
                    };
                    if output
                        .write_all(&encode(&reply))
                        .and_then(|()| output.flush())
                        .is_err()
                    {
                        return 1;
                    }
                    continue;
                }
            };
            if !greeted {
                let ok = matches!(request.op, Op::Hello { version } if version == VERSION);
                let reply = if ok {
                    Response::Ok {
                        id: request.id,
                        payload: Payload::Hello {
                            version: VERSION,
                            pid: std::process::id(),
                            netns_cookie: self.netns_cookie,
                        },
                    }
                } else {
                    let message = format!(
                        "expected hello with version {VERSION}, got {:?}",
                        request.op
                    );
                    Response::Err {
                        id: request.id,
                        errno: libc::EPROTO,
                        message,
                    }
                };
                let _ = output
                    .write_all(&encode(&reply))
                    .and_then(|()| output.flush());
                if !ok {
                    return 1;
                }
                greeted = true;
                continue;
            }
            if let Op::Fault { fault } = request.op
                && self.allow_faults
            {
                if fault == Fault::HangInNamespace {
                    let _ = in_child(&self.gone, || {
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(3600));
                        }
                    });
                } else {
                    misbehave(request.id, fault, &mut output);
                }
                continue;
            }
            let reply = match self.execute(request.op) {
                Ok(payload) => Response::Ok {
                    id: request.id,
                    payload,
                },
                Err((errno, message)) => Response::Err {
                    id: request.id,
                    errno,
                    message,
                },
            };
            if output
                .write_all(&encode(&reply))
                .and_then(|()| output.flush())
                .is_err()
            {
                return 1;
            }
        }
    }

    /// Executes one operation; one about a file of the reader's pid namespace in a child in
    /// the pid namespace joined (the agent itself is not in it).
    pub fn execute(&self, op: Op) -> Result<Payload, Failure> {
        let path = match &op {
            Op::Lookup { path }
            | Op::Read { path, .. }
            | Op::Access { path, .. }
            | Op::Write { path, .. } => Some(path.as_str()),
            _ => None,
        };
        let Some(path) = path.filter(|p| OF_THE_READERS_PID_NAMESPACE.contains(p)) else {
            return self.execute_here(op);
        };
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

    fn execute_here(&self, op: Op) -> Result<Payload, Failure> {
        match op {
            Op::Hello { .. } => Err((libc::EPROTO, "hello twice".into())),
            Op::Fault { .. } => Err((libc::EPERM, "faults are not enabled".into())),
            Op::Lookup { path } => {
                checked(&path)?;
                let mut stat = self.stat(&path)?;
                if stat.kind == Kind::File {
                    stat.len = Some(self.len(&path, stat.mode));
                }
                Ok(Payload::Entry(stat))
            }
            Op::Readdir { path } => {
                checked(&path)?;
                Ok(Payload::Entries(self.readdir(&path)?))
            }
            Op::Read { path, creds } => {
                checked(&path)?;
                with_creds(creds, || self.read(&path)).map(Payload::Data)
            }
            Op::Access { path, write, creds } => {
                checked(&path)?;
                let flags = if write {
                    OFlag::O_WRONLY
                } else {
                    OFlag::O_RDONLY
                };
                with_creds(creds, || self.open(&path, flags).map(drop)).map(|()| Payload::Allowed)
            }
            Op::Write {
                path,
                offset,
                data,
                creds,
            } => {
                checked(&path)?;
                if data.len() > MAX_WRITE {
                    return Err((libc::EINVAL, format!("write of {} bytes", data.len())));
                }
                with_creds(creds, || self.write(&path, offset, &data))
                    .map(|(n, pos)| Payload::Written { n, pos })
            }
            Op::Readlink { path } => {
                checked(&path)?;
                let target = nix::fcntl::readlinkat(self.root.as_fd(), dot(&path))
                    .map_err(|e| fail(e, &path))?;
                Ok(Payload::Link(target.to_string_lossy().into_owned()))
            }
        }
    }

    fn open(&self, path: &str, flags: OFlag) -> Result<OwnedFd, Failure> {
        let flags = rustix::fs::OFlags::from_bits_retain((flags | OFlag::O_CLOEXEC).bits() as u32);
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        openat2(
            self.root.as_fd(),
            dot(path),
            flags,
            rustix::fs::Mode::empty(),
            resolve,
        )
        .map_err(|e| fail(Errno::from_raw(e.raw_os_error()), path))
    }

    fn stat(&self, path: &str) -> Result<Stat, Failure> {
        let st = fstatat(self.root.as_fd(), dot(path), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| fail(e, path))?;
        stat_of(&st).ok_or((
            libc::ENOENT,
            format!("{path}: not a file, directory or link"),
        ))
    }

    /// The length of file `path`'s content if everyone may read it (its mode says so), else
    /// 0: a length is all a lookup tells, and only of what any caller could read anyway.
    fn len(&self, path: &str, mode: u32) -> u64 {
        if mode & 0o004 == 0 {
            return 0;
        }
        self.read(path).map_or(0, |data| data.len() as u64)
    }

    fn readdir(&self, path: &str) -> Result<Vec<DirItem>, Failure> {
        let fd = self.open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| fail(e, path))?;
        let dir_fd = dir
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| io_fail(e, path))?;
        let mut items = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| fail(e, path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            // An entry that vanishes meanwhile (an interface removed) is left out.
            let Ok(st) = fstatat(dir_fd.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            if let Some(stat) = stat_of(&st) {
                items.push(DirItem { name, stat });
            }
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    /// The whole file, at most [`MAX_READ`] bytes. The first read(2) asks for all of them:
    /// some handlers give their text only to a read at position 0 and end-of-file after
    /// (`dev/cdrom/info`), so a small first read (`read_to_end` probes with 32 bytes) would
    /// cut them short.
    fn read(&self, path: &str) -> Result<Vec<u8>, Failure> {
        let mut file = std::fs::File::from(self.open(path, OFlag::O_RDONLY)?);
        let mut data = self.buffer.borrow_mut();
        let mut len = 0;
        while len < data.len() {
            match file.read(&mut data[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_fail(e, path)),
            }
        }
        Ok(data[..len].to_vec())
    }

    /// One write(2) at file position `offset`; the bytes taken and the position after (a
    /// sysctl takes a whole value per write, and its handler decides how the position moves).
    fn write(&self, path: &str, offset: u64, data: &[u8]) -> Result<(usize, u64), Failure> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::from(self.open(path, OFlag::O_WRONLY)?);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_fail(e, path))?;
        let n = file.write(data).map_err(|e| io_fail(e, path))?;
        let pos = file.stream_position().map_err(|e| io_fail(e, path))?;
        Ok((n, pos))
    }
}

fn checked(path: &str) -> Result<(), Failure> {
    check_path(path).map_err(|m| (libc::EINVAL, m))
}

/// "" (the root itself) as a path the *at calls take.
fn dot(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

fn stat_of(st: &FileStat) -> Option<Stat> {
    let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => return None,
    };
    Some(Stat {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        len: None,
    })
}

/// Runs `f` with the effective uid and gid and the effective capabilities of `creds`
/// (capped by what the agent may hold), then becomes the namespace's root again.
///
/// The effective ids, not only the file-system ones: sysctl permission checks look at the
/// euid (`net_ctl_permissions` treats euid 0 as the owner), and then at capabilities in the
/// write handlers, which is how uid 1000 gets EACCES and capability-less root gets EPERM.
/// Changing the euid from 0 clears the effective capabilities and changing it back to 0
/// refills them from the permitted set (the real and saved uid stay 0 throughout).
fn with_creds<T>(creds: Creds, f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    use nix::unistd::{Gid, Uid, setegid, seteuid};
    let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
    let saved = capabilities(None).map_err(|e| fail(errno(e), "capget"))?;
    setegid(Gid::from_raw(creds.gid)).map_err(|e| fail(e, "setegid"))?;
    let result = match seteuid(Uid::from_raw(creds.uid)) {
        Ok(()) => {
            let effective = CapabilitySet::from_bits_retain(creds.caps) & saved.permitted;
            match set_capabilities(None, CapabilitySets { effective, ..saved }) {
                Ok(()) => f(),
                Err(e) => Err(fail(errno(e), "capset")),
            }
        }
        Err(e) => Err(fail(e, "seteuid")),
    };
    // Back to root of the namespace: cannot fail while the real and saved uid are 0.
    let _ = seteuid(Uid::from_raw(0));
    let _ = setegid(Gid::from_raw(0));
    let _ = set_capabilities(None, saved);
    result
}

/// Makes the agent root of the user namespace it joined (real, effective and saved ids 0),
/// the identity `with_creds` returns to.
pub fn become_namespace_root() -> Result<(), String> {
    use nix::unistd::{Gid, Uid, setresgid, setresuid};
    let root_gid = Gid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).map_err(|e| format!("setresgid(0): {e}"))?;
    let root = Uid::from_raw(0);
    setresuid(root, root, root).map_err(|e| format!("setresuid(0): {e}"))
}

fn misbehave(id: u64, fault: Fault, output: &mut impl Write) {
    match fault {
        Fault::Garbage => {
            let _ = output.write_all(b"this is not json\n");
        }
        Fault::Oversized => {
            let _ = output.write_all(&vec![b'x'; MAX_LINE + 16]);
            let _ = output.write_all(b"\n");
        }
        Fault::Hang => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Fault::HangInNamespace => {}
        Fault::Slow => {
            std::thread::sleep(crate::protocol::SLOW_FAULT);
            let reply = Response::Ok {
                id,
                payload: Payload::Allowed,
            };
            let _ = output.write_all(&encode(&reply));
        }
    }
    let _ = output.flush();
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
    use crate::protocol::Request;

    /// An agent over a fixture tree, as root with the process's own capabilities.
    fn agent(dir: &std::path::Path) -> Server {
        let root = std::fs::File::open(dir).unwrap();
        Server::new(root.into(), Some(7), false)
    }

    fn converse(agent: &Server, requests: &[Request]) -> Vec<Response> {
        let mut input = Vec::new();
        for r in requests {
            input.extend(encode(r));
        }
        let mut out = Vec::new();
        agent.serve(&input[..], &mut out);
        parse_replies(&out)
    }

    /// The responses in an agent's output.
    fn parse_replies(out: &[u8]) -> Vec<Response> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| decode(l).unwrap())
            .collect()
    }

    fn hello() -> Request {
        Request {
            id: 1,
            op: Op::Hello { version: VERSION },
        }
    }

    fn root_creds() -> Creds {
        Creds {
            uid: 0,
            gid: 0,
            caps: u64::MAX,
        }
    }

    #[test]
    fn lookup_readdir_read_and_write_beneath_the_root() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("proc/sys/net")).unwrap();
        std::fs::write(dir.join("proc/sys/net/ip_forward"), "0\n").unwrap();
        let a = agent(&dir);
        let replies = converse(
            &a,
            &[
                hello(),
                Request {
                    id: 2,
                    op: Op::Readdir {
                        path: "proc/sys/net".into(),
                    },
                },
                Request {
                    id: 3,
                    op: Op::Write {
                        path: "proc/sys/net/ip_forward".into(),
                        offset: 0,
                        data: b"1\n".to_vec(),
                        creds: root_creds(),
                    },
                },
                Request {
                    id: 4,
                    op: Op::Read {
                        path: "proc/sys/net/ip_forward".into(),
                        creds: root_creds(),
                    },
                },
                Request {
                    id: 5,
                    op: Op::Lookup {
                        path: "proc/sys/../../etc".into(),
                    },
                },
                Request {
                    id: 6,
                    op: Op::Lookup {
                        path: "proc/sys/nope".into(),
                    },
                },
            ],
        );
        assert!(matches!(
            replies[0],
            Response::Ok {
                payload: Payload::Hello { .. },
                ..
            }
        ));
        let Response::Ok {
            payload: Payload::Entries(items),
            ..
        } = &replies[1]
        else {
            panic!("{replies:?}")
        };
        assert_eq!(items[0].name, "ip_forward");
        assert_eq!(items[0].stat.kind, Kind::File);
        assert_eq!(
            replies[2],
            Response::Ok {
                id: 3,
                payload: Payload::Written { n: 2, pos: 2 }
            }
        );
        assert_eq!(
            replies[3],
            Response::Ok {
                id: 4,
                payload: Payload::Data(b"1\n".to_vec())
            }
        );
        assert!(matches!(
            replies[4],
            Response::Err {
                id: 5,
                errno: libc::EINVAL,
                ..
            }
        ));
        assert!(matches!(
            replies[5],
            Response::Err {
                id: 6,
                errno: libc::ENOENT,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_and_a_wrong_version_get_clean_errors() {
        let dir = tempfile_dir();
        let a = agent(&dir);
        let mut out = Vec::new();
        let mut input = b"not json at all\n".to_vec();
        input.extend(encode(&Request {
            id: 9,
            op: Op::Hello {
                version: VERSION + 1,
            },
        }));
        assert_eq!(a.serve(&input[..], &mut out), 1);
        let replies = parse_replies(&out);
        assert!(matches!(
            replies[0],
            Response::Err {
                id: 0,
                errno: libc::EINVAL,
                ..
            }
        ));
        assert!(matches!(
            replies[1],
            Response::Err {
                id: 9,
                errno: libc::EPROTO,
                ..
            }
        ));
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        let mut out = Vec::new();
        assert_eq!(a.serve(&long[..], &mut out), 1);
        assert!(matches!(
            decode::<Response>(out.trim_ascii_end()).unwrap(),
            Response::Err {
                errno: libc::EINVAL,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_last_line_gets_an_error_and_the_agent_ends() {
        let dir = tempfile_dir();
        let a = agent(&dir);
        let mut input = encode(&hello());
        input.extend_from_slice(br#"{"id":2,"op":{"lookup":{"pa"#);
        let mut out = Vec::new();
        assert_eq!(a.serve(&input[..], &mut out), 0);
        let replies = parse_replies(&out);
        assert!(matches!(
            replies[1],
            Response::Err {
                id: 0,
                errno: libc::EINVAL,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn faults_are_refused_unless_enabled() {
        let dir = tempfile_dir();
        let replies = converse(
            &agent(&dir),
            &[
                hello(),
                Request {
                    id: 2,
                    op: Op::Fault {
                        fault: Fault::Garbage,
                    },
                },
            ],
        );
        assert!(matches!(
            replies[1],
            Response::Err {
                errno: libc::EPERM,
                ..
            }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("nsview-agent-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
