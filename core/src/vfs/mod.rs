//! The node table: every path nsview serves, from one declarative table, with inode numbers
//! that are a pure function of the path (so a restarted daemon gives every path the inode the
//! old one gave it, and file handles and bind mounts can be re-resolved).

mod subtree;

use std::collections::HashMap;

pub use subtree::{
    DirEntry, DynNode, Dynamic, Entry, EntryKind, MAX_DYNAMIC, SubtreeId, child_rel,
};

#[cfg(feature = "test-nodes")]
use nsview_proto::agent::Fault;

use crate::cgroup::PressureKind;

/// The views a file node can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewId {
    /// `proc/uptime`.
    Uptime,
    /// `proc/meminfo`.
    Meminfo,
    /// `proc/cpuinfo`.
    Cpuinfo,
    /// `proc/stat`.
    Stat,
    /// `proc/loadavg`.
    Loadavg,
    /// `proc/diskstats`.
    Diskstats,
    /// `proc/vmstat`.
    Vmstat,
    /// `proc/interrupts`.
    Interrupts,
    /// `proc/softirqs`.
    Softirqs,
    /// `proc/swaps`.
    Swaps,
    /// `proc/slabinfo`.
    Slabinfo,
    /// `proc/pressure/{cpu,memory,io}`.
    Pressure(PressureKind),
    /// `sys/devices/virtual/dmi/id/product_uuid`.
    ProductUuid,
    /// `sys/module/nf_conntrack/parameters/hashsize`: the host's, written through by a
    /// container's root (host-global).
    ConntrackHashsize,
    /// Test-only (`serve --test-nodes`): panics while rendering.
    #[cfg(feature = "test-nodes")]
    TestPanic,
    /// Test-only (`serve --test-nodes`): a fixed multi-kilobyte text, for offset handling.
    #[cfg(feature = "test-nodes")]
    TestPattern,
    /// Test-only (`serve --test-nodes --test-faults`): asks the reader's agent to misbehave.
    #[cfg(feature = "test-nodes")]
    TestAgentFault(nsview_proto::agent::Fault),
}

/// The root directory's inode (FUSE's fixed root id).
pub const ROOT_INO: u64 = 1;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A file rendered by a view.
    File(ViewId),
    /// A directory whose contents come from a provider per request (see `subtree`).
    Subtree(SubtreeId),
}

impl NodeKind {
    /// Whether nodes of this kind are directories.
    pub fn is_dir(self) -> bool {
        !matches!(self, NodeKind::File(_))
    }
}

/// One entry of the declarative table.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Path relative to the mountpoint, no leading slash.
    pub path: &'static str,
    /// Directory or view.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u16,
    /// Whether the node's existence or attributes depend on the caller (then its entry and
    /// attributes get TTL 0). Content that depends on the caller does not need that: files are
    /// opened with direct I/O, so their content is never cached by the kernel.
    pub per_caller: bool,
}

const fn dir(path: &'static str) -> Spec {
    Spec {
        path,
        kind: NodeKind::Dir,
        mode: 0o555,
        per_caller: false,
    }
}

/// A read-only view: the same node for everyone, whose content depends on the caller.
const fn view(path: &'static str, view: ViewId) -> Spec {
    Spec {
        path,
        kind: NodeKind::File(view),
        mode: 0o444,
        per_caller: false,
    }
}

/// A directory whose entries come from a provider; the directory itself looks the same to
/// every caller.
const fn subtree(path: &'static str, id: SubtreeId) -> Spec {
    Spec {
        path,
        kind: NodeKind::Subtree(id),
        mode: 0o555,
        per_caller: false,
    }
}

