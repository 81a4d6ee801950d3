//! Which namespace confines each `/proc/sys` path: one table, the heart of write safety.
//!
//! A write from a container reaches the kernel only when the path belongs to a namespace the
//! caller does not share with the host; everything else is emulated or refused (see the
//! parent module). A path missing from this table belongs to no namespace: its value is the
//! whole machine's (`vm/*`, most of `kernel/*`, `fs/*`, `debug/*`, `dev/*`, `abi/*`), so that
//! is the safe default for anything the kernel adds later.
//!
//! Each line was checked on this kernel (6.18) the way `tests/sysctl_namespaces.rs` checks
//! it on every run: in a fresh namespace of the kind, every writable file under the path
//! takes a changed value while the host's stays what it was.
//! - `net/`: the kernel registers a network namespace's own tables under it; the host-only
//!   ones (`net/core/rmem_max`, ...) are not even listed in a child namespace. Except
//!   [`UNCONFINED`]: listed and writable in every network namespace, machine-wide in effect.
//! - `kernel/{hostname,domainname}`: the UTS namespace's strings (`ostype`, `osrelease` and
//!   `version` are read-only, so they need no line).
//! - SysV IPC limits and ids, `fs/mqueue/`: the IPC namespace's (since 5.19 with their own
//!   ownership; the `*_next_id` files ask for CAP_CHECKPOINT_RESTORE over it).
//! - `user/`: the limits of the user namespace the opener is in.
//! - `kernel/ns_last_pid`, and `kernel/pid_max` since 6.14: the pid namespace's.

pub use crate::ns::NsKind;

/// One line: a path below `proc/sys` (a directory ending in `/` covers everything below it),
/// its namespace kind, and the first kernel (major, minor) that confines it.
#[derive(Debug, Clone, Copy)]
pub struct Confined {
    /// The path, or a directory prefix ending in `/`.
    pub path: &'static str,
    /// The namespace that holds its value.
    pub kind: NsKind,
    /// The first kernel version where the namespace holds it.
    pub since: (u32, u32),
}

const fn c(path: &'static str, kind: NsKind) -> Confined {
    Confined {
        path,
        kind,
        since: (0, 0),
    }
}

use NsKind::{Ipc, Net, Pid, User, Uts};

/// Every namespaced path.
pub const CONFINED: &[Confined] = &[
    c("net/", Net),
    c("kernel/hostname", Uts),
    c("kernel/domainname", Uts),
    c("kernel/shmmax", Ipc),
    c("kernel/shmall", Ipc),
    c("kernel/shmmni", Ipc),
    c("kernel/shm_rmid_forced", Ipc),
    c("kernel/shm_next_id", Ipc),
    c("kernel/msgmax", Ipc),
    c("kernel/msgmnb", Ipc),
    c("kernel/msgmni", Ipc),
    c("kernel/msg_next_id", Ipc),
    c("kernel/sem", Ipc),
    c("kernel/sem_next_id", Ipc),
    c("fs/mqueue/", Ipc),
    c("user/", User),
    c("kernel/ns_last_pid", Pid),
    Confined {
        path: "kernel/pid_max",
        kind: Pid,
        since: (6, 14),
    },
];

/// Paths under a line of [`CONFINED`] whose value is the machine's all the same.
/// `nf_hooks_lwtunnel` is a static key every network namespace lists: a write of 1 in any of
/// them turns it on for the whole machine, and nothing turns it off again (EBUSY); the
/// namespace check found it on 6.18.
pub const UNCONFINED: &[&str] = &["net/netfilter/nf_hooks_lwtunnel"];

/// The namespace kind confining `rel` (below `proc/sys`) on kernel `release`, or `None`
/// when its value is the machine's.
pub fn kind_of(rel: &str, release: (u32, u32)) -> Option<NsKind> {
    if UNCONFINED.contains(&rel) {
        return None;
    }
    CONFINED
        .iter()
        .find(|c| match c.path.strip_suffix('/') {
            Some(dir) => rel.strip_prefix(dir).is_some_and(|r| r.starts_with('/')),
            None => rel == c.path,
        })
        .filter(|c| release >= c.since)
        .map(|c| c.kind)
}

/// The running kernel's (major, minor) version, from `uname`; (0, 0) if unreadable, which
/// confines only what every kernel confines.
pub fn running_release() -> (u32, u32) {
    nix::sys::utsname::uname().map_or((0, 0), |u| parse_release(&u.release().to_string_lossy()))
}

/// (major, minor) of a release string such as `6.18.44-fc-v1147`.
pub fn parse_release(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: (u32, u32) = (6, 18);

    #[test]
    fn namespaced_paths_have_their_kind_and_the_rest_none() {
        assert_eq!(kind_of("net/ipv4/ip_forward", NEW), Some(Net));
        assert_eq!(kind_of("net/core/somaxconn", NEW), Some(Net));
        assert_eq!(kind_of("kernel/hostname", NEW), Some(Uts));
        assert_eq!(kind_of("kernel/shmmax", NEW), Some(Ipc));
        assert_eq!(kind_of("fs/mqueue/queues_max", NEW), Some(Ipc));
        assert_eq!(kind_of("user/max_user_namespaces", NEW), Some(User));
        assert_eq!(kind_of("kernel/ns_last_pid", NEW), Some(Pid));
        for global in [
            "kernel/core_pattern",
            "kernel/threads-max",
            "kernel/keys/maxkeys",
            "vm/swappiness",
            "vm/dirty_ratio",
            "fs/pipe-max-size",
            "fs/mount-max",
            "debug/exception-trace",
            "kernel/ostype",
            "net/netfilter/nf_hooks_lwtunnel",
            "kernel/hostnamex",
            "network",
            "net",
            "fs/mqueue",
            "",
        ] {
            assert_eq!(kind_of(global, NEW), None, "{global}");
        }
    }

    #[test]
    fn pid_max_is_the_pid_namespaces_only_since_6_14() {
        assert_eq!(kind_of("kernel/pid_max", (6, 14)), Some(Pid));
        assert_eq!(kind_of("kernel/pid_max", (6, 13)), None);
        assert_eq!(kind_of("kernel/pid_max", (6, 1)), None);
        assert_eq!(kind_of("kernel/pid_max", (0, 0)), None);
    }

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v1147"), (6, 18));
        assert_eq!(parse_release("6.1.0-28-amd64"), (6, 1));
        assert_eq!(parse_release("5.4"), (5, 4));
        assert_eq!(parse_release("garbage"), (0, 0));
        assert_ne!(running_release(), (0, 0));
    }
}
