//! Subtrees under `sys/`: what a caller sees below a [`SubtreeId`]'s directory.

pub mod block;
pub mod cpu;
pub mod dmi;
pub mod kernel;
pub mod node;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Result;
use crate::vfs::{DirEntry, Entry, SubtreeId};
use crate::views::cpus::container_cpus;
use crate::views::{Env, Requester, Subject, WriteOp, Written, sysctl};

/// The host CPUs `subject` sees; `None` for the host's view, also when a container's CPUs
/// cannot be read (its cgroup vanished): then the host's directory is served, and counted.
fn subject_cpus(env: &Env, subject: &Subject) -> Option<Arc<[u32]>> {
    let Subject::Container(c) = subject else {
        return None;
    };
    match container_cpus(env, c) {
        Ok(cpus) => Some(cpus),
        Err(e) => {
            env.stats.host_fallback(format_args!(
                "sys/devices/system/cpu for container pidns {}, whose CPUs are unreadable ({e})",
                c.pidns
            ));
            None
        }
    }
}

fn cpu_root(env: &Env) -> PathBuf {
    env.sys.join("devices/system/cpu")
}

fn node_root(env: &Env) -> PathBuf {
    env.sys.join("devices/system/node")
}

fn node_target(env: &Env, subject: &Subject, rel: &str) -> Result<cpu::Target> {
    node::map(&node_root(env), subject_cpus(env, subject).as_deref(), rel)
}

fn block_root(env: &Env) -> PathBuf {
    env.sys.join("block")
}

/// A block device's `stat` for `subject`: its container's own IO on the device, or the
/// host's file (also when the container's IO cannot be read, counted).
fn block_stat(env: &Env, subject: &Subject, place: &block::Place) -> Result<Vec<u8>> {
    let (host, (major, minor)) = block::host_stat(&block_root(env), place)?;
    let Subject::Container(c) = subject else {
        return Ok(host.into_bytes());
    };
    match c.cgroups.io_stats() {
        Ok(io) => {
            let mine = io.iter().find(|s| s.major == major && s.minor == minor);
            Ok(crate::views::proc::disks::render_block_stat(&host, mine).into_bytes())
        }
        Err(e) => {
            env.stats.host_fallback(format_args!(
                "sys/block/{major}:{minor}/stat for container pidns {}, whose IO is unreadable ({e})",
                c.pidns
            ));
            Ok(host.into_bytes())
        }
    }
}

fn kernel_root(env: &Env) -> PathBuf {
    env.sys.join("kernel")
}

fn target(env: &Env, subject: &Subject, rel: &str) -> Result<cpu::Target> {
    cpu::map(&cpu_root(env), subject_cpus(env, subject).as_deref(), rel)
}

