//! What a container's views carry over a restart of the daemon: the baselines its counters
//! are scaled from (`proc/stat`, `vmstat`, `interrupts`, `softirqs`: made at its first read of
//! each, they would otherwise be made again, and the counters jump) and its load averages
//! (which would otherwise start again from 0). The daemon writes them to a directory of its
//! runtime directory every sampling round (5 s) and before an upgrade's exec; the next daemon
//! takes each container's back when it first sees that container, identified by its pid
//! namespace and its init's start time (a namespace inode is handed out again once the
//! namespace is gone).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, warn};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{Baselines, Container};

/// A container across daemons: its pid namespace and its init's start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Its pid namespace's inode.
    pub pidns: u64,
    /// Its init's start time, clock ticks since boot.
    pub start_ticks: u64,
}

impl Identity {
    /// The identity of `c`; `None` for a host scope (not carried).
    pub fn of(c: &Container) -> Option<Identity> {
        (!c.is_host_scope()).then_some(Identity {
            pidns: c.pidns,
            start_ticks: c.start_ticks,
        })
    }
}

/// One container's baselines, as a file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineFile {
    identity: Identity,
    baselines: Baselines,
}

/// Every followed container's load averages, as one file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadFile {
    /// When it was written, seconds of the boot clock.
    written_at: f64,
    loads: Vec<(Identity, [u64; 3])>,
}

/// The carried state of one daemon: what it took from its predecessor and has not handed to
/// a container yet, and which baselines it wrote.
#[derive(Debug)]
pub struct Carried {
    dir: PathBuf,
    baselines: Mutex<HashMap<Identity, Baselines>>,
    loads: Mutex<HashMap<Identity, [u64; 3]>>,
    /// Seconds between the predecessor's last writing of the loads and this daemon's start.
    loads_age: f64,
    /// Which of each container's four baselines are written.
    written: Mutex<HashMap<Identity, u8>>,
}

/// Seconds after its start that a daemon keeps what it took over for containers it has not
/// seen since (they are gone, or no one reads their files: a new baseline then costs no
/// reader a jump).
pub const UNCLAIMED_FOR: f64 = 120.0;

const LOADS: &str = "loadavg.json";

