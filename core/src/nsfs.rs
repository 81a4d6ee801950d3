//! Namespace descriptors and the kernel's capability rule over them.
//!
//! [`capable_over`] answers the question the kernel's `ns_capable(ns->user_ns, cap)` answers
//! for a task, from outside it: does the task hold `cap` over a namespace owned by a given
//! user namespace? The kernel's rule (`cap_capable`): walking from the owner up towards the
//! root, the task holds it when it meets the task's own user namespace with `cap` in its
//! effective set, or when it meets a namespace whose parent is the task's and whose owner is
//! the task's euid (the creator holds every capability in namespaces it made). Capabilities
//! never reach upwards: root of a child user namespace holds nothing over its parent's.
//!
//! Namespaces are compared by inode (they all live on the one nsfs); the descriptors opened
//! here pin them, so no inode is reused while it is compared.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};
use crate::procfs::ProcRoot;

/// Capability numbers (`linux/capability.h`) the write rules ask for.
pub mod cap {
    /// CAP_SYS_RAWIO.
    pub const SYS_RAWIO: u32 = 17;
    /// CAP_NET_ADMIN.
    pub const NET_ADMIN: u32 = 12;
    /// CAP_SYS_ADMIN.
    pub const SYS_ADMIN: u32 = 21;
}

const NSIO: u8 = 0xb7;
nix::ioctl_none!(
    /// `NS_GET_USERNS`: a descriptor of the user namespace that owns a namespace.
    ns_get_userns,
    NSIO,
    0x1
);
nix::ioctl_none!(
    /// `NS_GET_PARENT`: a descriptor of a pid or user namespace's parent.
    ns_get_parent,
    NSIO,
    0x2
);

/// An open namespace.
#[derive(Debug)]
pub struct Ns(OwnedFd);

impl Ns {
    /// Namespace `kind` (`net`, `user`, ...) of task `tid`.
    pub fn of(proc: &ProcRoot, tid: u32, kind: &str) -> Result<Ns> {
        let path = proc.pid_path(tid, &format!("ns/{kind}"));
        let file = File::open(&path).map_err(|e| Error::read(&path, e))?;
        Ok(Ns(file.into()))
    }

    /// Its inode.
    pub fn inode(&self) -> Result<u64> {
        let file = File::from(self.0.try_clone().map_err(|e| self.fail("dup", e))?);
        file.metadata()
            .map(|m| m.ino())
            .map_err(|e| self.fail("fstat", e))
    }

