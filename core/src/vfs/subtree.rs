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
use std::sync::Arc;

use parking_lot::Mutex;

use super::inode_of;

/// The subtrees nsview serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Default)]
pub struct Dynamic {
    nodes: Mutex<HashMap<u64, (Arc<DynNode>, u64)>>,
}

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
        Some(node)
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
    fn child_paths_join_below_the_root() {
        assert_eq!(child_rel("", "cpu0"), "cpu0");
        assert_eq!(child_rel("cpu0", "topology"), "cpu0/topology");
    }
}
