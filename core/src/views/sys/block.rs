//! `sys/block`: each block device's (and partition's) `stat`, the container's own IO on it,
//! which iostat reads (sysstat 12 reads `/sys/block/*/stat`, not `proc/diskstats`).
//!
//! Only the `stat` files and the directories leading to them: the rest of a device's
//! directory stays the host's sysfs, since the hook binds each `stat` file alone onto the
//! device's real directory (`/sys/block/<dev>` is a symlink, and a bind target may not be).

use std::path::{Path, PathBuf};

use super::Subtree;
use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::{Env, Requester, Subject};

/// `sys/block` (see the module doc): rendered here, so no host file is passed through; no
/// symlinks (EINVAL) and no writes (EACCES).
pub struct SysBlock;

impl Subtree for SysBlock {
    fn lookup(&self, env: &Env, _: &Subject, _: &Requester, rel: &str) -> Result<Entry> {
        Ok(lookup(&place(&root(env), rel)?))
    }

    fn list(&self, env: &Env, _: &Subject, _: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
        let root = root(env);
        list(&root, &place(&root, rel)?)
    }

    fn read(&self, env: &Env, subject: &Subject, _: &Requester, rel: &str) -> Result<Vec<u8>> {
        stat_for(env, subject, &place(&root(env), rel)?)
    }
}

/// The host's `/sys/block`.
fn root(env: &Env) -> PathBuf {
    env.sys.join("block")
}

/// A block device's `stat` for `subject`: its container's own IO on the device, or the
/// host's file (also when the container's IO cannot be read, counted).
fn stat_for(env: &Env, subject: &Subject, place: &Place) -> Result<Vec<u8>> {
    let (host, (major, minor)) = host_stat(&root(env), place)?;
    let Subject::Container(c) = subject else {
        return Ok(host.into_bytes());
    };
    match c.cgroups.io_stats() {
        Ok(io) => {
            let mine = io.iter().find(|s| s.major == major && s.minor == minor);
            Ok(crate::views::proc::disks::render_block_stat(&host, mine).into_bytes())
        }
        Err(e) => {
            env.stats.host_fallback(format_args!(
                "sys/block/{major}:{minor}/stat for container pidns {}, whose IO is unreadable ({e})",
                c.pidns
            ));
            Ok(host.into_bytes())
        }
    }
}

/// What a path below `sys/block` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The directory of devices.
    Root,
    /// A device's (`Some(part)`: a partition's) directory.
    Dir(String, Option<String>),
    /// Its `stat`.
    Stat(String, Option<String>),
}

impl Place {
    /// The host's sysfs directory of the device or partition.
    fn host_dir(&self, root: &Path) -> Option<PathBuf> {
        match self {
            Place::Root => None,
            Place::Dir(dev, part) | Place::Stat(dev, part) => {
                let dir = root.join(dev);
                Some(part.as_ref().map_or_else(|| dir.clone(), |p| dir.join(p)))
            }
        }
    }
}

/// Whether `name` can be a device's or partition's name (never `.`, `..` or hidden).
fn is_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

/// Maps `rel` below `root` (the host's `/sys/block`) to what it names, checking that the
/// host has that device or partition.
pub fn place(root: &Path, rel: &str) -> Result<Place> {
    let parts: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('/').collect()
    };
    if parts.iter().any(|p| !is_name(p)) {
        return Err(Error::NotFound);
    }
    let owned = |s: &&str| s.to_string();
    let place = match parts.as_slice() {
        [] => return Ok(Place::Root),
        [dev] => Place::Dir(owned(dev), None),
        [dev, "stat"] => Place::Stat(owned(dev), None),
        [dev, part] => Place::Dir(owned(dev), Some(owned(part))),
        [dev, part, "stat"] => Place::Stat(owned(dev), Some(owned(part))),
        _ => return Err(Error::NotFound),
    };
    let dir = place.host_dir(root).ok_or(Error::NotFound)?;
    let is_device = match &place {
        Place::Dir(_, Some(_)) | Place::Stat(_, Some(_)) => dir.join("partition").is_file(),
        _ => dir.join("dev").is_file(),
    };
    if is_device {
        Ok(place)
    } else {
        Err(Error::NotFound)
    }
}

