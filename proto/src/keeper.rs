//! The keeper protocol: what `nsview serve` and `nsview keeper` say on the keeper's socket.
//!
//! The keeper holds a descriptor of the daemon's `/dev/fuse` connection so that the kernel
//! side of the mount outlives a daemon that crashes: requests wait instead of failing, and
//! the next daemon takes the descriptor back ([`KeeperRequest::Take`]). One message is one
//! `SOCK_SEQPACKET` packet of JSON; a descriptor travels beside it (`SCM_RIGHTS`).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest message either side sends.
pub const MAX_MESSAGE: usize = 4096;

/// A FUSE connection as the keeper holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The mount's device (major, minor), as mountinfo shows it: a mount of another
    /// connection at the same place is not this one.
    pub dev: (u32, u32),
    /// How many daemons served it before the one that holds it now (0: the one that
    /// mounted it). File handles carry it, so that no daemon takes a predecessor's handle
    /// for one of its own.
    pub generation: u32,
}

/// What a daemon asks of the keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeeperRequest {
    /// Hand over the connection held for `mountpoint`, if any: the answer is
    /// [`KeeperReply::Held`] with the descriptor, its generation already counted up for the
    /// asker, or [`KeeperReply::Empty`].
    Take {
        /// The asker's mountpoint.
        mountpoint: PathBuf,
    },
    /// Hold the descriptor sent with this message, for this connection (replacing any held).
    Hold {
        /// What it is.
        connection: Connection,
    },
    /// Close the held descriptor: the daemon unmounts on purpose.
    Release,
    /// Whether the connection of `mountpoint` is held: [`KeeperReply::Ok`] or
    /// [`KeeperReply::Empty`].
    Check {
        /// The asker's mountpoint.
        mountpoint: PathBuf,
    },
}

/// The keeper's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeeperReply {
    /// The held connection, its descriptor sent with this message.
    Held {
        /// What it is.
        connection: Connection,
    },
    /// Nothing is held for that mountpoint.
    Empty,
    /// Done.
    Ok,
    /// Not done, and why.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A message that could not be sent or taken.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The socket failed.
    #[error("keeper socket")]
    Socket(#[source] nix::Error),
    /// The other side hung up.
    #[error("the keeper's socket was closed")]
    Closed,
    /// Not a message of this protocol.
    #[error("malformed keeper message")]
    Malformed(#[source] serde_json::Error),
    /// Longer than [`MAX_MESSAGE`].
    #[error("keeper message longer than {MAX_MESSAGE} bytes")]
    TooLong,
}

/// Sends `message` on `socket`, with `fd` beside it if given.
pub fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), KeeperError> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let bytes = serde_json::to_vec(message).map_err(KeeperError::Malformed)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(KeeperError::TooLong);
    }
    let iov = [std::io::IoSlice::new(&bytes)];
    let fds: Vec<RawFd> = fd.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
    .map_err(KeeperError::Socket)
}

/// Receives one message from `socket`, with the descriptor sent beside it, if any (more than
/// one are closed).
pub fn recv<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
) -> Result<(T, Option<OwnedFd>), KeeperError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (len, mut fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::Error::EINTR) => continue,
                other => break other.map_err(KeeperError::Socket)?,
            }
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(KeeperError::Socket)? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this process for
                // this message; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    if len == 0 && fds.is_empty() {
        return Err(KeeperError::Closed);
    }
    if len > MAX_MESSAGE {
        return Err(KeeperError::TooLong);
    }
    let message = serde_json::from_slice(&buf[..len]).map_err(KeeperError::Malformed)?;
    let fd = if fds.len() == 1 { fds.pop() } else { None };
    Ok((message, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_message_and_its_descriptor_arrive_together() {
        let (a, b) = pair();
        let file = tempfile::tempfile().unwrap();
        let connection = Connection {
            mountpoint: "/var/lib/nsview".into(),
            dev: (0, 55),
            generation: 3,
        };
        let hold = KeeperRequest::Hold {
            connection: connection.clone(),
        };
        send(a.as_fd(), &hold, Some(file.as_fd())).unwrap();
        let (got, fd) = recv::<KeeperRequest>(b.as_fd()).unwrap();
        assert_eq!(got, hold);
        let fd = fd.expect("a descriptor");
        let ours = rustix::fs::fstat(&file).unwrap();
        let theirs = rustix::fs::fstat(&fd).unwrap();
        assert_eq!((ours.st_dev, ours.st_ino), (theirs.st_dev, theirs.st_ino));

        send(b.as_fd(), &KeeperReply::Empty, None).unwrap();
        let (reply, fd) = recv::<KeeperReply>(a.as_fd()).unwrap();
        assert_eq!(reply, KeeperReply::Empty);
        assert!(fd.is_none());
    }

    #[test]
    fn hangups_and_garbage_are_errors() {
        let (a, b) = pair();
        nix::unistd::write(&a, b"{\"op\":\"format_disk\"}").unwrap();
        assert!(matches!(
            recv::<KeeperRequest>(b.as_fd()),
            Err(KeeperError::Malformed(_))
        ));
        drop(a);
        assert!(matches!(
            recv::<KeeperRequest>(b.as_fd()),
            Err(KeeperError::Closed)
        ));
    }

    #[test]
    fn the_wire_form_is_plain_json() {
        let take = KeeperRequest::Take {
            mountpoint: "/m".into(),
        };
        assert_eq!(
            serde_json::to_string(&take).unwrap(),
            r#"{"op":"take","mountpoint":"/m"}"#
        );
    }
}
