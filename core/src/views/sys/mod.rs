//! Subtrees under `sys/` (and `proc/sys`): what a caller sees below a [`SubtreeId`]'s
//! directory. Each subtree is one [`Subtree`]; [`subtree`] is the one place that names which.

pub mod block;
pub mod cpu;
pub mod dmi;
pub mod kernel;
pub mod node;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, SubtreeId};
use crate::views::{Env, Requester, Subject, WriteOp, Written, sysctl};

/// One subtree's answers to requests below its directory, for `who` (whose view is
/// `subject`); `rel` is the path below the subtree's directory. The defaults are those of a
/// read-only subtree rendered here: no host file to pass through, no symlinks, no writes.
pub trait Subtree {
    /// The attributes of `rel`.
    fn lookup(&self, env: &Env, subject: &Subject, who: &Requester, rel: &str) -> Result<Entry>;

    /// The listing of directory `rel`, sorted by name.
    fn list(
        &self,
        env: &Env,
        subject: &Subject,
        who: &Requester,
        rel: &str,
    ) -> Result<Vec<DirEntry>>;

    /// The content of file `rel`.
    fn read(&self, env: &Env, subject: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>>;

    /// The host file `rel` is, when it is passed through as it is (see [`open_host`]);
    /// `None` for files rendered here.
    fn host_path(
        &self,
        _env: &Env,
        _subject: &Subject,
        _who: &Requester,
        _rel: &str,
    ) -> Result<Option<PathBuf>> {
        Ok(None)
    }

    /// The target of symlink `rel`; EINVAL, as readlink(2) of what is not a symlink, where
    /// the subtree has none.
    fn readlink(
        &self,
        _env: &Env,
        _subject: &Subject,
        _who: &Requester,
        _rel: &str,
    ) -> Result<Vec<u8>> {
        Err(Error::Os(libc::EINVAL))
    }

    /// Whether `who` may open file `rel` for writing; EACCES where nothing can be written.
    fn access_write(&self, _env: &Env, _who: &Requester, _rel: &str) -> Result<()> {
        Err(Error::Access)
    }

    /// Writes `op` to file `rel`; EACCES where nothing can be written.
    fn write(
        &self,
        _env: &Env,
        _subject: &Subject,
        _who: &Requester,
        _rel: &str,
        _op: WriteOp<'_>,
    ) -> Result<Written> {
        Err(Error::Access)
    }
}

/// The subtree `id` names.
fn subtree(id: SubtreeId) -> &'static dyn Subtree {
    match id {
        SubtreeId::SysCpu => &cpu::SYS_CPU,
        SubtreeId::SysNode => &node::SYS_NODE,
        SubtreeId::SysKernel => &kernel::SysKernel,
        SubtreeId::SysBlock => &block::SysBlock,
        SubtreeId::SysNet => &sysctl::net::SysNet,
        SubtreeId::ProcSys => &sysctl::ProcSys,
    }
}

/// The attributes of `rel` in subtree `id`, for `who` (whose view is `subject`).
pub fn lookup(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Entry> {
    subtree(id).lookup(env, subject, who, rel)
}

/// The listing of directory `rel` in subtree `id`, sorted by name.
pub fn list(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Vec<DirEntry>> {
    subtree(id).list(env, subject, who, rel)
}

/// The content of file `rel` in subtree `id`.
pub fn read(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Vec<u8>> {
    subtree(id).read(env, subject, who, rel)
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
    let path = subtree(id).host_path(env, subject, who, rel)?;
    path.map(|path| open_readable(&path, who)).transpose()
}

/// Host file `path` opened for reading by `who`: EACCES for anyone but root when it lacks the
/// world-read bit.
fn open_readable(path: &Path, who: &Requester) -> Result<std::fs::File> {
    use std::os::unix::fs::PermissionsExt;
    let os = |e: std::io::Error| Error::Os(e.raw_os_error().unwrap_or(libc::EIO));
    let file = std::fs::File::open(path).map_err(os)?;
    let mode = file.metadata().map_err(os)?.permissions().mode();
    if who.uid != 0 && mode & 0o004 == 0 {
        return Err(Error::Access);
    }
    Ok(file)
}

/// The target of symlink `rel` in subtree `id`.
pub fn readlink(
    env: &Env,
    id: SubtreeId,
    subject: &Subject,
    who: &Requester,
    rel: &str,
) -> Result<Vec<u8>> {
    subtree(id).readlink(env, subject, who, rel)
}

/// Whether `who` may open file `rel` of subtree `id` for writing: only `proc/sys` files
/// can be written, by its write rule.
pub fn access_write(env: &Env, id: SubtreeId, who: &Requester, rel: &str) -> Result<()> {
    subtree(id).access_write(env, who, rel)
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
    subtree(id).write(env, subject, who, rel, op)
}
