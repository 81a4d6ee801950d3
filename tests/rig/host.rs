//! Host values a test might change (sysctls, module parameters): saved first, put back on
//! drop wherever they changed, also while the test panics.
//!
//! All integration tests run in one process, so a test that changes a machine-wide value on
//! purpose (a registered container's `nf_conntrack_max`, conntrack's `hashsize`) would show
//! its change to a test of another module asserting that the host's values stay as they
//! were. [`MachineValues`] keeps them apart: the first kind holds it exclusively, the second
//! shared.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The machine's sysctls and module parameters, as one lock (see the module's comment).
static MACHINE: RwLock<()> = RwLock::new(());

/// A hold on the machine's sysctls and module parameters, until dropped.
#[derive(Debug)]
pub enum MachineValues {
    /// No test changes a machine-wide value on purpose meanwhile.
    Steady {
        _guard: RwLockReadGuard<'static, ()>,
    },
    /// This test may change them; no other test relies on them meanwhile.
    Changing {
        _guard: RwLockWriteGuard<'static, ()>,
    },
}

impl MachineValues {
    /// Waits until no test changes a machine-wide value on purpose, and keeps it so. A test
    /// may hold several (the read is recursive, so a changer waiting meanwhile cannot
    /// deadlock it); a waiting changer gets its turn once no test holds one.
    pub fn steady() -> MachineValues {
        MachineValues::Steady {
            _guard: MACHINE.read_recursive(),
        }
    }

    /// Waits until no other test relies on the machine-wide values or changes one. Not while
    /// this test holds another `MachineValues` (that would deadlock).
    pub fn changing() -> MachineValues {
        MachineValues::Changing {
            _guard: MACHINE.write(),
        }
    }
}

/// Host files and their saved contents, and the hold on the machine's values they were
/// saved under.
#[derive(Debug)]
pub struct HostFiles {
    saved: Vec<(String, String)>,
    // Dropped after `drop` has put the saved values back.
    _hold: MachineValues,
}

impl HostFiles {
    /// Saves the files at `paths` (absolute; missing ones are left out), for a test that
    /// asserts they stay as they are ([`MachineValues::steady`]).
    pub fn save(paths: &[&str]) -> HostFiles {
        HostFiles::save_under(MachineValues::steady(), paths)
    }

    /// Saves `/proc/sys/<key>` for each of `keys`, as [`HostFiles::save`].
    pub fn sysctls(keys: &[&str]) -> HostFiles {
        HostFiles::save(
            &sysctl_paths(keys)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    /// Saves the files at `paths`, for a test that changes them on purpose
    /// ([`MachineValues::changing`]): no other test relies on any host value until this is
    /// dropped and they are put back.
    pub fn save_to_change(paths: &[&str]) -> HostFiles {
        HostFiles::save_under(MachineValues::changing(), paths)
    }

    /// Saves `/proc/sys/<key>` for each of `keys`, as [`HostFiles::save_to_change`].
    pub fn sysctls_to_change(keys: &[&str]) -> HostFiles {
        let paths = sysctl_paths(keys);
        HostFiles::save_to_change(&paths.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn save_under(hold: MachineValues, paths: &[&str]) -> HostFiles {
        HostFiles {
            saved: paths
                .iter()
                .filter_map(|p| Some(((*p).to_owned(), std::fs::read_to_string(p).ok()?)))
                .collect(),
            _hold: hold,
        }
    }

    /// The saved content of `path`, if it was saved.
    pub fn saved(&self, path: &str) -> Option<&str> {
        self.saved
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    /// The saved files whose content is no longer the saved one.
    pub fn changed(&self) -> Vec<&str> {
        self.saved
            .iter()
            .filter(|(p, v)| std::fs::read_to_string(p).ok().as_ref() != Some(v))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

/// `/proc/sys/<key>` for each of `keys`.
fn sysctl_paths(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| format!("/proc/sys/{k}")).collect()
}

impl Drop for HostFiles {
    fn drop(&mut self) {
        for (path, value) in &self.saved {
            if std::fs::read_to_string(path).ok().as_ref() != Some(value) {
                let _ = std::fs::write(path, value);
            }
        }
    }
}

/// The host's value of sysctl `key` (below `/proc/sys`), trimmed.
pub fn host_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .unwrap_or_else(|e| panic!("the host's /proc/sys/{key}: {e}"))
        .trim()
        .to_owned()
}

/// Whether the host's kernel has conntrack loaded (its sysctls and `hashsize` exist); tests
/// of them say so and pass without it.
pub fn has_conntrack() -> bool {
    let there = std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists();
    if !there {
        eprintln!("no nf_conntrack on this kernel: its checks are skipped");
    }
    there
}
