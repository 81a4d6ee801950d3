//! OCI runtime integration: patching a bundle's `config.json` to use nsview's hook.

pub mod patch;
