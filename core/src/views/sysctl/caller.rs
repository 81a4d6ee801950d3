//! Who asks: one request's view of the caller of a `proc/sys` (or agent-served `sys`) file.
//! Its namespaces (read afresh under a pin for writes), the agent that joined them and what
//! it is asked there, its ids and credentials as its user namespace numbers them, its
//! standing, and the write rule ([`Caller::route`]) that decides where its writes go.

use nsview_proto::agent::{Creds, DirItem, Kind, MAX_WRITE, Op, Payload, Stat};

use super::emulation::{self, Emulated};
use super::ids::{IdMap, parse_cap_eff};
use super::namespaces::{self, NsKind};
use super::standing::{HostNs, Standing};
use super::stores::StoreId;
use super::values::host_has;
use crate::agents::Agents;
use crate::error::{Error, Result};
use crate::ns::NsKey;
use crate::nsfs::{Ns, capable_over};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::{Env, Requester, Written};

/// Where a write goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Route {
    /// To the kernel, in the caller's namespaces, with its credentials.
    Kernel,
    /// To the caller's container-local value.
    Emulated(&'static Emulated),
    /// Nowhere: EACCES.
    Refused,
}

/// One request's view of the caller: its namespaces and what the write rules make of it.
pub(super) struct Caller<'a> {
    pub(super) env: &'a Env,
    pool: &'a dyn Agents,
    host: &'a HostNs,
    who: &'a Requester,
    /// Its namespaces.
    pub(super) key: NsKey,
    /// Who it is to the write rules.
    pub(super) standing: Standing,
}

/// `PF_IO_WORKER` in a task's flags (`linux/sched.h`).
const PF_IO_WORKER: u64 = 0x10;

/// What `/proc/<tid>/status` says of the caller.
struct Task {
    euid: u32,
    caps: u64,
}

