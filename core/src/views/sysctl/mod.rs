//! `proc/sys`: the caller's own, through an agent that joined its namespaces, under one write
//! rule.
//!
//! **Reads** show what the caller would see natively: every read, listing and lookup goes to
//! the agent (contents are never cached, so `fs/file-nr` is never stale; only an entry's
//! attributes are reused for a second, see the agent pool), with the caller's ids and
//! capabilities; owners are mapped back from the caller's user namespace. A container (a
//! caller in a pid namespace of its own) reads the emulation table's values instead where
//! the host's kernel has the file.
//!
//! **Writes** ([`Caller::route`], the one place that decides):
//! - The host (every namespace the host's, see `standing`) writes as natively: the kernel
//!   decides with its credentials.
//! - Anyone else reaches the kernel only for a path confined to a namespace it does not
//!   share with the host (`namespaces`); then the kernel decides with its credentials, in its
//!   own namespaces.
//! - A container's write to an emulated path is kept for its network namespace (never the
//!   host's), if it holds the line's capability over that namespace (`nsfs::capable_over`:
//!   `unshare -Ur` makes root of a new user namespace, which holds nothing over the host's);
//!   a write that changes a host value is made only for a container a runtime registered
//!   with host writes on.
//! - Everything else is EACCES, whatever the caller's capabilities.
//!
//! Writes keep the kernel's semantics: one write(2) per value, the position handed to the
//! kernel's handler (numbers ignore writes past 0, strings continue there), at most
//! [`MAX_WRITE`] bytes of each reaching it (the rest counted as taken, as the kernel's
//! handlers take and ignore what exceeds their buffer).

pub mod emulation;
mod ids;
pub mod namespaces;
pub mod net;
pub mod standing;
pub mod stores;

use std::sync::Arc;

use nsview_proto::agent::{Creds, DirItem, Kind, MAX_WRITE, Op, Payload, Stat};

use crate::agents::Agents;
use crate::container::Container;
use crate::error::{Error, Result};
use crate::ns::NsKey;
use crate::nsfs::{Ns, capable_over};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::sys::Subtree;
use crate::views::{Env, Requester, Subject, WriteOp, Written};

pub use ids::{IdMap, parse_cap_eff};

use emulation::{Emulated, Policy};
use namespaces::NsKind;
use standing::{HostNs, Standing};
use stores::StoreId;

/// Where a write goes.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// To the kernel, in the caller's namespaces, with its credentials.
    Kernel,
    /// To the caller's container-local value.
    Emulated(&'static Emulated),
    /// Nowhere: EACCES.
    Refused,
}

/// One request's view of the caller: its namespaces and what the write rules make of it.
struct Caller<'a> {
    env: &'a Env,
    pool: &'a dyn Agents,
    host: &'a HostNs,
    who: &'a Requester,
    key: NsKey,
    standing: Standing,
}

/// `PF_IO_WORKER` in a task's flags (`linux/sched.h`).
const PF_IO_WORKER: u64 = 0x10;

/// What `/proc/<tid>/status` says of the caller.
struct Task {
    euid: u32,
    caps: u64,
}

