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

use rustix::fs::{Mode, OFlags};
use serde::Deserialize;

use super::inject::{self, Bound, DEFAULT_FILES};

use crate::cli::{HookStage, OciHookArgs};
use crate::control::{Connection, CtlRequest, ctl_send};

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

/// Why a step of the hook failed, as far as `--optional` is concerned.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// nsview is not there: no daemon listens on the control socket, or no nsview mount
    /// answers at the mountpoint (missing, or its daemon dead). `--optional` lets the
    /// container start without it.
    #[error("{0}")]
    Absent(String),
    /// The hook runs unprivileged: as a user other than root, or as root of a user namespace
    /// of its own (a rootless runtime). It cannot reach the daemon's socket or clone its
    /// mount, so it tries nothing; `--optional` lets the container start without nsview.
    #[error(
        "the hook {0}: nsview's hook needs root on the host (a rootless container can bind \
         nsview's files itself, e.g. -v /var/lib/nsview/proc/meminfo:/proc/meminfo:ro)"
    )]
    Unprivileged(String),
    /// Anything else (bad input, a step refused with EPERM or EACCES to root, a failed
    /// bind): the start fails, `--optional` or not.
    #[error("{0}")]
    Failed(String),
}

impl HookError {
    /// Whether `--optional` lets the container start despite it.
    pub(crate) fn forgiven_by_optional(&self) -> bool {
        matches!(self, HookError::Absent(_) | HookError::Unprivileged(_))
    }
}

/// How this process is unprivileged, if it is: not uid 0, or uid 0 of a user namespace that
/// does not map the whole id range (`/proc/self/uid_map` is `0 0 4294967295` only in the
/// initial one).
pub(crate) fn unprivileged() -> Option<String> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Some(format!("runs as uid {euid}"));
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let whole = map.split_whitespace().eq(["0", "0", "4294967295"]);
    (!whole).then(|| "runs in a user namespace of its own (a rootless runtime)".to_owned())
}

impl From<String> for HookError {
    fn from(message: String) -> HookError {
        HookError::Failed(message)
    }
}

impl From<&str> for HookError {
    fn from(message: &str) -> HookError {
        HookError::Failed(message.to_owned())
    }
}

impl From<crate::control::CtlError> for HookError {
    fn from(e: crate::control::CtlError) -> HookError {
        match e {
            crate::control::CtlError::NotRunning(_) => HookError::Absent(e.to_string()),
            e => HookError::Failed(e.to_string()),
        }
    }
}

/// Runs the hook; `Err` is the one-line message.
pub fn run(args: &OciHookArgs) -> Result<(), HookError> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading the container state from stdin: {e}"))?;
    if input.trim().is_empty() {
        return Err("no container state on stdin (run by the OCI runtime as a hook)".into());
    }
    let state: State = serde_json::from_str(&input).map_err(|e| format!("container state: {e}"))?;
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
            eprintln!("nsview oci-hook: {e}; {then}");
            Ok(())
        }
        result => result,
    }
}

fn poststop(args: &OciHookArgs, state: &State) -> Result<(), HookError> {
    let request = CtlRequest::Unregister {
        id: state.id.clone(),
    };
    ctl_send(&args.daemon.runtime_dir, &request)
        .map(drop)
        .map_err(HookError::from)
}

fn create_runtime(args: &OciHookArgs, state: &State) -> Result<(), HookError> {
    let pid = state.pid.ok_or("the container state has no pid")?;
    let pidfd = inject::pidfd_of(pid, None)?;
    let bundle = state
        .bundle
        .as_ref()
        .ok_or("the container state has no bundle")?;
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
        let (bound, skipped) = bind_files(pid, &pidfd, &rootfs, clones)?;
        if keep_read_only && !bound.iter().any(|b| b == "/proc/sys") {
            proc_sys_read_only(&rootfs)?;
        }
        Ok((bound, skipped))
    })
}

