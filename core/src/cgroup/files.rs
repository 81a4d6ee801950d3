//! Cgroup files kept open and re-read with `pread` at offset 0.
//!
//! Every read of a cgroup file is generated afresh by the kernel when it starts at offset 0
//! (cgroup files are seq_files: a read at 0 restarts the generation), so an open descriptor
//! can be read again and again with `pread(fd, buf, 0)`. That saves the path walk, the open
//! and the close of every request: a third of what nsview spends per `proc/uptime` read
//! beyond the FUSE round trips themselves.
//!
//! An open descriptor does not keep a cgroup alive: `rmdir` succeeds and later reads fail
//! with `ENODEV`. Such a descriptor is dropped and the path opened once more, so a cgroup
//! re-created under the same name is read again, and a removed one reads as missing.
//!
//! Bounded: at most [`MAX_OPEN`] descriptors per set, and at most [`budget`] (half the
//! open-file limit) in all sets of the process together; paths beyond either
//! are read without keeping them open. A container past the budget costs its reads an open
//! and a close each, never a descriptor the daemon lacks for the next container.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Most descriptors one set keeps open. A container's views read a handful of files on a
/// few levels of its cgroup tree; this leaves room for deep trees without letting one set
/// hold an unbounded number.
pub const MAX_OPEN: usize = 48;

/// Descriptors kept by every set of the process together.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// The most descriptors all sets together keep open: half the process's open-file limit as
/// it is now (the rest is for pidfds, agents, FUSE handles and the host's files).
pub fn budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(512, |(soft, _)| {
        usize::try_from(soft / 2).unwrap_or(usize::MAX)
    })
}

/// How many descriptors all sets keep open now.
pub fn kept() -> usize {
    KEPT.load(Ordering::Relaxed)
}

/// Takes one descriptor from the budget, if any is left.
fn reserve() -> bool {
    let max = budget();
    KEPT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < max).then_some(n + 1)
    })
    .is_ok()
}

/// Gives `n` descriptors back to the budget.
fn release(n: usize) {
    if n > 0 {
        KEPT.fetch_sub(n, Ordering::Relaxed);
    }
}

/// First read size; larger files are read again whole with a buffer big enough for them, so
/// every returned text is one generation of the file.
const FIRST_READ: usize = 4096;

/// Largest file read (cgroup files stay far below; the host's `/proc/cpuinfo` is ~2.5 KiB
/// per CPU).
const MAX_FILE: usize = 16 << 20;

/// The open cgroup files of one container.
#[derive(Debug, Default)]
pub struct OpenFiles {
    files: Mutex<HashMap<PathBuf, Kept>>,
}

/// A kept descriptor and the size of its last read, the first guess for the next one.
#[derive(Debug, Clone)]
struct Kept {
    file: Arc<File>,
    last_len: usize,
}

impl OpenFiles {
    /// The text of the file at `path`; `None` when the kernel does not provide it (ENOENT,
    /// or ENODEV for a cgroup removed meanwhile).
    pub fn read(&self, path: &Path) -> Result<Option<String>> {
        // Bound first: a guard in an `if let` scrutinee would live through its block, where
        // the lock is taken again.
        let cached = self.files.lock().get(path).cloned();
        if let Some(kept) = cached {
            match read_whole(&kept.file, kept.last_len) {
                Ok(text) => {
                    if text.len() > kept.last_len
                        && let Some(k) = self.files.lock().get_mut(path)
                    {
                        k.last_len = text.len();
                    }
                    return Ok(Some(text));
                }
                // Removed (and maybe re-created) since it was opened: forget it, open anew.
                Err(e) if gone(&e) => {
                    if self.files.lock().remove(path).is_some() {
                        release(1);
                    }
                }
                Err(e) => return Err(Error::read(path, e)),
            }
        }
        let file = match File::open(path) {
            Ok(f) => Arc::new(f),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(Error::read(path, e)),
        };
        let text = match read_whole(&file, 0) {
            Ok(text) => text,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(Error::read(path, e)),
        };
        let mut files = self.files.lock();
        if files.len() < MAX_OPEN && !files.contains_key(path) && reserve() {
            let last_len = text.len();
            files.insert(path.to_path_buf(), Kept { file, last_len });
        }
        Ok(Some(text))
    }

    /// How many descriptors are kept open.
    pub fn len(&self) -> usize {
        self.files.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for OpenFiles {
    fn drop(&mut self) {
        release(self.files.get_mut().len());
    }
}

/// Whether `e` says the file is not there (any more).
fn gone(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// One generation of the file: read from offset 0 with a buffer that holds all of it (first
/// sized for `expected` bytes and some growth).
fn read_whole(file: &File, expected: usize) -> std::io::Result<String> {
    let mut size = (expected + expected / 4 + FIRST_READ).min(MAX_FILE);
    loop {
        let mut buf = vec![0u8; size];
        let n = file.read_at(&mut buf, 0)?;
        if n < size || size >= MAX_FILE {
            buf.truncate(n);
            return String::from_utf8(buf)
                .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e));
        }
        size = (size * 4).min(MAX_FILE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_see_new_content_and_missing_files_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpuacct.usage");
        std::fs::write(&path, "1\n").unwrap();
        let files = OpenFiles::default();
        assert_eq!(files.read(&path).unwrap().as_deref(), Some("1\n"));
        assert_eq!(files.len(), 1);
        // Rewritten in place (same inode): the kept descriptor reads the new text.
        std::fs::write(&path, "22\n").unwrap();
        assert_eq!(files.read(&path).unwrap().as_deref(), Some("22\n"));
        assert_eq!(files.read(&dir.path().join("absent")).unwrap(), None);
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn a_file_removed_and_recreated_is_opened_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.current");
        std::fs::write(&path, "1\n").unwrap();
        let files = OpenFiles::default();
        assert_eq!(files.read(&path).unwrap().as_deref(), Some("1\n"));
        // A regular file stays readable through its old descriptor, so the ENODEV path is
        // taken only on cgroupfs (tests/resources/cgroups.rs); here the cache must at least not
        // deadlock or go stale on a new inode once the old one is forgotten.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "2\n").unwrap();
        assert!(files.read(&path).unwrap().is_some());
    }

    #[test]
    fn files_larger_than_the_first_read_come_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.stat");
        let text = "x 1\n".repeat(3000);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(OpenFiles::default().read(&path).unwrap(), Some(text));
    }

    #[test]
    fn at_most_max_open_descriptors_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::default();
        for i in 0..MAX_OPEN + 5 {
            let path = dir.path().join(i.to_string());
            std::fs::write(&path, "0\n").unwrap();
            assert_eq!(files.read(&path).unwrap().as_deref(), Some("0\n"));
        }
        assert_eq!(files.len(), MAX_OPEN);
    }
}
