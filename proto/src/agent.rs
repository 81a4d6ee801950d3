//! The protocol between the daemon and its agents: newline-delimited JSON over the agent's
//! stdin (requests) and stdout (responses), one response per request, in order.
//!
//! Closed and typed: unknown fields and unknown operations are rejected, every request
//! carries an id that its response repeats, and the first exchange checks [`VERSION`].
//! Paths are relative to the agent's private root (a tmpfs holding its own procfs and
//! sysfs), limited to [`ROOTS`] and checked by [`check_path`].

use serde::{Deserialize, Serialize};

/// Protocol version; an agent refuses a daemon that speaks another.
pub const VERSION: u32 = 4;
/// Longest line either side accepts (a request with a 4 KiB write, a reply with a listing
/// or a file, JSON-encoded).
pub use crate::framing::MAX_LINE;
pub use crate::framing::{ProtoError, decode, encode, read_line};
/// Largest write to a sysctl.
pub const MAX_WRITE: usize = 4096;
/// Largest file content an agent returns.
pub const MAX_READ: usize = 64 * 1024;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;
/// The only trees an agent serves, relative to its root: its `/proc/sys` and its
/// `/sys/devices/virtual/net` (the network devices of the namespace it joined).
pub const ROOTS: [&str; 2] = ["proc/sys", "sys/devices/virtual/net"];

/// Credentials a read, access check or write is performed with, as the caller's user
/// namespace (the agent's) numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Creds {
    /// The caller's fsuid.
    pub uid: u32,
    /// The caller's fsgid.
    pub gid: u32,
    /// The caller's effective capabilities (bit n = capability n).
    pub caps: u64,
}

/// Faults a test can ask of an agent started with `--allow-faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Reply with a line that is not JSON.
    Garbage,
    /// Reply with a line longer than [`MAX_LINE`].
    Oversized,
    /// Never reply.
    Hang,
    /// Reply `Allowed` after [`SLOW_FAULT`].
    Slow,
    /// Never reply, waiting on a child in the pid namespace that never answers (as a child
    /// the container stopped would).
    HangInNamespace,
}

/// How long a [`Fault::Slow`] reply takes.
pub const SLOW_FAULT: std::time::Duration = std::time::Duration::from_millis(500);

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The first request: the daemon's protocol version.
    Hello {
        /// [`VERSION`] of the daemon.
        version: u32,
    },
    /// Attributes of one entry.
    Lookup {
        /// Path below `/proc/sys` ("" is the directory itself).
        path: String,
    },
    /// Names, kinds and attributes of a directory's entries, in one round trip.
    Readdir {
        /// Path of the directory.
        path: String,
    },
    /// A whole file (at most [`MAX_READ`] bytes), read with `creds`.
    Read {
        /// Path of the file.
        path: String,
        /// Whose permissions apply.
        creds: Creds,
    },
    /// Whether `creds` may open the file for reading or writing (an open that is closed at
    /// once: the kernel's own permission check).
    Access {
        /// Path of the file.
        path: String,
        /// Writing rather than reading.
        write: bool,
        /// Whose permissions apply.
        creds: Creds,
    },
    /// Writes `data` (at most [`MAX_WRITE`] bytes) at file position `offset`, with `creds`,
    /// in one write(2): the kernel's handler decides what a position past 0 means (numbers
    /// ignore it, strings continue there).
    Write {
        /// Path of the file.
        path: String,
        /// The file position the write starts at.
        offset: u64,
        /// The bytes.
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
        /// Whose permissions apply.
        creds: Creds,
    },
    /// The target of a symbolic link.
    Readlink {
        /// Path of the link.
        path: String,
    },
    /// Test only: misbehave as asked.
    Fault {
        /// How.
        fault: Fault,
    },
}

