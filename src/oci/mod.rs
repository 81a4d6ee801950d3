//! OCI runtime integration: the hook, patching a bundle's `config.json` to use it, and
//! reattaching containers' binds after a daemon restart.

mod beneath;
pub mod devices;
pub mod hook;
mod inject;
pub mod lxc;
pub mod patch;
pub mod reattach;

pub use inject::{BLOCK, Bind, DEFAULT_FILES, binds};
