//! The one place where an error becomes an errno, and who a request comes from.

use fuser::Request;
use log::{debug, error};

use crate::error::Error;
use crate::views::Requester;

/// The top bit of a request's id when the kernel sends it again (`FUSE_NOTIFY_RESEND`): a
/// request a dead predecessor had read but not answered.
const RESENT: u64 = 1 << 63;

/// The requesting task and its ids, as the kernel gave them.
pub(super) fn requester(req: &Request) -> Requester {
    if req.unique().0 & RESENT != 0 {
        crate::stats::resent();
    }
    Requester {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
        ns: None,
    }
}

/// The one place where an error becomes an errno: raw OS errors pass through unchanged, the
/// crate's own kinds map to their errno, anything else is EIO. Expected misses are logged at
/// debug, the rest at error.
pub fn errno(e: &Error) -> fuser::Errno {
    let code = match e {
        Error::Read { source, .. } | Error::Task { source, .. } => {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        Error::Os(code) => *code,
        Error::Gone(_) => libc::ESRCH,
        Error::Access => libc::EACCES,
        Error::NotFound => libc::ENOENT,
        Error::Parse { .. } | Error::ViewPanicked(_) | Error::Agent(_) => libc::EIO,
    };
    match e {
        Error::NotFound | Error::Access | Error::Os(_) => debug!("request failed: {e}"),
        _ => error!("request failed: {e}"),
    }
    crate::stats::error(code);
    fuser::Errno::from_i32(code)
}