    /// The user namespace owning it (`NS_GET_USERNS`).
    pub fn owner(&self) -> Result<Ns> {
        // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor or -1.
        let fd = unsafe { ns_get_userns(self.0.as_raw_fd()) }
            .map_err(|e| self.fail("NS_GET_USERNS", e.into()))?;
        // SAFETY: the ioctl succeeded, so `fd` is a new descriptor that nothing else owns.
        Ok(Ns(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The parent of a user or pid namespace (`NS_GET_PARENT`); `None` at the top of what
    /// this process may see (the kernel answers EPERM there).
    pub fn parent(&self) -> Result<Option<Ns>> {
        // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor or -1.
        match unsafe { ns_get_parent(self.0.as_raw_fd()) } {
            // SAFETY: the ioctl succeeded, so `fd` is a new descriptor nothing else owns.
            Ok(fd) => Ok(Some(Ns(unsafe { OwnedFd::from_raw_fd(fd) }))),
            Err(nix::errno::Errno::EPERM) => Ok(None),
            Err(e) => Err(self.fail("NS_GET_PARENT", e.into())),
        }
    }

    /// The uid (in this process's user namespace) that created this user namespace.
    pub fn owner_uid(&self) -> Result<u32> {
        let mut uid: libc::uid_t = 0;
        // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which points at a
        // live local of that type. (The request encodes no size although it writes a uid,
        // so nix's typed wrappers do not fit it.)
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                nix::request_code_none!(NSIO, 0x4) as libc::Ioctl,
                &mut uid,
            )
        };
        if rc < 0 {
            return Err(self.fail("NS_GET_OWNER_UID", std::io::Error::last_os_error()));
        }
        Ok(uid)
    }

    fn fail(&self, what: &'static str, source: std::io::Error) -> Error {
        Error::Task {
            what,
            pid: self.0.as_raw_fd() as u32,
            source,
        }
    }
}

/// What the kernel needs to know about a task to decide a capability: its user namespace,
/// its effective uid (in the daemon's user namespace) and its effective capabilities.
#[derive(Debug)]
pub struct Subject {
    /// The task's user namespace.
    pub userns: Ns,
    /// Its effective uid.
    pub euid: u32,
    /// Its effective capability set (bit n = capability n).
    pub caps: u64,
}

/// Whether `who` holds capability `cap` over a namespace owned by user namespace `owner`
/// (the kernel's `ns_capable(owner, cap)` for that task).
pub fn capable_over(who: &Subject, owner: Ns, cap: u32) -> Result<bool> {
    let mine = who.userns.inode()?;
    let mut ns = owner;
    loop {
        if ns.inode()? == mine {
            return Ok(cap < 64 && who.caps & (1 << cap) != 0);
        }
        let Some(parent) = ns.parent()? else {
            return Ok(false);
        };
        if parent.inode()? == mine && ns.owner_uid()? == who.euid {
            return Ok(true);
        }
        ns = parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_ADMIN: u32 = cap::NET_ADMIN;

    fn subject(pid: u32, euid: u32, caps: u64) -> Subject {
        Subject {
            userns: Ns::of(&ProcRoot::default(), pid, "user").unwrap(),
            euid,
            caps,
        }
    }

    fn owner_of_net(pid: u32) -> Ns {
        Ns::of(&ProcRoot::default(), pid, "net")
            .unwrap()
            .owner()
            .unwrap()
    }

    /// A process in a user namespace (and network namespace) of its own, made by root:
    /// killed on drop.
    struct Child(std::process::Child);

    impl Child {
        fn start() -> Child {
            let child = std::process::Command::new("unshare")
                .args(["--user", "--net", "sleep", "30"])
                .spawn()
                .unwrap();
            let pid = child.id();
            let own = Ns::of(&ProcRoot::default(), std::process::id(), "user")
                .unwrap()
                .inode()
                .unwrap();
            // Wait until unshare has made the namespaces.
            for _ in 0..500 {
                let ns = Ns::of(&ProcRoot::default(), pid, "user").and_then(|n| n.inode());
                if ns.is_ok_and(|ns| ns != own) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Child(child)
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_namespace_of_ones_own_user_namespace_needs_the_capability() {
        let me = std::process::id();
        let with = subject(me, 0, 1 << NET_ADMIN);
        assert!(capable_over(&with, owner_of_net(me), NET_ADMIN).unwrap());
        let without = subject(me, 0, 0);
        assert!(!capable_over(&without, owner_of_net(me), NET_ADMIN).unwrap());
        let other_cap = subject(me, 0, 1 << cap::SYS_ADMIN);
        assert!(!capable_over(&other_cap, owner_of_net(me), NET_ADMIN).unwrap());
    }

    #[test]
    fn capabilities_reach_down_to_child_namespaces_and_never_up() {
        if euid() != 0 {
            return; // needs root to make the child's namespaces
        }
        let child = Child::start();
        let pid = child.0.id();
        let me = std::process::id();
        // Any capability of the parent namespace applies in the child's.
        assert!(
            capable_over(
                &subject(me, 1000, 1 << NET_ADMIN),
                owner_of_net(pid),
                NET_ADMIN
            )
            .unwrap()
        );
        // The creator (root made it) holds every capability there, even with none itself.
        assert!(capable_over(&subject(me, 0, 0), owner_of_net(pid), NET_ADMIN).unwrap());
        assert!(!capable_over(&subject(me, 1000, 0), owner_of_net(pid), NET_ADMIN).unwrap());
        // The child's root, with every capability of its own namespace, holds none over the
        // parent's namespaces.
        let inside = subject(pid, 0, u64::MAX);
        assert!(capable_over(&inside, owner_of_net(pid), NET_ADMIN).unwrap());
        assert!(!capable_over(&inside, owner_of_net(me), NET_ADMIN).unwrap());
    }

    fn euid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }
}
