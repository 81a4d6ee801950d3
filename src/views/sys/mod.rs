//! Subtrees under `sys/`: what a caller sees below a [`SubtreeId`]'s directory.

pub mod cpu;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use log::debug;

use crate::error::Result;
use crate::vfs::{DirEntry, Entry, SubtreeId};
use crate::views::cpus::container_cpus;
use crate::views::{Env, Subject};

/// The host CPUs `subject` sees; `None` for the host's view, also when a container's CPUs
/// cannot be read (its cgroup vanished): then the host's directory is served, and counted.
fn subject_cpus(env: &Env, subject: &Subject) -> Option<Arc<[u32]>> {
    let Subject::Container(c) = subject else {
        return None;
    };
    match container_cpus(env, c) {
        Ok(cpus) => Some(cpus),
        Err(e) => {
            env.stats.host_fallbacks.fetch_add(1, Ordering::Relaxed);
            debug!("CPUs of pidns {} unreadable ({e}); host view", c.pidns);
            None
        }
    }
}

fn cpu_root(env: &Env) -> PathBuf {
    env.sys.join("devices/system/cpu")
}

fn target(id: SubtreeId, env: &Env, subject: &Subject, rel: &str) -> Result<cpu::Target> {
    match id {
        SubtreeId::SysCpu => cpu::map(&cpu_root(env), subject_cpus(env, subject).as_deref(), rel),
    }
}

/// The attributes of `rel` in subtree `id`, as `subject` sees them.
pub fn lookup(id: SubtreeId, env: &Env, subject: &Subject, rel: &str) -> Result<Entry> {
    cpu::lookup(&target(id, env, subject, rel)?)
}

/// The listing of directory `rel` in subtree `id`, sorted by name.
pub fn list(id: SubtreeId, env: &Env, subject: &Subject, rel: &str) -> Result<Vec<DirEntry>> {
    match id {
        SubtreeId::SysCpu => cpu::list(&cpu_root(env), subject_cpus(env, subject).as_deref(), rel),
    }
}

/// The content of file `rel` in subtree `id`.
pub fn read(id: SubtreeId, env: &Env, subject: &Subject, rel: &str) -> Result<Vec<u8>> {
    cpu::read(&target(id, env, subject, rel)?)
}

/// The target of symlink `rel` in subtree `id`.
pub fn readlink(id: SubtreeId, env: &Env, subject: &Subject, rel: &str) -> Result<Vec<u8>> {
    cpu::readlink(&target(id, env, subject, rel)?)
}
