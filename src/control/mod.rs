//! The control socket (`<runtime-dir>/nsview.sock`): runtimes and `nsview ctl` register
//! containers and read the daemon's status there, one JSON object per line each way.
//!
//! Mode 0600 and every peer checked with `SO_PEERCRED` (root only). Each connection has its
//! own thread and a read deadline, so a malformed line, a line over [`MAX_LINE`] bytes, an
//! unknown operation or field, or a client that connects and never writes costs only its own
//! connection. At most [`MAX_CLIENTS`] are served at once; a new client beyond takes the slot
//! of the one that has gone longest without a request in progress (idle and trickling
//! clients cannot keep hooks out), and waits only while every slot has a request running.

mod server;

pub use nsview_core::registry::{
    RegisterError, Registered, Registrations, is_pidns_init, valid_id,
};
pub use nsview_proto::control::{
    Connection, CtlData, CtlError, CtlRequest, CtlResponse, MAX_LINE, Named, Status, Upgrading,
    send as ctl_send, socket_path,
};
pub use server::{on_upgrade, start, status};

/// Most connections served at once.
pub const MAX_CLIENTS: usize = 16;
