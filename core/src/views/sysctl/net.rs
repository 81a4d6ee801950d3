//! `sys/devices/virtual/net`: the caller's own network devices, from the sysfs its agent
//! mounted after joining the caller's network namespace (a sysfs keeps the network
//! namespace it was mounted in, which is why a bind of the host's shows the host's devices:
//! sysbox #1041). Read-only; links (`subsystem`, `lower_*`) resolve in the caller's `/sys`.

use nsview_proto::agent::{DirItem, Op, Payload};

use super::{Caller, kind, unexpected};
use crate::error::Result;
use crate::vfs::{DirEntry, Entry};
use crate::views::{Env, Requester};

fn path(rel: &str) -> String {
    if rel.is_empty() {
        "sys/devices/virtual/net".to_owned()
    } else {
        format!("sys/devices/virtual/net/{rel}")
    }
}

/// The attributes of `rel`, read-only.
pub fn lookup(env: &Env, who: &Requester, rel: &str) -> Result<Entry> {
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

/// The listing of directory `rel`.
pub fn list(env: &Env, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
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

/// The content of file `rel`, read with the caller's credentials.
pub fn read(env: &Env, who: &Requester, rel: &str) -> Result<Vec<u8>> {
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

/// The target of symlink `rel`.
pub fn readlink(env: &Env, who: &Requester, rel: &str) -> Result<Vec<u8>> {
    match Caller::new(env, who)?.call(Op::Readlink { path: path(rel) })? {
        Payload::Link(target) => Ok(target.into_bytes()),
        other => Err(unexpected(other)),
    }
}
