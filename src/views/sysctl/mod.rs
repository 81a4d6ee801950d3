//! `proc/sys`: the caller's own, through an agent that joined its namespaces.
//!
//! Nothing is cached between requests: every lookup, listing, read and write goes to the
//! agent, so values that change by themselves (`fs/file-nr`, `nf_conntrack_count`) are never
//! stale and a listing shows exactly what the caller would see natively (its own interfaces
//! under `net/ipv4/conf/`). Reads, access checks and writes run in the agent with the
//! caller's ids and capabilities (see the agent's `ops` module), so permissions are the
//! kernel's own. Owners are mapped back from the caller's user namespace, so container root
//! sees its files as its own.

mod ids;

use nsview_nsenter::protocol::{Creds, DirItem, Kind, Op, Payload, Stat};

use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::{Env, Requester};

pub use ids::{IdMap, parse_cap_eff};

/// Performs `op` in the caller's namespaces.
fn call(env: &Env, who: &Requester, op: Op) -> Result<Payload> {
    let pool = env.agents.as_ref().ok_or(Error::Os(libc::EIO))?;
    let key = pool.key_of(who.pid)?;
    pool.request(who.pid, key, op)
}

/// The caller's credentials as its user namespace numbers them.
fn creds(env: &Env, who: &Requester) -> Result<Creds> {
    let status = env.proc.read_host(&format!("{}/status", who.pid))?;
    Ok(Creds {
        uid: IdMap::read(&env.proc, who.pid, "uid_map")?.inside(who.uid),
        gid: IdMap::read(&env.proc, who.pid, "gid_map")?.inside(who.gid),
        caps: parse_cap_eff(&status).unwrap_or(0),
    })
}

fn entry(env: &Env, who: &Requester, stat: &Stat) -> Result<Entry> {
    let kind = match stat.kind {
        Kind::Dir => EntryKind::Dir,
        Kind::File => EntryKind::File,
        Kind::Symlink => EntryKind::Symlink,
    };
    Ok(Entry {
        kind,
        mode: (stat.mode & 0o7777) as u16,
        size: 0,
        uid: IdMap::read(&env.proc, who.pid, "uid_map")?.outside(stat.uid),
        gid: IdMap::read(&env.proc, who.pid, "gid_map")?.outside(stat.gid),
    })
}

fn unexpected(payload: Payload) -> Error {
    log::warn!("agent answered with an unexpected payload: {payload:?}");
    Error::Os(libc::EIO)
}

/// The attributes of `rel`.
pub fn lookup(env: &Env, who: &Requester, rel: &str) -> Result<Entry> {
    match call(
        env,
        who,
        Op::Lookup {
            path: rel.to_owned(),
        },
    )? {
        Payload::Entry(stat) => entry(env, who, &stat),
        other => Err(unexpected(other)),
    }
}

/// The listing of directory `rel`.
pub fn list(env: &Env, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
    match call(
        env,
        who,
        Op::Readdir {
            path: rel.to_owned(),
        },
    )? {
        Payload::Entries(items) => Ok(items
            .into_iter()
            .map(|DirItem { name, stat }| DirEntry {
                name,
                kind: match stat.kind {
                    Kind::Dir => EntryKind::Dir,
                    Kind::File => EntryKind::File,
                    Kind::Symlink => EntryKind::Symlink,
                },
            })
            .collect()),
        other => Err(unexpected(other)),
    }
}

/// The content of file `rel`, read with the caller's credentials.
pub fn read(env: &Env, who: &Requester, rel: &str) -> Result<Vec<u8>> {
    let creds = creds(env, who)?;
    match call(
        env,
        who,
        Op::Read {
            path: rel.to_owned(),
            creds,
        },
    )? {
        Payload::Data(data) => Ok(data),
        other => Err(unexpected(other)),
    }
}

/// Whether the caller may open `rel` for writing (or reading).
pub fn access(env: &Env, who: &Requester, rel: &str, write: bool) -> Result<()> {
    let creds = creds(env, who)?;
    match call(
        env,
        who,
        Op::Access {
            path: rel.to_owned(),
            write,
            creds,
        },
    )? {
        Payload::Allowed => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Writes `data` to `rel` with the caller's credentials; the bytes written.
pub fn write(env: &Env, who: &Requester, rel: &str, data: &[u8]) -> Result<usize> {
    if data.len() > nsview_nsenter::protocol::MAX_WRITE {
        return Err(Error::Os(libc::EINVAL));
    }
    let creds = creds(env, who)?;
    let op = Op::Write {
        path: rel.to_owned(),
        data: data.to_vec(),
        creds,
    };
    match call(env, who, op)? {
        Payload::Written(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

/// The target of symlink `rel`.
pub fn readlink(env: &Env, who: &Requester, rel: &str) -> Result<Vec<u8>> {
    match call(
        env,
        who,
        Op::Readlink {
            path: rel.to_owned(),
        },
    )? {
        Payload::Link(target) => Ok(target.into_bytes()),
        other => Err(unexpected(other)),
    }
}

/// Test only: asks the agent of task `tid` to misbehave with `fault` (the daemon must answer
/// EIO and carry on).
pub fn fault(env: &Env, tid: u32, fault: nsview_nsenter::protocol::Fault) -> Result<()> {
    let who = Requester {
        pid: tid,
        uid: 0,
        gid: 0,
    };
    call(env, &who, Op::Fault { fault }).map(drop)
}
