//! The integration-test rig: a real `nsview serve` daemon on a temporary mountpoint
//! ([`Daemon`]), fresh `nsview-test-<pid>-<n>` cgroups ([`Cgroup`]) and containers made of
//! new namespaces inside them ([`Container`]), plus mount-table helpers.
//!
//! Everything the rig creates (processes, mounts, cgroups, directories) is owned by a guard
//! that removes it on drop, also while a test is panicking. The rig only ever signals
//! processes it started (through pidfds where the pid is not a direct child) and only
//! touches cgroups it created.
//!
//! The integration tests' modules (`tests/main.rs`) share this one copy, each using part of
//! it.

mod cgroup;
mod container;
mod daemon;
mod host;
mod mounts;
pub mod oci;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

pub use cgroup::{Cgroup, Limits};
pub use container::{Container, ContainerBuilder, write_probe};
pub use daemon::Daemon;
pub use host::{HostFiles, MachineValues, has_conntrack, host_sysctl};
pub use mounts::{SharedMount, detach_beneath, is_mounted, parse_mountinfo};

/// A fresh directory for a test's files, removed on drop: under `$NSVIEW_TEST_SCRATCH` when
/// set (the VM suite points it at a tmpfs, since its 9p-shared target directory takes no
/// device nodes), else under Cargo's target tmpdir.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("NSVIEW_TEST_SCRATCH")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).expect("create the scratch base");
    tempfile::tempdir_in(base).expect("create a scratch dir")
}

/// Like [`scratch_dir`], on a real block device (IO tests): under `$NSVIEW_TEST_BLOCK_DIR`
/// when set (the VM suite's disk), else under Cargo's target tmpdir.
pub fn block_scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("NSVIEW_TEST_BLOCK_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).expect("create the block scratch base");
    tempfile::tempdir_in(base).expect("create a block scratch dir")
}

/// The `nsview` binary Cargo built for this test run.
pub fn nsview_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nsview"))
}

/// Panics with a clear message unless the test runs as (effective) root: the rig mounts
/// FUSE, creates namespaces and cgroups.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it mounts FUSE and creates namespaces and cgroups); \
         run it as root, e.g. with scripts/test"
    );
}

/// What a command run inside a container produced.
#[derive(Debug)]
pub struct Output {
    /// Its exit status (that of `nsenter`, which passes its child's status on).
    pub status: ExitStatus,
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Self {
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A pidfd: a handle on one process that stays valid (and never names another process)
/// even after the pid is reused, so signals sent through it reach only that process.
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`; fails with ESRCH when no such process exists.
    pub(crate) fn open(pid: u32) -> io::Result<PidFd> {
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
        // passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall succeeded, so `fd` is a new open file descriptor that nothing
        // else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends `signal` to the process (ESRCH once it has exited).
    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: the fd is a valid pidfd owned by `self`; a null siginfo is allowed and
        // means "as if sent by kill(2)".
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sends `signal` to a direct child that has not been reaped yet (so its pid cannot have
/// been reused).
pub(crate) fn signal_child(child: &Child, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Waits up to `limit` for a child to exit, polling every 10 ms; `None` on timeout.
pub(crate) fn wait_child_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Stops a child: `signal`, up to `grace` to exit, then SIGKILL and a final wait.
pub(crate) fn stop_child(child: &mut Child, signal: i32, grace: Duration) -> Option<ExitStatus> {
    signal_child(child, signal);
    if let Some(status) = wait_child_for(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}
