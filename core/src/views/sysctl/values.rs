//! What a container reads and writes of an emulated line, by the line's policy: its network
//! namespace's store, the host's value (raised for a registered container by max-wins and
//! liberal-wins), the kernel's in its own namespaces (clamp-to-idmap), or an identity of its
//! own (boot id, random UUID). Which line, and whether the caller may write it, is the
//! caller's business (`caller`).

use std::sync::Arc;

use nsview_proto::agent::Creds;

use super::caller::{Caller, agent_path};
use super::emulation::{self, Emulated, Policy};
use crate::container::Container;
use crate::error::{Error, Result};
use crate::views::{Env, Subject, Written};

impl Caller<'_> {
    /// The value the caller reads for emulated `e`.
    pub(super) fn emulated_value(&self, e: &'static Emulated, subject: &Subject) -> Result<String> {
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
    pub(super) fn emulated_len(&self, e: &'static Emulated) -> u64 {
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
    pub(super) fn kernel_value(&self, e: &'static Emulated) -> Result<String> {
        let data = self.read(agent_path(e.path))?;
        Ok(String::from_utf8_lossy(&data).trim().to_owned())
    }

    /// clamp-to-idmap: the kernel refuses ids the writer's user namespace does not map, so
    /// it gets `value` clamped to the caller's gid map (written in the caller's namespaces
    /// with its credentials); the caller reads back what it wrote.
    pub(super) fn clamp_to_idmap(
        &self,
        e: &'static Emulated,
        value: &str,
        creds: Creds,
    ) -> Result<()> {
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
    pub(super) fn emulated_write(
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
}

/// Whether the host's kernel has emulated `e`'s file (nothing is invented).
pub(super) fn host_has(env: &Env, e: &Emulated) -> bool {
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