/// The attributes of what `place` names (sysfs sizes its files 4096).
pub fn lookup(place: &Place) -> Entry {
    let (kind, mode, size) = match place {
        Place::Stat(..) => (EntryKind::File, 0o444, 4096),
        _ => (EntryKind::Dir, 0o555, 0),
    };
    Entry {
        kind,
        mode,
        size,
        uid: 0,
        gid: 0,
    }
}

/// The listing of directory `place`: devices, or a device's `stat` and partitions.
pub fn list(root: &Path, place: &Place) -> Result<Vec<DirEntry>> {
    let dir = |name: String| DirEntry {
        name,
        kind: EntryKind::Dir,
    };
    let names = |path: &Path| -> Result<Vec<String>> {
        let items = std::fs::read_dir(path)
            .map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut names: Vec<String> = items
            .filter_map(|i| i.ok()?.file_name().into_string().ok())
            .filter(|n| is_name(n))
            .collect();
        names.sort();
        Ok(names)
    };
    let mut out = match place {
        Place::Root => names(root)?
            .into_iter()
            .filter(|n| root.join(n).join("dev").is_file())
            .map(dir)
            .collect(),
        Place::Dir(dev, None) => {
            let disk = root.join(dev);
            names(&disk)?
                .into_iter()
                .filter(|n| disk.join(n).join("partition").is_file())
                .map(dir)
                .collect()
        }
        Place::Dir(_, Some(_)) => Vec::new(),
        Place::Stat(..) => return Err(Error::Os(libc::ENOTDIR)),
    };
    if !matches!(place, Place::Root) {
        out.push(DirEntry {
            name: "stat".into(),
            kind: EntryKind::File,
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// The host's `stat` file of `place` and its device number (`major`, `minor`).
pub fn host_stat(root: &Path, place: &Place) -> Result<(String, (u32, u32))> {
    let Place::Stat(..) = place else {
        return Err(Error::Os(libc::EISDIR));
    };
    let dir = place.host_dir(root).ok_or(Error::NotFound)?;
    let os = |e: std::io::Error| Error::Os(e.raw_os_error().unwrap_or(libc::EIO));
    let stat = std::fs::read_to_string(dir.join("stat")).map_err(os)?;
    let dev = std::fs::read_to_string(dir.join("dev")).map_err(os)?;
    let number = crate::cgroup::parse::device(dev.trim())
        .ok_or_else(|| Error::parse(dir.join("dev"), "MAJ:MIN"))?;
    Ok((stat, number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let vda = root.path().join("vda");
        std::fs::create_dir_all(vda.join("vda1")).unwrap();
        std::fs::create_dir_all(vda.join("queue")).unwrap();
        std::fs::write(vda.join("dev"), "254:0\n").unwrap();
        std::fs::write(vda.join("stat"), "1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
        std::fs::write(vda.join("vda1/partition"), "1\n").unwrap();
        std::fs::write(vda.join("vda1/dev"), "254:1\n").unwrap();
        std::fs::write(vda.join("vda1/stat"), "1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
        std::fs::create_dir_all(root.path().join("notadevice")).unwrap();
        root
    }

    #[test]
    fn devices_partitions_and_their_stat_files_are_all_there_is() {
        let root = host();
        let r = root.path();
        let names = |p: &Place| -> Vec<String> {
            list(r, p).unwrap().into_iter().map(|e| e.name).collect()
        };
        assert_eq!(names(&Place::Root), ["vda"]);
        assert_eq!(names(&place(r, "vda").unwrap()), ["stat", "vda1"]);
        assert_eq!(names(&place(r, "vda/vda1").unwrap()), ["stat"]);
        assert_eq!(
            lookup(&place(r, "vda/vda1/stat").unwrap()).kind,
            EntryKind::File
        );
        let (stat, dev) = host_stat(r, &place(r, "vda/vda1/stat").unwrap()).unwrap();
        assert_eq!((stat.split_whitespace().count(), dev), (11, (254, 1)));
        for missing in [
            "vda/queue",
            "vda/queue/stat",
            "vda/dev",
            "notadevice",
            "sda/stat",
            "vda/vda1/stat/x",
            "../vda",
            "vda/../vda",
        ] {
            assert!(
                matches!(place(r, missing), Err(Error::NotFound)),
                "{missing}"
            );
        }
    }
}
