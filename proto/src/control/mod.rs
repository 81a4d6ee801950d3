//! The control socket's protocol (`<runtime-dir>/nsview.sock`): runtimes and `nsview ctl`
//! register containers and read the daemon's status there, one JSON object per line each way
//! ([`crate::framing`]), and the client side of it ([`client`]).

pub mod client;

use serde::{Deserialize, Serialize};

pub use client::{Connection, CtlError, send};

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CtlRequest {
    /// Registers container `id` whose init is `pid` (idempotent).
    Register {
        /// The runtime's id.
        id: String,
        /// Host pid of its init.
        pid: u32,
        /// `quota` or `cpuset`.
        #[serde(default)]
        cpu_view: Option<String>,
        /// Whether its writes may change host values where the emulation table says so
        /// (default: yes).
        #[serde(default)]
        host_writes: Option<bool>,
    },
    /// Forgets container `id`.
    Unregister {
        /// The runtime's id.
        id: String,
    },
    /// The hook reports what it bound into registered container `id` (the daemon logs it:
    /// runtimes drop a successful hook's stderr).
    Bound {
        /// The runtime's id.
        id: String,
        /// Paths bound (below the rootfs).
        bound: Vec<String>,
        /// Paths skipped because the container has no such target.
        skipped: Vec<String>,
    },
    /// The hook failed container `id`'s start with `error` (the daemon logs it: runtimes
    /// such as crun drop a failed hook's stderr too).
    Failed {
        /// The runtime's id.
        id: String,
        /// Why.
        error: String,
    },
    /// The registered containers. (A struct variant, as `Status`: only those refuse unknown
    /// fields in an internally tagged enum.)
    List {},
    /// The daemon's status.
    Status {},
    /// Replace the daemon by binary `exe` (default: the one it was started from) without
    /// unmounting; answered before the daemon execs it.
    Upgrade {
        /// The new binary.
        #[serde(default)]
        exe: Option<std::path::PathBuf>,
    },
    /// Sets option `key` of container `id` to `value`.
    Set {
        /// The runtime's id.
        id: String,
        /// The option (`cpu_view`, `host_writes`).
        key: String,
        /// Its value.
        value: String,
    },
}

/// One registered container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    /// The runtime's id for it.
    pub id: String,
    /// Host pid of its init.
    pub pid: u32,
    /// The init's start time (clock ticks since boot): identifies the process, not just the pid.
    pub start_ticks: u64,
    /// Inode of its pid namespace.
    pub pidns: u64,
    /// Inode of its network namespace (whose store of emulated values is the container's).
    #[serde(default)]
    pub netns: u64,
    /// CPU view for this container (`quota` or `cpuset`); the daemon's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_view: Option<String>,
    /// Whether the container's writes may change host values where the emulation table says
    /// so (max-wins `nf_conntrack_max`, liberal-wins, the conntrack `hashsize`); on unless
    /// the runtime turned it off.
    #[serde(default = "yes")]
    pub host_writes: bool,
}

fn yes() -> bool {
    true
}

/// What a successful reply carries, by request: the wire form is the JSON of the inner
/// value itself (untagged), so `nsview ctl --json` prints it as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CtlData {
    /// `list`: the registered containers.
    Containers(Vec<Registered>),
    /// `register`, `set`: the container as registered now.
    Container(Registered),
    /// `status`.
    Status(Status),
    /// `unregister`, `bound`, `failed`: which container it was.
    Id(Named),
    /// `upgrade`: what the daemon is about to exec.
    Upgrading(Upgrading),
    /// Anything else: what a daemon of another version answers with a shape this one does
    /// not know (kept, not refused: the reply's `ok` and `error` still count).
    Other(serde_json::Value),
}

/// An upgrade under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrading {
    /// The binary the daemon execs.
    pub exe: std::path::PathBuf,
    /// Its `--version` line.
    pub version: String,
    /// The daemon's pid (the new image keeps it).
    pub pid: u32,
}

/// A container by its id alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    /// The runtime's id.
    pub id: String,
}

