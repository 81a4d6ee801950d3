//! Serving requests: one line in, one line out, until the daemon closes the stream.
//!
//! Every path is resolved beneath the agent's own root (see `files`, after
//! [`check_path`], which allows only its `proc/sys` and `sys/devices/virtual/net`). Reads,
//! access checks and writes run with the caller's fsuid, fsgid and effective capabilities
//! (set for the one operation, then restored: `creds`), so the kernel's own permission
//! checks decide exactly as they would for the caller. Supplementary groups are not carried
//! over (sysctl files are root-owned; a group grant on them is unheard of). A file of the
//! reader's pid namespace is served by a child in it (`pidns`); the daemon's end, or the
//! namespace's, ends the agent (`watch`). A failure answers its errno and what failed
//! ([`OpError`]).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use rustix::fs::OFlags;

use nsview_proto::agent::{
    Kind, MAX_LINE, MAX_READ, MAX_WRITE, Op, Payload, Request, Response, VERSION, check_path,
    decode, encode,
};

mod creds;
mod error;
mod files;
mod pidns;
mod watch;

pub use creds::{CredsError, become_namespace_root};
pub use error::OpError;
pub use watch::UntilGone;

use creds::with_creds;
use error::reply;
#[cfg(feature = "test-faults")]
use nsview_proto::agent::Fault;
use pidns::OF_THE_READERS_PID_NAMESPACE;
#[cfg(feature = "test-faults")]
use pidns::in_child;

/// The agent's request loop (the daemon's handle on an agent is `nsview::agent::Agent`): the
/// root it resolves paths beneath, the cookie of the network namespace it is in, and whether
/// faults are obeyed.
#[derive(Debug)]
pub struct Server {
    root: OwnedFd,
    netns_cookie: Option<u64>,
    #[cfg_attr(not(feature = "test-faults"), allow(dead_code))]
    allow_faults: bool,
    /// The buffer reads go through ([`MAX_READ`] bytes, made once).
    buffer: std::cell::RefCell<Vec<u8>>,
    /// The pids the last children in the pid namespace had there (see `pidns`).
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
            let line = match nsview_proto::agent::read_line(&mut input, MAX_LINE) {
                Ok(Some(line)) => line,
                Ok(None) => return 0,
                Err(e) => {
                    // A line too long to parse cannot be skipped safely: say so and stop.
                    let _ = output.write_all(&encode(&Response::Err {
                        id: 0,
                        errno: libc::EINVAL,
                        message: nsview_proto::chain(&e),
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
                        message: nsview_proto::chain(&e),
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
            #[cfg(feature = "test-faults")]
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
            let reply = reply(request.id, self.execute(request.op));
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
    pub fn execute(&self, op: Op) -> Result<Payload, OpError> {
        let path = match &op {
            Op::Lookup { path }
            | Op::Read { path, .. }
            | Op::Access { path, .. }
            | Op::Write { path, .. } => Some(path.as_str()),
            _ => None,
        };
        let of_the_reader =
            path.and_then(|p| OF_THE_READERS_PID_NAMESPACE.into_iter().find(|r| *r == p));
        match of_the_reader {
            Some(path) => self.execute_in_pid_namespace(path, op),
            None => self.execute_here(op),
        }
    }

    fn execute_here(&self, op: Op) -> Result<Payload, OpError> {
        match op {
            Op::Hello { .. } => Err(OpError::HelloTwice),
            Op::Fault { .. } => Err(OpError::FaultsDisabled),
            Op::Lookup { path } => {
                check_path(&path)?;
                let mut stat = self.stat(&path)?;
                if stat.kind == Kind::File {
                    stat.len = Some(self.len(&path, stat.mode));
                }
                Ok(Payload::Entry(stat))
            }
            Op::Readdir { path } => {
                check_path(&path)?;
                Ok(Payload::Entries(self.readdir(&path)?))
            }
            Op::Read { path, creds } => {
                check_path(&path)?;
                with_creds(creds, || self.read(&path)).map(Payload::Data)
            }
            Op::Access { path, write, creds } => {
                check_path(&path)?;
                let flags = if write {
                    OFlags::WRONLY
                } else {
                    OFlags::RDONLY
                };
                with_creds(creds, || self.open(&path, flags).map(drop)).map(|()| Payload::Allowed)
            }
            Op::Write {
                path,
                offset,
                data,
                creds,
            } => {
                check_path(&path)?;
                if data.len() > MAX_WRITE {
                    return Err(OpError::WriteTooLong(data.len()));
                }
                with_creds(creds, || self.write(&path, offset, &data))
                    .map(|(n, pos)| Payload::Written { n, pos })
            }
            Op::Readlink { path } => {
                check_path(&path)?;
                self.readlink(&path).map(Payload::Link)
            }
        }
    }
}

/// Test only: answers as `fault` asks.
#[cfg(feature = "test-faults")]
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
            std::thread::sleep(nsview_proto::agent::SLOW_FAULT);
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
mod tests;
