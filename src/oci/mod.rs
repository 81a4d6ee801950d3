//! OCI runtime integration: the hook, and patching a bundle's `config.json` to use it.

pub mod hook;
pub mod patch;
