//! Runtime integration, run as short-lived processes of its own (never inside the daemon):
//! the OCI hook, the LXC hook, patching a bundle's `config.json` to use the hook, and
//! reattaching containers' binds after a daemon restart. It talks to the daemon over the
//! control socket only, and knows nothing of FUSE.
#![warn(missing_docs)]

mod beneath;
pub mod cli;
pub mod devices;
pub mod hook;
mod inject;
pub mod lxc;
pub mod patch;
pub mod reattach;

pub use inject::{BLOCK, Bind, DEFAULT_FILES, binds};