/// The attributes of `rel` in subtree `id`, for `who` (whose view is `subject`).
pub fn lookup(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Entry> {
    match id {
        SubtreeId::SysCpu => cpu::lookup(&target(env, subject, rel)?),
        SubtreeId::SysNode => cpu::lookup(&node_target(env, subject, rel)?),
        SubtreeId::SysKernel => kernel::lookup(&kernel_root(env), rel),
        SubtreeId::SysBlock => Ok(block::lookup(&block::place(&block_root(env), rel)?)),
        SubtreeId::SysNet => sysctl::net::lookup(env, who, rel),
        SubtreeId::ProcSys => sysctl::lookup(env, who, rel),
    }
}

/// The listing of directory `rel` in subtree `id`, sorted by name.
pub fn list(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Vec<DirEntry>> {
    match id {
        SubtreeId::SysCpu => cpu::list(&cpu_root(env), subject_cpus(env, subject).as_deref(), rel),
        SubtreeId::SysNode => {
            node::list(&node_root(env), subject_cpus(env, subject).as_deref(), rel)
        }
        SubtreeId::SysKernel => kernel::list(&kernel_root(env), rel),
        SubtreeId::SysBlock => {
            let root = block_root(env);
            block::list(&root, &block::place(&root, rel)?)
        }
        SubtreeId::SysNet => sysctl::net::list(env, who, rel),
        SubtreeId::ProcSys => sysctl::list(env, who, rel),
    }
}

/// The content of file `rel` in subtree `id`.
pub fn read(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Vec<u8>> {
    match id {
        SubtreeId::SysCpu => cpu::read(&target(env, subject, rel)?),
        SubtreeId::SysNode => cpu::read(&node_target(env, subject, rel)?),
        SubtreeId::SysKernel => kernel::read(&kernel_root(env), rel),
        SubtreeId::SysBlock => block_stat(env, subject, &block::place(&block_root(env), rel)?),
        SubtreeId::SysNet => sysctl::net::read(env, who, rel),
        SubtreeId::ProcSys => sysctl::read(env, subject, who, rel),
    }
}

/// For file `rel` of subtree `id`, when it is a host file passed through as it is (the
/// sysfs subtrees), that file opened for reading, to be read at any offset (a large binary
/// attribute such as `/sys/kernel/btf/vmlinux` whole). A file without the world-read bit is
/// root's only, as the host's. `None` for files rendered here.
pub fn open_host(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Option<std::fs::File>> {
    use crate::error::Error;
    use std::os::unix::fs::PermissionsExt;
    let path = match id {
        SubtreeId::SysCpu | SubtreeId::SysNode => {
            let target = match id {
                SubtreeId::SysCpu => target(env, subject, rel)?,
                _ => node_target(env, subject, rel)?,
            };
            match target {
                cpu::Target::Host(path) => path,
                cpu::Target::Synth(_) => return Ok(None),
            }
        }
        SubtreeId::SysKernel => kernel::host_path(&kernel_root(env), rel)?,
        SubtreeId::SysBlock | SubtreeId::SysNet | SubtreeId::ProcSys => return Ok(None),
    };
    let os = |e: std::io::Error| Error::Os(e.raw_os_error().unwrap_or(libc::EIO));
    let file = std::fs::File::open(&path).map_err(os)?;
    let mode = file.metadata().map_err(os)?.permissions().mode();
    if who.uid != 0 && mode & 0o004 == 0 {
        return Err(Error::Access);
    }
    Ok(Some(file))
}

/// The target of symlink `rel` in subtree `id`.
pub fn readlink(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Vec<u8>> {
    match id {
        SubtreeId::SysCpu => cpu::readlink(&target(env, subject, rel)?),
        SubtreeId::SysNode => cpu::readlink(&node_target(env, subject, rel)?),
        SubtreeId::SysKernel => kernel::readlink(&kernel_root(env), rel),
        SubtreeId::SysBlock => Err(crate::error::Error::Os(libc::EINVAL)),
        SubtreeId::SysNet => sysctl::net::readlink(env, who, rel),
        SubtreeId::ProcSys => sysctl::readlink(env, who, rel),
    }
}

/// Whether `who` may open file `rel` of subtree `id` for writing: only `proc/sys` files
/// can be written, by its write rule.
pub fn access_write(env: &Env, id: SubtreeId, who: &Requester, rel: &str) -> Result<()> {
    match id {
        SubtreeId::SysCpu
        | SubtreeId::SysNode
        | SubtreeId::SysKernel
        | SubtreeId::SysBlock
        | SubtreeId::SysNet => Err(crate::error::Error::Access),
        SubtreeId::ProcSys => sysctl::access_write(env, who, rel),
    }
}

/// Writes `op` to file `rel` of subtree `id` for `who` (whose view is `subject`).
pub fn write(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
    op: WriteOp<'_>,
) -> Result<Written> {
    match id {
        SubtreeId::SysCpu
        | SubtreeId::SysNode
        | SubtreeId::SysKernel
        | SubtreeId::SysBlock
        | SubtreeId::SysNet => Err(crate::error::Error::Access),
        SubtreeId::ProcSys => sysctl::write(env, subject, who, rel, op),
    }
}
