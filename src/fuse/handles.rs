//! Open-file handles: each keeps where its content comes from, the subject it was opened for,
//! and the snapshot rendered at the last read at offset 0. Open directories of subtrees keep
//! the listing made when they were opened, so offsets stay stable while they are read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::vfs::SubtreeId;
use crate::views::{Requester, Subject, ViewId};

/// Open handles at most; beyond that `open` fails with ENFILE rather than growing without bound.
pub const MAX_HANDLES: usize = 1 << 16;

/// Where an open file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A view of the table.
    View(ViewId),
    /// A file of a subtree, by its path below the subtree's root.
    Subtree(SubtreeId, String),
}

/// One open file.
#[derive(Debug)]
pub struct Handle {
    /// What it shows.
    pub source: Source,
    /// Whose view.
    pub subject: Subject,
    /// The task that opened it, with its ids (some views leave the reader out of what they
    /// count; `proc/sys` acts with its credentials).
    pub who: Requester,
    /// Opened for writing (only `proc/sys` files can be).
    pub writable: bool,
    /// For a `proc/sys` file opened for writing: the opener's namespaces, whose knob the
    /// file is (a writer in other namespaces is refused).
    pub opened_in: Option<crate::agent::NsKey>,
    /// For a host file passed through as it is (sysfs): that file, read at the requested
    /// offset, however large (`/sys/kernel/btf/vmlinux`), never held in memory whole.
    pub host_file: Option<std::fs::File>,
    /// The bytes rendered by the last read at offset 0, or for the size of a descriptor not
    /// read yet (`None` before the first render).
    pub snapshot: Mutex<Option<Snapshot>>,
    /// After a write: where it left the descriptor (see [`WriteEnd`]). Held while a write
    /// runs.
    pub written: Mutex<Option<WriteEnd>>,
    /// Made afresh for a descriptor a predecessor daemon opened: its opener is unknown, so
    /// each read renders for its reader.
    pub taken_over: bool,
}

/// A handle's rendered content.
#[derive(Debug)]
pub struct Snapshot {
    /// The bytes.
    pub data: Arc<Vec<u8>>,
    /// Rendered for an `fstat` or `SEEK_END` before any read: the first read at offset 0
    /// takes it instead of rendering again, so that a reader reads the length it was told.
    pub unread: bool,
}

/// Where a write left a descriptor, for the next write on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteEnd {
    /// The offset the kernel's FUSE layer gives the next write: past the bytes taken.
    pub fuse: u64,
    /// The file position the native file would be at instead (`proc/sys` handlers of
    /// numbers do not move it).
    pub native: u64,
    /// Whether the write was larger than the kernel's handlers look at: the FUSE layer cuts
    /// a write(2) of about a MiB or more into several requests, and those after the first
    /// belong to the same native call, whose handler ignored them.
    pub large: bool,
}

/// A table of open handles of one kind (`T`: [`Handle`] for files, a listing for
/// directories); ids start at 1, so 0 can mean "no handle".
///
/// An id carries the generation of the daemon that made it (its top 24 bits, see
/// [`GENERATION_SHIFT`]): the kernel keeps the ids of descriptors opened before a restart and
/// sends them to the next daemon serving the connection, which must never mistake one for a
/// handle of its own, and takes it over instead ([`Handles::adopt`]).
#[derive(Debug)]
pub struct Handles<T = Handle> {
    generation: u64,
    next: AtomicU64,
    map: Mutex<HashMap<u64, Arc<T>>>,
}

