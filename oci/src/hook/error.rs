//! Why a hook failed, and which failures `--optional` forgives.

use std::path::PathBuf;

use super::{FILES_ANNOTATION, HOST_WRITES_ANNOTATION};
use crate::inject::InjectError;
use nsview_proto::control::CtlError;

/// What the hook says of running unprivileged, after how it is.
const NEEDS_ROOT: &str = "nsview's hook needs root on the host (a rootless container can \
    bind nsview's files itself, e.g. -v /var/lib/nsview/proc/meminfo:/proc/meminfo:ro)";

/// Why a step of the OCI or LXC hook failed: one variant per step. `--optional` forgives
/// only nsview's absence and an unprivileged run ([`HookError::forgiven_by_optional`]);
/// anything else (bad input, a step refused with EPERM or EACCES to root, a failed bind)
/// fails the start, `--optional` or not.
///
/// No message may carry strerror's ENOENT text ("No such file or directory") where nsview
/// is merely absent: podman takes it anywhere in a runtime's error for a missing command
/// and reports exit 127, "OCI runtime attempted to invoke a command that was not found".
/// So [`HookError::MountAbsent`] and [`HookError::InitGone`] say it in words and keep no
/// OS error as their source.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Reading the container state from stdin.
    #[error("reading the container state from stdin")]
    Stdin(#[source] std::io::Error),
    /// Nothing on stdin: not run by a runtime.
    #[error("no container state on stdin (run by the OCI runtime as a hook)")]
    NoState,
    /// The container state is not the runtime's JSON.
    #[error("container state")]
    State(#[source] serde_json::Error),
    /// The state has no pid (create-runtime needs the container's init).
    #[error("the container state has no pid")]
    NoPid,
    /// The state has no bundle.
    #[error("the container state has no bundle")]
    NoBundle,
    /// The bundle's `config.json` cannot be read.
    #[error("{path}")]
    ReadConfig {
        /// The config.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bundle's `config.json` is not JSON.
    #[error("{path}")]
    ParseConfig {
        /// The config.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
    /// The config names no `root.path`.
    #[error("{0}: no root.path")]
    NoRootPath(PathBuf),
    /// [`HOST_WRITES_ANNOTATION`] is neither `true` nor `false`.
    #[error("annotation {HOST_WRITES_ANNOTATION}={0:?}: expected true or false")]
    HostWrites(String),
    /// [`FILES_ANNOTATION`] names a file nsview does not serve.
    #[error("{FILES_ANNOTATION}: {0:?} is not a file nsview serves")]
    UnknownFile(String),
    /// The hook runs unprivileged: it cannot reach the daemon's socket or clone its mount,
    /// so it tries nothing (forgiven by `--optional`).
    #[error("the hook {0}: {NEEDS_ROOT}")]
    Unprivileged(Unprivileged),
    /// The control socket: no daemon listens (forgiven by `--optional`), or the exchange
    /// failed.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// The daemon refused the registration.
    #[error("{0}")]
    Refused(String),
    /// No nsview mount answers at the mountpoint: nothing mounted there, or its daemon died
    /// (forgiven by `--optional`). In words, without the OS error (see above).
    #[error(
        "nsview's mount at {} is not there ({}): is nsview serve running?",
        mountpoint.display(),
        if *daemon_died { "its daemon died" } else { "nothing is mounted there" }
    )]
    MountAbsent {
        /// nsview's mountpoint.
        mountpoint: PathBuf,
        /// ENOTCONN: a mount is there, its daemon is not.
        daemon_died: bool,
    },
    /// Cloning a source from nsview's mount (`open_tree`).
    #[error("cloning {} from nsview's mount", path.display())]
    CloneSource {
        /// The source, below or at the mountpoint.
        path: PathBuf,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// Cloning the container's own `/proc/sys` to make it read-only.
    #[error("cloning the container's /proc/sys")]
    CloneProcSys(#[source] rustix::io::Errno),
    /// Reaching the container's init or binding into its rootfs.
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// The container's init is gone before it could be registered (in words: its `status`
    /// file is missing).
    #[error("container init {0} is gone")]
    InitGone(u32),
    /// Reading the container init's `status`.
    #[error("container init {pid}")]
    InitStatus {
        /// The init's host pid.
        pid: u32,
        /// Why.
        #[source]
        source: nsview_core::error::Error,
    },
    /// The binds failed after the container was registered, and unregistering it failed
    /// too.
    #[error("{id} stays registered after its binds failed")]
    StaysRegistered {
        /// The container.
        id: String,
        /// Why the binds failed.
        #[source]
        source: Box<HookError>,
    },
    /// An LXC variable the hook needs is not set.
    #[error("{0} is not set (run by LXC as a hook)")]
    LxcVar(&'static str),
    /// Neither `LXC_HOOK_TYPE` nor LXC's arguments say which hook this is.
    #[error("no hook type: neither LXC_HOOK_TYPE nor LXC's arguments (run by LXC as a hook)")]
    NoLxcHookType,
    /// A hook type other than `mount` and `post-stop`.
    #[error("LXC_HOOK_TYPE {0:?}: nsview's hook is for lxc.hook.mount and lxc.hook.post-stop")]
    LxcHookType(String),
    /// `LXC_ROOTFS_MOUNT` cannot be resolved.
    #[error("LXC_ROOTFS_MOUNT {}", path.display())]
    LxcRootfs {
        /// The path LXC gave.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// This process's `mountinfo` (the LXC hook's view of the container's mounts).
    #[error("mountinfo")]
    Mountinfo(#[source] std::io::Error),
    /// The LXC hook's parent, the container's init, from `/proc/self/status`.
    #[error("the container's init")]
    LxcInit(#[source] std::io::Error),
}

/// How the hook is unprivileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unprivileged {
    /// Not uid 0.
    #[error("runs as uid {0}")]
    Uid(u32),
    /// Root of a user namespace of its own: a rootless runtime.
    #[error("runs in a user namespace of its own (a rootless runtime)")]
    OwnUserNamespace,
}

impl HookError {
    /// Whether `--optional` lets the container start despite it: nsview is not there (no
    /// daemon listens on the control socket, or no nsview mount answers at the mountpoint),
    /// or the hook runs unprivileged.
    pub(crate) fn forgiven_by_optional(&self) -> bool {
        matches!(
            self,
            HookError::Ctl(CtlError::NotRunning(_))
                | HookError::MountAbsent { .. }
                | HookError::Unprivileged(_)
        )
    }
}

/// How this process is unprivileged, if it is: not uid 0, or uid 0 of a user namespace that
/// does not map the whole id range (`/proc/self/uid_map` is `0 0 4294967295` only in the
/// initial one).
pub(crate) fn unprivileged() -> Option<Unprivileged> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Some(Unprivileged::Uid(euid.as_raw()));
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let whole = map.split_whitespace().eq(["0", "0", "4294967295"]);
    (!whole).then_some(Unprivileged::OwnUserNamespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_forgives_only_an_absent_nsview_and_an_unprivileged_run() {
        let absent = HookError::MountAbsent {
            mountpoint: "/var/lib/nsview".into(),
            daemon_died: false,
        };
        let not_running = HookError::Ctl(CtlError::NotRunning("/run/nsview/ctl.sock".into()));
        let rootless = HookError::Unprivileged(Unprivileged::OwnUserNamespace);
        for forgiven in [&absent, &not_running, &rootless] {
            assert!(forgiven.forgiven_by_optional(), "{forgiven}");
        }
        let refused = HookError::Inject(InjectError::JoinMountNamespace(nix::errno::Errno::EPERM));
        let socket = HookError::Ctl(CtlError::Socket {
            path: "/run/nsview/ctl.sock".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        });
        for failed in [&refused, &socket, &HookError::NoPid] {
            assert!(!failed.forgiven_by_optional(), "{failed}");
        }
    }

    #[test]
    fn an_absent_nsview_is_said_in_words_without_strerror() {
        // podman reads strerror's ENOENT text in a runtime's error as a missing command.
        let absent = HookError::MountAbsent {
            mountpoint: "/var/lib/nsview".into(),
            daemon_died: true,
        };
        assert_eq!(
            nsview_proto::chain(&absent),
            "nsview's mount at /var/lib/nsview is not there (its daemon died): is nsview serve \
             running?"
        );
        let gone = HookError::InitGone(42);
        assert!(!nsview_proto::chain(&gone).contains("No such file"));
    }

    #[test]
    fn an_unprivileged_run_says_how_and_that_the_hook_needs_root() {
        assert_eq!(
            HookError::Unprivileged(Unprivileged::Uid(65534)).to_string(),
            "the hook runs as uid 65534: nsview's hook needs root on the host (a rootless \
             container can bind nsview's files itself, e.g. \
             -v /var/lib/nsview/proc/meminfo:/proc/meminfo:ro)"
        );
    }

    #[test]
    fn a_failed_bind_left_registered_still_says_why_it_failed() {
        let e = HookError::StaysRegistered {
            id: "c1".into(),
            source: Box::new(HookError::Inject(InjectError::Symlink(
                "proc/meminfo".into(),
            ))),
        };
        assert_eq!(
            nsview_proto::chain(&e),
            "c1 stays registered after its binds failed: /proc/meminfo in the container's \
             rootfs is a symbolic link: refused"
        );
    }
}
