//! Serving a FUSE connection another daemon initialized (after a crash or an upgrade, the
//! descriptor comes from the keeper).
//!
//! fuser's `Session` insists on reading the kernel's INIT first, and the kernel sends INIT
//! once per connection. So the session is made on a stand-in: a socket that hands it an INIT
//! request of our own, whose reply goes nowhere. Once the handshake is done, the session's
//! descriptor is replaced, in place, by the connection's: the session then serves it as its
//! own, and the filesystem above (`Fs`) is the same code either way. The kernel keeps what it
//! negotiated with the first daemon (the same binary's settings, or an older version's).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use fuser::{Config, Session, SessionACL};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use super::Fs;

/// FUSE_INIT's opcode.
const FUSE_INIT: u32 = 26;
/// `fuse_in_header`'s size.
const IN_HEADER: usize = 40;
/// `fuse_init_in`'s size (protocol 7.36 and later).
const INIT_IN: usize = 64;
/// `FUSE_NOTIFY_RESEND` (Linux 6.9): the kernel queues again every request a daemon had
/// read and not answered, with the top bit of its id set.
const FUSE_NOTIFY_RESEND: i32 = 7;

/// A session serving `fd`, a `/dev/fuse` descriptor of a connection already initialized.
pub fn adopt(fs: Fs, fd: OwnedFd, config: Config) -> io::Result<Session<Fs>> {
    let (ours, stand_in) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::unistd::write(&ours, &init_request())?;
    let session = Session::from_fd(fs, stand_in, SessionACL::All, config)?;
    drop(ours);
    let slot = session.as_fd().as_raw_fd();
    // SAFETY: `slot` is the session's own descriptor, which no thread uses now (its
    // handshake is over and it serves nothing yet); dup3 closes the stand-in socket and
    // makes `slot` name the connection instead, atomically, so the session goes on owning
    // exactly one descriptor, now the connection's. `fd` stays open until dup3 returns.
    if unsafe { libc::dup3(fd.as_raw_fd(), slot, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(session)
}

/// Asks the kernel to queue again the requests a dead predecessor had read but not
/// answered (`FUSE_NOTIFY_RESEND`): `Ok(false)` on a kernel without it (before 6.9), where
/// those requests stay unanswered until their callers are killed.
pub fn resend(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // fuse_out_header: its length, the notification's code (in the error field) and
    // unique 0, which marks a notification.
    let mut header = Vec::with_capacity(16);
    header.extend_from_slice(&16u32.to_ne_bytes());
    header.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    header.extend_from_slice(&0u64.to_ne_bytes());
    match nix::unistd::write(fd, &header) {
        Ok(_) => Ok(true),
        Err(nix::Error::EINVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The INIT request the stand-in hands the session: protocol 7.36, no capabilities offered.
fn init_request() -> Vec<u8> {
    let len = (IN_HEADER + INIT_IN) as u32;
    let mut req = Vec::with_capacity(len as usize);
    // fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen + padding.
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&FUSE_INIT.to_ne_bytes());
    req.extend_from_slice(&1u64.to_ne_bytes());
    req.extend_from_slice(&0u64.to_ne_bytes());
    req.extend_from_slice(&[0u8; 16]);
    // fuse_init_in: major, minor, max_readahead, flags, flags2, unused[11].
    req.extend_from_slice(&7u32.to_ne_bytes());
    req.extend_from_slice(&36u32.to_ne_bytes());
    req.extend_from_slice(&(128u32 * 1024).to_ne_bytes());
    req.resize(len as usize, 0);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_init_is_one_whole_request() {
        let req = init_request();
        assert_eq!(req.len(), IN_HEADER + INIT_IN);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize,
            req.len()
        );
        assert_eq!(u32::from_ne_bytes(req[4..8].try_into().unwrap()), FUSE_INIT);
        assert_eq!(u32::from_ne_bytes(req[40..44].try_into().unwrap()), 7);
    }
}
