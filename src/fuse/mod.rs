//! The FUSE layer: the only module that imports `fuser`. It maps requests onto the node table
//! and the views, keeps open-file handles and their snapshots, and is the one place where an
//! [`Error`] becomes an errno ([`errno`]).

pub mod adopt;
mod dispatch;
mod errno;
mod files;
mod handles;
mod nodes;
mod triggers;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::error::Error;
use crate::service::Service;
use crate::vfs::NodeKind;
use crate::views;
use crate::views::{Subject, ViewId};

pub use errno::errno;
pub use handles::{Handle, Handles, MAX_HANDLES, Snapshot, Source, WriteEnd, slice_at};

use errno::requester;

use files::{At, node_takes_writes};
use nodes::{Ctx, Listed, Target, needs_agent};

/// How long the kernel may cache entries and attributes of nodes that look the same to every
/// caller: the table is fixed for a daemon's life and inodes are a function of the path, so
/// this only bounds how long a lookup skips the daemon. Every uncached open of a view costs
/// one more FUSE round trip (a LOOKUP), so this matters for speed.
const STATIC_TTL: Duration = Duration::from_secs(10);

/// The FUSE filesystem: requests run on the FUSE worker that read them, except those that
/// need an agent and may not wait on one here (see [`Fs::dispatch`]).
#[derive(Debug)]
pub struct Fs {
    core: Arc<Core>,
}

/// The state every request works on, shared with the agents' workers.
#[derive(Debug)]
struct Core {
    service: Arc<Service>,
    /// The agents, as the FUSE layer dispatches to them (the views reach them through
    /// `service`'s environment).
    agents: Arc<crate::agent::Pool>,
    handles: Handles,
    /// Listings of open subtree directories.
    dirs: Handles<Vec<Listed>>,
    /// PSI triggers made through open `proc/pressure/*` files.
    triggers: triggers::Triggers,
    /// Timestamp shown on every node: when the daemon started.
    started: SystemTime,
}

impl Fs {
    /// A filesystem serving `service`, whose agents are `agents` (which bound how many FUSE
    /// workers wait on them at once).
    ///
    /// `generation` counts the daemons that served this FUSE connection before this one (0:
    /// this one mounted it); handle ids carry it (see `Handles`).
    pub fn new(service: Arc<Service>, agents: Arc<crate::agent::Pool>, generation: u32) -> Self {
        Fs {
            core: Arc::new(Core {
                service,
                agents,
                handles: Handles::new(generation),
                dirs: Handles::new(generation),
                triggers: triggers::Triggers::default(),
                started: SystemTime::now(),
            }),
        }
    }
}

/// Whether `target` is an entry (not the root) of a subtree served by agents: its own
/// attributes and link target come from one.
fn agent_entry(target: &Target) -> bool {
    matches!(target, Target::Dynamic(_)) && needs_agent(target)
}