/// Makes `rootfs/proc/sys` (in the current mount namespace) read-only: a read-only bind of
/// itself on top. Nothing there is no error.
fn proc_sys_read_only(rootfs: &Path) -> Result<(), String> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("rootfs {}: {e}", rootfs.display()))?;
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
    .map_err(|e| format!("cloning the container's /proc/sys: {e}"))?;
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
    bind: impl FnOnce() -> Result<(Vec<String>, Vec<String>), String>,
) -> Result<(), HookError> {
    let nspid = crate::procfs::ProcRoot::default()
        .status(pid)
        .map_err(|e| HookError::Failed(format!("container init {pid}: {e}")))?
        .nspid;
    if !crate::control::is_pidns_init(&nspid) {
        let whose = if nspid.len() == 1 {
            "the host's pid namespace: its files follow its cgroup"
        } else {
            "another container's pid namespace: its files are that container's"
        };
        eprintln!("nsview: {id} shares {whose}; not registered");
        return bind().map(drop).map_err(HookError::Failed);
    }
    let register = CtlRequest::Register {
        id: id.to_owned(),
        pid,
        cpu_view: None,
        host_writes: Some(host_writes),
    };
    let response = daemon
        .request(&register)
        .map_err(|e| HookError::Failed(e.to_string()))?;
    if !response.ok {
        return Err(HookError::Failed(
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
                error: e.clone(),
            });
            let rollback = daemon.request(&CtlRequest::Unregister { id: id.to_owned() });
            match rollback {
                Ok(response) if response.ok => Err(e.into()),
                _ => Err(format!("{e} (and {id} stays registered)").into()),
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
        Some((_, e)) if clones.is_empty() && failed.iter().all(|(_, e)| absent(e)) => {
            // In words, not strerror: podman takes "No such file or directory" anywhere in a
            // runtime's error for a missing command and reports exit 127, "OCI runtime
            // attempted to invoke a command that was not found".
            let what = if e.raw_os_error() == Some(libc::ENOTCONN) {
                "its daemon died"
            } else {
                "nothing is mounted there"
            };
            Err(HookError::Absent(format!(
                "nsview's mount at {} is not there ({what}): is nsview serve running?",
                mountpoint.display()
            )))
        }
        Some((source, e)) if clones.is_empty() => Err(HookError::Failed(format!(
            "cloning {} from nsview's mount: {e}",
            source.display()
        ))),
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
    pid: u32,
    pidfd: &std::os::fd::OwnedFd,
    rootfs: &Path,
    clones: Clones,
) -> Result<(Vec<String>, Vec<String>), String> {
    inject::join_mount_namespace(pidfd)?;
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("rootfs {} of pid {pid}: {e}", rootfs.display()))?;
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
fn rootfs_of(bundle: &Path) -> Result<PathBuf, String> {
    let config_path = bundle.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let root = config["root"]["path"]
        .as_str()
        .ok_or_else(|| format!("{}: no root.path", config_path.display()))?;
    Ok(bundle.join(root))
}

/// The annotation turning off the container's writes to host values (`false`).
pub const HOST_WRITES_ANNOTATION: &str = "io.nsview.host-writes";

/// Whether the annotations let the container change host values (default: yes).
fn host_writes(annotations: &std::collections::BTreeMap<String, String>) -> Result<bool, String> {
    match annotations.get(HOST_WRITES_ANNOTATION).map(|v| v.trim()) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "annotation {HOST_WRITES_ANNOTATION}={other:?}: expected true or false"
        )),
    }
}

/// The files to bind: all of [`DEFAULT_FILES`], or those the annotation names.
fn selected_files(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(&'static str, bool)>, String> {
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
                .ok_or_else(|| format!("{FILES_ANNOTATION}: {f:?} is not a file nsview serves"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_writes_are_on_unless_the_annotation_says_false() {
        let mut annotations = std::collections::BTreeMap::new();
        assert_eq!(host_writes(&annotations), Ok(true));
        annotations.insert(HOST_WRITES_ANNOTATION.into(), "false".into());
        assert_eq!(host_writes(&annotations), Ok(false));
        annotations.insert(HOST_WRITES_ANNOTATION.into(), "no".into());
        assert!(host_writes(&annotations).is_err());
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
        assert!(selected_files(&annotations).is_err());
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
