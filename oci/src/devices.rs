//! Which mounts are this nsview's: the device numbers of its FUSE mounts, the live one and
//! the last few before it, kept in `<runtime-dir>/mounts` (one `major:minor` per line).
//!
//! `serve` records the stale mount it finds at its mountpoint (its predecessor's) and its own
//! new one, before anything else can go wrong, so that [`super::reattach`] later takes only
//! binds of these devices: never a second nsview's, nor a FUSE mount someone else named
//! `nsview`. An anonymous device number is reused once its superblock is gone, so a device is
//! also checked to belong to a FUSE connection root made ([`made_by_root`]).

use std::path::Path;

/// A filesystem's device number, `(major, minor)`.
pub type Dev = (u32, u32);

/// How many devices are remembered.
const KEPT: usize = 8;

fn file(runtime_dir: &Path) -> std::path::PathBuf {
    runtime_dir.join("mounts")
}

/// The devices recorded under `runtime_dir`, oldest first (none when nothing was recorded).
pub fn load(runtime_dir: &Path) -> Vec<Dev> {
    std::fs::read_to_string(file(runtime_dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (major, minor) = l.trim().split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

/// Records `dev` as the newest of this nsview's devices (keeping the last `KEPT`).
pub fn record(runtime_dir: &Path, dev: Dev) -> std::io::Result<()> {
    let mut devices: Vec<Dev> = load(runtime_dir)
        .into_iter()
        .filter(|d| *d != dev)
        .collect();
    devices.push(dev);
    let keep = devices.len().saturating_sub(KEPT);
    devices.drain(..keep);
    let text: String = devices.iter().map(|(a, b)| format!("{a}:{b}\n")).collect();
    let tmp = runtime_dir.join("mounts.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file(runtime_dir))
}

/// Whether the FUSE connection behind device `dev` was mounted by the host's root: its
/// directory in the fuse control filesystem (`/sys/fs/fuse/connections/<minor>`) belongs to
/// the mounting user, which for a mount made inside a user namespace is never uid 0. True
/// when the control filesystem is not mounted (nothing to tell by; it lists every
/// connection once it is, so a missing directory means no such connection).
pub fn made_by_root(dev: Dev) -> bool {
    // FUSE_CTL_SUPER_MAGIC: without the control filesystem the directory is sysfs's, empty.
    const FUSECTL: i64 = 0x6573_5543;
    let connections = Path::new("/sys/fs/fuse/connections");
    let mounted = rustix::fs::statfs(connections).is_ok_and(|fs| fs.f_type == FUSECTL);
    if !mounted {
        return true;
    }
    match rustix::fs::stat(connections.join(dev.1.to_string())) {
        Ok(st) => st.st_uid == 0,
        // A connection that is gone entirely cannot be a stale bind's: leave it.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_devices_are_kept_newest_last_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        for minor in 0..10 {
            record(dir.path(), (0, minor)).unwrap();
        }
        record(dir.path(), (0, 5)).unwrap();
        let expected: Vec<Dev> = [3, 4, 6, 7, 8, 9, 5].iter().map(|m| (0, *m)).collect();
        assert_eq!(load(dir.path())[1..], expected[..]);
        assert_eq!(load(dir.path()).len(), KEPT);
    }
}