/// A request: an id the response repeats, and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Chosen by the daemon, echoed in the response.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// Attributes of an entry as the agent sees them (owner in the agent's user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stat {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// For a file, in a lookup's answer: the length of its content now, if everyone may read
    /// it (else 0); `None` in a listing's, and for other kinds. The FUSE size of a `/proc/sys`
    /// file, where procfs says 0 (see the daemon's `fuse::nodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirItem {
    /// Its name.
    pub name: String,
    /// Its attributes.
    pub stat: Stat,
}

/// A successful result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// Answer to [`Op::Hello`]: the agent's version, its pid in its own pid namespace and
    /// the cookie of the network namespace it serves.
    Hello {
        /// [`VERSION`] of the agent.
        version: u32,
        /// Its pid as the joined pid namespace numbers it.
        pid: u32,
        /// `SO_NETNS_COOKIE` of its network namespace: unlike the namespace's inode, never
        /// handed out twice while the machine runs (`None` on kernels before 5.14).
        netns_cookie: Option<u64>,
    },
    /// Answer to [`Op::Lookup`].
    Entry(Stat),
    /// Answer to [`Op::Readdir`].
    Entries(Vec<DirItem>),
    /// Answer to [`Op::Read`].
    Data(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Answer to [`Op::Write`]: bytes the kernel took, and the file position after the write
    /// (handlers of numbers leave it where it was, handlers of strings move it on).
    Written {
        /// Bytes taken.
        n: usize,
        /// The position after.
        pos: u64,
    },
    /// Answer to [`Op::Readlink`].
    Link(String),
    /// Answer to [`Op::Access`].
    Allowed,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// It worked.
    Ok {
        /// The request's id.
        id: u64,
        /// The result.
        payload: Payload,
    },
    /// It failed with `errno` (0 when the request itself was unreadable: then `id` is 0).
    Err {
        /// The request's id.
        id: u64,
        /// The error number the operation failed with.
        errno: i32,
        /// What failed.
        message: String,
    },
}

/// Why a path of a request is refused (see [`check_path`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than [`MAX_PATH`].
    #[error("path too long")]
    TooLong,
    /// A NUL byte in it.
    #[error("NUL in path")]
    Nul,
    /// An empty, `.` or `..` component.
    #[error("bad path component {part:?} in {path:?}")]
    Component {
        /// The component.
        part: String,
        /// The whole path.
        path: String,
    },
    /// Neither one of [`ROOTS`] nor below one.
    #[error("{0:?} is outside what an agent serves")]
    Outside(String),
}

