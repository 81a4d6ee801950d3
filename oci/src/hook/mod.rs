//! `nsview oci-hook`: the OCI runtime hook.
//!
//! `--stage create-runtime` (or `prestart`, the same step for older runtimes): clones every
//! source from nsview's mount in the host's mount namespace (`open_tree(OPEN_TREE_CLONE)`),
//! registers the container with the daemon, then joins the container's mount namespace
//! through a pidfd and binds the clones under its rootfs, before `pivot_root` (see
//! `inject` for how targets are resolved: a symlinked one fails the start, a
//! missing one is skipped, nothing outside the rootfs is ever touched). What was bound and
//! skipped is reported to the daemon, which logs it (runtimes drop a successful hook's
//! output); a failure after registering unregisters again.
//!
//! `--stage poststop`: unregisters the container.
//!
//! Errors are one line on stderr and a non-zero exit, which fails the container's start;
//! with `--optional`, a daemon or mount that is not there, or a hook run unprivileged (a
//! rootless runtime, which nsview cannot serve through its hook), is one line on stderr and
//! the container starts without nsview. Bad input and any step refused to root still fail.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::inject::{self, Bound, DEFAULT_FILES};

use crate::cli::{HookStage, OciHookArgs};
use nsview_proto::control::{Connection, CtlRequest, send as ctl_send};

mod error;

pub(crate) use error::unprivileged;
pub use error::{HookError, Unprivileged};

/// The annotation narrowing the list: comma-separated paths from [`DEFAULT_FILES`].
pub const FILES_ANNOTATION: &str = "io.nsview.files";

/// Set by `oci-patch` when it took `/proc/sys` out of `linux.readonlyPaths` for nsview's
/// bind: wherever that bind is not made, the hook makes the container's `/proc/sys`
/// read-only itself, so a container never gets the kernel's writable one.
pub const READONLY_PROC_SYS_ANNOTATION: &str = "io.nsview.readonly-proc-sys";

/// The container state a runtime gives a hook on stdin.
#[derive(Debug, Deserialize)]
pub struct State {
    /// The container's id.
    pub id: String,
    /// Host pid of its init (absent in poststop for some runtimes).
    #[serde(default)]
    pub pid: Option<u32>,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The container's annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Runs the hook; `Err` is the one-line message.
pub fn run(args: &OciHookArgs) -> Result<(), HookError> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(HookError::Stdin)?;
    if input.trim().is_empty() {
        return Err(HookError::NoState);
    }
    let state: State = serde_json::from_str(&input).map_err(HookError::State)?;
    let result = match unprivileged() {
        Some(how) => Err(HookError::Unprivileged(how)),
        None => match args.stage {
            HookStage::CreateRuntime => create_runtime(args, &state),
            HookStage::Poststop => poststop(args, &state),
        },
    };
    match result {
        Err(e) if args.daemon.optional && e.forgiven_by_optional() => {
            let then = match args.stage {
                HookStage::CreateRuntime => "the container starts without nsview",
                HookStage::Poststop => "continuing",
            };
            eprintln!("nsview oci-hook: {}; {then}", nsview_proto::chain(&e));
            Ok(())
        }
        result => result,
    }
}

fn poststop(args: &OciHookArgs, state: &State) -> Result<(), HookError> {
    let request = CtlRequest::Unregister {
        id: state.id.clone(),
    };
    ctl_send(&args.daemon.runtime_dir, &request)?;
    Ok(())
}

fn create_runtime(args: &OciHookArgs, state: &State) -> Result<(), HookError> {
    let pid = state.pid.ok_or(HookError::NoPid)?;
    let pidfd = inject::pidfd_of(pid, None)?;
    let bundle = state.bundle.as_ref().ok_or(HookError::NoBundle)?;
    let rootfs = rootfs_of(bundle)?;
    let files = selected_files(&state.annotations)?;
    let host_writes = host_writes(&state.annotations)?;
    // Sources cloned and the daemon connected in the host's mount namespace, where the
    // mountpoint and the socket's path are nsview's.
    let connected = clone_sources(&args.daemon.mountpoint, files).and_then(|clones| {
        let daemon = Connection::open(&args.daemon.runtime_dir)?;
        Ok((clones, daemon))
    });
    let keep_read_only = state
        .annotations
        .get(READONLY_PROC_SYS_ANNOTATION)
        .is_some_and(|v| v.trim() == "true");
    let (clones, mut daemon) = match connected {
        Ok(both) => both,
        // nsview is not there (and --optional may let the container start): the
        // runtime's /proc/sys must not stay writable for want of nsview's.
        Err(e) => {
            if keep_read_only {
                inject::join_mount_namespace(&pidfd)?;
                proc_sys_read_only(&rootfs)?;
            }
            return Err(e);
        }
    };
    register_and_bind(&mut daemon, &state.id, pid, host_writes, || {
        let (bound, skipped) = bind_files(&pidfd, &rootfs, clones)?;
        if keep_read_only && !bound.iter().any(|b| b == "/proc/sys") {
            proc_sys_read_only(&rootfs)?;
        }
        Ok((bound, skipped))
    })
}

