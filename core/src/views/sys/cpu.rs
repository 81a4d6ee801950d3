//! `sys/devices/system/cpu`: the host's directory as a container with `n` CPUs would see it.
//!
//! - `online`, `possible`, `present`, `enabled` list the CPUs the container sees, by the
//!   host's numbers (cpuset `1` reads `1`, as LXCFS shows it), so that `taskset -c "$(cat
//!   online)"` is accepted; `offline` and `isolated` are empty. glibc's `get_nprocs` reads
//!   `online` and `get_nprocs_conf` reads `possible` (or counts `cpuN` directories), so
//!   `getconf _NPROCESSORS_ONLN`/`_CONF` and `lscpu` count the container's CPUs.
//! - Only the `cpuN` of those CPUs exist, the host's subtrees passed through.
//! - Everything else is the host's, passed through read-only (write bits cleared).
//!
//! Files inside a CPU's subtree that name other CPUs (`topology/*_list`, `cache/*/shared_cpu_list`,
//! `cpufreq/policy*/related_cpus`) are the host's: their numbers are the same as the
//! container's, though they may name CPUs it does not have.
//!
//! Callers that see the host (pid 0, vanished, root cgroups in the host's pid namespace) get
//! the host's directory unchanged.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Subtree;
use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::cpus::{container_cpus, cpu_list};
use crate::views::{Env, Requester, Subject};

/// Largest file read from the host's sysfs (sysfs attributes are at most a page).
const MAX_READ: u64 = 64 * 1024;

/// Files whose content is the container's CPU list, `0-(n-1)`.
const COUNT_LISTS: [&str; 4] = ["online", "possible", "present", "enabled"];
/// Files that list CPUs a container never has.
const EMPTY_LISTS: [&str; 2] = ["offline", "isolated"];

