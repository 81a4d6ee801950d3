//! Who a caller is to the write rules: the host, a container, or an outsider.
//!
//! "The host" is judged by namespaces, never by ids: a caller is the host only when every
//! namespace it is in (user, mount, pid, net, uts, ipc, cgroup) is the host's, where the
//! host's are this daemon's and those of pid 1 of its pid namespace (under Kubernetes the
//! daemon has the node's pid namespace but may have a mount or network namespace of its own;
//! the node's init has the node's). A container started with `--pid host`, or any process
//! with a mount namespace of its own, is not the host: its root is host root by uid, which is
//! exactly why its writes to machine-wide knobs are refused.

use crate::error::Result;
use crate::ns::{NsKey, NsKind};
use crate::procfs::ProcRoot;

/// What the write rules make of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Every namespace the host's: the kernel decides every write, as natively.
    Host,
    /// In a pid namespace of its own: its own namespaces' knobs go to the kernel, the
    /// emulation table gives it container-local values, the rest is refused.
    Container,
    /// In the host's pid namespace with some other namespace of its own: its own
    /// namespaces' knobs go to the kernel, the rest is refused (it has no container to keep
    /// values for).
    Outsider,
}

/// The host's namespaces: per kind, this daemon's and its pid namespace's init's inodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNs {
    /// In [`NsKind::ALL`] order.
    kinds: [[u64; 2]; 6],
    mnt: [u64; 2],
}

impl HostNs {
    /// The namespaces of this process and of pid 1 (its own twice when pid 1's are not
    /// readable).
    pub fn read(proc: &ProcRoot) -> Result<HostNs> {
        let me = std::process::id();
        let own = NsKey::of(proc, me)?;
        let own_mnt = proc.ns_inode(me, "mnt")?;
        let init = NsKey::of(proc, 1).unwrap_or(own);
        let init_mnt = proc.ns_inode(1, "mnt").unwrap_or(own_mnt);
        Ok(HostNs::new(own, own_mnt, init, init_mnt))
    }

    /// The host made of two sets of namespaces (and mount namespaces).
    pub fn new(own: NsKey, own_mnt: u64, init: NsKey, init_mnt: u64) -> HostNs {
        let kinds = NsKind::ALL.map(|kind| [own.get(kind), init.get(kind)]);
        HostNs {
            kinds,
            mnt: [own_mnt, init_mnt],
        }
    }

    /// Whether `key`'s namespace of `kind` is the host's.
    pub fn shares(&self, key: &NsKey, kind: NsKind) -> bool {
        self.kinds[kind.index()].contains(&key.get(kind))
    }

    /// What the caller with namespaces `key` is; `mnt` gives its mount namespace's inode
    /// (read only when the rest is the host's; unreadable counts as not the host's).
    pub fn standing(&self, key: &NsKey, mnt: impl FnOnce() -> Result<u64>) -> Standing {
        if !self.shares(key, NsKind::Pid) {
            return Standing::Container;
        }
        let all = NsKind::ALL.into_iter().all(|kind| self.shares(key, kind));
        if all && mnt().is_ok_and(|m| self.mnt.contains(&m)) {
            Standing::Host
        } else {
            Standing::Outsider
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// user, net, uts, ipc, cgroup, pid.
    const OWN: NsKey = NsKey::new([1, 2, 3, 4, 5, 6]);
    const INIT: NsKey = NsKey::new([1, 20, 3, 4, 5, 6]);

    fn host() -> HostNs {
        HostNs::new(OWN, 7, INIT, 70)
    }

    #[test]
    fn only_callers_in_every_host_namespace_are_the_host() {
        let h = host();
        assert_eq!(h.standing(&OWN, || Ok(7)), Standing::Host);
        assert_eq!(h.standing(&INIT, || Ok(70)), Standing::Host, "init's netns");
        // A mount namespace of its own (a `--pid host` container): not the host.
        assert_eq!(h.standing(&OWN, || Ok(8)), Standing::Outsider);
        assert_eq!(
            h.standing(&OWN, || Err(crate::error::Error::Os(libc::ESRCH))),
            Standing::Outsider
        );
        // A network namespace of its own in the host's pid namespace.
        let netns = NsKey::new([1, 9, 3, 4, 5, 6]);
        assert_eq!(h.standing(&netns, || Ok(7)), Standing::Outsider);
        // A user namespace of its own.
        let userns = NsKey::new([9, 2, 3, 4, 5, 6]);
        assert_eq!(h.standing(&userns, || Ok(7)), Standing::Outsider);
        // A pid namespace of its own: a container, whatever else it shares.
        let pidns = NsKey::new([1, 2, 3, 4, 5, 9]);
        assert_eq!(
            h.standing(&pidns, || panic!("not needed")),
            Standing::Container
        );
    }

    #[test]
    fn kinds_are_compared_one_by_one() {
        let h = host();
        let c = NsKey::new([9, 20, 9, 9, 9, 9]);
        assert!(h.shares(&c, NsKind::Net));
        assert!(!h.shares(&c, NsKind::Uts));
        assert!(!h.shares(&c, NsKind::User));
        assert!(!h.shares(&c, NsKind::Pid));
        assert!(h.shares(&OWN, NsKind::Ipc));
    }

    #[test]
    fn this_process_is_the_host_of_itself() {
        let proc = ProcRoot::default();
        let h = HostNs::read(&proc).unwrap();
        let me = std::process::id();
        let key = NsKey::of(&proc, me).unwrap();
        assert!(h.shares(&key, NsKind::Net));
        let mnt = || proc.ns_inode(me, "mnt");
        assert_eq!(h.standing(&key, mnt), Standing::Host);
    }
}
