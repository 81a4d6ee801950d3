//! Containers registered by a runtime: an id, the init's pid (with its start time, so a reused
//! pid is never mistaken for the container) and per-container options. Persisted under
//! `<runtime-dir>/containers/<id>.json` (written to a temporary file and renamed, so a crash
//! never leaves half a file) and loaded at start, dropping containers whose init is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use log::{info, warn};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::procfs::ProcRoot;

pub use nsview_proto::control::Registered;

/// The registered containers.
#[derive(Debug)]
pub struct Registrations {
    dir: PathBuf,
    proc: ProcRoot,
    map: Mutex<BTreeMap<String, Registered>>,
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The id is no usable file name.
    #[error("{0:?} is not a container id (1 to 128 of A-Z a-z 0-9 _ . -, not starting with .)")]
    BadId(String),
    /// The pid is no pid namespace's init: a process of the host's pid namespace (a
    /// `--pid host` container) or one that joined another container's.
    #[error(
        "pid {pid} is not the init of a pid namespace of its own (its pid in each namespace: \
         {nspid}); register the init of the container's pid namespace"
    )]
    NotAnInit {
        /// The pid.
        pid: u32,
        /// Its `NSpid` line.
        nspid: String,
    },
    /// A live registration under another id holds that pid namespace.
    #[error("the pid namespace of pid {pid} is registered as {other}")]
    Taken {
        /// The pid.
        pid: u32,
        /// The id it is registered under.
        other: String,
    },
    /// Reading the process failed (it is gone, ...).
    #[error(transparent)]
    Read(#[from] Error),
}

/// Whether a task with `NSpid` line `nspid` (outermost first) is the init of a pid namespace
/// below the reader's.
pub fn is_pidns_init(nspid: &[u32]) -> bool {
    nspid.len() >= 2 && nspid.last() == Some(&1)
}

