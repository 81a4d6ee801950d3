//! The one error type of the daemon. Every layer returns `Result<_, Error>`; only the FUSE
//! layer (`src/fuse/` of the `nsview` crate, its `errno`) turns an `Error` into an errno.

use std::io;
use std::path::PathBuf;

/// What went wrong, one variant per failing step, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed (procfs, cgroupfs, host files).
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file was read but its content was not what the kernel writes there.
    #[error("parse {path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: String,
    },
    /// A system call on a task or namespace failed.
    #[error("{what} of pid {pid}")]
    Task {
        /// The step (`pidfd_open`, `NS_GET_TGID_FROM_PIDNS`, ...).
        what: &'static str,
        /// The task.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The task a request came from, or a container's init, is gone.
    #[error("task {0} is gone")]
    Gone(u32),
    /// The operation is not permitted on this node (a write to a read-only view, ...).
    #[error("access denied")]
    Access,
    /// No such node.
    #[error("no such node")]
    NotFound,
    /// A plain errno with nothing more to say (EISDIR on opening a directory, ...).
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Os(i32),
    /// A view panicked while rendering; the panic message is kept for the log.
    #[error("view panicked: {0}")]
    ViewPanicked(String),
    /// An agent broke its side of an exchange (EIO to the caller; the pool replaces it).
    #[error("agent: {0}")]
    Agent(AgentFailure),
}

/// How an agent failed an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentFailure {
    /// It did not answer the hello (it failed to join the namespaces, or speaks another
    /// protocol version).
    #[error("did not start")]
    NotStarted,
    /// The request could not be sent (it has gone, or stopped reading).
    #[error("request not taken")]
    Send,
    /// No whole answer within the deadline.
    #[error("no answer within the deadline")]
    Deadline,
    /// It closed its end before answering.
    #[error("hung up")]
    Hangup,
    /// The answer was not one protocol line (not JSON, over the line limit, or more than one
    /// line).
    #[error("malformed answer")]
    Malformed,
    /// The answer was another request's.
    #[error("answer to another request")]
    WrongId,
    /// The request waited a whole deadline for its turn (behind a stuck agent) and was never
    /// sent.
    #[error("no turn within the deadline")]
    Queued,
    /// No room: the set's queue is full, or every set of the full pool is busy.
    #[error("too many requests waiting")]
    Busy,
}

impl Error {
    /// Wraps a read failure of `path`.
    pub fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Read {
            path: path.into(),
            source,
        }
    }

    /// A parse failure of `path`.
    pub fn parse(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            what: what.into(),
        }
    }

    /// A failed system call on task `pid`.
    pub fn task(what: &'static str, pid: u32, source: io::Error) -> Self {
        Error::Task { what, pid, source }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
