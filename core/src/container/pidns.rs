//! Finding the init of a pid namespace without forking.
//!
//! LXCFS forks a helper that joins the namespace and sends `SCM_CREDENTIALS` claiming pid 1
//! (1-4 ms per new namespace). Linux 6.10+ answers directly: `ioctl(pidns_fd,
//! NS_GET_TGID_FROM_PIDNS, 1)` translates pid 1 of that namespace into the caller's. Older
//! kernels get a scan of `/proc` for the task whose innermost `NSpid` is 1 in that namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::procfs::ProcRoot;

/// `_IOR(0xb7, 0x7, int)`: translate a pid of the namespace `fd` refers to into a thread-group
/// id in the caller's pid namespace (include/uapi/linux/nsfs.h, Linux 6.10).
const NS_GET_TGID_FROM_PIDNS: libc::c_ulong = 0x8004_b707;

/// The host pid (in the daemon's pid namespace) of the init of the pid namespace that task
/// `member` belongs to, whose inode is `pidns`.
pub fn find_init(proc: &ProcRoot, member: u32, pidns: u64) -> Result<u32> {
    match init_by_ioctl(proc, member) {
        Ok(pid) => Ok(pid),
        Err(Error::Task { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) =>
        {
            init_by_scan(proc, pidns)
        }
        Err(e) => Err(e),
    }
}

fn init_by_ioctl(proc: &ProcRoot, member: u32) -> Result<u32> {
    let path = proc.pid_path(member, "ns/pid");
    let ns = File::open(&path).map_err(|e| Error::read(&path, e))?;
    // SAFETY: `ns` is an open namespace file for the whole call; this ioctl takes its
    // argument by value (the pid to translate) and returns the translated pid, touching no memory.
    let ret = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_TGID_FROM_PIDNS, 1 as libc::c_ulong) };
    if ret <= 0 {
        let err = if ret < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::from_raw_os_error(libc::ESRCH)
        };
        return Err(Error::task("NS_GET_TGID_FROM_PIDNS", member, err));
    }
    Ok(ret as u32)
}

/// The task whose pid in its innermost namespace is 1 and whose pid namespace is `pidns`.
fn init_by_scan(proc: &ProcRoot, pidns: u64) -> Result<u32> {
    for pid in proc.pids()? {
        let Ok(status) = proc.status(pid) else {
            continue;
        };
        if status.nspid.last() == Some(&1)
            && status.nspid.len() > 1
            && proc.ns_inode(pid, "pid").ok() == Some(pidns)
        {
            return Ok(pid);
        }
    }
    Err(Error::Gone(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture procfs has no namespace files to ioctl, so the lookup goes through the scan.
    #[test]
    fn scan_finds_the_task_that_is_pid_1_in_that_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let task = |pid: u32, nspid: &str, ns: u64| {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(d.join("ns")).unwrap();
            let status =
                format!("Tgid:\t{pid}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t{nspid}\n");
            std::fs::write(d.join("status"), status).unwrap();
            std::os::unix::fs::symlink(format!("pid:[{ns}]"), d.join("ns/pid")).unwrap();
        };
        task(1, "1", 100);
        task(50, "50\t1", 200);
        task(51, "51\t2", 200);
        task(60, "60\t1", 300);
        let proc = ProcRoot::new(dir.path());
        assert_eq!(init_by_scan(&proc, 200).unwrap(), 50);
        assert_eq!(init_by_scan(&proc, 300).unwrap(), 60);
        assert!(matches!(init_by_scan(&proc, 999), Err(Error::Gone(_))));
    }
}
