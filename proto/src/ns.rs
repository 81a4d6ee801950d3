//! The kinds of namespace an agent joins, as the daemon keys its agents and the agent's
//! command line names them.

use nix::sched::CloneFlags;

/// A kind of namespace an agent may join: the one list of them for the agent and the daemon
/// (its pool keys, its write rules, its table of namespaced sysctls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsKind {
    /// User namespace.
    User,
    /// Network namespace.
    Net,
    /// UTS namespace.
    Uts,
    /// IPC namespace.
    Ipc,
    /// Cgroup namespace.
    Cgroup,
    /// Pid namespace.
    Pid,
}

impl NsKind {
    /// Every kind, in the order the daemon names them (a pool key's order).
    pub const ALL: [NsKind; 6] = [
        NsKind::User,
        NsKind::Net,
        NsKind::Uts,
        NsKind::Ipc,
        NsKind::Cgroup,
        NsKind::Pid,
    ];

    /// The kinds joined before the fork, in this order; the user namespace is joined after.
    pub const BEFORE_USER: [NsKind; 5] = [
        NsKind::Net,
        NsKind::Uts,
        NsKind::Ipc,
        NsKind::Cgroup,
        NsKind::Pid,
    ];

    /// The name of its `/proc/<pid>/ns/` link, and on the agent's command line.
    pub fn name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Net => "net",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Cgroup => "cgroup",
            NsKind::Pid => "pid",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<NsKind> {
        NsKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its place in [`NsKind::ALL`] (arrays indexed by kind rely on it).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its `setns` flag.
    pub fn flag(self) -> CloneFlags {
        match self {
            NsKind::User => CloneFlags::CLONE_NEWUSER,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
        }
    }
}

// The declaration order is `ALL`'s, so `index` (the discriminant) is a kind's place in it.
const _: () = {
    let mut i = 0;
    while i < NsKind::ALL.len() {
        assert!(NsKind::ALL[i] as usize == i);
        i += 1;
    }
};
