//! Container-local values for the sysctls Linux does not namespace, or keeps read-only or
//! hidden inside a container's namespaces: one table, one line per path.
//!
//! Checked on this kernel (6.18) before an entry went in: a path is emulated only when a
//! container cannot have its own value natively. `kernel/pid_max` is per pid namespace here
//! and `net/unix/max_dgram_qlen` and the conntrack timeouts are per network namespace and
//! writable there, so they are passed through, not emulated.
//!
//! Whose values: the store of the caller's network namespace (containers sharing one, as a
//! Kubernetes pod does, share a store; a nested pid namespace in a container shares its
//! container's). Callers in the daemon's own pid namespace are the host: they read and write
//! the real files, never a store.

use std::collections::HashMap;

use parking_lot::Mutex;

/// What a write does, and where a read comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Kept per container, initially the host's value; the host is never written.
    Store,
    /// Kept per container; written to the host too when larger than the host's current
    /// value (read back after writing, retried on a race).
    MaxWins,
    /// Kept per container; a non-zero value is also written to the host, zero only stored.
    LiberalWins,
    /// Written through to the host (container root only).
    HostGlobal,
    /// The host's value; EACCES on open for writing, even for container root.
    ReadOnly,
    /// A new random UUID on every read; not writable.
    RandomUuid,
    /// A random UUID fixed per store; not writable.
    BootId,
    /// Per network namespace natively, but the kernel refuses ids outside the writer's map:
    /// it gets the written range clamped to the caller's gid map, the caller reads back what
    /// it wrote.
    ClampToIdmap,
}

/// How a written value is checked (anything else is EINVAL and leaves the value as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// One integer in `min..=max`.
    Int(i64, i64),
    /// `n` integers separated by whitespace, each in `min..=max`.
    Ints(usize, i64, i64),
    /// Not writable.
    None,
}

/// One emulated path.
#[derive(Debug, Clone, Copy)]
pub struct Emulated {
    /// Below `proc/sys`.
    pub path: &'static str,
    /// What it does.
    pub policy: Policy,
    /// How writes are checked.
    pub check: Check,
    /// The value where the host has no such file (e.g. `kernel/yama/*` without Yama).
    pub default: &'static str,
    /// Why it is emulated on this kernel.
    pub why: &'static str,
}

const I32: i64 = i32::MAX as i64;

const fn e(
    path: &'static str,
    policy: Policy,
    check: Check,
    default: &'static str,
    why: &'static str,
) -> Emulated {
    Emulated {
        path,
        policy,
        check,
        default,
        why,
    }
}

use Check::{Int, Ints};
use Policy::*;

/// Every emulated path.
pub const TABLE: &[Emulated] = &[
    e(
        "kernel/panic",
        Store,
        Int(-1, I32),
        "0",
        "global; root-only on the host",
    ),
    e("kernel/panic_on_oops", Store, Int(0, 1), "0", "global"),
    e(
        "kernel/printk",
        Store,
        Ints(4, 0, 15),
        "4 4 1 7",
        "global console levels",
    ),
    e("kernel/kptr_restrict", Store, Int(0, 3), "0", "global"),
    e("kernel/dmesg_restrict", Store, Int(0, 1), "0", "global"),
    e(
        "kernel/sysrq",
        Store,
        Int(0, 511),
        "0",
        "global (absent on some kernels)",
    ),
    e(
        "kernel/yama/ptrace_scope",
        Store,
        Int(0, 3),
        "1",
        "global; absent without Yama",
    ),
    e(
        "kernel/cap_last_cap",
        ReadOnly,
        Check::None,
        "40",
        "a fact of the kernel",
    ),
    e(
        "kernel/ngroups_max",
        ReadOnly,
        Check::None,
        "65536",
        "a fact of the kernel",
    ),
    e(
        "kernel/random/uuid",
        RandomUuid,
        Check::None,
        "",
        "new on every read",
    ),
    e(
        "kernel/random/boot_id",
        BootId,
        Check::None,
        "",
        "one per container boot",
    ),
    e(
        "fs/file-max",
        Store,
        Int(0, i64::MAX),
        "9223372036854775807",
        "global",
    ),
    e(
        "fs/nr_open",
        Store,
        Int(64, 1_073_741_816),
        "1048576",
        "global",
    ),
    e("fs/protected_hardlinks", Store, Int(0, 1), "1", "global"),
    e("fs/protected_symlinks", Store, Int(0, 1), "1", "global"),
    e(
        "net/netfilter/nf_conntrack_max",
        MaxWins,
        Int(0, I32),
        "262144",
        "global; read-only in a child netns",
    ),
    e(
        "net/netfilter/nf_conntrack_tcp_be_liberal",
        LiberalWins,
        Int(0, 1),
        "0",
        "global",
    ),
    e(
        "net/ipv4/ping_group_range",
        ClampToIdmap,
        Ints(2, 0, I32),
        "1 0",
        "ids checked against the writer's map",
    ),
    e("vm/overcommit_memory", Store, Int(0, 2), "0", "global"),
    e(
        "vm/mmap_min_addr",
        Store,
        Int(0, i64::MAX),
        "4096",
        "global",
    ),
];

