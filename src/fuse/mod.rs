//! The FUSE layer: the only module that imports `fuser`. It maps requests onto the node table
//! and the views, keeps open-file handles and their snapshots, and is the one place where an
//! [`Error`] becomes an errno ([`errno`]).

mod handles;
mod nodes;
mod triggers;

use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use log::{debug, error};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::service::Service;
use crate::vfs::NodeKind;
use crate::views;
use crate::views::{Requester, Subject, ViewId};

pub use handles::{Handle, Handles, MAX_HANDLES, Snapshot, Source, WriteEnd, slice_at};

use nodes::{Attrs, Ctx, Listed, Target, needs_agent, needs_subject};

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
    pub fn new(service: Arc<Service>, agents: Arc<crate::agent::Pool>) -> Self {
        Fs {
            core: Arc::new(Core {
                service,
                agents,
                handles: Handles::default(),
                dirs: Handles::default(),
                triggers: triggers::Triggers::default(),
                started: SystemTime::now(),
            }),
        }
    }

    /// Runs `job` for `who`. One that needs an agent learns `who`'s namespaces here, once
    /// for the whole request, and runs here if this worker may wait on that agent; else it
    /// is queued on the agent's worker, which replies for it (so a slow or stuck agent
    /// holds up one FUSE worker at most, never the daemon; see `agent`).
    fn dispatch(
        &self,
        agent: bool,
        who: Requester,
        job: impl FnOnce(&Core, Requester) + Send + 'static,
    ) {
        if !agent {
            return job(&self.core, who);
        }
        let pool = &self.core.agents;
        let ns = who.ns.or_else(|| pool.key_of(who.pid).ok());
        let who = Requester { ns, ..who };
        // Namespaces unreadable (the task has gone): the request fails as it would anyway.
        let Some(key) = ns else {
            return job(&self.core, who);
        };
        match pool.permit(key) {
            Some(_waiting) => job(&self.core, who),
            None => {
                let core = self.core.clone();
                pool.defer(key, Box::new(move || job(&core, who)));
            }
        }
    }

    /// Whether requests about `ino`, or its children, need an agent.
    fn agent_bound(&self, ino: u64) -> bool {
        self.core.target(ino).is_ok_and(|t| needs_agent(&t))
    }

    /// Whether `ino` is an entry (not the root) of a subtree served by agents: its own
    /// attributes and link target come from one.
    fn agent_entry(&self, ino: u64) -> bool {
        matches!(self.core.target(ino), Ok(t @ Target::Dynamic(_)) if needs_agent(&t))
    }

    /// Whether reads and writes through handle `fh` need an agent, and who opened it.
    fn handle_bound(&self, fh: u64) -> Option<(bool, Requester)> {
        let handle = self.core.handles.get(fh)?;
        let agent = match &handle.source {
            Source::Subtree(id, _) => nodes::agent_subtree(*id),
            Source::View(view) => view.needs_agent(),
        };
        Some((agent, handle.who))
    }
}

