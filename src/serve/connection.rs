//! The daemon's FUSE connection: a fresh mount, or the one a predecessor served, taken back
//! from the keeper (after a crash or an upgrade), with what must carry over: the subtree
//! inodes the kernel still names (the journal), handle ids that do not collide (the
//! generation), and the requests the predecessor had read but not answered (resent).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::Session;
use log::{info, warn};
use nsview_proto::control::ConnectionStatus;
use nsview_proto::keeper::Connection;

use crate::fuse::{Fs, adopt};
use crate::keeper::Client;
use crate::service::Service;

/// The journal of subtree inodes in the runtime directory.
fn journal_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("inodes")
}

/// A connection the keeper held for `mountpoint`, still mounted there: the one to serve.
/// One whose mount is gone (unmounted from outside) is dropped, and the keeper told.
pub fn take_back(keeper: &Client, mountpoint: &Path) -> Option<(OwnedFd, Connection)> {
    let (fd, connection) = match keeper.take(mountpoint) {
        Ok(Some(held)) => held,
        Ok(None) => return None,
        Err(e) => {
            warn!("keeper: cannot take the connection back: {e}");
            return None;
        }
    };
    if !crate::keeper::is_dev_fuse(fd.as_fd()) {
        warn!("the keeper handed over a descriptor that is not /dev/fuse: mounting anew");
    } else if super::mounted_at(mountpoint, connection.dev) {
        return Some((fd, connection));
    }
    warn!(
        "the keeper held the connection of device {}:{}, no longer mounted at {}: mounting anew",
        connection.dev.0,
        connection.dev.1,
        mountpoint.display()
    );
    if let Err(e) = keeper.release() {
        warn!("keeper: {e}");
    }
    None
}

/// What [`serve_connection`] made.
pub struct Served {
    /// The session, not yet running.
    pub session: Session<Fs>,
    /// The connection, as the keeper holds it.
    pub connection: Connection,
}

/// The session serving `taken` (a predecessor's connection) or, without one, a fresh mount
/// at `mountpoint` (`mount` makes it), with the journal of subtree inodes begun and the
/// keeper (if any) holding the connection.
pub fn serve_connection(
    service: &Arc<Service>,
    agents: &Arc<crate::agent::Pool>,
    runtime_dir: &Path,
    taken: Option<(OwnedFd, Connection)>,
    mount: impl FnOnce(Fs) -> std::io::Result<(Session<Fs>, (u32, u32))>,
    config: fuser::Config,
) -> std::io::Result<Served> {
    let journal = journal_path(runtime_dir);
    let mut status = ConnectionStatus::default();
    let served = match taken {
        Some((fd, connection)) => {
            match service.vfs.journal(&journal, true) {
                Ok(n) => status.inodes_inherited = n as u64,
                Err(e) => warn!("inode journal {}: {e}", journal.display()),
            }
            let fs = Fs::new(service.clone(), agents.clone(), connection.generation);
            let session = adopt::adopt(fs, fd, config)?;
            // Requests the predecessor had read: queued again for this daemon.
            status.resend = match adopt::resend(session.as_fd()) {
                Ok(true) => "resent".into(),
                Ok(false) => {
                    warn!(
                        "this kernel has no FUSE_NOTIFY_RESEND (Linux 6.9+): requests the \
                         previous daemon had read stay unanswered until their callers are killed"
                    );
                    "unsupported".into()
                }
                Err(e) => {
                    warn!("FUSE_NOTIFY_RESEND: {e}");
                    format!("failed: {e}")
                }
            };
            status.generation = connection.generation;
            info!(
                "took over the FUSE connection of {} (generation {}, {} subtree inodes)",
                connection.mountpoint.display(),
                connection.generation,
                status.inodes_inherited
            );
            Served {
                session,
                connection,
            }
        }
        None => {
            if let Err(e) = service.vfs.journal(&journal, false) {
                warn!("inode journal {}: {e}", journal.display());
            }
            let fs = Fs::new(service.clone(), agents.clone(), 0);
            let (session, dev) = mount(fs)?;
            let connection = Connection {
                mountpoint: PathBuf::new(),
                dev,
                generation: 0,
            };
            Served {
                session,
                connection,
            }
        }
    };
    crate::stats::set_connection(status);
    Ok(served)
}

/// Has `keeper` hold the connection of `served` (mounted at `mountpoint`) and watch over it;
/// `false` when it cannot (the daemon then serves without one: a crash ends the connection).
pub fn keep(
    keeper: Arc<Client>,
    served: &mut Served,
    mountpoint: &Path,
    exe: PathBuf,
    timeout: f64,
) -> bool {
    served.connection.mountpoint = mountpoint.to_path_buf();
    let fd = match served.session.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            warn!("cannot copy the FUSE descriptor for the keeper: {e}");
            return false;
        }
    };
    if let Err(e) = keeper.hold(fd.as_fd(), &served.connection) {
        warn!("the keeper cannot hold the connection ({e}): a crash will end it");
        return false;
    }
    if let Err(e) = keeper.watch(fd, served.connection.clone(), exe, timeout) {
        warn!("cannot watch the keeper: {e}");
    }
    true
}
