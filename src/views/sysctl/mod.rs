//! `proc/sys`: the caller's own, through an agent that joined its namespaces.
//!
//! Contents are never cached: every read, listing and write goes to the agent, so values
//! that change by themselves (`fs/file-nr`, `nf_conntrack_count`) are never stale and a
//! listing shows exactly what the caller would see natively (its own interfaces under
//! `net/ipv4/conf/`). Only an existing entry's attributes are reused, per namespace set, for
//! a second (see the agent pool), so a path walk costs one agent round trip, not one per
//! component. Reads, access checks and writes run in the agent with the caller's ids and
//! capabilities (see the agent's `ops` module), so permissions are the kernel's own. Owners
//! are mapped back from the caller's user namespace, so container root sees its files as its
//! own.

pub mod emulation;
mod ids;
pub mod net;

use nsview_nsenter::protocol::{Creds, DirItem, Kind, Op, Payload, Stat};

use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::{Env, Requester};

pub use ids::{IdMap, parse_cap_eff};

use emulation::{Emulated, Policy};

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

    /// Whether the caller is the host (the daemon's own pid namespace): it gets the real
    /// files, never a container's store.
    fn is_host(&self) -> bool {
        self.key.0[5] == self.pool.own().0[5]
    }

    /// The emulation of `rel` that applies to this caller.
    fn emulated(&self, rel: &str) -> Option<&'static Emulated> {
        if self.is_host() {
            None
        } else {
            emulation::find(rel)
        }
    }

    /// The store of the caller's network namespace.
    fn store(&self) -> u64 {
        self.key.0[1]
    }

    /// An entry the table makes: owned by the caller's root, read-only unless writable.
    fn made_entry(&self, kind: EntryKind, writable: bool) -> Result<Entry> {
        let root = |map: Option<IdMap>| map.map_or(0, |m| m.outside(0));
        let mode = match (kind, writable) {
            (EntryKind::Dir, _) => 0o555,
            (_, true) => 0o644,
            (_, false) => 0o444,
        };
        Ok(Entry {
            kind,
            mode,
            size: 0,
            uid: root(self.map("uid_map")?),
            gid: root(self.map("gid_map")?),
        })
    }

    /// The value the caller reads for emulated `e`.
    fn emulated_value(&self, e: &'static Emulated) -> Result<String> {
        let host = || host_value(self.env, e);
        Ok(match e.policy {
            Policy::ClampToIdmap => match self.env.sysctl_stores.get(self.store(), e.path) {
                Some(value) => value,
                None => {
                    let creds = self.creds()?;
                    match self.call(Op::Read {
                        path: agent_path(e.path),
                        creds,
                    })? {
                        Payload::Data(data) => String::from_utf8_lossy(&data).trim().to_owned(),
                        other => return Err(unexpected(other)),
                    }
                }
            },
            Policy::Store | Policy::MaxWins | Policy::LiberalWins => self
                .env
                .sysctl_stores
                .get(self.store(), e.path)
                .unwrap_or_else(host),
            Policy::HostGlobal | Policy::ReadOnly => host(),
            Policy::RandomUuid => emulation::random_uuid(),
            Policy::BootId => {
                self.env
                    .sysctl_stores
                    .get_or_set(self.store(), e.path, emulation::random_uuid)
            }
        })
    }

    /// clamp-to-idmap: the kernel refuses ids the writer's user namespace does not map, so
    /// it gets `value` clamped to the caller's gid map (written in the caller's namespaces
    /// with its credentials); the caller reads back what it wrote.
    fn clamp_to_idmap(&self, e: &'static Emulated, value: &str) -> Result<()> {
        let mut range = value.split('\t').map(|v| v.parse::<u64>().unwrap_or(0));
        let (lo, hi) = (range.next().unwrap_or(0), range.next().unwrap_or(0));
        let (lo, hi) = match self.map("gid_map")? {
            None => (lo, hi),
            Some(map) => {
                let (first, last) = map.inside_bounds().ok_or(Error::Os(libc::EINVAL))?;
                let (lo, hi) = (lo.max(u64::from(first)), hi.min(u64::from(last)));
                // An empty intersection: the kernel's "nobody may" range.
                if lo > hi { (1, 0) } else { (lo, hi) }
            }
        };
        let creds = self.creds()?;
        let data = format!("{lo} {hi}\n").into_bytes();
        match self.call(Op::Write {
            path: agent_path(e.path),
            data,
            creds,
        })? {
            Payload::Written(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Writes emulated `e` after checking the caller may and the value is valid.
    fn emulated_write(&self, e: &'static Emulated, data: &[u8]) -> Result<usize> {
        self.may_write(e)?;
        let value = emulation::validate(e.check, data).ok_or(Error::Os(libc::EINVAL))?;
        let stores = &self.env.sysctl_stores;
        match e.policy {
            Policy::Store => stores.set(self.store(), e.path, value),
            Policy::MaxWins => {
                raise_host(self.env, e, &value)?;
                stores.set(self.store(), e.path, value);
            }
            Policy::LiberalWins => {
                if value != "0" {
                    write_host(self.env, e, "1")?;
                }
                stores.set(self.store(), e.path, value);
            }
            Policy::HostGlobal => write_host(self.env, e, &value)?,
            Policy::ClampToIdmap => {
                self.clamp_to_idmap(e, &value)?;
                stores.set(self.store(), e.path, value);
            }
            Policy::ReadOnly | Policy::RandomUuid | Policy::BootId => return Err(Error::Access),
        }
        Ok(data.len())
    }

    /// Only the container's root writes emulated values; read-only and synthesized ones are
    /// written by nobody.
    fn may_write(&self, e: &'static Emulated) -> Result<()> {
        if matches!(
            e.policy,
            Policy::ReadOnly | Policy::RandomUuid | Policy::BootId
        ) {
            return Err(Error::Access);
        }
        if self.creds()?.uid != 0 {
            return Err(Error::Access);
        }
        Ok(())
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

/// The host's value of emulated `e` (its default where the host has no such file).
fn host_value(env: &Env, e: &Emulated) -> String {
    let path = env.proc.path().join("sys").join(e.path);
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| e.default.to_owned())
}

fn write_host(env: &Env, e: &Emulated, value: &str) -> Result<()> {
    let path = env.proc.path().join("sys").join(e.path);
    std::fs::write(&path, format!("{value}\n")).map_err(|err| Error::read(&path, err))
}

/// max-wins: raises the host's value to `value` when that is larger, reading it back and
/// trying again (a few times) when another writer raced it lower.
fn raise_host(env: &Env, e: &Emulated, value: &str) -> Result<()> {
    let wanted: i64 = value.parse().map_err(|_| Error::Os(libc::EINVAL))?;
    for _ in 0..3 {
        let host: i64 = host_value(env, e).parse().unwrap_or(i64::MAX);
        if host >= wanted {
            return Ok(());
        }
        write_host(env, e, value)?;
    }
    Ok(())
}

/// `rel` below `proc/sys` as the agent names it.
fn agent_path(rel: &str) -> String {
    if rel.is_empty() {
        "proc/sys".to_owned()
    } else {
        format!("proc/sys/{rel}")
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
    if let Some(e) = caller.emulated(rel) {
        let writable = !matches!(
            e.policy,
            Policy::ReadOnly | Policy::RandomUuid | Policy::BootId
        );
        return caller.made_entry(EntryKind::File, writable);
    }
    match caller.call(Op::Lookup {
        path: agent_path(rel),
    }) {
        Ok(Payload::Entry(stat)) => caller.entry(&stat),
        Ok(other) => Err(unexpected(other)),
        // A directory the namespaces hide but an emulated entry lives in.
        Err(Error::Os(libc::ENOENT)) if !caller.is_host() && emulation::is_emulated_dir(rel) => {
            caller.made_entry(EntryKind::Dir, false)
        }
        Err(e) => Err(e),
    }
}

/// The listing of directory `rel`.
pub fn list(env: &Env, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
    let caller = Caller::new(env, who)?;
    let native = caller.call(Op::Readdir {
        path: agent_path(rel),
    });
    let mut entries: Vec<DirEntry> = match native {
        Ok(Payload::Entries(items)) => items
            .into_iter()
            .map(|DirItem { name, stat }| DirEntry {
                name,
                kind: kind(stat.kind),
            })
            .collect(),
        Ok(other) => return Err(unexpected(other)),
        Err(Error::Os(libc::ENOENT)) if !caller.is_host() && emulation::is_emulated_dir(rel) => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    // Emulated entries are listed even where the namespaces hide them (sysbox #618, #778).
    if !caller.is_host() {
        for (name, is_dir) in emulation::names_under(rel) {
            if !entries.iter().any(|d| d.name == name) {
                let kind = if is_dir {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                };
                entries.push(DirEntry {
                    name: name.to_owned(),
                    kind,
                });
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(entries)
}

/// The content of file `rel`, read with the caller's credentials.
pub fn read(env: &Env, who: &Requester, rel: &str) -> Result<Vec<u8>> {
    let caller = Caller::new(env, who)?;
    if let Some(e) = caller.emulated(rel) {
        return Ok(format!("{}\n", caller.emulated_value(e)?).into_bytes());
    }
    let creds = caller.creds()?;
    match caller.call(Op::Read {
        path: agent_path(rel),
        creds,
    })? {
        Payload::Data(data) => Ok(data),
        other => Err(unexpected(other)),
    }
}

/// Whether the caller may open `rel` for writing (or reading).
pub fn access(env: &Env, who: &Requester, rel: &str, write: bool) -> Result<()> {
    let caller = Caller::new(env, who)?;
    if let Some(e) = caller.emulated(rel) {
        return if write { caller.may_write(e) } else { Ok(()) };
    }
    let creds = caller.creds()?;
    match caller.call(Op::Access {
        path: agent_path(rel),
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
    if let Some(e) = caller.emulated(rel) {
        return caller.emulated_write(e, data);
    }
    let creds = caller.creds()?;
    let op = Op::Write {
        path: agent_path(rel),
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
        path: agent_path(rel),
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

/// A host-global file below the host's sysfs: its content.
pub fn host_global_read(env: &Env, rel: &str) -> Result<Vec<u8>> {
    let path = env.sys.join(rel);
    std::fs::read(&path).map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Whether `who` may write a host-global file: its user namespace's root only.
pub fn host_global_access(env: &Env, who: &Requester) -> Result<()> {
    if Caller::new(env, who)?.creds()?.uid != 0 {
        return Err(Error::Access);
    }
    Ok(())
}

/// Writes a host-global file below the host's sysfs for `who` (its root only): a positive
/// integer, else EINVAL.
pub fn host_global_write(env: &Env, who: &Requester, rel: &str, data: &[u8]) -> Result<usize> {
    host_global_access(env, who)?;
    let value = emulation::validate(emulation::Check::Int(1, i64::from(i32::MAX)), data)
        .ok_or(Error::Os(libc::EINVAL))?;
    let path = env.sys.join(rel);
    std::fs::write(&path, format!("{value}\n"))
        .map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))?;
    log::info!("{} set to {value} for caller {}", path.display(), who.pid);
    Ok(data.len())
}