/// Every node nsview serves. Parent directories are implied by the paths.
pub const TABLE: &[Spec] = &[
    dir("proc"),
    view("proc/uptime", ViewId::Uptime),
    view("proc/meminfo", ViewId::Meminfo),
    view("proc/cpuinfo", ViewId::Cpuinfo),
    view("proc/stat", ViewId::Stat),
    view("proc/loadavg", ViewId::Loadavg),
    view("proc/diskstats", ViewId::Diskstats),
    view("proc/vmstat", ViewId::Vmstat),
    view("proc/interrupts", ViewId::Interrupts),
    view("proc/softirqs", ViewId::Softirqs),
    view("proc/swaps", ViewId::Swaps),
    // Root-only, like the host's: slab names and counts say much about the host.
    Spec {
        mode: 0o400,
        ..view("proc/slabinfo", ViewId::Slabinfo)
    },
    // Writable by all, as the kernel's: a write makes a PSI trigger (see `fuse::triggers`).
    Spec {
        mode: 0o666,
        ..view("proc/pressure/cpu", ViewId::Pressure(PressureKind::Cpu))
    },
    Spec {
        mode: 0o666,
        ..view(
            "proc/pressure/memory",
            ViewId::Pressure(PressureKind::Memory),
        )
    },
    Spec {
        mode: 0o666,
        ..view("proc/pressure/io", ViewId::Pressure(PressureKind::Io))
    },
    dir("sys"),
    subtree("sys/devices/system/cpu", SubtreeId::SysCpu),
    subtree("sys/devices/system/node", SubtreeId::SysNode),
    subtree("proc/sys", SubtreeId::ProcSys),
    subtree("sys/kernel", SubtreeId::SysKernel),
    subtree("sys/block", SubtreeId::SysBlock),
    subtree("sys/devices/virtual/net", SubtreeId::SysNet),
    view(
        "sys/devices/virtual/dmi/id/product_uuid",
        ViewId::ProductUuid,
    ),
    // Root-only like the host's; writes go through to the host (host-global).
    Spec {
        mode: 0o600,
        ..view(
            "sys/module/nf_conntrack/parameters/hashsize",
            ViewId::ConntrackHashsize,
        )
    },
];

/// Nodes added by `serve --test-nodes`, for tests of the FUSE layer itself.
#[cfg(feature = "test-nodes")]
pub const TEST_TABLE: &[Spec] = &[
    view("test/panic", ViewId::TestPanic),
    view("test/pattern", ViewId::TestPattern),
    view(
        "test/agent-fault/garbage",
        ViewId::TestAgentFault(Fault::Garbage),
    ),
    view(
        "test/agent-fault/oversized",
        ViewId::TestAgentFault(Fault::Oversized),
    ),
    view("test/agent-fault/hang", ViewId::TestAgentFault(Fault::Hang)),
    view("test/agent-fault/slow", ViewId::TestAgentFault(Fault::Slow)),
    view(
        "test/agent-fault/hang-in-namespace",
        ViewId::TestAgentFault(Fault::HangInNamespace),
    ),
];

/// A node of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Inode number, [`inode_of`] its path.
    pub ino: u64,
    /// The parent directory's inode (the root is its own parent).
    pub parent: u64,
    /// Last path component ("" for the root).
    pub name: String,
    /// Path relative to the mountpoint.
    pub path: String,
    /// Directory or view.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u16,
    /// Whether its existence or attributes depend on the caller.
    pub per_caller: bool,
}

/// The tree: nodes by inode, and each directory's children sorted by name.
#[derive(Debug)]
pub struct Vfs {
    /// Shared, so that a request holds its node while it is served (on whichever thread).
    nodes: HashMap<u64, std::sync::Arc<Node>>,
    children: HashMap<u64, Vec<u64>>,
    /// Entries of subtrees the kernel has looked up.
    pub dynamic: Dynamic,
}

