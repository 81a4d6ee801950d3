//! A task's namespaces by inode: the key of its agent, and what the write rules compare.

pub use nsview_proto::ns::NsKind;

use crate::error::{Error, Result};
use crate::procfs::ProcRoot;

/// A caller's namespaces by inode, one per [`NsKind`]: the pool key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsKey {
    /// The user namespace's inode.
    pub user: u64,
    /// The network namespace's inode.
    pub net: u64,
    /// The UTS namespace's inode.
    pub uts: u64,
    /// The IPC namespace's inode.
    pub ipc: u64,
    /// The cgroup namespace's inode.
    pub cgroup: u64,
    /// The pid namespace's inode.
    pub pid: u64,
}

impl NsKey {
    /// The key of these inodes, in [`NsKind::ALL`] order (user, net, uts, ipc, cgroup, pid).
    pub const fn new([user, net, uts, ipc, cgroup, pid]: [u64; 6]) -> NsKey {
        NsKey {
            user,
            net,
            uts,
            ipc,
            cgroup,
            pid,
        }
    }

    /// The namespaces of task `tid`: six `readlinkat` calls on one descriptor of its `ns`
    /// directory (one path walk instead of six).
    pub fn of(proc: &ProcRoot, tid: u32) -> Result<NsKey> {
        use rustix::fs::{Mode, OFlags, open, readlinkat};
        let dir_path = proc.pid_path(tid, "ns");
        let dir = open(
            &dir_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::read(&dir_path, e.into()))?;
        let mut ids = [0; NsKind::ALL.len()];
        for (id, kind) in ids.iter_mut().zip(NsKind::ALL) {
            let target = readlinkat(&dir, kind.name(), Vec::new())
                .map_err(|e| Error::read(dir_path.join(kind.name()), e.into()))?;
            *id = crate::procfs::parse_ns_link(&target.to_string_lossy())
                .ok_or_else(|| Error::parse(dir_path.join(kind.name()), "ns link"))?;
        }
        Ok(NsKey::new(ids))
    }

    /// The inode of its namespace of `kind`.
    pub fn get(&self, kind: NsKind) -> u64 {
        match kind {
            NsKind::User => self.user,
            NsKind::Net => self.net,
            NsKind::Uts => self.uts,
            NsKind::Ipc => self.ipc,
            NsKind::Cgroup => self.cgroup,
            NsKind::Pid => self.pid,
        }
    }

    /// Whether the user namespace is `other`'s.
    pub fn same_user_namespace(&self, other: &NsKey) -> bool {
        self.user == other.user
    }
}

impl std::fmt::Display for NsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:{} pid:{} user:{}", self.net, self.pid, self.user)
    }
}
