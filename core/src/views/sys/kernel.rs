//! `sys/kernel`: the host's `/sys/kernel`, read-only, with `config`, `debug`, `tracing` and
//! `security` shown as empty directories (kernel configuration, debugfs, tracefs and LSM
//! interfaces are the host's business, and reading some of them has side effects).

use std::path::{Path, PathBuf};

use super::Subtree;
use super::cpu::{self, Target};
use crate::error::{Error, Result};
use crate::vfs::{DirEntry, Entry, EntryKind};
use crate::views::{Env, Requester, Subject};

/// `sys/kernel`, the same for every caller (see the module doc): every file but those in the
/// directories shown empty is the host's, passed through to be opened as it is.
pub struct SysKernel;

impl Subtree for SysKernel {
    fn lookup(&self, env: &Env, _: &Subject, _: &Requester, rel: &str) -> Result<Entry> {
        lookup(&root(env), rel)
    }

    fn list(&self, env: &Env, _: &Subject, _: &Requester, rel: &str) -> Result<Vec<DirEntry>> {
        list(&root(env), rel)
    }

    fn read(&self, env: &Env, _: &Subject, _: &Requester, rel: &str) -> Result<Vec<u8>> {
        read(&root(env), rel)
    }

    fn host_path(
        &self,
        env: &Env,
        _: &Subject,
        _: &Requester,
        rel: &str,
    ) -> Result<Option<PathBuf>> {
        host_path(&root(env), rel).map(Some)
    }

    fn readlink(&self, env: &Env, _: &Subject, _: &Requester, rel: &str) -> Result<Vec<u8>> {
        readlink(&root(env), rel)
    }
}

/// The host's `/sys/kernel`.
fn root(env: &Env) -> PathBuf {
    env.sys.join("kernel")
}

/// Directories shown empty.
pub const HIDDEN: [&str; 4] = ["config", "debug", "tracing", "security"];

/// Whether `rel` is one of [`HIDDEN`] (`Some(true)`), below one (`Some(false)`: not there),
/// or elsewhere (`None`).
fn hidden(rel: &str) -> Option<bool> {
    let (first, rest) = rel.split_once('/').unwrap_or((rel, ""));
    HIDDEN.contains(&first).then_some(rest.is_empty())
}

/// The attributes of `rel` below `root` (the host's `/sys/kernel`).
pub fn lookup(root: &Path, rel: &str) -> Result<Entry> {
    match hidden(rel) {
        Some(true) => Ok(Entry {
            kind: EntryKind::Dir,
            mode: 0o555,
            size: 0,
            uid: 0,
            gid: 0,
        }),
        Some(false) => Err(Error::NotFound),
        None => cpu::lookup(&Target::Host(join(root, rel))),
    }
}

/// The listing of `rel`: the host's, the hidden directories empty.
pub fn list(root: &Path, rel: &str) -> Result<Vec<DirEntry>> {
    match hidden(rel) {
        Some(true) => Ok(Vec::new()),
        Some(false) => Err(Error::NotFound),
        None => cpu::list(root, None, rel),
    }
}

/// The content of file `rel`.
pub fn read(root: &Path, rel: &str) -> Result<Vec<u8>> {
    match hidden(rel) {
        Some(_) => Err(Error::NotFound),
        None => cpu::read(&Target::Host(join(root, rel))),
    }
}

/// The host's file `rel` (its path), unless it lies in a directory shown empty.
pub fn host_path(root: &Path, rel: &str) -> Result<PathBuf> {
    match hidden(rel) {
        Some(_) => Err(Error::NotFound),
        None => Ok(join(root, rel)),
    }
}

/// The target of symlink `rel`.
pub fn readlink(root: &Path, rel: &str) -> Result<Vec<u8>> {
    match hidden(rel) {
        Some(_) => Err(Error::NotFound),
        None => cpu::readlink(&Target::Host(join(root, rel))),
    }
}

fn join(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_directories_are_empty_and_the_rest_passes_through() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("debug/tracing")).unwrap();
        std::fs::create_dir_all(dir.path().join("mm")).unwrap();
        std::fs::write(dir.path().join("mm/x"), "1\n").unwrap();
        assert_eq!(lookup(dir.path(), "debug").unwrap().kind, EntryKind::Dir);
        assert!(list(dir.path(), "debug").unwrap().is_empty());
        assert!(matches!(
            lookup(dir.path(), "debug/tracing"),
            Err(Error::NotFound)
        ));
        assert_eq!(lookup(dir.path(), "security").unwrap().kind, EntryKind::Dir);
        assert_eq!(read(dir.path(), "mm/x").unwrap(), b"1\n");
        assert_eq!(lookup(dir.path(), "mm/x").unwrap().mode & 0o222, 0);
    }
}