/// The inode number of `path` (relative, no leading slash; "" is the root): 64-bit FNV-1a of
/// the path, moved off the two values FUSE reserves (0 invalid, 1 root).
pub fn inode_of(path: &str) -> u64 {
    if path.is_empty() {
        return ROOT_INO;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if hash <= ROOT_INO { hash + 2 } else { hash }
}

impl Vfs {
    /// Builds the tree from `specs`, creating implied parent directories.
    ///
    /// # Panics
    /// When two paths hash to one inode: the table is static, so a unit test catches that.
    pub fn build(specs: &[Spec]) -> Vfs {
        let mut vfs = Vfs {
            nodes: HashMap::new(),
            children: HashMap::new(),
            dynamic: Dynamic::default(),
        };
        vfs.insert(&dir(""), "");
        for spec in specs {
            let mut prefix = String::new();
            for part in spec.path.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if prefix != spec.path && !vfs.nodes.contains_key(&inode_of(&prefix)) {
                    vfs.insert(&dir(""), &prefix);
                }
            }
            vfs.insert(spec, spec.path);
        }
        for list in vfs.children.values_mut() {
            list.sort_by(|a, b| vfs.nodes[a].name.cmp(&vfs.nodes[b].name));
        }
        vfs
    }

    fn insert(&mut self, spec: &Spec, path: &str) {
        let ino = inode_of(path);
        if let Some(existing) = self.nodes.get(&ino) {
            assert_eq!(existing.path, path, "inode collision");
            return;
        }
        let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = inode_of(parent_path);
        let node = Node {
            ino,
            parent,
            name: name.to_owned(),
            path: path.to_owned(),
            kind: spec.kind,
            mode: spec.mode,
            per_caller: spec.per_caller,
        };
        self.nodes.insert(ino, std::sync::Arc::new(node));
        if ino != ROOT_INO {
            self.children.entry(parent).or_default().push(ino);
        }
        if spec.kind.is_dir() {
            self.children.entry(ino).or_default();
        }
    }

    /// The node with inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&std::sync::Arc<Node>> {
        self.nodes.get(&ino)
    }

    /// The table node at the root of subtree `id`.
    pub fn subtree_root(&self, id: SubtreeId) -> Option<&Node> {
        self.nodes
            .values()
            .map(|n| &**n)
            .find(|n| n.kind == NodeKind::Subtree(id))
    }

    /// The child `name` of directory `parent`.
    pub fn child(&self, parent: u64, name: &str) -> Option<&Node> {
        let parent = self.nodes.get(&parent)?;
        let path = if parent.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", parent.path)
        };
        self.nodes
            .get(&inode_of(&path))
            .map(|n| &**n)
            .filter(|n| n.path == path)
    }

    /// Journals the subtree entries looked up from now on to `path`, first taking those a
    /// predecessor serving the same FUSE connection wrote there if `inherit` (see
    /// [`Dynamic::journal_to`]).
    pub fn journal(&self, path: &std::path::Path, inherit: bool) -> std::io::Result<usize> {
        self.dynamic.journal_to(path, inherit, |id| {
            self.subtree_root(id).map(|n| n.path.clone())
        })
    }

    /// The children of directory `ino`, sorted by name; `None` if it is not a directory.
    pub fn children(&self, ino: u64) -> Option<impl Iterator<Item = &Node>> {
        let list = self.children.get(&ino)?;
        Some(list.iter().map(|i| &*self.nodes[i]))
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty (never: the root is always there).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table, with the test nodes where they are built in.
    fn full() -> Vec<Spec> {
        #[cfg(feature = "test-nodes")]
        return TABLE.iter().chain(TEST_TABLE).copied().collect();
        #[cfg(not(feature = "test-nodes"))]
        TABLE.to_vec()
    }

    #[test]
    fn inode_is_a_pure_function_of_the_path() {
        assert_eq!(inode_of(""), ROOT_INO);
        assert_eq!(inode_of("proc/uptime"), inode_of("proc/uptime"));
        assert_ne!(inode_of("proc/uptime"), inode_of("proc"));
        // Pinned (64-bit FNV-1a of "proc"): a restarted daemon, or another build, must hand out
        // the same numbers.
        assert_eq!(inode_of("proc"), 0x8572_9b0e_3537_bc61);
        let a = Vfs::build(&full());
        let b = Vfs::build(&full());
        let ino = a.child(ROOT_INO, "proc").unwrap().ino;
        assert_eq!(
            a.child(ino, "uptime").unwrap().ino,
            b.child(ino, "uptime").unwrap().ino
        );
    }

    #[test]
    fn no_two_paths_share_an_inode_and_none_is_reserved() {
        let vfs = Vfs::build(&full());
        assert!(vfs.len() >= full().len());
        for spec in full() {
            assert!(inode_of(spec.path) > ROOT_INO, "{}", spec.path);
        }
    }

    #[test]
    fn implied_parents_exist_and_children_are_sorted() {
        let vfs = Vfs::build(&full());
        let names =
            |ino| -> Vec<String> { vfs.children(ino).unwrap().map(|n| n.name.clone()).collect() };
        // `proc/pressure` is no spec of its own: its files imply it.
        let pressure = vfs.child(inode_of("proc"), "pressure").unwrap();
        assert_eq!(pressure.kind, NodeKind::Dir);
        assert_eq!(names(pressure.ino), ["cpu", "io", "memory"]);
        let proc = names(inode_of("proc"));
        let mut sorted = proc.clone();
        sorted.sort();
        assert_eq!(proc, sorted);
        #[cfg(feature = "test-nodes")]
        {
            let test = vfs.child(ROOT_INO, "test").unwrap();
            assert_eq!(test.kind, NodeKind::Dir);
            assert_eq!(names(test.ino), ["agent-fault", "panic", "pattern"]);
            assert_eq!(names(ROOT_INO), ["proc", "sys", "test"]);
        }
        #[cfg(not(feature = "test-nodes"))]
        assert_eq!(names(ROOT_INO), ["proc", "sys"]);
    }

    #[test]
    fn lookups_miss_cleanly() {
        let vfs = Vfs::build(TABLE);
        assert!(vfs.child(ROOT_INO, "test").is_none());
        assert!(vfs.child(ROOT_INO, "nope").is_none());
        assert!(vfs.child(12345, "x").is_none());
        let uptime = vfs.child(inode_of("proc"), "uptime").unwrap();
        assert!(vfs.children(uptime.ino).is_none());
        assert_eq!(uptime.parent, inode_of("proc"));
    }
}