/// Makes `rootfs/proc/sys` (in the current mount namespace) read-only: a read-only bind of
/// itself on top. Nothing there is no error.
fn proc_sys_read_only(rootfs: &Path) -> Result<(), HookError> {
    let root = inject::open_rootfs(rootfs)?;
    let Some(target) = inject::resolve_target(&root, "proc/sys")? else {
        return Ok(());
    };
    let tree = rustix::mount::open_tree(
        &target,
        "",
        rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
            | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
            | rustix::mount::OpenTreeFlags::AT_EMPTY_PATH
            | rustix::mount::OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(HookError::CloneProcSys)?;
    match inject::bind(&root, "proc/sys", false, &tree)? {
        Bound::Mounted | Bound::Missing => Ok(()),
    }
}

/// Registers container `id` whose init is `pid`, runs `bind` (which binds its files and
/// says which were bound and which skipped) and reports the binds to the daemon; a failed
/// bind is reported and the registration rolled back. A container in the host's pid
/// namespace (`--pid host`) or in another container's is not registered: its files follow
/// its cgroup (a host scope) or are that container's.
pub(crate) fn register_and_bind(
    daemon: &mut Connection,
    id: &str,
    pid: u32,
    host_writes: bool,
    bind: impl FnOnce() -> Result<(Vec<String>, Vec<String>), HookError>,
) -> Result<(), HookError> {
    let nspid = nsview_core::procfs::ProcRoot::default()
        .status(pid)
        .map_err(|source| match &source {
            nsview_core::error::Error::Read { source: e, .. }
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                HookError::InitGone(pid)
            }
            _ => HookError::InitStatus { pid, source },
        })?
        .nspid;
    if !nsview_core::registry::is_pidns_init(&nspid) {
        let whose = if nspid.len() == 1 {
            "the host's pid namespace: its files follow its cgroup"
        } else {
            "another container's pid namespace: its files are that container's"
        };
        eprintln!("nsview: {id} shares {whose}; not registered");
        return bind().map(drop);
    }
    let register = CtlRequest::Register {
        id: id.to_owned(),
        pid,
        cpu_view: None,
        host_writes: Some(host_writes),
    };
    let response = daemon.request(&register)?;
    if !response.ok {
        return Err(HookError::Refused(
            response
                .error
                .unwrap_or_else(|| "registration refused".into()),
        ));
    }
    match bind() {
        Ok((bound, skipped)) => {
            let report = CtlRequest::Bound {
                id: id.to_owned(),
                bound,
                skipped,
            };
            match daemon.request(&report) {
                Ok(response) if response.ok => {}
                Ok(response) => eprintln!(
                    "nsview: reporting the binds: {}",
                    response.error.unwrap_or_default()
                ),
                Err(e) => eprintln!("nsview: reporting the binds: {e}"),
            }
            Ok(())
        }
        Err(e) => {
            // The start fails: say why where it is kept, leave no registration behind.
            let _ = daemon.request(&CtlRequest::Failed {
                id: id.to_owned(),
                error: nsview_proto::chain(&e),
            });
            let rollback = daemon.request(&CtlRequest::Unregister { id: id.to_owned() });
            match rollback {
                Ok(response) if response.ok => Err(e),
                _ => Err(HookError::StaysRegistered {
                    id: id.to_owned(),
                    source: Box::new(e),
                }),
            }
        }
    }
}

/// A clone of every source below `mountpoint` (made in the caller's mount namespace); a
/// source nsview lacks is skipped with a message, none at all is an error (its mount is
/// not there).
pub(crate) type Clones = Vec<(inject::Bind, std::os::fd::OwnedFd)>;

pub(crate) fn clone_sources(
    mountpoint: &Path,
    files: Vec<(&'static str, bool)>,
) -> Result<Clones, HookError> {
    let mut clones = Vec::new();
    let mut failed = Vec::new();
    for bind in inject::binds(&files, Path::new("/sys")) {
        let source = mountpoint.join(&bind.source);
        match inject::clone_tree(&source) {
            Ok(tree) => clones.push((bind, tree)),
            Err(e) => failed.push((source, e)),
        }
    }
    // Absent: no file there (a plain directory, not the mount) or a dead mount (ENOTCONN).
    // Anything else (EPERM without CAP_SYS_ADMIN, ...) is a refusal, not an absence.
    let absent = |e: &std::io::Error| {
        e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTCONN)
    };
    match failed.first() {
        // In words, not strerror (see `HookError`).
        Some((_, e)) if clones.is_empty() && failed.iter().all(|(_, e)| absent(e)) => {
            Err(HookError::MountAbsent {
                mountpoint: mountpoint.to_owned(),
                daemon_died: e.raw_os_error() == Some(libc::ENOTCONN),
            })
        }
        Some(_) if clones.is_empty() => {
            let (path, source) = failed.swap_remove(0);
            Err(HookError::CloneSource { path, source })
        }
        _ => {
            for (source, e) in failed {
                // Words again for a missing file (podman reads strerror's ENOENT text in a
                // runtime's error as a missing command).
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    "nsview does not serve it on this machine".to_owned()
                } else {
                    e.to_string()
                };
                eprintln!("nsview oci-hook: {}: {why}; skipped", source.display());
            }
            Ok(clones)
        }
    }
}

