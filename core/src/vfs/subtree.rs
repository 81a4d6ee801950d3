//! Subtrees: directories of the table whose contents are not in the table but come from a
//! provider per request (`sys/devices/system/cpu` mirrors the host's sysfs with the caller's
//! CPUs; later `proc/sys` comes from the caller's agent). What a subtree holds may differ from
//! one caller to the next, so its entries get TTL 0.
//!
//! Their inodes follow the table's rule, [`inode_of`] the whole path, so they too survive a
//! restart. The kernel names a node by inode alone after its lookup, so each looked-up entry
//! is remembered here until the kernel forgets it (the FUSE lookup-count contract: every
//! entry reply counts one lookup, `forget(ino, n)` takes n back).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::inode_of;

/// The subtrees nsview serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubtreeId {
    /// `sys/devices/system/cpu`: the host's, with the caller's CPUs only.
    SysCpu,
    /// `sys/devices/system/node`: the host's NUMA nodes, their CPUs the caller's only.
    SysNode,
    /// `proc/sys`: the caller's own, through an agent in its namespaces.
    ProcSys,
    /// `sys/kernel`: the host's, read-only, some directories shown empty.
    SysKernel,
    /// `sys/block`: each block device's `stat`, the caller's container's own IO.
    SysBlock,
    /// `sys/devices/virtual/net`: the caller's own network devices, through its agent.
    SysNet,
}

/// What an entry of a subtree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// The attributes of a subtree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its kind.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u16,
    /// Size in bytes as `stat` shows it.
    pub size: u64,
    /// Owner, as the daemon's user namespace numbers it.
    pub uid: u32,
    /// Group, likewise.
    pub gid: u32,
}

/// One name in a subtree directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// Its kind.
    pub kind: EntryKind,
}

/// A looked-up entry of a subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynNode {
    /// Its inode, [`inode_of`] its whole path.
    pub ino: u64,
    /// The inode of the directory it was looked up in.
    pub parent: u64,
    /// The subtree it belongs to.
    pub subtree: SubtreeId,
    /// Its path below the subtree's root (`cpu0/topology`).
    pub rel: String,
    /// What the last lookup found it to be (an open needs no second round trip to know).
    pub kind: EntryKind,
}

/// Most entries remembered at once; a lookup beyond that fails (ENFILE) until the kernel
/// forgets some. The kernel forgets under memory pressure and on unmount.
pub const MAX_DYNAMIC: usize = 1 << 18;

/// The looked-up subtree entries, with the kernel's lookup counts.
///
/// With a journal ([`Dynamic::journal_to`]), every entry is also written to a file as it is
/// first remembered, so that the next daemon serving the same FUSE connection (after a crash
/// or an upgrade) knows the inodes the kernel still names: a path cannot be found from its
/// hash.
#[derive(Debug, Default)]
pub struct Dynamic {
    nodes: Mutex<HashMap<u64, (Arc<DynNode>, u64)>>,
    /// Taken only while `nodes` is held.
    journal: Mutex<Option<Journal>>,
}

/// The file the entries are written to, one line of JSON each, appended as they come.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    /// Lines in the file; once far more than the entries remembered, it is written anew.
    lines: usize,
}

impl Journal {
    /// Writes `nodes` to `path` anew (through a temporary file renamed over it) and opens it
    /// for appending.
    fn rewrite<'a>(path: &Path, nodes: impl Iterator<Item = &'a DynNode>) -> std::io::Result<Self> {
        let tmp = path.with_extension("new");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut out = std::io::BufWriter::new(file);
        let mut lines = 0;
        for node in nodes {
            out.write_all(&record(node))?;
            lines += 1;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        std::fs::rename(&tmp, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            lines,
        })
    }

    fn append(&mut self, node: &DynNode) {
        self.append_line(&record(node));
    }

    fn append_line(&mut self, line: &[u8]) {
        // One write(2) of one line: a crash leaves at worst a torn last line, which the
        // loader skips.
        if let Err(e) = self.file.write_all(line) {
            log::warn!("cannot journal to {}: {e}", self.path.display());
        }
        self.lines += 1;
    }
}

/// A line of the journal: an entry remembered, or one forgotten.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Record {
    Node(DynNode),
    Forget { forget: u64 },
}

fn forget_record(ino: u64) -> Vec<u8> {
    format!("{{\"forget\":{ino}}}\n").into_bytes()
}

