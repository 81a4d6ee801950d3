//! Reading `/proc/self/mountinfo`: which filesystems are mounted at a path.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields nsview needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 1: the mount's unique id.
    pub mount_id: u32,
    /// Field 2: the id of the mount it sits on.
    pub parent_id: u32,
    /// Field 3: `major:minor` of the mounted filesystem (`st_dev` of its files).
    pub dev: (u32, u32),
    /// Field 4: the directory of the filesystem that is mounted (`/proc/meminfo` for a bind
    /// of that file, `/` for a whole filesystem).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Field 6: the mount's own options (`ro,nosuid,nodev,relatime`).
    pub options: String,
    /// Filesystem type (`fuse.nsview`, `proc`, ...).
    pub fstype: String,
    /// Mount source (`nsview`, `/dev/vda1`, ...).
    pub source: String,
}

impl MountEntry {
    /// Whether the mount itself is read-only (its own `ro` flag).
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Parses mountinfo text (see proc(5)): `id parent maj:min root mountpoint opts [tags] - type source superopts`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let (major, minor) = left.get(2)?.split_once(':')?;
    let mut right = right.split(' ');
    Some(MountEntry {
        mount_id: left.first()?.parse().ok()?,
        parent_id: left.get(1)?.parse().ok()?,
        dev: (major.parse().ok()?, minor.parse().ok()?),
        root: PathBuf::from(OsString::from_vec(unescape(left.get(3)?))),
        mount_point: PathBuf::from(OsString::from_vec(unescape(left.get(4)?))),
        options: (*left.get(5)?).to_owned(),
        fstype: right.next()?.to_owned(),
        source: String::from_utf8_lossy(&unescape(right.next()?)).into_owned(),
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The mounts of process `pid` (`/proc/<pid>/mountinfo`: mount points as that process sees
/// them, relative to its root).
pub fn mounts_of(pid: u32) -> std::io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(format!(
        "/proc/{pid}/mountinfo"
    ))?))
}

/// The mounts at `path` in this process's mount namespace, bottom first (the last one is
/// what a lookup of `path` reaches).
pub fn mounts_at(path: &Path) -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

/// The mount source nsview mounts with (its `fsname`), which recognises its own mounts: the
/// kernel shows a FUSE mount made directly with mount(2) as type `fuse`, whatever its subtype.
pub const FSNAME: &str = "nsview";

/// Whether a mount is one of nsview's.
pub fn is_nsview_mount(m: &MountEntry) -> bool {
    m.fstype.split('.').next() == Some("fuse") && m.source == FSNAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_optional_tags_and_unescapes() {
        let text = "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 shared:2 - fuse.nsview nsview rw,user_id=0\n\
                    25 1 0:22 / /proc rw,nosuid - proc proc rw\n\
                    40 25 98:0 /proc/meminfo /proc/meminfo ro - fuse.nsview nsview ro\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/my dir"));
        assert_eq!(m[0].fstype, "fuse.nsview");
        assert_eq!(m[0].source, "nsview");
        assert_eq!((m[0].mount_id, m[0].parent_id, m[0].dev), (36, 35, (98, 0)));
        assert_eq!(m[1].fstype, "proc");
        assert_eq!(m[0].root, PathBuf::from("/"));
        assert_eq!(m[2].root, PathBuf::from("/proc/meminfo"));
        assert!(m[2].read_only() && !m[1].read_only());
    }

    #[test]
    fn garbage_lines_are_skipped_and_bad_escapes_kept() {
        assert!(parse_mountinfo("nonsense\n1 2 3\n").is_empty());
        assert_eq!(unescape("a\\09b\\"), b"a\\09b\\");
        assert_eq!(unescape("tab\\011x"), b"tab\tx");
    }
}