/// A host sysfs error as the caller would get it natively (ENOENT, EIO from attributes the
/// hardware does not support, ...): passed through as a plain errno, not logged as a fault.
fn passthrough(e: std::io::Error) -> Error {
    Error::Os(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Computed text.
    Synth(String),
    /// The host's sysfs at this path.
    Host(PathBuf),
}

impl Target {
    /// The host's file, when the content is the host's as it is.
    pub fn host(self) -> Option<PathBuf> {
        match self {
            Target::Host(path) => Some(path),
            Target::Synth(_) => None,
        }
    }
}

/// A directory of the host's sysfs whose entries are mapped for the caller's CPUs:
/// `sys/devices/system/cpu` ([`SYS_CPU`], see the module doc) and `sys/devices/system/node`
/// (`node::SYS_NODE`). Host files pass through to be opened as they are (read-only);
/// computed ones do not.
pub struct CpuDir {
    /// The directory, below the host's sysfs.
    pub dir: &'static str,
    /// What a path below the directory is.
    pub map: ForCpus<Target>,
    /// The listing of a directory below it.
    pub list: ForCpus<Vec<DirEntry>>,
}

/// A function of (the host's directory, the host CPUs a caller sees or `None` for the
/// host's view, a path below the directory).
pub type ForCpus<T> = fn(&Path, Option<&[u32]>, &str) -> Result<T>;

/// `sys/devices/system/cpu`: the host's, with the caller's CPUs only.
pub static SYS_CPU: CpuDir = CpuDir {
    dir: "devices/system/cpu",
    map,
    list,
};

impl CpuDir {
    /// What `rel` is for `subject`.
    fn target(&self, env: &Env, subject: &Subject, rel: &str) -> Result<Target> {
        let cpus = subject_cpus(env, subject);
        (self.map)(&env.sys.join(self.dir), cpus.as_deref(), rel)
    }
}

impl Subtree for CpuDir {
    fn lookup(&self, env: &Env, subject: &Subject, _: &Requester, rel: &str) -> Result<Entry> {
        lookup(&self.target(env, subject, rel)?)
    }

    fn list(
        &self,
        env: &Env,
        subject: &Subject,
        _: &Requester,
        rel: &str,
    ) -> Result<Vec<DirEntry>> {
        let cpus = subject_cpus(env, subject);
        (self.list)(&env.sys.join(self.dir), cpus.as_deref(), rel)
    }

    fn read(&self, env: &Env, subject: &Subject, _: &Requester, rel: &str) -> Result<Vec<u8>> {
        read(&self.target(env, subject, rel)?)
    }

    fn host_path(
        &self,
        env: &Env,
        subject: &Subject,
        _: &Requester,
        rel: &str,
    ) -> Result<Option<PathBuf>> {
        Ok(self.target(env, subject, rel)?.host())
    }

    fn readlink(&self, env: &Env, subject: &Subject, _: &Requester, rel: &str) -> Result<Vec<u8>> {
        readlink(&self.target(env, subject, rel)?)
    }
}

/// The host CPUs `subject` sees; `None` for the host's view, also when a container's CPUs
/// cannot be read (its cgroup vanished): then the host's directory is served, and counted.
fn subject_cpus(env: &Env, subject: &Subject) -> Option<Arc<[u32]>> {
    let Subject::Container(c) = subject else {
        return None;
    };
    match container_cpus(env, c) {
        Ok(cpus) => Some(cpus),
        Err(e) => {
            env.stats.host_fallback(format_args!(
                "sys/devices/system/cpu for container pidns {}, whose CPUs are unreadable ({e})",
                c.pidns
            ));
            None
        }
    }
}

/// Maps `rel` (a path below the directory) for a caller seeing the host CPUs `cpus`, or the
/// host's view when `cpus` is `None`. `root` is the host's `devices/system/cpu`.
pub fn map(root: &Path, cpus: Option<&[u32]>, rel: &str) -> Result<Target> {
    let Some(cpus) = cpus else {
        return Ok(Target::Host(join(root, rel)));
    };
    let (first, rest) = rel.split_once('/').unwrap_or((rel, ""));
    if let Some(k) = cpu_number(first) {
        if !cpus.contains(&k) {
            return Err(Error::NotFound);
        }
        let dir = root.join(format!("cpu{k}"));
        return Ok(Target::Host(join(&dir, rest)));
    }
    if rest.is_empty() && COUNT_LISTS.contains(&first) {
        // Only where the host has the file: `enabled` is new in 6.x kernels.
        if root.join(first).exists() {
            return Ok(Target::Synth(format!("{}\n", cpu_list(cpus))));
        }
    }
    if rest.is_empty() && EMPTY_LISTS.contains(&first) && root.join(first).exists() {
        return Ok(Target::Synth("\n".to_owned()));
    }
    Ok(Target::Host(join(root, rel)))
}

/// `cpuN` → N; anything else (`cpufreq`, `cpuidle`, `cpu01`) → `None`.
pub fn cpu_number(name: &str) -> Option<u32> {
    numbered(name, "cpu")
}

/// `<prefix>N` → N, for the kernel's canonical numbers only (no sign, no leading zero).
pub fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// `root/rel`, or `root` itself for the empty `rel`.
pub fn join(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The attributes of `target`: the host entry's, with write permission cleared.
pub fn lookup(target: &Target) -> Result<Entry> {
    match target {
        Target::Synth(_) => Ok(Entry {
            kind: EntryKind::File,
            mode: 0o444,
            size: 4096,
            uid: 0,
            gid: 0,
        }),
        Target::Host(path) => {
            let meta = fs::symlink_metadata(path).map_err(passthrough)?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_file() || file_type.is_char_device() {
                EntryKind::File
            } else {
                return Err(Error::NotFound);
            };
            let mode = (meta.mode() & 0o7777) as u16;
            let mode = if kind == EntryKind::Symlink {
                0o777
            } else {
                mode & !0o222
            };
            Ok(Entry {
                kind,
                mode,
                size: meta.size(),
                uid: meta.uid(),
                gid: meta.gid(),
            })
        }
    }
}

/// The listing of directory `rel`: the host's, with only the container's `cpuN` directories at
/// the top level. Sorted by name, so offsets are stable.
pub fn list(root: &Path, cpus: Option<&[u32]>, rel: &str) -> Result<Vec<DirEntry>> {
    let Target::Host(dir) = map(root, cpus, rel)? else {
        return Err(Error::Os(libc::ENOTDIR));
    };
    list_host(&dir, |name| {
        match (rel.is_empty(), cpus, cpu_number(name)) {
            (true, Some(cpus), Some(k)) => !cpus.contains(&k),
            _ => false,
        }
    })
}

/// The host directory `dir`'s entries but those `hidden` names, sorted by name.
pub fn list_host(dir: &Path, hidden: impl Fn(&str) -> bool) -> Result<Vec<DirEntry>> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(passthrough)? {
        let item = item.map_err(passthrough)?;
        let name = item.file_name();
        let Ok(name) = name.into_string() else {
            continue;
        };
        if hidden(&name) {
            continue;
        }
        let kind = match item.file_type() {
            Ok(t) if t.is_dir() => EntryKind::Dir,
            Ok(t) if t.is_symlink() => EntryKind::Symlink,
            Ok(_) => EntryKind::File,
            Err(_) => continue,
        };
        entries.push(DirEntry { name, kind });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The content of file `target`.
pub fn read(target: &Target) -> Result<Vec<u8>> {
    match target {
        Target::Synth(text) => Ok(text.clone().into_bytes()),
        Target::Host(path) => {
            use std::io::Read;
            let file = fs::File::open(path).map_err(passthrough)?;
            let mut data = Vec::new();
            file.take(MAX_READ)
                .read_to_end(&mut data)
                .map_err(passthrough)?;
            Ok(data)
        }
    }
}

/// The target of symlink `target`, as the host's sysfs has it (relative links resolve the
/// same way below the bind mount as on the host).
pub fn readlink(target: &Target) -> Result<Vec<u8>> {
    match target {
        Target::Synth(_) => Err(Error::Os(libc::EINVAL)),
        Target::Host(path) => fs::read_link(path)
            .map(|t| t.as_os_str().as_bytes().to_vec())
            .map_err(passthrough),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host sysfs cpu directory with CPUs 0-3.
    fn host_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["online", "possible", "present"] {
            fs::write(root.join(name), "0-3\n").unwrap();
        }
        fs::write(root.join("offline"), "\n").unwrap();
        fs::write(root.join("kernel_max"), "8191\n").unwrap();
        fs::create_dir(root.join("cpufreq")).unwrap();
        for cpu in 0..4 {
            let topo = root.join(format!("cpu{cpu}/topology"));
            fs::create_dir_all(&topo).unwrap();
            fs::write(topo.join("core_id"), format!("{cpu}\n")).unwrap();
        }
        std::os::unix::fs::symlink("../../../bus/cpu", root.join("cpu2/subsystem")).unwrap();
        dir
    }

    #[test]
    fn count_lists_keep_the_hosts_numbers() {
        let dir = host_tree();
        let cpus = [1, 3];
        for name in ["online", "possible", "present"] {
            let target = map(dir.path(), Some(&cpus), name).unwrap();
            assert_eq!(read(&target).unwrap(), b"1,3\n", "{name}");
        }
        assert_eq!(
            read(&map(dir.path(), Some(&cpus), "offline").unwrap()).unwrap(),
            b"\n"
        );
        // `enabled` is absent on this fixture's "kernel": not invented.
        assert!(matches!(
            map(dir.path(), Some(&cpus), "enabled").unwrap(),
            Target::Host(_)
        ));
        assert_eq!(
            read(&map(dir.path(), Some(&cpus), "kernel_max").unwrap()).unwrap(),
            b"8191\n"
        );
    }

    #[test]
    fn cpu_directories_are_the_visible_host_cpus_by_their_numbers() {
        let dir = host_tree();
        let cpus = [2, 3];
        let target = map(dir.path(), Some(&cpus), "cpu3/topology/core_id").unwrap();
        assert_eq!(read(&target).unwrap(), b"3\n");
        assert!(matches!(
            map(dir.path(), Some(&cpus), "cpu0/topology"),
            Err(Error::NotFound)
        ));
        let link = map(dir.path(), Some(&cpus), "cpu2/subsystem").unwrap();
        assert_eq!(lookup(&link).unwrap().kind, EntryKind::Symlink);
        assert_eq!(readlink(&link).unwrap(), b"../../../bus/cpu");
    }

    #[test]
    fn the_listing_shows_exactly_the_containers_cpus() {
        let dir = host_tree();
        let names: Vec<String> = list(dir.path(), Some(&[1]), "")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            [
                "cpu1",
                "cpufreq",
                "kernel_max",
                "offline",
                "online",
                "possible",
                "present"
            ]
        );
        let host: Vec<String> = list(dir.path(), None, "")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(host.contains(&"cpu3".to_owned()));
    }

    #[test]
    fn host_files_are_shown_read_only() {
        let dir = host_tree();
        let entry = lookup(&map(dir.path(), Some(&[0]), "kernel_max").unwrap()).unwrap();
        assert_eq!(entry.mode & 0o222, 0);
        assert_eq!(entry.kind, EntryKind::File);
        let cpu0 = lookup(&map(dir.path(), Some(&[0]), "cpu0").unwrap()).unwrap();
        assert_eq!(cpu0.kind, EntryKind::Dir);
    }

    #[test]
    fn only_canonical_cpu_names_are_cpus() {
        assert_eq!(cpu_number("cpu0"), Some(0));
        assert_eq!(cpu_number("cpu17"), Some(17));
        assert_eq!(cpu_number("cpu01"), None);
        assert_eq!(cpu_number("cpufreq"), None);
        assert_eq!(cpu_number("cpu"), None);
    }
}
