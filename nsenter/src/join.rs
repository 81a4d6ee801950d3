//! Joining a caller's namespaces, and a private procfs whose view is theirs.
//!
//! Order: net, uts, ipc, cgroup and pid first, as the daemon's root (which may enter any
//! namespace); a pid namespace only applies to children, and the agent stays out of it (no
//! process list of the container shows it): a child in it makes the procfs and hands it over
//! with a pidfd of its init ([`procfs_of_pid_namespace`]). Without the new mount API the agent
//! forks once more and the child serves from inside. The agent unshares a mount namespace,
//! puts that procfs and a fresh sysfs in a tmpfs, and pivots into it: its root then holds nothing
//! but its own procfs, so `/proc/<agent>/root` shows no host mount to anyone, and no path it
//! resolves can reach the nsview mount. The user namespace comes last: a caller's user
//! namespace need not own its other namespaces (root of `unshare -Ur` inside a container
//! without one), and once in it the agent could neither enter theirs nor mount their procfs.
//! In it, the agent holds exactly the capabilities the caller's user namespace gives.

use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, chdir, fork, getppid, pivot_root};
use rustix::fs::{Mode, mkdir};

/// Why the agent could not join the caller's namespaces or set up its private root: one
/// variant per step, with the system call's error.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// `setns` into an inherited namespace descriptor.
    #[error("setns {kind}")]
    Setns {
        /// The namespace's kind ([`NsKind::name`]).
        kind: &'static str,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// The agent has no parent process (it was reparented before it could look).
    #[error("no parent process")]
    NoParent,
    /// `pidfd_open` of the daemon.
    #[error("pidfd_open(parent)")]
    ParentPidfd(#[source] rustix::io::Errno),
    /// `pidfd_open` of the pid namespace's init.
    #[error("pidfd_open(1)")]
    InitPidfd(#[source] rustix::io::Errno),
    /// The daemon exited while the agent took its pidfd.
    #[error("parent exited")]
    ParentExited,
    /// `prctl(PR_SET_PDEATHSIG)` in the child serving from inside the pid namespace.
    #[error("prctl(PR_SET_PDEATHSIG)")]
    Pdeathsig(#[source] Errno),
    /// `prctl(PR_SET_DUMPABLE)`.
    #[error("prctl(PR_SET_DUMPABLE)")]
    Undumpable(#[source] Errno),
    /// `fork`.
    #[error("fork")]
    Fork(#[source] Errno),
    /// The socket pair the procfs is handed over through.
    #[error("socketpair")]
    Socketpair(#[source] Errno),
    /// Sending the procfs and the init's pidfd to the parent.
    #[error("sendmsg")]
    Sendmsg(#[source] Errno),
    /// Receiving them from the child.
    #[error("recvmsg")]
    Recvmsg(#[source] Errno),
    /// The child sent no descriptors.
    #[error("the child that makes the procfs sent none (see its error above)")]
    NoDescriptors,
    /// The child sent fewer than two.
    #[error("the child that makes the procfs sent too few descriptors")]
    TooFewDescriptors,
    /// `fsopen("proc")` (`ENOSYS` before Linux 5.2: no new mount API).
    #[error("fsopen proc")]
    Fsopen(#[source] rustix::io::Errno),
    /// `fsconfig(FSCONFIG_CMD_CREATE)` of the procfs.
    #[error("fsconfig create")]
    FsconfigCreate(#[source] rustix::io::Errno),
    /// `fsmount` of the procfs.
    #[error("fsmount")]
    Fsmount(#[source] rustix::io::Errno),
    /// `unshare(CLONE_NEWNS)` for the private mount namespace.
    #[error("unshare(CLONE_NEWNS)")]
    UnshareMount(#[source] Errno),
    /// Making `/` a private mount (no propagation to the caller's namespace).
    #[error("make / private")]
    RootPrivate(#[source] Errno),
    /// Mounting the tmpfs that becomes the agent's root.
    #[error("mount tmpfs")]
    MountTmpfs(#[source] Errno),
    /// Making its `proc` directory.
    #[error("mkdir proc")]
    MkdirProc(#[source] rustix::io::Errno),
    /// Mounting a fresh procfs there (no new mount API).
    #[error("mount proc")]
    MountProc(#[source] Errno),
    /// `chdir` into the tmpfs.
    #[error("chdir")]
    ChdirTmpfs(#[source] Errno),
    /// `pivot_root(".", ".")`.
    #[error("pivot_root")]
    PivotRoot(#[source] Errno),
    /// Detaching the old root stacked beneath the tmpfs.
    #[error("detach the old root")]
    DetachOldRoot(#[source] Errno),
    /// `chdir("/")` in the new root.
    #[error("chdir /")]
    ChdirRoot(#[source] Errno),
    /// None of the directories a tmpfs could go on exists.
    #[error("no directory to mount a tmpfs on")]
    NoTmpfsBase,
    /// `move_mount` of the detached procfs onto the private root's `proc`.
    #[error("move the procfs into place")]
    MoveProcfs(#[source] rustix::io::Errno),
}

pub use nsview_proto::ns::NsKind;

/// Sets `PR_SET_DUMPABLE` to 0: nobody in the joined namespaces may ptrace the agent or open
/// its `/proc` files (the kernel makes a process dumpable again when it joins a user
/// namespace, so this is repeated after that).
pub fn set_undumpable() -> Result<(), JoinError> {
    nix::sys::prctl::set_dumpable(false).map_err(JoinError::Undumpable)
}

/// Joins the namespaces of `ns` of the kinds `kinds`, in that order, closing each
/// descriptor after use.
pub fn join(ns: &[(NsKind, RawFd)], kinds: &[NsKind]) -> Result<(), JoinError> {
    for kind in kinds.iter().copied() {
        for (_, fd) in ns.iter().filter(|(k, _)| *k == kind) {
            // SAFETY: the descriptor was inherited for this purpose (checked to be above the
            // standard streams) and is not used or closed elsewhere until the close below.
            let borrowed = unsafe { BorrowedFd::borrow_raw(*fd) };
            setns(borrowed, kind.flag()).map_err(|source| JoinError::Setns {
                kind: kind.name(),
                source,
            })?;
            // SAFETY: closing the inherited descriptor we own; it is not used afterwards.
            unsafe { libc::close(*fd) };
        }
    }
    Ok(())
}

/// A pidfd of the parent process (the daemon), checked to be it: a pidfd names a process
/// (every thread of it), so it reads as readable once the whole daemon is gone, where
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the agent ends (a lane thread
/// idling out would kill a healthy agent).
pub fn parent_pidfd() -> Result<std::os::fd::OwnedFd, JoinError> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let parent = getppid();
    let pid = Pid::from_raw(parent.as_raw()).ok_or(JoinError::NoParent)?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(JoinError::ParentPidfd)?;
    // Reparented meanwhile: the pid may now name another process.
    if getppid() != parent {
        return Err(JoinError::ParentExited);
    }
    Ok(pidfd)
}

/// Forks once so the child is in the pid namespace joined last. Returns in the child; the
/// parent waits for it and exits with its status (it holds nothing the child needs).
/// The child watches the daemon's pidfd as the agent does; this parent, single-threaded and
/// outside the namespace (so the child's `getppid()` reads 0), ends it with `SIGKILL` if it
/// goes.
pub fn fork_into_pid_namespace() -> Result<(), JoinError> {
    // SAFETY: the agent is single-threaded, so the child may run any code after fork.
    match unsafe { fork() }.map_err(JoinError::Fork)? {
        ForkResult::Child => nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(JoinError::Pdeathsig),
        ForkResult::Parent { child } => {
            // Only the child talks to the daemon.
            // SAFETY: closing our copies of the standard streams; nothing here uses them again.
            unsafe {
                libc::close(0);
                libc::close(1);
            }
            let code = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                _ => 1,
            };
            std::process::exit(code);
        }
    }
}

/// A procfs of the pid namespace joined (its pid view; sysctls are the reader's), as a
/// detached mount made by a child that lives in that namespace only for the moment it takes:
/// the agent itself stays outside, so no process list, task count or load of the container
/// shows it. `Err` where the kernel has no new mount API (before 5.2): then the agent forks
/// into the namespace as before ([`fork_into_pid_namespace`]).
///
/// Returns the procfs mount and a pidfd of the namespace's init (see `ops::UntilGone`).
pub fn procfs_of_pid_namespace() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), JoinError>
{
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(JoinError::Socketpair)?;
    // SAFETY: the agent is single-threaded, so the child may run any code after fork.
    match unsafe { fork() }.map_err(JoinError::Fork)? {
        ForkResult::Child => {
            drop(ours);
            let sent = new_procfs()
                .and_then(|fs| Ok((fs, init_pidfd()?)))
                .and_then(|(fs, init)| send_fds(&theirs, &[&fs, &init]));
            // SAFETY: ending the child at once, without running the parent's exit handlers.
            unsafe { libc::_exit(i32::from(sent.is_err())) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let got = recv_fds(&ours);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut fds = got?.into_iter();
            match (fds.next(), fds.next()) {
                (Some(fs), Some(init)) => Ok((fs, init)),
                _ => Err(JoinError::TooFewDescriptors),
            }
        }
    }
}

/// A new procfs instance of the caller's active pid namespace, detached.
fn new_procfs() -> Result<std::os::fd::OwnedFd, JoinError> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsmount, fsopen,
    };
    let fs = fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC).map_err(JoinError::Fsopen)?;
    fsconfig_create(&fs).map_err(JoinError::FsconfigCreate)?;
    let quiet = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, quiet).map_err(JoinError::Fsmount)
}

/// A pidfd of the init of the caller's pid namespace (its pid 1).
fn init_pidfd() -> Result<std::os::fd::OwnedFd, JoinError> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    pidfd_open(Pid::INIT, PidfdFlags::empty()).map_err(JoinError::InitPidfd)
}

fn send_fds(socket: &std::os::fd::OwnedFd, fds: &[&std::os::fd::OwnedFd]) -> Result<(), JoinError> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let fds: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let byte = [0u8];
    let iov = [std::io::IoSlice::new(&byte)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(JoinError::Sendmsg)
}

fn recv_fds(socket: &std::os::fd::OwnedFd) -> Result<Vec<std::os::fd::OwnedFd>, JoinError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(JoinError::Recvmsg)?;
    for cmsg in msg.cmsgs().map_err(JoinError::Recvmsg)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us; nothing else owns
            // them.
            return Ok(fds
                .into_iter()
                .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
                .collect());
        }
    }
    Err(JoinError::NoDescriptors)
}

/// A private mount namespace whose root is a tmpfs holding a procfs at `/proc` (`procfs`, a
/// detached mount of the joined pid namespace's, else a fresh one mounted here: the sysctls
/// of the namespaces joined either way) and a fresh sysfs at `/sys` (the network devices of
/// the network namespace joined).
pub fn private_proc(procfs: Option<std::os::fd::OwnedFd>) -> Result<(), JoinError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(JoinError::UnshareMount)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(JoinError::RootPrivate)?;
    // Any existing directory will do as the mount point: the mount is in our namespace only.
    let base = ["/tmp", "/mnt", "/run", "/dev"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .ok_or(JoinError::NoTmpfsBase)?;
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        quiet,
        Some("size=16k,mode=0755"),
    )
    .map_err(JoinError::MountTmpfs)?;
    let proc = format!("{base}/proc");
    mkdir(proc.as_str(), Mode::from_raw_mode(0o555)).map_err(JoinError::MkdirProc)?;
    match procfs {
        Some(fd) => rustix::mount::move_mount(
            &fd,
            "",
            rustix::fs::CWD,
            proc.as_str(),
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(JoinError::MoveProcfs)?,
        None => mount(
            Some("proc"),
            proc.as_str(),
            Some("proc"),
            quiet,
            None::<&str>,
        )
        .map_err(JoinError::MountProc)?,
    }
    // sysfs shows the network devices of the namespace that mounts it: ours, joined above
    // (a sysfs mounted elsewhere would show the host's: sysbox #1041). Best effort: without
    // it only `sys/devices/virtual/net` is unavailable.
    let sys = format!("{base}/sys");
    let sysfs = mkdir(sys.as_str(), Mode::from_raw_mode(0o555))
        .map_err(|e| format!("mkdir: {e}"))
        .and_then(|()| {
            mount(
                Some("sysfs"),
                sys.as_str(),
                Some("sysfs"),
                quiet,
                None::<&str>,
            )
            .map_err(|e| format!("mount: {e}"))
        });
    if let Err(e) = sysfs {
        eprintln!("nsview-nsenter: no private sysfs ({e}); sys/devices/virtual/net unavailable");
    }
    chdir(base).map_err(JoinError::ChdirTmpfs)?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves the tmpfs.
    pivot_root(".", ".").map_err(JoinError::PivotRoot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(JoinError::DetachOldRoot)?;
    chdir("/").map_err(JoinError::ChdirRoot)?;
    Ok(())
}

/// The cookie of the network namespace this process is in (`SO_NETNS_COOKIE` of a socket
/// made here): the kernel never gives two namespaces the same one while it runs, which makes
/// it the identity of a namespace's emulated values. `None` before Linux 5.14.
pub fn netns_cookie() -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// `SO_NETNS_COOKIE` from `asm-generic/socket.h` (x86, arm, riscv; the libc crate
    /// exports it for no target yet).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: socket(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, a live u64, and updates
    // `len`; the socket stays open for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// Closes every descriptor from `first` up.
pub fn close_fds_from(first: u32) {
    // SAFETY: close_range only closes descriptors; callers pass a bound above every
    // descriptor they still use.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// Closes every descriptor from `first` on but `keep`.
pub fn close_fds_except(first: u32, keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&k| u32::try_from(k).ok())
        .filter(|&k| k >= first)
        .collect();
    keep.sort_unstable();
    let mut from = first;
    for k in keep {
        if k > from {
            // SAFETY: as in close_fds_from; the range ends below the one kept.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0u32) };
        }
        from = from.max(k + 1);
    }
    close_fds_from(from);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_network_namespace_has_a_cookie() {
        let cookie = netns_cookie();
        assert!(cookie.is_some_and(|c| c != 0));
        assert_eq!(
            netns_cookie(),
            cookie,
            "the same namespace, the same cookie"
        );
    }

    #[test]
    fn every_kind_has_its_own_name_flag_and_place() {
        for (i, kind) in NsKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(NsKind::from_name(kind.name()), Some(kind));
            let others = NsKind::ALL.into_iter().filter(|k| *k != kind);
            assert!(others.clone().all(|k| k.flag() != kind.flag()));
            assert!(others.clone().all(|k| k.name() != kind.name()));
        }
        assert_eq!(NsKind::from_name("mnt"), None);
        assert!(!NsKind::BEFORE_USER.contains(&NsKind::User));
    }
}