impl Carried {
    /// The state carried in `dir` (made if missing, mode 0700), taken whole now; `now` is the
    /// boot clock's seconds. Files that do not parse are removed.
    pub fn open(dir: &Path, now: f64) -> std::io::Result<Carried> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let mut baselines = HashMap::new();
        let mut written = HashMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("baselines-") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<BaselineFile>(&b).ok())
            {
                Some(file) => {
                    written.insert(file.identity, mask(&file.baselines));
                    baselines.insert(file.identity, file.baselines);
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let file: LoadFile = std::fs::read(dir.join(LOADS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        debug!(
            "carried over: baselines of {} containers, load averages of {}",
            baselines.len(),
            file.loads.len()
        );
        Ok(Carried {
            dir: dir.to_path_buf(),
            baselines: Mutex::new(baselines),
            loads: Mutex::new(file.loads.into_iter().collect()),
            loads_age: (now - file.written_at).max(0.0),
            written: Mutex::new(written),
        })
    }

    /// The baselines a predecessor kept for `id`, once.
    pub fn take_baselines(&self, id: Identity) -> Option<Baselines> {
        self.baselines.lock().remove(&id)
    }

    /// The load averages a predecessor kept for `id`, once, and how many seconds old they
    /// are.
    pub fn take_load(&self, id: Identity) -> Option<([u64; 3], f64)> {
        self.loads
            .lock()
            .remove(&id)
            .map(|avgs| (avgs, self.loads_age))
    }

    /// Writes the baselines of `containers` made since they were last written (a container's
    /// are made once per file, so this is rare; the rest costs a look under its lock).
    pub fn keep_baselines(&self, containers: &[Arc<Container>]) {
        let mut written = self.written.lock();
        for c in containers {
            let Some(id) = Identity::of(c) else { continue };
            let baselines = {
                let b = c.baselines.lock();
                let now = mask(&b);
                if now == 0 || written.get(&id) == Some(&now) {
                    continue;
                }
                b.clone()
            };
            let now = mask(&baselines);
            let file = BaselineFile {
                identity: id,
                baselines,
            };
            match self.write(&self.baselines_path(id), &file) {
                Ok(()) => {
                    written.insert(id, now);
                }
                Err(e) => warn!("cannot keep the baselines of pidns {}: {e}", id.pidns),
            }
        }
    }

    /// Drops (and deletes) what was taken over for containers not seen since: call once,
    /// [`UNCLAIMED_FOR`] after the start.
    pub fn drop_unclaimed(&self) {
        let unclaimed: Vec<Identity> = self.baselines.lock().drain().map(|(id, _)| id).collect();
        for id in unclaimed {
            self.forget(id);
        }
        self.loads.lock().clear();
    }

    /// Deletes the baselines kept for `id` (its container is gone).
    pub fn forget(&self, id: Identity) {
        if self.written.lock().remove(&id).is_some() {
            let _ = std::fs::remove_file(self.baselines_path(id));
        }
        self.baselines.lock().remove(&id);
    }

    /// Writes the load averages `loads` (every container followed now); `now` is the boot
    /// clock's seconds.
    pub fn keep_loads(&self, loads: Vec<(Identity, [u64; 3])>, now: f64) {
        let file = LoadFile {
            written_at: now,
            loads,
        };
        if let Err(e) = self.write(&self.dir.join(LOADS), &file) {
            warn!("cannot keep the load averages: {e}");
        }
    }

    fn baselines_path(&self, id: Identity) -> PathBuf {
        self.dir
            .join(format!("baselines-{}-{}.json", id.pidns, id.start_ticks))
    }

    /// Writes `value` to `path` through a temporary file renamed over it (a crash leaves the
    /// old file or the new, never half of one), mode 0600.
    fn write<T: Serialize>(&self, path: &Path, value: &T) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
        drop(file);
        std::fs::rename(&tmp, path)
    }
}

/// Which of the four baselines are made, as bits.
fn mask(b: &Baselines) -> u8 {
    u8::from(b.stat.is_some())
        | u8::from(b.vmstat.is_some()) << 1
        | u8::from(b.interrupts.is_some()) << 2
        | u8::from(b.softirqs.is_some()) << 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::state::Scaled;

    fn scaled(share: f64, first: &[(&str, u64)]) -> Scaled {
        Scaled {
            share,
            first: first.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
        }
    }

    #[test]
    fn baselines_and_loads_reach_the_next_daemon_for_the_same_container_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity {
            pidns: 4026532000,
            start_ticks: 100,
        };
        let first = Carried::open(dir.path(), 50.0).unwrap();
        let baselines = Baselines {
            stat: Some(scaled(0.25, &[("ctxt", 9000), ("intr", 4000)])),
            vmstat: Some(scaled(0.25, &[("pgfault", 77)])),
            ..Baselines::default()
        };
        let file = BaselineFile {
            identity: a,
            baselines: baselines.clone(),
        };
        first.write(&first.baselines_path(a), &file).unwrap();
        first.keep_loads(vec![(a, [2048, 1024, 512])], 60.0);

        let next = Carried::open(dir.path(), 70.0).unwrap();
        // Another container that got the same namespace inode gets nothing.
        let other = Identity {
            start_ticks: 101,
            ..a
        };
        assert!(next.take_baselines(other).is_none());
        assert!(next.take_load(other).is_none());
        let got = next.take_baselines(a).unwrap();
        assert_eq!(got.stat, baselines.stat);
        assert_eq!(got.vmstat, baselines.vmstat);
        assert_eq!(next.take_load(a), Some(([2048, 1024, 512], 10.0)));
        // Once.
        assert!(next.take_baselines(a).is_none());
        assert!(next.take_load(a).is_none());
        // Forgotten: gone from the disk.
        next.forget(a);
        assert!(
            Carried::open(dir.path(), 80.0)
                .unwrap()
                .take_baselines(a)
                .is_none()
        );
    }

    #[test]
    fn files_that_do_not_parse_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("baselines-1-2.json"), b"{\"identity\":").unwrap();
        std::fs::write(dir.path().join(LOADS), b"garbage").unwrap();
        let carried = Carried::open(dir.path(), 1.0).unwrap();
        assert!(!dir.path().join("baselines-1-2.json").exists());
        assert!(carried.loads.lock().is_empty());
    }
}