/// Whether `path` may be used: one of [`ROOTS`] or below one, with no `.`, `..` or empty
/// components and no NUL, at most [`MAX_PATH`] bytes.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(PathError::Component {
                part: part.to_owned(),
                path: path.to_owned(),
            });
        }
    }
    let served = ROOTS
        .iter()
        .any(|root| path == *root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/')));
    if !served {
        return Err(PathError::Outside(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn creds() -> impl Strategy<Value = Creds> {
        (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(uid, gid, caps)| Creds {
            uid,
            gid,
            caps,
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u32>().prop_map(|version| Op::Hello { version }),
            ".*".prop_map(|path| Op::Lookup { path }),
            ".*".prop_map(|path| Op::Readdir { path }),
            (".*", creds()).prop_map(|(path, creds)| Op::Read { path, creds }),
            (".*", any::<bool>(), creds()).prop_map(|(path, write, creds)| Op::Access {
                path,
                write,
                creds
            }),
            (
                ".*",
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
                creds()
            )
                .prop_map(|(path, offset, data, creds)| Op::Write {
                    path,
                    offset,
                    data,
                    creds
                }),
            ".*".prop_map(|path| Op::Readlink { path }),
            prop_oneof![
                Just(Fault::Garbage),
                Just(Fault::Oversized),
                Just(Fault::Hang),
                Just(Fault::Slow),
                Just(Fault::HangInNamespace)
            ]
            .prop_map(|fault| Op::Fault { fault }),
        ]
    }

    fn stat() -> impl Strategy<Value = Stat> {
        (
            prop_oneof![Just(Kind::Dir), Just(Kind::File), Just(Kind::Symlink)],
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<Option<u64>>(),
        )
            .prop_map(|(kind, mode, uid, gid, len)| Stat {
                kind,
                mode,
                uid,
                gid,
                len,
            })
    }

    fn response() -> impl Strategy<Value = Response> {
        let payload = prop_oneof![
            (any::<u32>(), any::<u32>(), any::<Option<u64>>()).prop_map(
                |(version, pid, netns_cookie)| Payload::Hello {
                    version,
                    pid,
                    netns_cookie
                }
            ),
            stat().prop_map(Payload::Entry),
            proptest::collection::vec(
                (".*", stat()).prop_map(|(name, stat)| DirItem { name, stat }),
                0..4
            )
            .prop_map(Payload::Entries),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Payload::Data),
            (any::<usize>(), any::<u64>()).prop_map(|(n, pos)| Payload::Written { n, pos }),
            ".*".prop_map(Payload::Link),
            Just(Payload::Allowed),
        ];
        prop_oneof![
            (any::<u64>(), payload).prop_map(|(id, payload)| Response::Ok { id, payload }),
            (any::<u64>(), any::<i32>(), ".*").prop_map(|(id, errno, message)| Response::Err {
                id,
                errno,
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(id: u64, op in op()) {
            let request = Request { id, op };
            let line = encode(&request);
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert_eq!(decode::<Request>(&line).unwrap(), request);
        }

        #[test]
        fn responses_round_trip(response in response()) {
            prop_assert_eq!(decode::<Response>(&encode(&response)).unwrap(), response);
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }

    #[test]
    fn lines_are_read_one_at_a_time_up_to_their_limit() {
        let mut input = std::io::Cursor::new(b"ab\n\nxyz".to_vec());
        assert_eq!(read_line(&mut input, 3).unwrap(), Some(b"ab".to_vec()));
        assert_eq!(read_line(&mut input, 3).unwrap(), Some(Vec::new()));
        assert_eq!(read_line(&mut input, 3).unwrap(), Some(b"xyz".to_vec()));
        assert_eq!(read_line(&mut input, 3).unwrap(), None);
        let mut long = std::io::Cursor::new(b"abcd\nnext\n".to_vec());
        let e = read_line(&mut long, 3).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "line longer than 3 bytes");
        let mut exact = std::io::Cursor::new(b"abc\nd\n".to_vec());
        assert_eq!(read_line(&mut exact, 3).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_line(&mut exact, 3).unwrap(), Some(b"d".to_vec()));
    }

    #[test]
    fn unknown_fields_and_operations_are_rejected() {
        assert!(decode::<Request>(br#"{"id":1,"op":{"lookup":{"path":"x","extra":1}}}"#).is_err());
        assert!(decode::<Request>(br#"{"id":1,"op":{"format_disk":{}}}"#).is_err());
        assert!(decode::<Request>(br#"{"id":1,"op":{"lookup":{"path":"x"}},"x":0}"#).is_err());
        assert!(decode::<Request>(br#"{"id":1,"op":{"lookup":{"path":"x"}}}"#).is_ok());
        assert!(matches!(
            decode::<Request>(&vec![b' '; MAX_LINE + 1]),
            Err(ProtoError::TooLong(MAX_LINE))
        ));
    }

    #[test]
    fn paths_stay_below_the_served_roots() {
        assert!(check_path("proc/sys").is_ok());
        assert!(check_path("proc/sys/net/ipv4/ip_forward").is_ok());
        assert!(check_path("sys/devices/virtual/net/lo/mtu").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "proc/sys/../../x",
            "proc/sys//x",
            "./x",
            "proc/sys/",
            "a\0b",
            "proc/1/environ",
            "proc/sysx",
            "sys/devices/virtual",
            "etc/shadow",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_path("proc/sys/"),
            Err(PathError::Component {
                part: String::new(),
                path: "proc/sys/".into(),
            })
        );
        assert_eq!(
            check_path("proc/1/environ"),
            Err(PathError::Outside("proc/1/environ".into()))
        );
    }
}
