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

/// One request's view of the caller: its namespace key, and whether it shares the daemon's
/// user namespace (then its ids need no mapping).
struct Caller<'a> {
    env: &'a Env,
    pool: &'a crate::agent::Pool,
    who: &'a Requester,
    key: crate::agent::NsKey,
}

impl<'a> Caller<'a> {
    fn new(env: &'a Env, who: &'a Requester) -> Result<Caller<'a>> {
        let pool = env.agents.as_deref().ok_or(Error::Os(libc::EIO))?;
        let key = pool.key_of(who.pid)?;
        Ok(Caller {
            env,
            pool,
            who,
            key,
        })
    }

    /// Performs `op` in the caller's namespaces.
    fn call(&self, op: Op) -> Result<Payload> {
        self.pool.request(self.who.pid, self.key, op)
    }

    /// `file` (`uid_map`, `gid_map`) of the caller; `None` in the daemon's user namespace.
    fn map(&self, file: &str) -> Result<Option<IdMap>> {
        if self.key.same_user_namespace(self.pool.own()) {
            return Ok(None);
        }
        IdMap::read(&self.env.proc, self.who.pid, file).map(Some)
    }

    /// The caller's credentials as its user namespace numbers them.
    fn creds(&self) -> Result<Creds> {
        let status = self
            .env
            .proc
            .read_host(&format!("{}/status", self.who.pid))?;
        let inside = |map: Option<IdMap>, id| map.map_or(id, |m| m.inside(id));
        Ok(Creds {
            uid: inside(self.map("uid_map")?, self.who.uid),
            gid: inside(self.map("gid_map")?, self.who.gid),
            caps: parse_cap_eff(&status).unwrap_or(0),
        })
    }

    fn entry(&self, stat: &Stat) -> Result<Entry> {
        let outside = |map: Option<IdMap>, id| map.map_or(id, |m| m.outside(id));
        Ok(Entry {
            kind: kind(stat.kind),
            mode: (stat.mode & 0o7777) as u16,
            size: 0,
            uid: outside(self.map("uid_map")?, stat.uid),
            gid: outside(self.map("gid_map")?, stat.gid),
        })
    }
}

fn kind(kind: Kind) -> EntryKind {
    match kind {
        Kind::Dir => EntryKind::Dir,
        Kind::File => EntryKind::File,
        Kind::Symlink => EntryKind::Symlink,
    }
}

fn unexpected(payload: Payload) -> Error {
    log::warn!("agent answered with an unexpected payload: {payload:?}");
    Error::Os(libc::EIO)
}

/// The attributes of `rel`.
pub fn lookup(env: &Env, who: &Requester, rel: &str) -> Result<Entry> {
    let caller = Caller::new(env, who)?;
    match caller.call(Op::Lookup {
        path: rel.to_owned(),
    })? {
        Payload::Entry(stat) => caller.entry(&stat),
        other => Err(unexpected(other)),
    }
}

/// The listing of directory `rel`.
pub fn list(env: &Env, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
    match Caller::new(env, who)?.call(Op::Readdir {
        path: rel.to_owned(),
    })? {
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
        path: rel.to_owned(),
        creds,
    })? {
        Payload::Data(data) => Ok(data),
        other => Err(unexpected(other)),
    }
}

/// Whether the caller may open `rel` for writing (or reading).
pub fn access(env: &Env, who: &Requester, rel: &str, write: bool) -> Result<()> {
    let caller = Caller::new(env, who)?;
    let creds = caller.creds()?;
    match caller.call(Op::Access {
        path: rel.to_owned(),
        write,
        creds,
    })? {
        Payload::Allowed => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Writes `data` to `rel` with the caller's credentials; the bytes written.
pub fn write(env: &Env, who: &Requester, rel: &str, data: &[u8]) -> Result<usize> {
    if data.len() > nsview_nsenter::protocol::MAX_WRITE {
        return Err(Error::Os(libc::EINVAL));
    }
    let caller = Caller::new(env, who)?;
    let creds = caller.creds()?;
    let op = Op::Write {
        path: rel.to_owned(),
        data: data.to_vec(),
        creds,
    };
    match caller.call(op)? {
        Payload::Written(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

/// The target of symlink `rel`.
pub fn readlink(env: &Env, who: &Requester, rel: &str) -> Result<Vec<u8>> {
    match Caller::new(env, who)?.call(Op::Readlink {
        path: rel.to_owned(),
    })? {
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
    Caller::new(env, &who)?.call(Op::Fault { fault }).map(drop)
}
