//! Running an operation as the caller: its effective uid, gid and capabilities for that one
//! operation, then root of the joined user namespace again.

use nix::errno::Errno;
use rustix::thread::{CapabilitySet, CapabilitySets, capabilities, set_capabilities};

use super::error::errno;
use nsview_proto::agent::Creds;

/// Why the agent could not take on, or give up, a caller's credentials: the step and the
/// kernel's refusal.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// Reading the agent's own capability sets.
    #[error("capget")]
    Capget(#[source] Errno),
    /// Setting the caller's effective capabilities.
    #[error("capset")]
    Capset(#[source] Errno),
    /// Taking the caller's effective gid.
    #[error("setegid")]
    Setegid(#[source] Errno),
    /// Taking the caller's effective uid.
    #[error("seteuid")]
    Seteuid(#[source] Errno),
    /// Becoming root of the joined user namespace: its gid.
    #[error("setresgid(0)")]
    Setresgid(#[source] Errno),
    /// Becoming root of the joined user namespace: its uid.
    #[error("setresuid(0)")]
    Setresuid(#[source] Errno),
}

impl CredsError {
    /// The kernel's errno.
    pub fn errno(&self) -> Errno {
        match self {
            CredsError::Capget(e)
            | CredsError::Capset(e)
            | CredsError::Setegid(e)
            | CredsError::Seteuid(e)
            | CredsError::Setresgid(e)
            | CredsError::Setresuid(e) => *e,
        }
    }
}

/// Runs `f` with the effective uid and gid and the effective capabilities of `creds`
/// (capped by what the agent may hold), then becomes the namespace's root again.
///
/// The effective ids, not only the file-system ones: sysctl permission checks look at the
/// euid (`net_ctl_permissions` treats euid 0 as the owner), and then at capabilities in the
/// write handlers, which is how uid 1000 gets EACCES and capability-less root gets EPERM.
/// Changing the euid from 0 clears the effective capabilities and changing it back to 0
/// refills them from the permitted set (the real and saved uid stay 0 throughout).
pub(super) fn with_creds<T, E: From<CredsError>>(
    creds: Creds,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    use nix::unistd::{Gid, Uid, setegid, seteuid};
    let saved = capabilities(None).map_err(|e| CredsError::Capget(errno(e)))?;
    setegid(Gid::from_raw(creds.gid)).map_err(CredsError::Setegid)?;
    let result = match seteuid(Uid::from_raw(creds.uid)) {
        Ok(()) => {
            let effective = CapabilitySet::from_bits_retain(creds.caps) & saved.permitted;
            match set_capabilities(None, CapabilitySets { effective, ..saved }) {
                Ok(()) => f(),
                Err(e) => Err(CredsError::Capset(errno(e)).into()),
            }
        }
        Err(e) => Err(CredsError::Seteuid(e).into()),
    };
    // Back to root of the namespace: cannot fail while the real and saved uid are 0.
    let _ = seteuid(Uid::from_raw(0));
    let _ = setegid(Gid::from_raw(0));
    let _ = set_capabilities(None, saved);
    result
}

/// Makes the agent root of the user namespace it joined (real, effective and saved ids 0),
/// the identity `with_creds` returns to.
pub fn become_namespace_root() -> Result<(), CredsError> {
    use nix::unistd::{Gid, Uid, setresgid, setresuid};
    let root_gid = Gid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).map_err(CredsError::Setresgid)?;
    let root = Uid::from_raw(0);
    setresuid(root, root, root).map_err(CredsError::Setresuid)
}
