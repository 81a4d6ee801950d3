//! `nsview oci-hook`: the OCI runtime hook.
//!
//! `--stage create-runtime` (also usable as `prestart`): registers the container with the
//! daemon, then binds nsview's files into the container's mount namespace under its rootfs,
//! before `pivot_root`. Safely: each source is cloned from the host's mount namespace with
//! `open_tree(OPEN_TREE_CLONE)` first; then the hook joins the container's mount namespace,
//! resolves each target beneath the rootfs with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)` (a symlinked target is refused, a missing one skipped, nothing
//! outside the rootfs is ever touched: the bug class of LXC CVE-2015-1335 and the runc
//! symlink races), makes the clone read-only where the file takes no writes, and
//! `move_mount`s it onto the target.
//!
//! `--stage poststop`: unregisters the container.
//!
//! Errors are one line on stderr and a non-zero exit, which fails the container's start;
//! with `--optional` a missing daemon is logged and the container starts without nsview.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
use serde::Deserialize;

use crate::cli::{HookStage, OciHookArgs};
use crate::control::{CtlRequest, ctl_send};

/// The files bound by default: (path below the mountpoint and the rootfs, writable).
pub const DEFAULT_FILES: &[(&str, bool)] = &[
    ("proc/cpuinfo", false),
    ("proc/meminfo", false),
    ("proc/stat", false),
    ("proc/uptime", false),
    ("proc/loadavg", false),
    ("proc/diskstats", false),
    ("proc/swaps", false),
    ("proc/slabinfo", false),
    ("proc/pressure/cpu", false),
    ("proc/pressure/memory", false),
    ("proc/pressure/io", false),
    ("proc/sys", true),
    ("sys/devices/system/cpu", false),
    ("sys/kernel", false),
    ("sys/devices/virtual/net", false),
    ("sys/module/nf_conntrack/parameters/hashsize", true),
];

/// The annotation narrowing the list: comma-separated paths from [`DEFAULT_FILES`].
pub const FILES_ANNOTATION: &str = "io.nsview.files";

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
pub fn run(args: &OciHookArgs) -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading the container state from stdin: {e}"))?;
    if input.trim().is_empty() {
        return Err("no container state on stdin (run by the OCI runtime as a hook)".into());
    }
    let state: State = serde_json::from_str(&input).map_err(|e| format!("container state: {e}"))?;
    match args.stage {
        HookStage::CreateRuntime => create_runtime(args, &state),
        HookStage::Poststop => poststop(args, &state),
    }
}

fn poststop(args: &OciHookArgs, state: &State) -> Result<(), String> {
    let request = CtlRequest::Unregister {
        id: state.id.clone(),
    };
    match ctl_send(&args.runtime_dir, &request) {
        Ok(_) => Ok(()),
        Err(e) if args.optional => {
            eprintln!("nsview oci-hook: {e}; continuing");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn create_runtime(args: &OciHookArgs, state: &State) -> Result<(), String> {
    let pid = state.pid.ok_or("the container state has no pid")?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("the container's init (pid {pid}) does not exist"));
    }
    let bundle = state
        .bundle
        .as_ref()
        .ok_or("the container state has no bundle")?;
    let rootfs = rootfs_of(bundle)?;
    let request = CtlRequest::Register {
        id: state.id.clone(),
        pid,
        cpu_view: None,
    };
    match ctl_send(&args.runtime_dir, &request) {
        Ok(response) if response.ok => {}
        Ok(response) => {
            return Err(response
                .error
                .unwrap_or_else(|| "registration refused".into()));
        }
        Err(e) if args.optional => {
            eprintln!("nsview oci-hook: {e}; the container starts without nsview");
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    }
    let files = selected_files(&state.annotations)?;
    // Clone every source while still in the host's mount namespace.
    let mut clones = Vec::new();
    for (rel, writable) in files {
        let source = args.mountpoint.join(rel);
        let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        match open_tree(CWD, &source, flags) {
            Ok(tree) => clones.push((rel, writable, tree)),
            Err(e) => eprintln!("nsview oci-hook: {}: {e}; skipped", source.display()),
        }
    }
    join_mount_namespace(pid)?;
    let root = rustix::fs::open(
        &rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("rootfs {}: {e}", rootfs.display()))?;
    for (rel, writable, tree) in clones {
        bind(&root, rel, writable, &tree)?;
    }
    Ok(())
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

fn join_mount_namespace(pid: u32) -> Result<(), String> {
    let path = format!("/proc/{pid}/ns/mnt");
    let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("joining the container's mount namespace: {e}"))
}

/// The target `rel` beneath `root`, opened O_PATH without following any symlink on the way
/// (`RESOLVE_IN_ROOT`: `..` and absolute links cannot leave the rootfs either). `Ok(None)`
/// when it does not exist; an error when it, or a directory on the way, is a symlink.
pub fn resolve_target(root: &OwnedFd, rel: &str) -> Result<Option<OwnedFd>, String> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let target = match openat2(root, rel, flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(format!(
                "/{rel} in the container's rootfs is a symbolic link: refused"
            ));
        }
        Err(e) => return Err(format!("/{rel} in the container's rootfs: {e}")),
    };
    // O_PATH|O_NOFOLLOW opens a final symlink itself rather than failing: refuse it here.
    let is_link = rustix::fs::fstat(&target).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    });
    if is_link {
        return Err(format!(
            "/{rel} in the container's rootfs is a symbolic link: refused"
        ));
    }
    Ok(Some(target))
}

/// Moves `tree` onto `rel` beneath `root`, refusing a symlinked target and skipping a
/// missing one; read-only unless `writable`.
fn bind(root: &OwnedFd, rel: &str, writable: bool, tree: &OwnedFd) -> Result<(), String> {
    let Some(target) = resolve_target(root, rel)? else {
        eprintln!("nsview oci-hook: /{rel} does not exist in the container; skipped");
        return Ok(());
    };
    if !writable {
        make_read_only(tree).map_err(|e| format!("read-only bind of /{rel}: {e}"))?;
    }
    move_mount(
        tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| format!("binding /{rel}: {e}"))
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, {MOUNT_ATTR_RDONLY})`.
fn make_read_only(tree: &OwnedFd) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: `tree` is an open mount fd, `empty` a valid NUL-terminated string, `attr` a
    // properly laid out `struct mount_attr` whose size is passed; all outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(tree),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn targets_never_follow_symlinks_out_of_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        std::fs::write(&victim, "host\n").unwrap();
        let rootfs = host.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("proc")).unwrap();
        std::fs::write(rootfs.join("proc/uptime"), "").unwrap();
        std::os::unix::fs::symlink(&victim, rootfs.join("proc/meminfo")).unwrap();
        std::os::unix::fs::symlink("/etc", rootfs.join("sys")).unwrap();
        let root: OwnedFd = std::fs::File::open(&rootfs).unwrap().into();
        assert!(resolve_target(&root, "proc/uptime").unwrap().is_some());
        assert!(
            resolve_target(&root, "proc/meminfo")
                .unwrap_err()
                .contains("symbolic link")
        );
        assert!(
            resolve_target(&root, "sys/kernel")
                .unwrap_err()
                .contains("symbolic link")
        );
        assert!(resolve_target(&root, "proc/stat").unwrap().is_none());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host\n");
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
