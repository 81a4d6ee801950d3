//! What a failed operation answers: one variant per failing step, with the path it concerns
//! and the kernel's error, and the errno the daemon gets for it (the raw OS error where there
//! is one, so a caller sees exactly what the kernel said to the agent).

use nix::errno::Errno;

use super::creds::CredsError;
use nsview_proto::agent::{PathError, Payload, Response};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A second `hello` (`EPROTO`).
    #[error("hello twice")]
    HelloTwice,
    /// A `fault` to an agent started without `--allow-faults` (`EPERM`).
    #[error("faults are not enabled")]
    FaultsDisabled,
    /// A path outside what an agent serves, or malformed (`EINVAL`).
    #[error(transparent)]
    Path(#[from] PathError),
    /// A write longer than [`nsview_proto::agent::MAX_WRITE`] (`EINVAL`).
    #[error("write of {0} bytes")]
    WriteTooLong(usize),
    /// `openat2` beneath the root.
    #[error("open {path}")]
    Open {
        /// The path.
        path: String,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// `fstatat` of an entry.
    #[error("stat {path}")]
    Stat {
        /// The path.
        path: String,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// An entry that is neither a file, a directory nor a symbolic link (`ENOENT`: the
    /// agent serves nothing else).
    #[error("{path}: not a file, directory or link")]
    NotAnEntry {
        /// The path.
        path: String,
    },
    /// `readlinkat`.
    #[error("readlink {path}")]
    Readlink {
        /// The path.
        path: String,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// Listing a directory (`getdents64`).
    #[error("readdir {path}")]
    Readdir {
        /// The path.
        path: String,
        /// The kernel's refusal.
        #[source]
        source: Errno,
    },
    /// `read` of a file.
    #[error("read {path}")]
    Read {
        /// The path.
        path: String,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// `lseek` to a write's offset, or reading the position after it.
    #[error("seek {path}")]
    Seek {
        /// The path.
        path: String,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// `write` to a file.
    #[error("write {path}")]
    Write {
        /// The path.
        path: String,
        /// The kernel's refusal (a sysctl handler's `EINVAL`, `EPERM`, ...).
        #[source]
        source: std::io::Error,
    },
    /// Taking on the caller's credentials.
    #[error(transparent)]
    Creds(#[from] CredsError),
    /// The pipe a child in the pid namespace answers through.
    #[error("pipe")]
    Pipe(#[source] Errno),
    /// Forking that child.
    #[error("fork into the pid namespace")]
    Fork(#[source] Errno),
    /// The daemon or the pid namespace's init ended while the child worked (`EIO`).
    #[error("the daemon or the namespace is gone")]
    Gone,
    /// The child ended without a readable answer (`EIO`).
    #[error("no answer from the pid namespace")]
    NoAnswer,
    /// The child's own failure, as it answered: its errno and its text.
    #[error("{message}")]
    InNamespace {
        /// The errno the child's operation failed with.
        errno: i32,
        /// What the child said.
        message: String,
    },
}

impl OpError {
    /// The errno the daemon gets: the kernel's own for a failed system call (`EIO` for an
    /// I/O error that has none), else the one named on each variant.
    pub fn errno(&self) -> i32 {
        let io = |e: &std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        match self {
            OpError::HelloTwice => libc::EPROTO,
            OpError::FaultsDisabled => libc::EPERM,
            OpError::Path(_) | OpError::WriteTooLong(_) => libc::EINVAL,
            OpError::NotAnEntry { .. } => libc::ENOENT,
            OpError::Gone | OpError::NoAnswer => libc::EIO,
            OpError::InNamespace { errno, .. } => *errno,
            OpError::Open { source, .. }
            | OpError::Stat { source, .. }
            | OpError::Readlink { source, .. }
            | OpError::Readdir { source, .. }
            | OpError::Pipe(source)
            | OpError::Fork(source) => *source as i32,
            OpError::Read { source, .. }
            | OpError::Seek { source, .. }
            | OpError::Write { source, .. } => io(source),
            OpError::Creds(e) => e.errno() as i32,
        }
    }
}

/// A rustix call's error as the agent's errno type: the same value. nix's `Errno` is kept
/// for every step (rustix makes the file calls, nix the others) because its text names the
/// errno (`EACCES: Permission denied`), and that text is the reply's message.
pub(super) fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// The response to request `id`: its payload, or its error as errno and text.
pub fn reply(id: u64, result: Result<Payload, OpError>) -> Response {
    match result {
        Ok(payload) => Response::Ok { id, payload },
        Err(e) => Response::Err {
            id,
            errno: e.errno(),
            message: nsview_proto::chain(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_answers_the_kernels_errno_and_says_which_step() {
        let e = OpError::Open {
            path: "proc/sys/kernel/x".into(),
            source: Errno::EACCES,
        };
        assert_eq!(e.errno(), libc::EACCES);
        let Response::Err { errno, message, .. } = reply(3, Err(e)) else {
            panic!("not an error");
        };
        assert_eq!(errno, libc::EACCES);
        assert_eq!(message, "open proc/sys/kernel/x: EACCES: Permission denied");
        let write = OpError::Write {
            path: "proc/sys/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert_eq!(write.errno(), libc::EINVAL);
        let other = OpError::Read {
            path: "proc/sys/x".into(),
            source: std::io::Error::other("no errno"),
        };
        assert_eq!(other.errno(), libc::EIO);
        assert_eq!(
            OpError::Creds(CredsError::Seteuid(Errno::EPERM)).errno(),
            libc::EPERM
        );
    }

    #[test]
    fn a_childs_answer_keeps_its_errno_and_text() {
        let e = OpError::InNamespace {
            errno: libc::EPERM,
            message: "write proc/sys/kernel/ns_last_pid: EPERM: Operation not permitted".into(),
        };
        assert_eq!(
            reply(9, Err(e)),
            Response::Err {
                id: 9,
                errno: libc::EPERM,
                message: "write proc/sys/kernel/ns_last_pid: EPERM: Operation not permitted".into(),
            }
        );
    }
}
