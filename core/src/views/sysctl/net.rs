//! `sys/devices/virtual/net`: the caller's own network devices, from the sysfs its agent
//! mounted after joining the caller's network namespace (a sysfs keeps the network
//! namespace it was mounted in, which is why a bind of the host's shows the host's devices:
//! sysbox #1041). Read-only; links (`subsystem`, `lower_*`) resolve in the caller's `/sys`.

use super::caller::Caller;
use crate::error::Result;
use crate::vfs::{DirEntry, Entry};
use crate::views::sys::Subtree;
use crate::views::{Env, Requester, Subject};

fn path(rel: &str) -> String {
    if rel.is_empty() {
        "sys/devices/virtual/net".to_owned()
    } else {
        format!("sys/devices/virtual/net/{rel}")
    }
}

/// `sys/devices/virtual/net`, the caller's own (see the module doc): read-only, so no
/// writes (EACCES); no host file is passed through.
pub struct SysNet;

impl Subtree for SysNet {
    /// Read-only: the write bits cleared.
    fn lookup(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Entry> {
        let caller = Caller::new(env, who)?;
        let mut entry = caller.entry(&caller.stat(path(rel))?)?;
        entry.mode &= !0o222;
        Ok(entry)
    }

    fn list(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
        Caller::new(env, who)?.readdir(path(rel))
    }

    /// Read with the caller's credentials.
    fn read(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        Caller::new(env, who)?.read(path(rel))
    }

    fn readlink(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        Caller::new(env, who)?.readlink(path(rel))
    }
}
