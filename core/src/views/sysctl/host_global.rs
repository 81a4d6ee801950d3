//! Host-global files below the host's sysfs (the conntrack `hashsize` module parameter): no
//! namespace has its own, so a write changes the machine's. Read as the host has them; written
//! by the host's root, or raised (max-wins, bounded) by a container a runtime registered with
//! host writes on.

use super::caller::Caller;
use super::emulation;
use super::standing::Standing;
use crate::error::{Error, Result};
use crate::views::{Env, Requester, WriteOp, Written};

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