impl<'a> Caller<'a> {
    fn new(env: &'a Env, who: &'a Requester) -> Result<Caller<'a>> {
        let key = match who.ns {
            Some(key) => key,
            None => env.agents.key_of(who.pid)?,
        };
        Caller::with_key(env, who, key)
    }

    /// The caller `who`, pinned by `_pin`: its namespaces read afresh now (the key a request
    /// was dispatched with was read before the pin, maybe long before, while it queued).
    fn pinned(env: &'a Env, who: &'a Requester, _pin: &crate::caller::Pin) -> Result<Caller<'a>> {
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
    fn creds(&self) -> Result<Creds> {
        let inside = |map: Option<IdMap>, id| map.map_or(id, |m| m.inside(id));
        Ok(Creds {
            uid: inside(self.map("uid_map")?, self.who.uid),
            gid: inside(self.map("gid_map")?, self.who.gid),
            caps: self.caps()?,
        })
    }

    /// The emulation of `rel` this caller gets: containers only, where the host's kernel has
    /// the file.
    fn emulated(&self, rel: &str) -> Option<&'static Emulated> {
        if self.standing != Standing::Container {
            return None;
        }
        emulation::find(rel).filter(|e| host_has(self.env, e))
    }

    /// Whether the caller gets emulated entries listed.
    fn emulates(&self) -> bool {
        self.standing == Standing::Container
    }

    /// The write rule: where a write of `rel` by this caller goes.
    fn route(&self, rel: &str) -> Route {
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
    fn store(&self) -> Result<Option<StoreId>> {
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
    fn holds_over_netns(&self, cap: u32) -> Result<bool> {
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
    fn host_writes(&self) -> bool {
        let Some(r) = self.env.registered.vouched(self.key.pid) else {
            return false;
        };
        r.host_writes && self.env.proc.ns_inode(r.pid, "net").ok() == Some(self.key.net)
    }

    /// Whether the caller may write emulated `e`: a writable line, the caller's own network
    /// namespace (never the host's), and the line's capability over it.
    fn may_write(&self, e: &'static Emulated) -> Result<()> {
        if !e.policy.writable() || self.host.shares(&self.key, NsKind::Net) {
            return Err(Error::Access);
        }
        if !self.holds_over_netns(e.cap)? {
            return Err(Error::Access);
        }
        Ok(())
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
    fn emulated_value(&self, e: &'static Emulated, subject: &Subject) -> Result<String> {
        let stored = || -> Result<Option<String>> {
            let Some(id) = self.store()? else {
                return Ok(None);
            };
            let value = self.env.sysctl_stores.get(id, e.path);
            if let (Some(_), Subject::Container(c)) = (&value, subject) {
                self.env.sysctl_stores.used_by(id, c);
            }
            Ok(value)
        };
        Ok(match e.policy {
            Policy::ClampToIdmap => match stored()? {
                Some(value) => value,
                None => self.kernel_value(e)?,
            },
            Policy::Store | Policy::MaxWins | Policy::LiberalWins => match stored()? {
                Some(value) => value,
                None => host_value(self.env, e)?,
            },
            Policy::ReadOnly => host_value(self.env, e)?,
            Policy::RandomUuid => emulation::random_uuid(),
            Policy::BootId => match subject {
                Subject::Container(c) => boot_id(self.env, c)?,
                Subject::Host => host_value(self.env, e)?,
            },
        })
    }

    /// The length of what the caller reads for emulated `e` (with its newline), or 0 where
    /// only the kernel could tell: a lookup asks no agent for it.
    fn emulated_len(&self, e: &'static Emulated) -> u64 {
        let value = match e.policy {
            Policy::ClampToIdmap => self
                .store()
                .ok()
                .flatten()
                .and_then(|id| self.env.sysctl_stores.get(id, e.path)),
            // Store values are the same whoever's view; boot ids and UUIDs all one length.
            _ => self.emulated_value(e, &Subject::Host).ok(),
        };
        value.map_or(0, |v| v.len() as u64 + 1)
    }

    /// `e`'s value as the kernel shows it in the caller's namespaces.
    fn kernel_value(&self, e: &'static Emulated) -> Result<String> {
        let creds = self.creds()?;
        match self.call(Op::Read {
            path: agent_path(e.path),
            creds,
        })? {
            Payload::Data(data) => Ok(String::from_utf8_lossy(&data).trim().to_owned()),
            other => Err(unexpected(other)),
        }
    }

    /// clamp-to-idmap: the kernel refuses ids the writer's user namespace does not map, so
    /// it gets `value` clamped to the caller's gid map (written in the caller's namespaces
    /// with its credentials); the caller reads back what it wrote.
    fn clamp_to_idmap(&self, e: &'static Emulated, value: &str, creds: Creds) -> Result<()> {
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
        let data = format!("{lo} {hi}\n").into_bytes();
        self.kernel_write(e.path, 0, &data, creds).map(drop)
    }

    /// Writes emulated `e` for container `c` (which [`Caller::may_write`] allowed, with
    /// credentials `creds`) as the kernel's integer handlers would: a write past position 0
    /// is taken and ignored, anything unparsable or out of range is EINVAL.
    fn emulated_write(
        &self,
        e: &'static Emulated,
        c: &Arc<Container>,
        offset: u64,
        data: &[u8],
        creds: Creds,
    ) -> Result<Written> {
        if offset != 0 {
            return Ok(Written::all(offset, data.len()));
        }
        let id = self.store()?.ok_or(Error::Access)?;
        let current = match self.env.sysctl_stores.get(id, e.path) {
            Some(value) => value,
            None => self.emulated_value(e, &Subject::Container(c.clone()))?,
        };
        // The kernel's integer handlers look at one page less its terminator.
        let seen = &data[..data.len().min(4095)];
        let (value, used) =
            emulation::parse(e.check, seen, &current).ok_or(Error::Os(libc::EINVAL))?;
        if !self.env.sysctl_stores.fits(id, c) {
            return Err(Error::Os(libc::ENOSPC));
        }
        match e.policy {
            Policy::MaxWins if self.host_writes() => raise_host(self.env, e, &value)?,
            Policy::LiberalWins if value != "0" && self.host_writes() => {
                write_host(self.env, e, "1")?
            }
            Policy::ClampToIdmap => self.clamp_to_idmap(e, &value, creds)?,
            _ => {}
        }
        if !self.env.sysctl_stores.set(id, e.path, value, c) {
            return Err(Error::Os(libc::ENOSPC));
        }
        Ok(Written::counted(
            offset,
            used + (data.len() - seen.len()),
            true,
        ))
    }

    /// One write(2) of at most [`MAX_WRITE`] bytes of `data` at `offset` to the kernel, in
    /// the caller's namespaces and with its credentials `creds`; the rest counted as taken
    /// when the kernel took all it was given.
    fn kernel_write(&self, rel: &str, offset: u64, data: &[u8], creds: Creds) -> Result<Written> {
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

    fn entry(&self, stat: &Stat) -> Result<Entry> {
        let outside = |map: Option<IdMap>, id| map.map_or(id, |m| m.outside(id));
        Ok(Entry {
            kind: kind(stat.kind),
            mode: (stat.mode & 0o7777) as u16,
            size: stat.len.unwrap_or(0),
            uid: outside(self.map("uid_map")?, stat.uid),
            gid: outside(self.map("gid_map")?, stat.gid),
        })
    }
}

/// Whether the host's kernel has emulated `e`'s file (nothing is invented).
fn host_has(env: &Env, e: &Emulated) -> bool {
    std::fs::symlink_metadata(env.proc.path().join("sys").join(e.path)).is_ok()
}

/// The host's value of emulated `e`.
fn host_value(env: &Env, e: &Emulated) -> Result<String> {
    let path = env.proc.path().join("sys").join(e.path);
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_owned())
        .map_err(|err| Error::read(&path, err))
}

fn write_host(env: &Env, e: &Emulated, value: &str) -> Result<()> {
    let path = env.proc.path().join("sys").join(e.path);
    std::fs::write(&path, format!("{value}\n")).map_err(|err| Error::read(&path, err))?;
    log::info!("host {} set to {value} for a registered container", e.path);
    Ok(())
}

/// max-wins: raises the host's value to `value` when that is larger, reading it back and
/// trying again (a few times) when another writer raced it lower.
fn raise_host(env: &Env, e: &Emulated, value: &str) -> Result<()> {
    let wanted: i64 = value.parse().map_err(|_| Error::Os(libc::EINVAL))?;
    for _ in 0..3 {
        let host: i64 = host_value(env, e)?.parse().unwrap_or(i64::MAX);
        if host >= wanted {
            return Ok(());
        }
        write_host(env, e, value)?;
    }
    Ok(())
}

/// Container `c`'s boot id: derived from the host's and the container's identity, so it is
/// stable for the container's life (also across daemon restarts) and its own.
fn boot_id(env: &Env, c: &Container) -> Result<String> {
    let host = env.proc.read_host("sys/kernel/random/boot_id")?;
    let me = crate::views::sys::dmi::identity(env, c);
    Ok(crate::views::sys::dmi::derive_uuid(host.trim(), &me))
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

/// `proc/sys`, the caller's own (see the module doc): read through its agent, with the
/// emulation table's values for a container, and written by the one write rule.
pub struct ProcSys;

impl Subtree for ProcSys {
    fn lookup(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Entry> {
        let caller = Caller::new(env, who)?;
        if let Some(e) = caller.emulated(rel) {
            let entry = caller.made_entry(EntryKind::File, e.policy.writable())?;
            return Ok(Entry {
                size: caller.emulated_len(e),
                ..entry
            });
        }
        match caller.call(Op::Lookup {
            path: agent_path(rel),
        }) {
            Ok(Payload::Entry(stat)) => caller.entry(&stat),
            Ok(other) => Err(unexpected(other)),
            // A directory the namespaces hide but an emulated entry lives in.
            Err(Error::Os(libc::ENOENT)) if caller.emulates() && emulated_dir(env, rel) => {
                caller.made_entry(EntryKind::Dir, false)
            }
            Err(e) => Err(e),
        }
    }

    fn list(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
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
            Err(Error::Os(libc::ENOENT)) if caller.emulates() && emulated_dir(env, rel) => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        // Emulated entries are listed even where the namespaces hide them (sysbox #618, #778).
        if caller.emulates() {
            for (name, is_dir) in emulation::names_under(rel, |e| host_has(env, e)) {
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

    /// Read with the caller's credentials.
    fn read(&self, env: &Env, subject: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        let caller = Caller::new(env, who)?;
        if let Some(e) = caller.emulated(rel) {
            return Ok(format!("{}\n", caller.emulated_value(e, subject)?).into_bytes());
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

    fn readlink(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        match Caller::new(env, who)?.call(Op::Readlink {
            path: agent_path(rel),
        })? {
            Payload::Link(target) => Ok(target.into_bytes()),
            other => Err(unexpected(other)),
        }
    }

    /// By the write rule, then by the kernel's own check where the write would go to the
    /// kernel.
    fn access_write(&self, env: &Env, who: &Requester, rel: &str) -> Result<()> {
        let pin = crate::caller::Pin::new(&env.proc, who.pid)?;
        let caller = Caller::pinned(env, who, &pin)?;
        let allowed = match caller.route(rel) {
            Route::Refused => Err(Error::Access),
            Route::Emulated(e) => caller.may_write(e),
            Route::Kernel => {
                let creds = caller.creds()?;
                match caller.call(Op::Access {
                    path: agent_path(rel),
                    write: true,
                    creds,
                })? {
                    Payload::Allowed => Ok(()),
                    other => Err(unexpected(other)),
                }
            }
        };
        pin.check(&env.proc)?;
        allowed
    }

    /// By the write rule. A writer in other namespaces than the file's opener gets EACCES:
    /// natively the file is the opener's namespaces' for good, and a host task writing into a
    /// descriptor a container passed it must not write the host's knob.
    fn write(
        &self,
        env: &Env,
        subject: &Subject,
        who: &Requester,
        rel: &str,
        op: WriteOp<'_>,
    ) -> Result<Written> {
        let WriteOp {
            data,
            at: offset,
            opened_in,
        } = op;
        let pin = crate::caller::Pin::new(&env.proc, who.pid)?;
        let caller = Caller::pinned(env, who, &pin)?;
        if opened_in.is_some_and(|k| k != caller.key) {
            return Err(Error::Access);
        }
        // Everything about the caller is read before the pin is checked: the decision and the
        // credentials it writes with are the pinned task's, not a later task's with its id.
        let route = caller.route(rel);
        match route {
            Route::Refused => return Err(Error::Access),
            Route::Emulated(e) => caller.may_write(e)?,
            Route::Kernel => {}
        }
        let creds = caller.creds()?;
        pin.check(&env.proc)?;
        match route {
            Route::Refused => Err(Error::Access),
            Route::Kernel => caller.kernel_write(rel, offset, data, creds),
            Route::Emulated(e) => match subject {
                Subject::Container(c) if !c.is_host_scope() => {
                    caller.emulated_write(e, c, offset, data, creds)
                }
                // Its container's init could not be resolved: it is ending.
                _ => Err(Error::Os(libc::ESRCH)),
            },
        }
    }
}

/// Whether `rel` is a directory emulated entries live in.
fn emulated_dir(env: &Env, rel: &str) -> bool {
    emulation::is_emulated_dir(rel, |e| host_has(env, e))
}

/// Test only: asks the agent of task `tid` to misbehave with `fault` (the daemon must answer
/// EIO and carry on).
pub fn fault(env: &Env, tid: u32, fault: nsview_proto::agent::Fault) -> Result<()> {
    let who = Requester {
        pid: tid,
        uid: 0,
        gid: 0,
        ns: None,
    };
    Caller::new(env, &who)?.call(Op::Fault { fault }).map(drop)
}

/// A host-global file below the host's sysfs: its content.
pub fn host_global_read(env: &Env, rel: &str) -> Result<Vec<u8>> {
    let path = env.sys.join(rel);
    std::fs::read(&path).map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The most hash buckets a container may raise the conntrack `hashsize` to: 2^21 buckets
/// are a 16 MiB table, which the kernel allocates at once.
pub const HASHSIZE_MAX: i64 = 1 << 21;

/// Whether `who` may write a host-global file: the host's root, or a container a runtime
/// registered with host writes on, in that container's own network namespace and holding
/// CAP_NET_ADMIN over it. Its standing, when it may.
pub fn host_global_access(env: &Env, who: &Requester) -> Result<Standing> {
    let pin = crate::caller::Pin::new(&env.proc, who.pid)?;
    let caller = Caller::pinned(env, who, &pin)?;
    let allowed = match caller.standing {
        Standing::Host => who.uid == 0,
        Standing::Container => {
            caller.host_writes() && caller.holds_over_netns(crate::nsfs::cap::NET_ADMIN)?
        }
        Standing::Outsider => false,
    };
    pin.check(&env.proc)?;
    if allowed {
        Ok(caller.standing)
    } else {
        Err(Error::Access)
    }
}

/// Writes a host-global file below the host's sysfs for `who` (see [`host_global_access`]):
/// a positive integer, else EINVAL. The host's root sets any value; a container only raises
/// it (max-wins), up to [`HASHSIZE_MAX`]. A module parameter takes its value whatever the
/// position.
pub fn host_global_write(
    env: &Env,
    who: &Requester,
    rel: &str,
    op: WriteOp<'_>,
) -> Result<Written> {
    let standing = host_global_access(env, who)?;
    let check = emulation::Check::Ints(1, 1, i64::from(i32::MAX));
    let (value, _) = emulation::parse(check, op.data, "0").ok_or(Error::Os(libc::EINVAL))?;
    let path = env.sys.join(rel);
    let wanted: i64 = value.parse().map_err(|_| Error::Os(libc::EINVAL))?;
    if standing == Standing::Container {
        if wanted > HASHSIZE_MAX {
            return Err(Error::Os(libc::EINVAL));
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.trim().parse::<i64>().is_ok_and(|c| c >= wanted) {
            return Ok(Written::all(op.at, op.data.len()));
        }
    }
    std::fs::write(&path, format!("{value}\n"))
        .map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))?;
    log::info!("{} set to {value} for caller {}", path.display(), who.pid);
    Ok(Written::all(op.at, op.data.len()))
}
