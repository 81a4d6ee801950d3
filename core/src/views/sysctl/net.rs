//! `sys/devices/virtual/net`: the caller's own network devices, from the sysfs its agent
//! mounted after joining the caller's network namespace (a sysfs keeps the network
//! namespace it was mounted in, which is why a bind of the host's shows the host's devices:
//! sysbox #1041). Read-only; links (`subsystem`, `lower_*`) resolve in the caller's `/sys`.

use nsview_proto::agent::{DirItem, Op, Payload};

use super::{Caller, kind, unexpected};
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
        match caller.call(Op::Lookup { path: path(rel) })? {
            Payload::Entry(stat) => {
                let mut entry = caller.entry(&stat)?;
                entry.mode &= !0o222;
                Ok(entry)
            }
            other => Err(unexpected(other)),
        }
    }

    fn list(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
        match Caller::new(env, who)?.call(Op::Readdir { path: path(rel) })? {
            Payload::Entries(items) => Ok(items
                .into_iter()
                .map(|DirItem { name, stat }| DirEntry {
                    name,
                    kind: kind(stat.kind),
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Read with the caller's credentials.
    fn read(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        let caller = Caller::new(env, who)?;
        let creds = caller.creds()?;
        match caller.call(Op::Read {
            path: path(rel),
            creds,
        })? {
            Payload::Data(data) => Ok(data),
            other => Err(unexpected(other)),
        }
    }

    fn readlink(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        match Caller::new(env, who)?.call(Op::Readlink { path: path(rel) })? {
            Payload::Link(target) => Ok(target.into_bytes()),
            other => Err(unexpected(other)),
        }
    }
}