/// Where the generation starts in a handle id: 2^40 handles per daemon, 2^24 daemons per
/// connection before generations repeat.
pub const GENERATION_SHIFT: u32 = 40;

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<T> Handles<T> {
    /// An empty table of the daemon of `generation` (0: the one that mounted).
    pub fn new(generation: u32) -> Self {
        Handles {
            generation: u64::from(generation) & ((1 << (64 - GENERATION_SHIFT)) - 1),
            next: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `handle`, returning its id, or `None` when [`MAX_HANDLES`] are open.
    pub fn insert(&self, handle: T) -> Option<u64> {
        let mut map = self.map.lock();
        if map.len() >= MAX_HANDLES {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let fh = (self.generation << GENERATION_SHIFT) | (n & ((1 << GENERATION_SHIFT) - 1));
        map.insert(fh, Arc::new(handle));
        Some(fh)
    }

    /// Whether `fh` was made by another daemon than this one (before a restart).
    pub fn is_inherited(&self, fh: u64) -> bool {
        fh != 0 && fh >> GENERATION_SHIFT != self.generation
    }

    /// Takes over `fh`, a handle of a predecessor ([`Handles::is_inherited`]), as `handle`,
    /// made afresh for the task using it now; returns the handle stored under `fh` (another
    /// thread may have taken it over first). `None` for an id of this daemon's own or when
    /// [`MAX_HANDLES`] are open.
    pub fn adopt(&self, fh: u64, handle: T) -> Option<Arc<T>> {
        if !self.is_inherited(fh) {
            return None;
        }
        let mut map = self.map.lock();
        if let Some(kept) = map.get(&fh) {
            return Some(kept.clone());
        }
        if map.len() >= MAX_HANDLES {
            return None;
        }
        let handle = Arc::new(handle);
        map.insert(fh, handle.clone());
        Some(handle)
    }

    /// The handle `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<T>> {
        self.map.lock().get(&fh).cloned()
    }

    /// Frees handle `fh` and its snapshot.
    pub fn remove(&self, fh: u64) {
        self.map.lock().remove(&fh);
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The part of `data` a read of `size` bytes at `offset` returns: empty past the end.
pub fn slice_at(data: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
    let end = start.saturating_add(size as usize).min(data.len());
    &data[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_past_the_end_are_empty() {
        let data = b"0123456789";
        assert_eq!(slice_at(data, 0, 4), b"0123");
        assert_eq!(slice_at(data, 8, 4), b"89");
        assert_eq!(slice_at(data, 10, 4), b"");
        assert_eq!(slice_at(data, u64::MAX, u32::MAX), b"");
    }

    #[test]
    fn one_byte_and_odd_chunks_reassemble_the_whole() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1u32, 1025, 4096, 70000] {
            let mut out = Vec::new();
            let mut off = 0u64;
            loop {
                let part = slice_at(&data, off, chunk);
                if part.is_empty() {
                    break;
                }
                out.extend_from_slice(part);
                off += part.len() as u64;
            }
            assert_eq!(out, data, "chunk {chunk}");
        }
    }

    #[test]
    fn ids_of_a_predecessor_are_taken_over_never_mistaken_for_own() {
        let first: Handles<u32> = Handles::new(0);
        let old = first.insert(10).unwrap();
        let next: Handles<u32> = Handles::new(1);
        let own = next.insert(20).unwrap();
        assert_ne!(old, own);
        assert!(next.is_inherited(old));
        assert!(!next.is_inherited(own));
        assert!(!next.is_inherited(0));
        assert!(next.get(old).is_none());
        assert_eq!(*next.adopt(old, 11).unwrap(), 11);
        // Taken over once: a second taker gets the first's.
        assert_eq!(*next.adopt(old, 12).unwrap(), 11);
        assert_eq!(*next.get(old).unwrap(), 11);
        // Its own ids are never taken over, even once released.
        next.remove(own);
        assert!(next.adopt(own, 30).is_none());
        // Generations wrap within their 24 bits, never into the counter.
        let wrapped: Handles<u32> = Handles::new(u32::MAX);
        assert_eq!(
            wrapped.insert(1).unwrap() >> GENERATION_SHIFT,
            (1 << 24) - 1
        );
    }

    #[test]
    fn handles_are_freed_on_remove() {
        let handles = Handles::default();
        let fh = handles
            .insert(Handle {
                source: Source::View(ViewId::Uptime),
                subject: Subject::Host,
                who: Requester {
                    pid: 0,
                    uid: 0,
                    gid: 0,
                    ns: None,
                },
                writable: false,
                opened_in: None,
                host_file: None,
                snapshot: Mutex::new(None),
                written: Mutex::new(None),
                taken_over: false,
            })
            .unwrap();
        assert!(handles.get(fh).is_some());
        handles.remove(fh);
        assert!(handles.get(fh).is_none());
        assert!(handles.is_empty());
    }
}