/// The table line of `path` (below `proc/sys`).
pub fn find(path: &str) -> Option<&'static Emulated> {
    TABLE.iter().find(|e| e.path == path)
}

/// Names directly under directory `dir` ("" is `proc/sys`) that emulated paths need there:
/// their files and the directories leading to them, with whether each is a directory.
pub fn names_under(dir: &str) -> Vec<(&'static str, bool)> {
    let mut out: Vec<(&'static str, bool)> = Vec::new();
    for e in TABLE {
        let rest = if dir.is_empty() {
            Some(e.path)
        } else {
            e.path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
        };
        let Some(rest) = rest else { continue };
        let (name, is_dir) = match rest.split_once('/') {
            Some((name, _)) => (name, true),
            None => (rest, false),
        };
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, is_dir));
        }
    }
    out
}

/// Whether `dir` leads to an emulated path.
pub fn is_emulated_dir(dir: &str) -> bool {
    TABLE
        .iter()
        .any(|e| e.path.starts_with(dir) && e.path[dir.len()..].starts_with('/'))
}

/// Checks a written value; the value as stored (fields separated by tabs, as procfs prints
/// vectors) or `None` for EINVAL.
pub fn validate(check: Check, data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?.trim();
    let ints = |n: usize, min: i64, max: i64| -> Option<String> {
        let values: Vec<i64> = text
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        (values.len() == n && values.iter().all(|v| (min..=max).contains(v))).then(|| {
            values
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join("\t")
        })
    };
    match check {
        Check::Int(min, max) => ints(1, min, max),
        Check::Ints(n, min, max) => ints(n, min, max),
        Check::None => None,
    }
}

/// A random version-4 UUID from the kernel's generator.
pub fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The stored values, by network-namespace inode, then by path; with a directory, each
/// store is also kept in `<dir>/<netns>.json` (written to a temporary file and renamed) and
/// loaded at start, so a restarted daemon keeps the containers' values.
#[derive(Debug, Default)]
pub struct Stores {
    map: Mutex<HashMap<u64, HashMap<&'static str, String>>>,
    dir: Option<std::path::PathBuf>,
}