/// Whether `id` is usable as a file name: 1 to 128 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Registrations {
    /// The registrations kept under `runtime_dir/containers`, loaded now; entries whose init
    /// is gone (or whose pid now names another process) are removed.
    pub fn load(runtime_dir: &Path, proc: ProcRoot) -> Result<Registrations> {
        let dir = runtime_dir.join("containers");
        std::fs::create_dir_all(&dir).map_err(|e| Error::read(&dir, e))?;
        let regs = Registrations {
            dir,
            proc,
            map: Mutex::new(BTreeMap::new()),
        };
        let entries = std::fs::read_dir(&regs.dir).map_err(|e| Error::read(&regs.dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Registered>(&t).ok());
            match parsed {
                Some(r) if regs.alive(&r) => {
                    info!("registered container {} (init {}) kept", r.id, r.pid);
                    regs.map.lock().insert(r.id.clone(), r);
                }
                Some(r) => {
                    info!("registered container {} is gone; forgotten", r.id);
                    let _ = std::fs::remove_file(&path);
                }
                None => warn!("{}: not a registration; ignored", path.display()),
            }
        }
        Ok(regs)
    }

    fn alive(&self, r: &Registered) -> bool {
        self.proc.start_ticks(r.pid).ok() == Some(r.start_ticks)
    }

    /// Registers (or re-registers, idempotently) container `id` whose init is `pid`: the
    /// init of a pid namespace below the daemon's that no other live registration holds.
    pub fn register(
        &self,
        id: &str,
        pid: u32,
        cpu_view: Option<CpuView>,
        host_writes: bool,
    ) -> std::result::Result<Registered, RegisterError> {
        if !valid_id(id) {
            return Err(RegisterError::BadId(id.to_owned()));
        }
        let nspid = self.proc.status(pid)?.nspid;
        if !is_pidns_init(&nspid) {
            let nspid = nspid
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            return Err(RegisterError::NotAnInit { pid, nspid });
        }
        let pidns = self.proc.ns_inode(pid, "pid")?;
        if let Some(other) = self.vouched(pidns).filter(|other| other.id != id) {
            return Err(RegisterError::Taken {
                pid,
                other: other.id,
            });
        }
        let r = Registered {
            id: id.to_owned(),
            pid,
            start_ticks: self.proc.start_ticks(pid)?,
            pidns,
            netns: self.proc.ns_inode(pid, "net")?,
            cpu_view: cpu_view.map(|v| v.name().to_owned()),
            host_writes,
        };
        self.persist(&r)?;
        self.map.lock().insert(id.to_owned(), r.clone());
        info!("container {id} registered (init {pid})");
        Ok(r)
    }

    /// Sets option `key` of container `id`.
    pub fn set(&self, id: &str, key: &str, value: &str) -> Result<Registered> {
        let mut r = self.map.lock().get(id).cloned().ok_or(Error::NotFound)?;
        match key {
            "cpu_view" => {
                r.cpu_view = Some(
                    value
                        .parse::<CpuView>()
                        .map_err(|_| Error::Os(libc::EINVAL))?
                        .name()
                        .to_owned(),
                )
            }
            "host_writes" => {
                r.host_writes = match value {
                    "true" | "on" => true,
                    "false" | "off" => false,
                    _ => return Err(Error::Os(libc::EINVAL)),
                }
            }
            _ => return Err(Error::Os(libc::EINVAL)),
        }
        self.persist(&r)?;
        self.map.lock().insert(id.to_owned(), r.clone());
        Ok(r)
    }

    /// Unregisters `id`, returning what was registered.
    pub fn unregister(&self, id: &str) -> Option<Registered> {
        let removed = self.map.lock().remove(id);
        if removed.is_some() {
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
            info!("container {id} unregistered");
        }
        removed
    }

    /// Every registration, by id.
    pub fn list(&self) -> Vec<Registered> {
        self.map.lock().values().cloned().collect()
    }

    /// The registration of the container of pid namespace `pidns`, if a runtime registered
    /// it and its init still runs (a registration whose container died without a poststop
    /// vouches for nothing, least of all for a new container that got its namespace's inode).
    pub fn vouched(&self, pidns: u64) -> Option<Registered> {
        let candidates: Vec<Registered> = self
            .map
            .lock()
            .values()
            .filter(|r| r.pidns == pidns)
            .cloned()
            .collect();
        candidates
            .into_iter()
            .find(|r| self.alive(r) && self.proc.ns_inode(r.pid, "pid").ok() == Some(pidns))
    }

    /// The inode of `r`'s network namespace now, while its init runs (a dead init's recorded
    /// inode may be a new namespace's by now).
    pub fn current_netns(&self, r: &Registered) -> Option<u64> {
        let netns = self.proc.ns_inode(r.pid, "net").ok()?;
        self.alive(r).then_some(netns)
    }

    /// The CPU view registered for the container of pid namespace `pidns`, if any.
    pub fn cpu_view_for(&self, pidns: u64) -> Option<CpuView> {
        let map = self.map.lock();
        let r = map.values().find(|r| r.pidns == pidns)?;
        r.cpu_view.as_deref()?.parse().ok()
    }

    fn persist(&self, r: &Registered) -> Result<()> {
        let path = self.dir.join(format!("{}.json", r.id));
        let tmp = self.dir.join(format!(".{}.json.tmp", r.id));
        let text = serde_json::to_string_pretty(r).unwrap_or_default();
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::read(&path, e))
    }
}

/// How a CPU bandwidth limit (quota/period) counts towards the CPUs a container sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CpuView {
    /// The cpuset, further limited to `ceil(quota / period)` CPUs (LXCFS's `--enable-cfs`).
    #[default]
    Quota,
    /// The cpuset alone: a quota only slows the container down.
    Cpuset,
}

impl CpuView {
    /// Its name on the command line and in the control protocol.
    pub fn name(self) -> &'static str {
        match self {
            CpuView::Quota => "quota",
            CpuView::Cpuset => "cpuset",
        }
    }
}