/// The most bytes one WRITE request carries. A sysctl takes at most
/// [`nsview_proto::agent::MAX_WRITE`] of a write (the rest is taken and ignored), a PSI
/// trigger is a short line, and a request's data is held until it is served (queued behind
/// a slow agent, for one): without this the kernel sends up to fuser's 16 MiB (its page
/// limit, 1 MiB by default, permitting). Larger write(2)s arrive in pieces, which the write
/// path already takes as the kernel's handlers do (the first piece counts).
const MAX_WRITE_REQUEST: u32 = 64 * 1024;

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE_REQUEST) {
            log::warn!("the kernel takes writes of at most {max} bytes");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        crate::stats::request(crate::stats::Op::Lookup);
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(errno(&Error::NotFound));
        };
        let dir = match self.core.target(parent.0) {
            Ok(dir) => dir,
            Err(e) => return reply.error(errno(&e)),
        };
        let who = requester(req);
        self.dispatch(needs_agent(&dir), who, move |core, who| {
            let ctx = core.ctx_for(who, &dir);
            match core.lookup_child(parent.0, &dir, &name, &ctx) {
                Ok(a) => reply.entry_with_ttls(&a.ttl, &a.entry_ttl, &core.attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes, like procfs. ENOSYS (not ENODATA) makes the kernel stop
        // asking for the rest of the mount's life: one round trip fewer per `ls -l`.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // The kernel asks only about SEEK_DATA and SEEK_HOLE (coreutils probe for holes).
        // ENOSYS makes it answer them itself for the rest of the mount's life, as for any
        // file without holes: no round trip, and no log line per probe.
        reply.error(fuser::Errno::ENOSYS);
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No file here takes an ioctl: isatty() (Python's open(), mawk) gets ENOTTY, as on
        // procfs, without a log line.
        reply.error(fuser::Errno::ENOTTY);
    }

    fn access(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        // ENOSYS: the kernel stops asking and access(2) succeeds, as without the call; open
        // makes the checks that count. Answered here so that fuser logs no WARN per caller
        // (LXC's hooks ask).
        reply.error(fuser::Errno::ENOSYS);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        crate::stats::request(crate::stats::Op::Other);
        self.core.service.vfs.dynamic.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        crate::stats::request(crate::stats::Op::Getattr);
        let target = match self.core.target(ino.0) {
            Ok(target) => target,
            Err(e) => return reply.error(errno(&e)),
        };
        let who = requester(req);
        self.dispatch(agent_entry(&target), who, move |core, who| {
            // Through a descriptor (fstat, SEEK_END): the length its reads return.
            let len = fh.and_then(|fh| core.snapshot_len(fh.0, &who));
            let ctx = match &target {
                Target::Table(node) if len.is_none() && nodes::sized_per_caller(node) => {
                    core.ctx(who)
                }
                // Other table nodes look the same to everyone: no need to identify the
                // caller.
                Target::Table(_) => Ctx {
                    subject: Subject::Host,
                    who,
                },
                Target::Dynamic(_) => core.ctx_for(who, &target),
            };
            match core.attrs(&target, &ctx, len) {
                Ok(a) => reply.attr(&a.ttl, &core.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        crate::stats::request(crate::stats::Op::Other);
        let target = match self.core.target(ino.0) {
            Ok(target) => target,
            Err(e) => return reply.error(errno(&e)),
        };
        let who = requester(req);
        self.dispatch(agent_entry(&target), who, move |core, who| {
            let link = match &target {
                Target::Dynamic(d) => {
                    let ctx = core.ctx_for(who, &target);
                    let env = &core.service.env;
                    views::sys::readlink(env, d.subtree, &ctx.subject, &ctx.who, &d.rel)
                }
                Target::Table(_) => Err(Error::Os(libc::EINVAL)),
            };
            match link {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        crate::stats::request(crate::stats::Op::Other);
        // No node accepts a change of mode or owner. A truncation of a `proc/sys` file is
        // what `echo 1 > file` sends after its O_TRUNC open: procfs ignores it, and so does
        // this (its permission was checked when the file was opened for writing).
        let truncating = size.is_some() && mode.is_none() && uid.is_none() && gid.is_none();
        let target = match self.core.target(ino.0) {
            Ok(target) => target,
            Err(e) => return reply.error(errno(&e)),
        };
        let who = requester(req);
        let agent = truncating && agent_entry(&target);
        self.dispatch(agent, who, move |core, who| {
            let takes = match &target {
                Target::Dynamic(d) => d.subtree == crate::vfs::SubtreeId::ProcSys,
                Target::Table(node) => node_takes_writes(node),
            };
            let result = if truncating && takes {
                core.attrs(&target, &core.ctx_for(who, &target), None)
            } else if mode.is_some() || uid.is_some() || gid.is_some() {
                // A chmod or chown: EPERM, as procfs's sysctl files answer it, whoever asks.
                Err(Error::Os(libc::EPERM))
            } else {
                // A truncation (O_TRUNC) of a file that takes no writes, or new times.
                Err(Error::Access)
            };
            match result {
                Ok(a) => reply.attr(&a.ttl, &core.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        crate::stats::request(crate::stats::Op::Open);
        let target = match self.core.target(ino.0) {
            Ok(target) => target,
            Err(e) => return reply.error(errno(&e)),
        };
        let who = requester(req);
        // Only an open for writing asks the agent (the kernel's own permission check).
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        self.dispatch(write && needs_agent(&target), who, move |core, who| {
            match core.open_file(who, &target, flags) {
                // Direct I/O: every read reaches the daemon, so offset 0 can always re-render.
                // No flush: nothing is buffered, so close() need not wait for a round trip.
                Ok(fh) => reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        crate::stats::request(crate::stats::Op::Read);
        // The kernel's direct reads name their lock owner; a read without one fills the page
        // cache (see `read_file`).
        let fill = lock_owner.is_none();
        if let Some(data) = self.core.read_from_snapshot(fh.0, offset, size, fill) {
            return reply.data(&data);
        }
        let agent = self.handle_bound(fh.0, ino.0);
        let at = At {
            fh,
            ino: ino.0,
            flags,
            offset,
        };
        // The reader (not the opener) reads: see `Core::render_guarded`.
        self.dispatch(agent, requester(req), move |core, who| {
            match core.read_file(&who, at, size, fill) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        crate::stats::request(crate::stats::Op::Write);
        let who = requester(req);
        let agent = self.handle_bound(fh.0, ino.0);
        let data = data.to_vec();
        let at = At {
            fh,
            ino: ino.0,
            flags,
            offset,
        };
        self.dispatch(agent, who, move |core, who| {
            match core.write_file(who, at, &data) {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        crate::stats::request(crate::stats::Op::Other);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        crate::stats::request(crate::stats::Op::Release);
        self.core.handles.remove(fh.0);
        self.core.triggers.remove(fh.0);
        reply.ok();
    }

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        crate::stats::request(crate::stats::Op::Other);
        // Answered for every file: an ENOSYS would make the kernel stop asking for the
        // whole mount, pressure files included.
        let pressure = match self.core.handles.get(fh.0) {
            Some(h) => matches!(h.source, Source::View(ViewId::Pressure(_))),
            // A descriptor opened before a restart: its trigger, if it had one, ended with
            // the daemon that made it, and the answer is the kernel's for a pressure file
            // without one (POLLERR | POLLPRI) until a new one is written.
            None => matches!(self.core.target(ino.0),
                Ok(Target::Table(node)) if matches!(node.kind, NodeKind::File(ViewId::Pressure(_)))),
        };
        let events = if pressure {
            let schedule = flags.contains(fuser::PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
            self.core.triggers.poll(fh.0, ph, schedule)
        } else {
            fuser::PollEvents::POLLIN
                | fuser::PollEvents::POLLOUT
                | fuser::PollEvents::POLLRDNORM
                | fuser::PollEvents::POLLWRNORM
        };
        reply.poll(events);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        crate::stats::request(crate::stats::Op::Dir);
        // Table directories are listed from the table (handle 0); a subtree directory's
        // listing is taken now, for this caller, and kept until releasedir.
        let target = match self.core.target(ino.0) {
            Ok(target) => target,
            Err(e) => return reply.error(errno(&e)),
        };
        let who = requester(req);
        self.dispatch(needs_agent(&target), who, move |core, who| {
            let opened = match &target {
                Target::Table(node) if node.kind == NodeKind::Dir => Ok(0),
                Target::Table(node) if !node.kind.is_dir() => Err(Error::Os(libc::ENOTDIR)),
                _ => core
                    .listing(ino.0, &target, &core.ctx_for(who, &target))
                    .and_then(|listing| core.dirs.insert(listing).ok_or(Error::Os(libc::ENFILE))),
            };
            match opened {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        crate::stats::request(crate::stats::Op::Dir);
        let who = requester(req);
        // A listing kept by opendir is served here; one to take now may need the agent.
        let kept = self.core.dirs.get(fh.0);
        let target = match kept {
            Some(_) => None,
            None => match self.core.target(ino.0) {
                Ok(target) => Some(target),
                Err(e) => return reply.error(errno(&e)),
            },
        };
        let agent = target.as_ref().is_some_and(needs_agent);
        self.dispatch(agent, who, move |core, who| {
            let listing = match (kept, &target) {
                (Some(listing), _) => Ok(listing),
                // A subtree directory opened before a restart: listed now for the caller, as
                // its opendir would have, and kept for its next reads.
                (None, Some(target)) if core.dirs.is_inherited(fh.0) => core
                    .listing(ino.0, target, &core.ctx_for(who, target))
                    .and_then(|listing| {
                        crate::stats::taken_over();
                        core.dirs
                            .adopt(fh.0, listing)
                            .ok_or(Error::Os(libc::ENFILE))
                    }),
                (None, Some(target)) => {
                    let ctx = Ctx {
                        subject: Subject::Host,
                        who,
                    };
                    core.listing(ino.0, target, &ctx).map(Arc::new)
                }
                (None, None) => Err(Error::NotFound),
            };
            let listing = match listing {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            // Each entry's offset is the index of the next.
            for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        crate::stats::request(crate::stats::Op::Dir);
        self.core.dirs.remove(fh.0);
        reply.ok();
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&Error::Access));
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&Error::Access));
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&Error::Access));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(&Error::Access));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&Error::Access));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(&Error::Access));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(&Error::Access));
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(errno(&Error::Access));
    }
}
