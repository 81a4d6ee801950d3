//! OCI runtime integration: the hook, patching a bundle's `config.json` to use it, and
//! reattaching containers' binds after a daemon restart.

pub mod devices;
pub mod hook;
mod inject;
pub mod patch;
pub mod reattach;

pub use inject::{BLOCK, Bind, DEFAULT_FILES, binds};
