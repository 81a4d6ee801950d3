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
    pub data: Option<serde_json::Value>,
}

impl CtlResponse {
    /// Success with `data`.
    pub fn ok(data: serde_json::Value) -> CtlResponse {
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
}