/// Joins the container's mount namespace and binds the clones under `rootfs`: the paths
/// bound, and those skipped for want of a target.
fn bind_files(
    pidfd: &std::os::fd::OwnedFd,
    rootfs: &Path,
    clones: Clones,
) -> Result<(Vec<String>, Vec<String>), HookError> {
    inject::join_mount_namespace(pidfd)?;
    let root = inject::open_rootfs(rootfs)?;
    let (mut bound, mut skipped) = (Vec::new(), Vec::new());
    for (bind, tree) in clones {
        let rel = bind.target.as_str();
        match inject::bind(&root, rel, bind.writable, &tree)? {
            Bound::Mounted => bound.push(format!("/{rel}")),
            Bound::Missing => {
                eprintln!("nsview oci-hook: /{rel} does not exist in the container; skipped");
                skipped.push(format!("/{rel}"));
            }
        }
    }
    Ok((bound, skipped))
}

/// The bundle's rootfs (`root.path` of its config.json, relative to the bundle).
fn rootfs_of(bundle: &Path) -> Result<PathBuf, HookError> {
    let path = bundle.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(HookError::ReadConfig { path, source }),
    };
    let config: serde_json::Value = match serde_json::from_str(&text) {
        Ok(config) => config,
        Err(source) => return Err(HookError::ParseConfig { path, source }),
    };
    let root = config["root"]["path"]
        .as_str()
        .ok_or(HookError::NoRootPath(path))?;
    Ok(bundle.join(root))
}

/// The annotation turning off the container's writes to host values (`false`).
pub const HOST_WRITES_ANNOTATION: &str = "io.nsview.host-writes";

/// Whether the annotations let the container change host values (default: yes).
fn host_writes(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<bool, HookError> {
    match annotations.get(HOST_WRITES_ANNOTATION).map(|v| v.trim()) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(HookError::HostWrites(other.into())),
    }
}

/// The files to bind: all of [`DEFAULT_FILES`], or those the annotation names.
fn selected_files(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(&'static str, bool)>, HookError> {
    let Some(list) = annotations.get(FILES_ANNOTATION) else {
        return Ok(DEFAULT_FILES.to_vec());
    };
    list.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            DEFAULT_FILES
                .iter()
                .find(|(d, _)| *d == f)
                .copied()
                .ok_or_else(|| HookError::UnknownFile(f.into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_writes_are_on_unless_the_annotation_says_false() {
        let mut annotations = std::collections::BTreeMap::new();
        assert!(host_writes(&annotations).unwrap());
        annotations.insert(HOST_WRITES_ANNOTATION.into(), "false".into());
        assert!(!host_writes(&annotations).unwrap());
        annotations.insert(HOST_WRITES_ANNOTATION.into(), "no".into());
        assert!(matches!(
            host_writes(&annotations),
            Err(HookError::HostWrites(v)) if v == "no"
        ));
    }

    #[test]
    fn the_annotation_narrows_the_files_to_known_ones() {
        let mut annotations = std::collections::BTreeMap::new();
        assert_eq!(
            selected_files(&annotations).unwrap().len(),
            DEFAULT_FILES.len()
        );
        annotations.insert(FILES_ANNOTATION.into(), "proc/meminfo, proc/sys".into());
        assert_eq!(
            selected_files(&annotations).unwrap(),
            [("proc/meminfo", false), ("proc/sys", true)]
        );
        annotations.insert(FILES_ANNOTATION.into(), "etc/shadow".into());
        assert!(matches!(
            selected_files(&annotations),
            Err(HookError::UnknownFile(f)) if f == "etc/shadow"
        ));
    }

    #[test]
    fn states_parse_with_and_without_optional_fields() {
        let s: State = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","id":"a","status":"creating","pid":42,"bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("a", Some(42)));
        let s: State = serde_json::from_str(r#"{"id":"a"}"#).unwrap();
        assert_eq!(s.pid, None);
        assert!(serde_json::from_str::<State>("{").is_err());
    }
}