/// The daemon's status (`ctl status`; also logged on SIGHUP, SIGUSR1, SIGUSR2). Fields a
/// daemon of another version adds or lacks do not make it unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// Seconds it has served.
    pub uptime_secs: u64,
    /// Containers (pid namespaces) it has seen and still knows.
    pub containers_seen: usize,
    /// Containers registered by runtimes.
    pub containers_registered: usize,
    /// Agents alive.
    pub agents_alive: usize,
    /// FUSE requests served.
    pub requests: u64,
    /// FUSE requests by operation (`lookup`, `getattr`, `open`, `read`, ...).
    #[serde(default)]
    pub requests_by_op: std::collections::BTreeMap<String, u64>,
    /// Steps on the way to agents: `cached`, `exchanges`, `handed`, `deferred`, `spawned`.
    #[serde(default)]
    pub agent_steps: std::collections::BTreeMap<String, u64>,
    /// Renders of a container's view that fell back to the host's file.
    pub host_fallbacks: u64,
    /// Requests answered with an error, by errno name.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// cgroup files kept open for `pread`.
    pub cgroup_files_kept: usize,
    /// The most it keeps.
    pub cgroup_files_budget: usize,
    /// Its FUSE connection: whether it took it over from a predecessor, and what came with it.
    #[serde(default)]
    pub connection: ConnectionStatus,
}

/// How a daemon came by its FUSE connection (see `nsview keeper`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionStatus {
    /// Daemons that served the connection before this one (0: this one mounted it).
    pub generation: u32,
    /// Whether a keeper holds a descriptor of it, so that it outlives this daemon.
    pub kept: bool,
    /// Subtree inodes the kernel still named, taken from the predecessor's journal.
    pub inodes_inherited: u64,
    /// Requests the predecessor had read but not answered, asked again of the kernel:
    /// `resent`, `unsupported` (a kernel before 6.9, whose requests stay unanswered), or
    /// empty when nothing was taken over.
    pub resend: String,
    /// Descriptors opened before the restart, taken over at their first use since.
    pub handles_taken_over: u64,
    /// Requests the kernel sent again that reached a handler.
    pub requests_resent: u64,
}

/// A reply: `ok` with optional data, or an error message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<CtlData>,
}

impl CtlResponse {
    /// Success with `data`.
    pub fn ok(data: CtlData) -> CtlResponse {
        CtlResponse {
            ok: true,
            error: None,
            data: Some(data),
        }
    }

    /// Failure saying `error`.
    pub fn err(error: impl Into<String>) -> CtlResponse {
        CtlResponse {
            ok: false,
            error: Some(error.into()),
            data: None,
        }
    }
}

/// The socket's path under `runtime_dir`.
pub fn socket_path(runtime_dir: &std::path::Path) -> std::path::PathBuf {
    runtime_dir.join("nsview.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_keep_their_wire_form() {
        for line in [
            r#"{"op":"list","x":1}"#,
            r#"{"op":"status","verbose":true}"#,
            r#"{"op":"unregister","id":"a","force":true}"#,
            r#"{"op":"register","id":"a","pid":1,"pidfd":3}"#,
        ] {
            let err = serde_json::from_str::<CtlRequest>(line).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{line}: {err}");
        }
        let list: CtlRequest = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, CtlRequest::List {});
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"op":"list"}"#);
        assert_eq!(
            serde_json::to_string(&CtlRequest::Status {}).unwrap(),
            r#"{"op":"status"}"#
        );
    }

    #[test]
    fn replies_are_typed_and_keep_their_wire_form() {
        let registered = Registered {
            id: "a".into(),
            pid: 7,
            start_ticks: 9,
            pidns: 4026531836,
            netns: 4026531840,
            cpu_view: None,
            host_writes: true,
        };
        let status = Status {
            version: "0.1.0".into(),
            uptime_secs: 1,
            containers_seen: 2,
            containers_registered: 1,
            agents_alive: 0,
            requests: 5,
            requests_by_op: [("read".to_owned(), 5)].into(),
            agent_steps: Default::default(),
            connection: Default::default(),
            host_fallbacks: 0,
            errors: Default::default(),
            cgroup_files_kept: 0,
            cgroup_files_budget: 100,
        };
        for data in [
            CtlData::Containers(vec![registered.clone()]),
            CtlData::Container(registered),
            CtlData::Status(status),
            CtlData::Id(Named { id: "a".into() }),
        ] {
            let line = serde_json::to_string(&CtlResponse::ok(data.clone())).unwrap();
            let back: CtlResponse = serde_json::from_str(&line).unwrap();
            assert_eq!(back.data, Some(data), "{line}");
        }
        let named = CtlData::Id(Named { id: "a".into() });
        let id = serde_json::to_string(&CtlResponse::ok(named)).unwrap();
        assert_eq!(id, r#"{"ok":true,"data":{"id":"a"}}"#);
        // A container with a field this version lacks is not taken for a bare id.
        let newer: CtlResponse =
            serde_json::from_str(r#"{"ok":true,"data":{"id":"a","pid":1,"later":true}}"#).unwrap();
        assert!(matches!(newer.data, Some(CtlData::Other(_))), "{newer:?}");
    }
}
