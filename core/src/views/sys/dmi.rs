//! `sys/devices/virtual/dmi/id/product_uuid`: a machine UUID of the container's own, stable
//! for its life and unique among containers, derived from the host's (its DMI product UUID,
//! or its machine-id on machines without DMI, like this VM) and the container's identity
//! (its runtime id when registered, else its pid namespace and init start time). Host
//! callers get the host's file.

use crate::container::Container;
use crate::error::{Error, Result};
use crate::views::Env;

/// 64-bit FNV-1a of `bytes`, from `seed`.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A version-4-shaped UUID derived from `host` and `container`.
pub fn derive_uuid(host: &str, container: &str) -> String {
    let input = format!("{host}\0{container}");
    let hi = fnv(0xcbf2_9ce4_8422_2325, input.as_bytes());
    let lo = fnv(0x6c62_272e_07bb_0142, input.as_bytes());
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// The host's file, below the sysfs root.
pub const PRODUCT_UUID: &str = "devices/virtual/dmi/id/product_uuid";

/// The host's own identity: its DMI product UUID, else its machine-id.
fn host_identity(env: &Env) -> String {
    let dmi = env.sys.join(PRODUCT_UUID);
    let machine_id = env
        .proc
        .path()
        .parent()
        .map(|root| root.join("etc/machine-id"));
    std::fs::read_to_string(dmi)
        .or_else(|e| machine_id.map_or(Err(e), std::fs::read_to_string))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "nsview".to_owned())
}

/// What makes container `c` itself for the life of its init: its runtime id while a live
/// registration vouches for it, else its pid namespace with its init's pid and start time
/// (an inode the kernel may hand out again, never with the same start time).
pub fn identity(env: &Env, c: &Container) -> String {
    let registered = env.registered.vouched(c.pidns).map(|reg| reg.id);
    registered.unwrap_or_else(|| {
        format!(
            "{}:{}:{}",
            c.key(),
            c.start_ticks,
            c.init_pid().unwrap_or(0)
        )
    })
}

/// The container's product UUID (the host's for a host scope).
pub fn read(env: &Env, c: &Container) -> Result<String> {
    if c.is_host_scope() {
        return host(env);
    }
    let uuid = derive_uuid(&host_identity(env), &identity(env, c));
    Ok(format!("{uuid}\n"))
}

/// The host's file, for host callers.
pub fn host(env: &Env) -> Result<String> {
    let path = env.sys.join(PRODUCT_UUID);
    std::fs::read_to_string(&path).map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::ENOENT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_unique_and_well_formed() {
        let a = derive_uuid("host", "a");
        assert_eq!(a, derive_uuid("host", "a"));
        assert_ne!(a, derive_uuid("host", "b"));
        assert_ne!(a, derive_uuid("other-host", "a"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