impl<'a> Caller<'a> {
    /// The caller `who`, in the namespaces its request came with (else those of its task).
    pub(super) fn new(env: &'a Env, who: &'a Requester) -> Result<Caller<'a>> {
        let key = match who.ns {
            Some(key) => key,
            None => env.agents.key_of(who.pid)?,
        };
        Caller::with_key(env, who, key)
    }

    /// The caller `who`, pinned by `_pin`: its namespaces read afresh now (the key a request
    /// was dispatched with was read before the pin, maybe long before, while it queued).
    pub(super) fn pinned(
        env: &'a Env,
        who: &'a Requester,
        _pin: &crate::caller::Pin,
    ) -> Result<Caller<'a>> {
        let key = NsKey::of(&env.proc, who.pid)?;
        Caller::with_key(env, who, key)
    }

    fn with_key(env: &'a Env, who: &'a Requester, key: NsKey) -> Result<Caller<'a>> {
        let pool = &*env.agents;
        let host = &env.host_ns;
        let standing = host.standing(&key, || env.proc.ns_inode(who.pid, "mnt"));
        Ok(Caller {
            env,
            pool,
            host,
            who,
            key,
            standing,
        })
    }

    /// Performs `op` in the caller's namespaces.
    pub(super) fn call(&self, op: Op) -> Result<Payload> {
        self.pool.request(self.who.pid, self.key, op)
    }

    /// The attributes of `path` (as the agent names it) in the caller's namespaces.
    pub(super) fn stat(&self, path: String) -> Result<Stat> {
        match self.call(Op::Lookup { path })? {
            Payload::Entry(stat) => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    /// The listing of directory `path` in the caller's namespaces.
    pub(super) fn readdir(&self, path: String) -> Result<Vec<DirEntry>> {
        match self.call(Op::Readdir { path })? {
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

    /// The content of file `path`, read in the caller's namespaces with its credentials.
    pub(super) fn read(&self, path: String) -> Result<Vec<u8>> {
        let creds = self.creds()?;
        match self.call(Op::Read { path, creds })? {
            Payload::Data(data) => Ok(data),
            other => Err(unexpected(other)),
        }
    }

    /// The target of symlink `path` in the caller's namespaces.
    pub(super) fn readlink(&self, path: String) -> Result<Vec<u8>> {
        match self.call(Op::Readlink { path })? {
            Payload::Link(target) => Ok(target.into_bytes()),
            other => Err(unexpected(other)),
        }
    }

    /// `file` (`uid_map`, `gid_map`) of the caller; `None` in the daemon's user namespace.
    pub(super) fn map(&self, file: &str) -> Result<Option<IdMap>> {
        if self.key.same_user_namespace(self.pool.own()) {
            return Ok(None);
        }
        IdMap::read(&self.env.proc, self.who.pid, file).map(Some)
    }

    /// The caller's effective uid and capabilities. An io_uring worker thread shows its own
    /// credentials in `status` while the request runs with its submitter's, which may hold
    /// fewer: it gets none, and the uid the request came with.
    fn task(&self) -> Result<Task> {
        let pid = self.who.pid;
        let stat = self.env.proc.read_host(&format!("{pid}/stat"))?;
        if crate::procfs::parse_flags(&stat).is_none_or(|f| f & PF_IO_WORKER != 0) {
            return Ok(Task {
                euid: self.who.uid,
                caps: 0,
            });
        }
        let status = self.env.proc.read_host(&format!("{pid}/status"))?;
        let euid = crate::procfs::parse_status(&status).map_or(u32::MAX, |s| s.euid);
        Ok(Task {
            euid,
            caps: parse_cap_eff(&status).unwrap_or(0),
        })
    }

    /// The caller's effective capabilities, as [`Caller::task`] judges them, from `capget(2)`
    /// rather than `status`: the kernel generates the whole of `status` (about 1.4 KiB) for
    /// one line, on every read of a `proc/sys` file.
    fn caps(&self) -> Result<u64> {
        let pid = self.who.pid;
        let stat = self.env.proc.read_host(&format!("{pid}/stat"))?;
        if crate::procfs::parse_flags(&stat).is_none_or(|f| f & PF_IO_WORKER != 0) {
            return Ok(0);
        }
        let tid = rustix::process::Pid::from_raw(pid as i32).ok_or(Error::Gone(pid))?;
        let sets = rustix::thread::capabilities(Some(tid)).map_err(|_| Error::Gone(pid))?;
        Ok(sets.effective.bits())
    }

    /// The caller's credentials as its user namespace numbers them.
    pub(super) fn creds(&self) -> Result<Creds> {
        let inside = |map: Option<IdMap>, id| map.map_or(id, |m| m.inside(id));
        Ok(Creds {
            uid: inside(self.map("uid_map")?, self.who.uid),
            gid: inside(self.map("gid_map")?, self.who.gid),
            caps: self.caps()?,
        })
    }

    /// The emulation of `rel` this caller gets: containers only, where the host's kernel has
    /// the file.
    pub(super) fn emulated(&self, rel: &str) -> Option<&'static Emulated> {
        if self.standing != Standing::Container {
            return None;
        }
        emulation::find(rel).filter(|e| host_has(self.env, e))
    }

    /// Whether the caller gets emulated entries listed.
    pub(super) fn emulates(&self) -> bool {
        self.standing == Standing::Container
    }

    /// The write rule: where a write of `rel` by this caller goes.
    pub(super) fn route(&self, rel: &str) -> Route {
        if self.standing == Standing::Host {
            return Route::Kernel;
        }
        if let Some(e) = self.emulated(rel) {
            return Route::Emulated(e);
        }
        match namespaces::kind_of(rel, self.env.kernel_release) {
            Some(kind) if !self.host.shares(&self.key, kind) => Route::Kernel,
            _ => Route::Refused,
        }
    }

    /// The store of the caller's network namespace; `None` for the host's network namespace
    /// (whose values are the host's own) and where the kernel gives no cookie.
    pub(super) fn store(&self) -> Result<Option<StoreId>> {
        if self.host.shares(&self.key, NsKind::Net) {
            return Ok(None);
        }
        let cookie = self.pool.netns_cookie(self.who.pid, self.key)?;
        Ok(cookie.map(|cookie| StoreId {
            cookie,
            netns: self.key.net,
        }))
    }

    /// Whether the caller holds `cap` over its network namespace (as the kernel would judge
    /// it: over the user namespace owning that namespace).
    pub(super) fn holds_over_netns(&self, cap: u32) -> Result<bool> {
        let task = self.task()?;
        let subject = crate::nsfs::Subject {
            userns: Ns::of(&self.env.proc, self.who.pid, "user")?,
            euid: task.euid,
            caps: task.caps,
        };
        let owner = Ns::of(&self.env.proc, self.who.pid, "net")?.owner()?;
        capable_over(&subject, owner, cap)
    }

    /// Whether the caller may change host values: a runtime registered its container, lets
    /// it, and the caller is in that container's own network namespace (not one of its own
    /// making, where `unshare -Urn` gives anyone every capability).
    pub(super) fn host_writes(&self) -> bool {
        let Some(r) = self.env.registered.vouched(self.key.pid) else {
            return false;
        };
        r.host_writes && self.env.proc.ns_inode(r.pid, "net").ok() == Some(self.key.net)
    }

    /// Whether the caller may write emulated `e`: a writable line, the caller's own network
    /// namespace (never the host's), and the line's capability over it.
    pub(super) fn may_write(&self, e: &'static Emulated) -> Result<()> {
        if !e.policy.writable() || self.host.shares(&self.key, NsKind::Net) {
            return Err(Error::Access);
        }
        if !self.holds_over_netns(e.cap)? {
            return Err(Error::Access);
        }
        Ok(())
    }

    /// An entry the table makes: owned by the caller's root, read-only unless writable.
    pub(super) fn made_entry(&self, kind: EntryKind, writable: bool) -> Result<Entry> {
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

    /// Agent attributes `stat` as the caller sees them: owners mapped back from its user
    /// namespace.
    pub(super) fn entry(&self, stat: &Stat) -> Result<Entry> {
        let outside = |map: Option<IdMap>, id| map.map_or(id, |m| m.outside(id));
        Ok(Entry {
            kind: kind(stat.kind),
            mode: (stat.mode & 0o7777) as u16,
            size: stat.len.unwrap_or(0),
            uid: outside(self.map("uid_map")?, stat.uid),
            gid: outside(self.map("gid_map")?, stat.gid),
        })
    }

    /// One write(2) of at most [`MAX_WRITE`] bytes of `data` at `offset` to the kernel, in
    /// the caller's namespaces and with its credentials `creds`; the rest counted as taken
    /// when the kernel took all it was given.
    pub(super) fn kernel_write(
        &self,
        rel: &str,
        offset: u64,
        data: &[u8],
        creds: Creds,
    ) -> Result<Written> {
        let sent = &data[..data.len().min(MAX_WRITE)];
        let op = Op::Write {
            path: agent_path(rel),
            offset,
            data: sent.to_vec(),
            creds,
        };
        match self.call(op)? {
            Payload::Written { n, pos } => {
                let n = if n == sent.len() { data.len() } else { n };
                Ok(Written::counted(offset, n, pos != offset))
            }
            other => Err(unexpected(other)),
        }
    }
}

/// `rel` below `proc/sys` as the agent names it.
pub(super) fn agent_path(rel: &str) -> String {
    if rel.is_empty() {
        "proc/sys".to_owned()
    } else {
        format!("proc/sys/{rel}")
    }
}

/// The kind of entry an agent reported.
fn kind(kind: Kind) -> EntryKind {
    match kind {
        Kind::Dir => EntryKind::Dir,
        Kind::File => EntryKind::File,
        Kind::Symlink => EntryKind::Symlink,
    }
}

/// An agent's answer that does not fit its request: EIO, and said.
pub(super) fn unexpected(payload: Payload) -> Error {
    log::warn!("agent answered with an unexpected payload: {payload:?}");
    Error::Os(libc::EIO)
}