impl Stores {
    /// The stores persisted in `dir` (created if missing); unreadable files and paths no
    /// longer in the table are skipped.
    pub fn load(dir: &std::path::Path) -> std::io::Result<Stores> {
        std::fs::create_dir_all(dir)?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            let Some(netns) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json")?.parse::<u64>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(values) = serde_json::from_str::<HashMap<String, String>>(&text) else {
                continue;
            };
            let store: HashMap<&'static str, String> = values
                .into_iter()
                .filter_map(|(path, value)| Some((find(&path)?.path, value)))
                .collect();
            map.insert(netns, store);
        }
        Ok(Stores {
            map: Mutex::new(map),
            dir: Some(dir.to_path_buf()),
        })
    }

    fn persist(&self, store: u64, values: &HashMap<&'static str, String>) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(format!("{store}.json"));
        let tmp = dir.join(format!(".{store}.json.tmp"));
        let text = serde_json::to_string(values).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            log::warn!("cannot persist emulated values to {}: {e}", path.display());
        }
    }

    /// The value `store` holds for `path`, if it was set.
    pub fn get(&self, store: u64, path: &'static str) -> Option<String> {
        self.map.lock().get(&store)?.get(path).cloned()
    }

    /// Drops `store` and its file.
    pub fn remove(&self, store: u64) {
        self.map.lock().remove(&store);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(format!("{store}.json")));
        }
    }

    /// Sets `path` in `store`.
    pub fn set(&self, store: u64, path: &'static str, value: String) {
        let mut map = self.map.lock();
        let values = map.entry(store).or_default();
        values.insert(path, value);
        self.persist(store, values);
    }

    /// The value of `path` in `store`, set to `make()` if it has none yet.
    pub fn get_or_set(
        &self,
        store: u64,
        path: &'static str,
        make: impl FnOnce() -> String,
    ) -> String {
        if let Some(value) = self.get(store, path) {
            return value;
        }
        let value = make();
        let mut map = self.map.lock();
        let values = map.entry(store).or_default();
        let kept = values.entry(path).or_insert(value).clone();
        self.persist(store, values);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_per_entry() {
        assert_eq!(validate(Int(0, 2), b"1\n").as_deref(), Some("1"));
        assert_eq!(validate(Int(0, 2), b"3\n"), None);
        assert_eq!(validate(Int(0, 2), b"one\n"), None);
        assert_eq!(validate(Int(0, 2), b"1 2\n"), None);
        assert_eq!(
            validate(Ints(4, 0, 15), b"4 4 1 7").as_deref(),
            Some("4\t4\t1\t7")
        );
        assert_eq!(validate(Ints(4, 0, 15), b"4 4 1"), None);
        assert_eq!(validate(Check::None, b"1"), None);
        assert_eq!(validate(Int(0, 1), &[0xff]), None);
    }

    #[test]
    fn listings_get_the_emulated_names_and_directories() {
        let top = names_under("");
        assert!(top.contains(&("kernel", true)) && top.contains(&("vm", true)));
        let kernel = names_under("kernel");
        assert!(kernel.contains(&("panic", false)) && kernel.contains(&("yama", true)));
        assert_eq!(names_under("kernel/yama"), [("ptrace_scope", false)]);
        assert!(is_emulated_dir("net/netfilter") && !is_emulated_dir("net/core"));
        assert!(find("vm/overcommit_memory").is_some() && find("kernel/pid_max").is_none());
    }

    #[test]
    fn every_path_is_unique_and_every_default_passes_its_check() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(
                TABLE[i + 1..].iter().all(|b| b.path != a.path),
                "{}",
                a.path
            );
            if a.check != Check::None {
                assert!(
                    validate(a.check, a.default.as_bytes()).is_some(),
                    "{}",
                    a.path
                );
            }
        }
    }

    #[test]
    fn stores_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::load(dir.path()).unwrap();
        stores.set(7, "vm/overcommit_memory", "2".into());
        std::fs::write(dir.path().join("8.json"), r#"{"no/such/path":"1"}"#).unwrap();
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        let again = Stores::load(dir.path()).unwrap();
        assert_eq!(again.get(7, "vm/overcommit_memory").as_deref(), Some("2"));
        assert_eq!(again.get(8, "vm/overcommit_memory"), None);
    }

    #[test]
    fn stores_are_separate() {
        let stores = Stores::default();
        stores.set(1, "vm/overcommit_memory", "1".into());
        assert_eq!(stores.get(1, "vm/overcommit_memory").as_deref(), Some("1"));
        assert_eq!(stores.get(2, "vm/overcommit_memory"), None);
        assert_eq!(
            stores.get_or_set(2, "kernel/random/boot_id", || "x".into()),
            "x"
        );
        assert_eq!(
            stores.get_or_set(2, "kernel/random/boot_id", || "y".into()),
            "x"
        );
    }
}
