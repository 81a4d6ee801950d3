//! The FUSE layer: the only module that imports `fuser`. It maps requests onto the node table
//! and the views, keeps open-file handles and their snapshots, and is the one place where an
//! [`Error`] becomes an errno ([`errno`]).

mod handles;

use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use log::{debug, error};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::service::Service;
use crate::vfs::{Node, NodeKind};

pub use handles::{Handle, Handles, MAX_HANDLES, slice_at};

/// How long the kernel may cache entries and attributes of nodes that look the same to every
/// caller: the table is fixed for a daemon's life and inodes are a function of the path, so
/// this only bounds how long a lookup skips the daemon. Every uncached open of a view costs
/// one more FUSE round trip (a LOOKUP), so this matters for speed.
const STATIC_TTL: Duration = Duration::from_secs(10);

/// The FUSE filesystem.
#[derive(Debug)]
pub struct Fs {
    service: Arc<Service>,
    handles: Handles,
    /// Timestamp shown on every node: when the daemon started.
    started: SystemTime,
}

impl Fs {
    /// A filesystem serving `service`.
    pub fn new(service: Arc<Service>) -> Self {
        Fs {
            service,
            handles: Handles::default(),
            started: SystemTime::now(),
        }
    }

    fn node(&self, ino: INodeNo) -> Result<&Node> {
        self.service.vfs.get(ino.0).ok_or(Error::NotFound)
    }

    fn attr(&self, node: &Node) -> FileAttr {
        let (kind, nlink) = match node.kind {
            NodeKind::Dir => (FileType::Directory, 2),
            NodeKind::File(_) => (FileType::RegularFile, 1),
        };
        FileAttr {
            ino: INodeNo(node.ino),
            // Like procfs: size 0, content only through read (handles use direct I/O).
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm: node.mode,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn open_file(&self, req: &Request, ino: INodeNo, flags: OpenFlags) -> Result<u64> {
        let node = self.node(ino)?;
        let NodeKind::File(view) = node.kind else {
            return Err(Error::Os(libc::EISDIR));
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Error::Access);
        }
        let handle = Handle {
            view,
            subject: self.service.subject(req.pid()),
            snapshot: Mutex::new(None),
        };
        self.handles.insert(handle).ok_or(Error::Os(libc::ENFILE))
    }

    /// The bytes a read at `offset` returns: a read at offset 0 renders the view afresh into
    /// the handle's snapshot; any other offset is served from that snapshot (rendered first if
    /// the handle has none yet), so a reader that reads in pieces sees one consistent file.
    fn read_file(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let handle = self.handles.get(fh.0).ok_or(Error::Os(libc::EBADF))?;
        let mut snapshot = handle.snapshot.lock();
        let data = match &*snapshot {
            Some(data) if offset != 0 => data.clone(),
            _ => {
                let fresh = Arc::new(self.render_guarded(&handle)?);
                *snapshot = Some(fresh.clone());
                fresh
            }
        };
        Ok(slice_at(&data, offset, size).to_vec())
    }

    /// Renders a handle's view; a panic inside the view becomes an error for this request
    /// only, never the end of a worker thread.
    fn render_guarded(&self, handle: &Handle) -> Result<Vec<u8>> {
        catch_unwind(AssertUnwindSafe(|| {
            self.service.render(handle.view, &handle.subject)
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

/// Entry and attribute TTL of `node`: zero when its existence or attributes depend on the
/// caller, because one mount is shared by many containers and the kernel's dentry and
/// attribute caches are not per caller.
fn ttl(node: &Node) -> Duration {
    if node.per_caller {
        Duration::ZERO
    } else {
        STATIC_TTL
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
        Error::Parse { .. } | Error::ViewPanicked(_) => libc::EIO,
    };
    match e {
        Error::NotFound | Error::Access | Error::Os(_) => debug!("request failed: {e}"),
        _ => error!("request failed: {e}"),
    }
    fuser::Errno::from_i32(code)
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = name
            .to_str()
            .and_then(|name| self.service.vfs.child(parent.0, name));
        match found {
            Some(node) => reply.entry(&ttl(node), &self.attr(node), Generation(0)),
            None => reply.error(errno(&Error::NotFound)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(node) => reply.attr(&ttl(node), &self.attr(node)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
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
        // No node accepts a change of mode, owner, size or times.
        match self.node(ino) {
            Ok(_) => reply.error(errno(&Error::Access)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(req, ino, flags) {
            // Direct I/O: every read reaches the daemon, so offset 0 can always re-render.
            // No flush: nothing is buffered, so close() need not wait for a round trip.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_file(fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno(&Error::Access));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
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
        self.handles.remove(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino).map(|n| n.kind) {
            Ok(NodeKind::Dir) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(NodeKind::File(_)) => reply.error(errno(&Error::Os(libc::ENOTDIR))),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Ok(node) = self.node(ino) else {
            return reply.error(errno(&Error::NotFound));
        };
        let Some(children) = self.service.vfs.children(ino.0) else {
            return reply.error(errno(&Error::Os(libc::ENOTDIR)));
        };
        // `.` and `..` once, then the children; each entry's offset is the index of the next.
        let dots = [
            (node.ino, FileType::Directory, "."),
            (node.parent, FileType::Directory, ".."),
        ];
        let entries = dots.into_iter().chain(children.map(|c| {
            let kind = match c.kind {
                NodeKind::Dir => FileType::Directory,
                NodeKind::File(_) => FileType::RegularFile,
            };
            (c.ino, kind, c.name.as_str())
        }));
        for (i, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
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