impl Core {
    fn attr(&self, a: &Attrs) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: a.kind,
            perm: a.mode,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: a.blksize,
            flags: 0,
        }
    }

    /// Who asks: whose view the caller gets, and its task and ids.
    fn ctx(&self, who: Requester) -> Ctx {
        Ctx {
            subject: self.service.subject(who.pid),
            who,
        }
    }

    /// [`Fs::ctx`] for a request about `ino`, skipping the container resolution where
    /// nothing about `ino` depends on it.
    fn ctx_for(&self, who: Requester, ino: u64) -> Ctx {
        match self.target(ino) {
            Ok(t) if !needs_subject(&t) => Ctx {
                subject: Subject::Host,
                who,
            },
            _ => self.ctx(who),
        }
    }

    fn open_file(&self, who: Requester, ino: INodeNo, flags: OpenFlags) -> Result<u64> {
        let target = self.target(ino.0)?;
        let ctx = self.ctx_for(who, ino.0);
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let source = match &target {
            // The mount has no default_permissions, so the mode is checked here: a view
            // without the world-read bit (proc/slabinfo, 0400) is the host root's only.
            Target::Table(node) if node.mode & 0o004 == 0 && who.uid != 0 => {
                return Err(Error::Access);
            }
            Target::Table(node) => match node.kind {
                NodeKind::File(view) => Source::View(view),
                _ => return Err(Error::Os(libc::EISDIR)),
            },
            // The kind the kernel's lookup just found: no second round trip for it.
            Target::Dynamic(d) => match d.kind {
                crate::vfs::EntryKind::File if write => {
                    // The kernel's own check, with the caller's credentials, in its namespaces
                    // (EACCES, EPERM or EROFS exactly as natively). O_TRUNC is ignored there,
                    // as procfs ignores it.
                    views::sys::access_write(&self.service.env, d.subtree, &ctx.who, &d.rel)?;
                    Source::Subtree(d.subtree, d.rel.clone())
                }
                crate::vfs::EntryKind::File => Source::Subtree(d.subtree, d.rel.clone()),
                crate::vfs::EntryKind::Dir => return Err(Error::Os(libc::EISDIR)),
                crate::vfs::EntryKind::Symlink => return Err(Error::Os(libc::ELOOP)),
            },
        };
        match &source {
            // A host-global view takes writes from the caller's root, checked now.
            Source::View(view) if write && view.is_host_global() => {
                views::access_write_view(&self.service.env, *view, &ctx.who)?;
            }
            // Pressure files take triggers from anyone, as the kernel's (which checks them).
            Source::View(ViewId::Pressure(_)) => {}
            Source::View(_) if write || flags.0 & libc::O_TRUNC != 0 => return Err(Error::Access),
            _ => {}
        }
        // A descriptor of an agent's file answers for the namespaces it was opened in.
        let who = match &source {
            Source::Subtree(id, _) if nodes::agent_subtree(*id) && who.ns.is_none() => Requester {
                ns: Some(self.service.env.agents.key_of(who.pid)?),
                ..who
            },
            _ => who,
        };
        let opened_in = if write { who.ns } else { None };
        let host_file = match (&source, write) {
            (Source::Subtree(id, rel), false) => {
                views::sys::open_host(&self.service.env, *id, &ctx.subject, &ctx.who, rel)?
            }
            _ => None,
        };
        let handle = Handle {
            source,
            subject: ctx.subject,
            who,
            writable: write,
            opened_in,
            host_file,
            snapshot: Mutex::new(None),
            written: Mutex::new(None),
        };
        self.handles.insert(handle).ok_or(Error::Os(libc::ENFILE))
    }

    /// The bytes a read at `offset` returns: a passed-through host file's at that offset; else
    /// a read at offset 0 renders the view afresh into the handle's snapshot; any other offset is served from that snapshot (rendered first if
    /// the handle has none yet), so a reader that reads in pieces sees one consistent file.
    ///
    /// A `fill` (a read for the kernel's page cache, not a direct one) gets EINVAL unless the
    /// file is a host file, the same for every reader. The page cache belongs to the inode,
    /// which every container reading the file shares, and `sendfile`/`splice` read through
    /// it on Linux 6.5+ even for direct-I/O files (until the kernel's FUSE splice fix): what
    /// one container's `sendfile` put there, another's would read. `sendfile` then fails at
    /// once and its callers fall back to `read(2)` (busybox `cat`, Python's `shutil`).
    fn read_file(&self, fh: FileHandle, offset: u64, size: u32, fill: bool) -> Result<Vec<u8>> {
        let handle = self.handles.get(fh.0).ok_or(Error::Os(libc::EBADF))?;
        if fill && handle.host_file.is_none() {
            return Err(Error::Os(libc::EINVAL));
        }
        if let Some(file) = &handle.host_file {
            let mut data = vec![0; size as usize];
            let n = std::os::unix::fs::FileExt::read_at(file, &mut data, offset)
                .map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))?;
            data.truncate(n);
            return Ok(data);
        }
        // No lock is held while rendering, which may wait on an agent: a request queued on
        // the agent's worker must never wait for a lock its waiting caller holds.
        {
            let mut snapshot = handle.snapshot.lock();
            if let Some(s) = &mut *snapshot
                && (offset != 0 || s.unread)
            {
                s.unread = false;
                return Ok(slice_at(&s.data, offset, size).to_vec());
            }
        }
        let data = Arc::new(self.render_guarded(&handle)?);
        *handle.snapshot.lock() = Some(Snapshot {
            data: data.clone(),
            unread: false,
        });
        Ok(slice_at(&data, offset, size).to_vec())
    }

    /// A read of `fh` at `offset` answered from its snapshot at once (the read to EOF after the
    /// first), with no namespace key and no agent: `None` when it needs the full path of
    /// [`Core::read_file`] (offset 0, a page-cache fill, a host file, no snapshot yet).
    fn read_from_snapshot(&self, fh: u64, offset: u64, size: u32, fill: bool) -> Option<Vec<u8>> {
        if offset == 0 || fill {
            return None;
        }
        let handle = self.handles.get(fh)?;
        if handle.host_file.is_some() {
            return None;
        }
        let mut snapshot = handle.snapshot.lock();
        let s = snapshot.as_mut()?;
        s.unread = false;
        Some(slice_at(&s.data, offset, size).to_vec())
    }

    /// The size an open descriptor `fh` reports (`fstat`, `SEEK_END`): the length of its
    /// snapshot, rendered now if it has none (and then what its first read returns). `None`
    /// for a host file (its own size), a descriptor open for writing (whose view a read
    /// need not be allowed) or a render that fails.
    fn snapshot_len(&self, fh: u64) -> Option<u64> {
        let handle = self.handles.get(fh)?;
        if handle.host_file.is_some() || handle.writable {
            return None;
        }
        if let Some(s) = &*handle.snapshot.lock() {
            return Some(s.data.len() as u64);
        }
        // Rendered under no lock, as in `read_file`.
        let data = Arc::new(self.render_guarded(&handle).ok()?);
        let len = data.len() as u64;
        *handle.snapshot.lock() = Some(Snapshot { data, unread: true });
        Some(len)
    }

    /// Writes `data` for writer `who` through a handle opened for writing. The kernel
    /// judges each write of a sysctl by the writer, not the opener, and so does this. The
    /// file position is the native file's: the kernel's FUSE layer moves it on by the bytes
    /// taken, where a sysctl handler of numbers leaves it, so a write arriving where the
    /// previous one left the FUSE position starts where the native position would be; the
    /// rest of a write(2) too large for one request is taken and ignored, as the native
    /// handler ignores what lies past the buffer it parses.
    fn write_file(
        &self,
        who: Requester,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<usize> {
        let handle = self.handles.get(fh.0).ok_or(Error::Os(libc::EBADF))?;
        if !handle.writable {
            return Err(Error::Os(libc::EBADF));
        }
        // Not held while writing, which may wait on an agent (see `read_file`); write(2)s
        // of one open file come one at a time (the kernel holds its position lock).
        let at = {
            let mut written = handle.written.lock();
            match *written {
                Some(end) if end.fuse == offset && end.large => {
                    *written = Some(WriteEnd {
                        fuse: offset + data.len() as u64,
                        ..end
                    });
                    return Ok(data.len());
                }
                Some(end) if end.fuse == offset => end.native,
                _ => offset,
            }
        };
        let env = &self.service.env;
        let op = views::WriteOp {
            data,
            at,
            opened_in: handle.opened_in,
        };
        let done = match &handle.source {
            Source::Subtree(id, rel) => {
                let subject = self.ctx(who).subject;
                views::sys::write(env, *id, &subject, &who, rel, op)?
            }
            Source::View(ViewId::Pressure(kind)) => {
                let path = views::proc::resources::pressure_file(env, &handle.subject, *kind);
                let privileged = triggers::holds_sys_resource(&env.proc, who.pid);
                let n = self.triggers.create(fh.0, &path, data, privileged)?;
                views::Written::all(offset, n)
            }
            Source::View(view) => views::write_view(env, *view, &who, op)?,
        };
        *handle.written.lock() = Some(WriteEnd {
            fuse: offset + done.n as u64,
            native: done.pos,
            large: data.len() > nsview_proto::agent::MAX_WRITE,
        });
        Ok(done.n)
    }

    /// Renders a handle's view (see [`Core::render`]).
    fn render_guarded(&self, handle: &Handle) -> Result<Vec<u8>> {
        self.render(&handle.source, &handle.subject, &handle.who)
    }

    /// Renders `source` for `who`, whose view is `subject`; a panic inside the view becomes
    /// an error for this request only, never the end of a worker thread.
    fn render(&self, source: &Source, subject: &Subject, who: &Requester) -> Result<Vec<u8>> {
        catch_unwind(AssertUnwindSafe(|| match source {
            Source::View(view) => self.service.render(*view, subject, who.pid),
            Source::Subtree(id, rel) => views::sys::read(&self.service.env, *id, subject, who, rel),
        }))
        .unwrap_or_else(|payload| {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            Err(Error::ViewPanicked(msg))
        })
    }
}