fn record(node: &DynNode) -> Vec<u8> {
    let mut line = serde_json::to_vec(node).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Lines a journal may hold per remembered entry before it is written anew.
const JOURNAL_SLACK: usize = 4;

impl Dynamic {
    /// Counts one lookup of `rel` in `subtree` rooted at `root_path`, found in directory
    /// `parent`, and returns its node; `None` when [`MAX_DYNAMIC`] entries are remembered.
    pub fn remember(
        &self,
        subtree: SubtreeId,
        root_path: &str,
        parent: u64,
        rel: &str,
        kind: EntryKind,
    ) -> Option<Arc<DynNode>> {
        let ino = inode_of(&format!("{root_path}/{rel}"));
        let mut nodes = self.nodes.lock();
        if let Some((node, lookups)) = nodes.get_mut(&ino) {
            *lookups += 1;
            if node.kind != kind {
                *node = Arc::new(DynNode {
                    kind,
                    ..(**node).clone()
                });
                if let Some(journal) = &mut *self.journal.lock() {
                    journal.append(node);
                }
            }
            return Some(node.clone());
        }
        if nodes.len() >= MAX_DYNAMIC {
            return None;
        }
        let node = Arc::new(DynNode {
            ino,
            parent,
            subtree,
            rel: rel.to_owned(),
            kind,
        });
        nodes.insert(ino, (node.clone(), 1));
        if let Some(journal) = &mut *self.journal.lock() {
            if journal.lines > JOURNAL_SLACK * nodes.len() + 1024 {
                match Journal::rewrite(&journal.path, nodes.values().map(|(n, _)| &**n)) {
                    Ok(fresh) => *journal = fresh,
                    Err(e) => log::warn!("cannot rewrite {}: {e}", journal.path.display()),
                }
            } else {
                journal.append(&node);
            }
        }
        Some(node)
    }

    /// Journals every entry from now on to `path`. With `inherit`, first takes the entries
    /// already written there by a daemon that served the same connection (each as looked up
    /// once: the kernel forgets an inode's whole count when it drops it); `root_of` names
    /// each subtree's root, so that an entry whose inode is not the hash of its path is
    /// skipped, as is a torn or foreign line. Returns how many entries were taken.
    pub fn journal_to(
        &self,
        path: &Path,
        inherit: bool,
        root_of: impl Fn(SubtreeId) -> Option<String>,
    ) -> std::io::Result<usize> {
        let mut nodes = self.nodes.lock();
        let mut taken = 0;
        if inherit {
            // Entries and forgets in the order they happened: what is left is what the
            // kernel still named when the predecessor stopped. A line that does not parse
            // (torn by a crash, not UTF-8) is skipped, never the rest.
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    log::warn!("{}: {e}; no inodes inherited", path.display());
                    Vec::new()
                }
            };
            let mut live: HashMap<u64, DynNode> = HashMap::new();
            for line in bytes.split(|b| *b == b'\n') {
                match serde_json::from_slice::<Record>(line) {
                    Ok(Record::Node(node)) => {
                        let valid = root_of(node.subtree).is_some_and(|root| {
                            node.ino == inode_of(&format!("{root}/{}", node.rel))
                        });
                        if valid {
                            live.insert(node.ino, node);
                        }
                    }
                    Ok(Record::Forget { forget }) => {
                        live.remove(&forget);
                    }
                    Err(_) => {}
                }
            }
            for (ino, node) in live {
                if nodes.len() < MAX_DYNAMIC && !nodes.contains_key(&ino) {
                    nodes.insert(ino, (Arc::new(node), 1));
                    taken += 1;
                }
            }
        }
        let journal = Journal::rewrite(path, nodes.values().map(|(n, _)| &**n))?;
        *self.journal.lock() = Some(journal);
        Ok(taken)
    }

    /// The remembered entry with inode `ino`.
    pub fn get(&self, ino: u64) -> Option<Arc<DynNode>> {
        self.nodes.lock().get(&ino).map(|(node, _)| node.clone())
    }

    /// Takes back `n` lookups of `ino`; the entry is dropped when none remain.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut nodes = self.nodes.lock();
        if let Some((_, lookups)) = nodes.get_mut(&ino) {
            *lookups = lookups.saturating_sub(n);
            if *lookups == 0 {
                nodes.remove(&ino);
                if let Some(journal) = &mut *self.journal.lock() {
                    journal.append_line(&forget_record(ino));
                }
            }
        }
    }

    /// Number of entries remembered.
    pub fn len(&self) -> usize {
        self.nodes.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The path below a subtree's root of `name` in a directory at `dir_rel` ("" for the root).
pub fn child_rel(dir_rel: &str, name: &str) -> String {
    if dir_rel.is_empty() {
        name.to_owned()
    } else {
        format!("{dir_rel}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_every_lookup_is_forgotten() {
        let dynamic = Dynamic::default();
        let root = "sys/devices/system/cpu";
        let a = dynamic.remember(SubtreeId::SysCpu, root, 7, "cpu0", EntryKind::Dir);
        let b = dynamic.remember(SubtreeId::SysCpu, root, 7, "cpu0", EntryKind::Dir);
        assert_eq!(a, b);
        let ino = a.unwrap().ino;
        assert_eq!(ino, inode_of("sys/devices/system/cpu/cpu0"));
        dynamic.forget(ino, 1);
        assert!(dynamic.get(ino).is_some());
        dynamic.forget(ino, 1);
        assert!(dynamic.get(ino).is_none());
        dynamic.forget(ino, 5);
        assert!(dynamic.is_empty());
    }

    #[test]
    fn a_journal_carries_the_entries_to_the_next_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inodes");
        let root = "sys/devices/system/cpu";
        let roots = |id| (id == SubtreeId::SysCpu).then(|| root.to_string());
        let first = Dynamic::default();
        assert_eq!(first.journal_to(&path, true, roots).unwrap(), 0);
        let cpu0 = first
            .remember(SubtreeId::SysCpu, root, 7, "cpu0", EntryKind::Dir)
            .unwrap();
        first.remember(SubtreeId::SysCpu, root, 7, "cpu0", EntryKind::Dir);
        let online = first
            .remember(
                SubtreeId::SysCpu,
                root,
                cpu0.ino,
                "cpu0/online",
                EntryKind::File,
            )
            .unwrap();
        // A torn last line, a line of another path's inode, and garbage are skipped.
        let mut forged = (*online).clone();
        forged.rel = "cpu1/online".into();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&record(&forged)).unwrap();
        file.write_all(b"not json\n{\"ino\":").unwrap();
        drop(file);

        let next = Dynamic::default();
        assert_eq!(next.journal_to(&path, true, roots).unwrap(), 2);
        assert_eq!(next.get(online.ino), Some(online.clone()));
        assert_eq!(next.get(cpu0.ino), Some(cpu0.clone()));
        // Inherited entries go at their first forget.
        next.forget(online.ino, 1);
        assert!(next.get(online.ino).is_none());

        // Forgotten entries stay forgotten, across a second restart too.
        let third = Dynamic::default();
        third.journal_to(&path, true, roots).unwrap();
        let fourth = Dynamic::default();
        assert_eq!(fourth.journal_to(&path, true, roots).unwrap(), 1);
        assert!(fourth.get(online.ino).is_none());
        assert!(fourth.get(cpu0.ino).is_some());
        // A line that is not UTF-8 is skipped, not the rest.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"\xff\xfe\n").unwrap();
        file.write_all(&record(&online)).unwrap();
        drop(file);
        assert_eq!(
            Dynamic::default().journal_to(&path, true, roots).unwrap(),
            2
        );

        // A fresh mount starts a fresh journal.
        let fresh = Dynamic::default();
        assert_eq!(fresh.journal_to(&path, false, roots).unwrap(), 0);
        assert_eq!(
            Dynamic::default().journal_to(&path, true, roots).unwrap(),
            0
        );
    }

    #[test]
    fn a_journal_is_written_anew_before_it_grows_far_past_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inodes");
        let root = "proc/sys";
        let dynamic = Dynamic::default();
        dynamic
            .journal_to(&path, false, |_| Some(root.into()))
            .unwrap();
        for i in 0..20_000 {
            let node = dynamic
                .remember(
                    SubtreeId::ProcSys,
                    root,
                    7,
                    &format!("n{i}"),
                    EntryKind::File,
                )
                .unwrap();
            dynamic.forget(node.ino, 1);
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= JOURNAL_SLACK + 1024 + 1, "{lines} lines");
    }

    #[test]
    fn child_paths_join_below_the_root() {
        assert_eq!(child_rel("", "cpu0"), "cpu0");
        assert_eq!(child_rel("cpu0", "topology"), "cpu0/topology");
    }
}
