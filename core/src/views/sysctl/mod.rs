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
//! [`MAX_WRITE`](nsview_proto::agent::MAX_WRITE) bytes of each reaching it (the rest counted as taken, as the kernel's
//! handlers take and ignore what exceeds their buffer).

mod caller;
pub mod emulation;
mod host_global;
mod ids;
pub mod namespaces;
pub mod net;
pub mod standing;
pub mod stores;
mod values;

use nsview_proto::agent::{Op, Payload};

use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::sys::Subtree;
use crate::views::{Env, Requester, Subject, WriteOp, Written};

pub use host_global::{HASHSIZE_MAX, host_global_access, host_global_read, host_global_write};
pub use ids::{IdMap, parse_cap_eff};

use caller::{Caller, Route, agent_path, unexpected};
use values::host_has;

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
        match caller.stat(agent_path(rel)) {
            Ok(stat) => caller.entry(&stat),
            // A directory the namespaces hide but an emulated entry lives in.
            Err(Error::Os(libc::ENOENT)) if caller.emulates() && emulated_dir(env, rel) => {
                caller.made_entry(EntryKind::Dir, false)
            }
            Err(e) => Err(e),
        }
    }

    fn list(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
        let caller = Caller::new(env, who)?;
        let mut entries = match caller.readdir(agent_path(rel)) {
            Ok(entries) => entries,
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
        caller.read(agent_path(rel))
    }

    fn readlink(&self, env: &Env, _: &Subject, who: &Requester, rel: &str) -> Result<Vec<u8>> {
        Caller::new(env, who)?.readlink(agent_path(rel))
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
#[cfg(feature = "test-nodes")]
pub fn fault(env: &Env, tid: u32, fault: nsview_proto::agent::Fault) -> Result<()> {
    let who = Requester {
        pid: tid,
        uid: 0,
        gid: 0,
        ns: None,
    };
    Caller::new(env, &who)?.call(Op::Fault { fault }).map(drop)
}
