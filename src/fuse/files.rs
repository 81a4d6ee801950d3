//! Open files: what an open of a node makes (its handle), and its reads and writes. A read
//! at offset 0 renders the view afresh into the handle's snapshot; other offsets are served
//! from it (procps keeps `/proc/meminfo` open and does `lseek(0)` + `read` on every refresh).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use fuser::{FileHandle, OpenAccMode, OpenFlags};
use parking_lot::Mutex;

use super::nodes::{self, Target};
use super::triggers;
use super::{Core, Handle, Snapshot, Source, WriteEnd, slice_at};
use crate::error::{Error, Result};
use crate::vfs::NodeKind;
use crate::views;
use crate::views::{Requester, Subject, ViewId};

impl Core {
    pub(super) fn open_file(
        &self,
        who: Requester,
        target: &Target,
        flags: OpenFlags,
    ) -> Result<u64> {
        let handle = self.make_handle(who, target, flags)?;
        self.handles.insert(handle).ok_or(Error::Os(libc::ENFILE))
    }

    /// The open handle `fh` of the file at inode `ino`. A handle a predecessor made (the
    /// descriptor was opened before a crash or an upgrade, see `Handles`) is taken over: made
    /// afresh as an open by `who`, the task using the descriptor now, with the descriptor's
    /// open flags, which the kernel sends with each read and write. Its checks are those of
    /// an open by `who` now (a writer must be allowed to write), and its first read renders
    /// afresh: a reader holding the file re-reads it from offset 0 (procps: `lseek(0)` +
    /// `read`); one reading on from further in gets that offset of the fresh rendering.
    pub(super) fn handle_for(
        &self,
        fh: u64,
        ino: u64,
        who: &Requester,
        flags: OpenFlags,
    ) -> Result<Arc<Handle>> {
        if let Some(handle) = self.handles.get(fh) {
            return Ok(handle);
        }
        if !self.handles.is_inherited(fh) {
            return Err(Error::Os(libc::EBADF));
        }
        let handle = Handle {
            taken_over: true,
            ..self.make_handle(*who, &self.target(ino)?, flags)?
        };
        let handle = self
            .handles
            .adopt(fh, handle)
            .ok_or(Error::Os(libc::ENFILE))?;
        crate::stats::taken_over();
        log::debug!(
            "took over handle {fh:#x} of inode {ino:#x} for task {}",
            who.pid
        );
        Ok(handle)
    }

    fn make_handle(&self, who: Requester, target: &Target, flags: OpenFlags) -> Result<Handle> {
        let ctx = self.ctx_for(who, target);
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let source = match target {
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
        Ok(Handle {
            source,
            subject: ctx.subject,
            who,
            writable: write,
            opened_in,
            host_file,
            snapshot: Mutex::new(None),
            written: Mutex::new(None),
            taken_over: false,
        })
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
    pub(super) fn read_file(
        &self,
        reader: &Requester,
        at: At,
        size: u32,
        fill: bool,
    ) -> Result<Vec<u8>> {
        let handle = self.handle_for(at.fh.0, at.ino, reader, at.flags)?;
        if fill && handle.host_file.is_none() {
            return Err(Error::Os(libc::EINVAL));
        }
        if let Some(file) = &handle.host_file {
            let mut data = vec![0; size as usize];
            let n = std::os::unix::fs::FileExt::read_at(file, &mut data, at.offset)
                .map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))?;
            data.truncate(n);
            return Ok(data);
        }
        // No lock is held while rendering, which may wait on an agent: a request queued on
        // the agent's worker must never wait for a lock its waiting caller holds.
        {
            let mut snapshot = handle.snapshot.lock();
            if let Some(s) = &mut *snapshot
                && (at.offset != 0 || s.unread)
            {
                s.unread = false;
                return Ok(slice_at(&s.data, at.offset, size).to_vec());
            }
        }
        let data = Arc::new(self.render_guarded(&handle, reader)?);
        *handle.snapshot.lock() = Some(Snapshot {
            data: data.clone(),
            unread: false,
        });
        Ok(slice_at(&data, at.offset, size).to_vec())
    }

    /// A read of `fh` at `offset` answered from its snapshot at once (the read to EOF after the
    /// first), with no namespace key and no agent: `None` when it needs the full path of
    /// [`Core::read_file`] (offset 0, a page-cache fill, a host file, no snapshot yet).
    pub(super) fn read_from_snapshot(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        fill: bool,
    ) -> Option<Vec<u8>> {
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
    pub(super) fn snapshot_len(&self, fh: u64, reader: &Requester) -> Option<u64> {
        let handle = self.handles.get(fh)?;
        if handle.host_file.is_some() || handle.writable {
            return None;
        }
        if let Some(s) = &*handle.snapshot.lock() {
            return Some(s.data.len() as u64);
        }
        // Rendered under no lock, as in `read_file`.
        let data = Arc::new(self.render_guarded(&handle, reader).ok()?);
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
    pub(super) fn write_file(&self, who: Requester, at: At, data: &[u8]) -> Result<usize> {
        let (fh, offset) = (at.fh, at.offset);
        let handle = self.handle_for(fh.0, at.ino, &who, at.flags)?;
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
    ///
    /// A file an agent serves is read by `reader` (the task whose read this is: blocked in it,
    /// so its id names it, see `caller`), with its credentials, and only in the namespaces the
    /// descriptor was opened in: the reader must be in them (it holds them alive). A handle
    /// keeps the opener's namespaces only as inode numbers, which the kernel hands out again
    /// once a namespace is gone: a descriptor passed on and read after its namespaces died
    /// would otherwise read whichever container has those numbers now. A descriptor read from
    /// other namespaces than its own (passed between containers, or kept across `setns`)
    /// gets EIO, where the kernel would answer for the namespaces it was opened in.
    pub(super) fn render_guarded(&self, handle: &Handle, reader: &Requester) -> Result<Vec<u8>> {
        match &handle.source {
            Source::Subtree(id, _) if nodes::agent_subtree(*id) => {
                if reader.ns.is_none() || reader.ns != handle.who.ns {
                    log::debug!(
                        "task {} read a descriptor of other namespaces than its own: EIO",
                        reader.pid
                    );
                    return Err(Error::Os(libc::EIO));
                }
                self.render(&handle.source, &handle.subject, reader)
            }
            // Its opener is unknown: the reader's own view, as a new open of its would show.
            _ if handle.taken_over => {
                let subject = self.ctx(*reader).subject;
                self.render(&handle.source, &subject, reader)
            }
            _ => self.render(&handle.source, &handle.subject, &handle.who),
        }
    }

    /// Renders `source` for `who`, whose view is `subject`; a panic inside the view becomes
    /// an error for this request only, never the end of a worker thread.
    pub(super) fn render(
        &self,
        source: &Source,
        subject: &Subject,
        who: &Requester,
    ) -> Result<Vec<u8>> {
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

/// Where a read or write goes: the descriptor's handle, its inode and open flags (for a
/// handle taken over, see [`Core::handle_for`]), and the offset.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    pub fh: FileHandle,
    pub ino: u64,
    pub flags: OpenFlags,
    pub offset: u64,
}

/// Whether a table node is a view that takes writes: through to the host, or a PSI
/// trigger (a truncation of it, from `O_TRUNC`, is ignored as procfs ignores it).
pub(super) fn node_takes_writes(node: &crate::vfs::Node) -> bool {
    matches!(node.kind, NodeKind::File(view) if view.is_host_global() || matches!(view, ViewId::Pressure(_)))
}