/// Whether a table node is a view that takes writes: through to the host, or a PSI
/// trigger (a truncation of it, from `O_TRUNC`, is ignored as procfs ignores it).
fn node_takes_writes(node: &crate::vfs::Node) -> bool {
    matches!(node.kind, NodeKind::File(view) if view.is_host_global() || matches!(view, ViewId::Pressure(_)))
}

/// The requesting task and its ids, as the kernel gave them.
fn requester(req: &Request) -> Requester {
    Requester {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
        ns: None,
    }
}

/// The one place where an error becomes an errno: raw OS errors pass through unchanged, the
/// crate's own kinds map to their errno, anything else is EIO. Expected misses are logged at
/// debug, the rest at error.
pub fn errno(e: &Error) -> fuser::Errno {
    let code = match e {
        Error::Read { source, .. } | Error::Task { source, .. } => {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        Error::Os(code) => *code,
        Error::Gone(_) => libc::ESRCH,
        Error::Access => libc::EACCES,
        Error::NotFound => libc::ENOENT,
        Error::Parse { .. } | Error::ViewPanicked(_) | Error::Agent(_) => libc::EIO,
    };
    match e {
        Error::NotFound | Error::Access | Error::Os(_) => debug!("request failed: {e}"),
        _ => error!("request failed: {e}"),
    }
    crate::stats::error(code);
    fuser::Errno::from_i32(code)
}

impl Filesystem for Fs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        crate::stats::request(crate::stats::Op::Lookup);
        let Some(name) = name.to_str().map(str::to_owned) else {
            return reply.error(errno(&Error::NotFound));
        };
        let who = requester(req);
        self.dispatch(
            self.agent_bound(parent.0),
            who,
            move |core, who| match core.lookup_child(parent.0, &name, &core.ctx_for(who, parent.0))
            {
                Ok(a) => reply.entry_with_ttls(&a.ttl, &a.entry_ttl, &core.attr(&a), Generation(0)),
                Err(e) => reply.error(errno(&e)),
            },
        );
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
        let who = requester(req);
        self.dispatch(self.agent_entry(ino.0), who, move |core, who| {
            let attrs = core.target(ino.0).and_then(|t| {
                // Through a descriptor (fstat, SEEK_END): the length its reads return.
                let len = fh.and_then(|fh| core.snapshot_len(fh.0));
                let ctx = match t {
                    Target::Table(node) if len.is_none() && nodes::sized_per_caller(node) => {
                        core.ctx(who)
                    }
                    // Other table nodes look the same to everyone: no need to identify the
                    // caller.
                    Target::Table(_) => Ctx {
                        subject: Subject::Host,
                        who,
                    },
                    Target::Dynamic(_) => core.ctx_for(who, ino.0),
                };
                core.attrs(&t, &ctx, len)
            });
            match attrs {
                Ok(a) => reply.attr(&a.ttl, &core.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        crate::stats::request(crate::stats::Op::Other);
        let who = requester(req);
        self.dispatch(self.agent_entry(ino.0), who, move |core, who| {
            let target = match core.target(ino.0) {
                Ok(Target::Dynamic(d)) => {
                    let ctx = core.ctx_for(who, ino.0);
                    let env = &core.service.env;
                    views::sys::readlink(env, d.subtree, &ctx.subject, &ctx.who, &d.rel)
                }
                Ok(Target::Table(_)) => Err(Error::Os(libc::EINVAL)),
                Err(e) => Err(e),
            };
            match target {
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
        let who = requester(req);
        self.dispatch(
            truncating && self.agent_entry(ino.0),
            who,
            move |core, who| {
                let result = match core.target(ino.0) {
                    Ok(Target::Dynamic(d))
                        if truncating && d.subtree == crate::vfs::SubtreeId::ProcSys =>
                    {
                        core.attrs(&Target::Dynamic(d), &core.ctx_for(who, ino.0), None)
                    }
                    Ok(Target::Table(node)) if truncating && node_takes_writes(node) => {
                        core.attrs(&Target::Table(node), &core.ctx_for(who, ino.0), None)
                    }
                    // A chmod or chown: EPERM, as procfs's sysctl files answer it, whoever asks.
                    Ok(_) if mode.is_some() || uid.is_some() || gid.is_some() => {
                        Err(Error::Os(libc::EPERM))
                    }
                    // A truncation (O_TRUNC) of a file that takes no writes, or new times.
                    Ok(_) => Err(Error::Access),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(a) => reply.attr(&a.ttl, &core.attr(&a)),
                    Err(e) => reply.error(errno(&e)),
                }
            },
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        crate::stats::request(crate::stats::Op::Open);
        let who = requester(req);
        // Only an open for writing asks the agent (the kernel's own permission check).
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        self.dispatch(write && self.agent_bound(ino.0), who, move |core, who| {
            match core.open_file(who, ino, flags) {
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
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
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
        let (agent, who) = self.handle_bound(fh.0).unwrap_or((false, requester(req)));
        self.dispatch(agent, who, move |core, _who| {
            match core.read_file(fh, offset, size, fill) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        crate::stats::request(crate::stats::Op::Write);
        let who = requester(req);
        let agent = self.handle_bound(fh.0).is_some_and(|(agent, _)| agent);
        let data = data.to_vec();
        self.dispatch(agent, who, move |core, who| {
            match core.write_file(who, fh, offset, &data) {
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
        _ino: INodeNo,
        fh: FileHandle,
        ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        crate::stats::request(crate::stats::Op::Other);
        // Answered for every file: an ENOSYS would make the kernel stop asking for the
        // whole mount, pressure files included.
        let pressure = self
            .core
            .handles
            .get(fh.0)
            .is_some_and(|h| matches!(h.source, Source::View(ViewId::Pressure(_))));
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
        let who = requester(req);
        self.dispatch(self.agent_bound(ino.0), who, move |core, who| {
            let opened = core.target(ino.0).and_then(|t| match t {
                Target::Table(node) if node.kind == NodeKind::Dir => Ok(0),
                Target::Table(node) if !node.kind.is_dir() => Err(Error::Os(libc::ENOTDIR)),
                _ => {
                    let listing = core.listing(ino.0, &core.ctx_for(who, ino.0))?;
                    core.dirs.insert(listing).ok_or(Error::Os(libc::ENFILE))
                }
            });
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
        let agent = self.core.dirs.get(fh.0).is_none() && self.agent_bound(ino.0);
        self.dispatch(agent, who, move |core, who| {
            let listing = match core.dirs.get(fh.0) {
                Some(listing) => Ok(listing),
                None => {
                    let ctx = Ctx {
                        subject: Subject::Host,
                        who,
                    };
                    core.listing(ino.0, &ctx).map(Arc::new)
                }
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