impl std::str::FromStr for CpuView {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "quota" => Ok(CpuView::Quota),
            "cpuset" => Ok(CpuView::Cpuset),
            other => Err(format!(
                "unknown CPU view {other:?} (expected quota or cpuset)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_file_names() {
        assert!(valid_id("abc-123_x.y"));
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    /// The init of a pid namespace of its own (`unshare --pid --fork sleep`): killed with its
    /// `unshare` parent on drop.
    struct PidnsInit {
        parent: std::process::Child,
        pid: u32,
    }

    impl PidnsInit {
        fn start() -> PidnsInit {
            let parent = std::process::Command::new("unshare")
                .args(["--pid", "--fork", "--kill-child", "sleep", "60"])
                .spawn()
                .unwrap();
            let children = format!("/proc/{0}/task/{0}/children", parent.id());
            let mut init = PidnsInit { parent, pid: 0 };
            for _ in 0..500 {
                let text = std::fs::read_to_string(&children).unwrap_or_default();
                if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    init.pid = pid;
                    return init;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("unshare made no child");
        }
    }

    impl Drop for PidnsInit {
        fn drop(&mut self) {
            let _ = self.parent.kill();
            let _ = self.parent.wait();
        }
    }

    #[test]
    fn pidns_inits_are_the_last_pid_1_of_a_nested_nspid() {
        assert!(is_pidns_init(&[4243, 1]));
        assert!(is_pidns_init(&[4243, 7, 1]));
        assert!(!is_pidns_init(&[1]), "the host's own init");
        assert!(!is_pidns_init(&[4243]), "a host process");
        assert!(
            !is_pidns_init(&[4243, 7]),
            "a process in a container, not its init"
        );
    }

    #[test]
    fn only_a_pid_namespaces_init_registers_and_under_one_id() {
        let dir = tempfile::tempdir().unwrap();
        let regs = Registrations::load(dir.path(), ProcRoot::default()).unwrap();
        let me = std::process::id();
        let refused = regs.register("host", me, None, true).unwrap_err();
        assert!(
            matches!(refused, RegisterError::NotAnInit { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("not the init"), "{refused}");
        let init = PidnsInit::start();
        regs.register("first", init.pid, None, true).unwrap();
        regs.register("first", init.pid, None, false).unwrap();
        let taken = regs.register("second", init.pid, None, true).unwrap_err();
        assert_eq!(
            taken.to_string(),
            format!(
                "the pid namespace of pid {} is registered as first",
                init.pid
            )
        );
        assert_eq!(regs.list().len(), 1);
        assert!(matches!(
            regs.register("../x", init.pid, None, true),
            Err(RegisterError::BadId(_))
        ));
    }

    #[test]
    fn registrations_persist_and_dead_inits_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let init = PidnsInit::start();
        let me = init.pid;
        let regs = Registrations::load(dir.path(), ProcRoot::default()).unwrap();
        regs.register("alive", me, Some(CpuView::Cpuset), true)
            .unwrap();
        let dead = Registered {
            id: "dead".into(),
            pid: me,
            start_ticks: 1,
            pidns: 1,
            netns: 1,
            cpu_view: None,
            host_writes: true,
        };
        std::fs::write(
            dir.path().join("containers/dead.json"),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("containers/junk.json"), "{").unwrap();
        let again = Registrations::load(dir.path(), ProcRoot::default()).unwrap();
        let ids: Vec<String> = again.list().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["alive"]);
        assert!(!dir.path().join("containers/dead.json").exists());
        let pidns = ProcRoot::default().ns_inode(me, "pid").unwrap();
        assert_eq!(again.cpu_view_for(pidns), Some(CpuView::Cpuset));
        assert_eq!(again.vouched(pidns).map(|r| r.id).as_deref(), Some("alive"));
        assert!(again.vouched(pidns + 1).is_none());
        assert!(
            again
                .set("alive", "host_writes", "off")
                .is_ok_and(|r| !r.host_writes)
        );
        assert!(again.set("alive", "host_writes", "maybe").is_err());
        // A stale registration of the same pid namespace (its init gone) vouches for nothing
        // and hides nothing.
        let stale = Registered {
            id: "a-stale".into(),
            pidns,
            ..dead
        };
        again.map.lock().insert(stale.id.clone(), stale);
        assert_eq!(again.vouched(pidns).map(|r| r.id).as_deref(), Some("alive"));
        again.map.lock().remove("a-stale");
        assert!(again.unregister("alive").is_some());
        assert!(again.unregister("alive").is_none());
        assert!(again.list().is_empty());
    }
}
