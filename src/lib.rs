//! nsview: a FUSE filesystem that gives every container a truthful view of `/proc` and `/sys`.
//!
//! This crate is the daemon and the command line: [`fuse`] is the only module that speaks
//! FUSE; [`agent`] the pool of agents, one worker per namespace set; [`control`] the control
//! socket's server and [`ctl`] its command; [`serve`] runs the daemon. What it serves is
//! `nsview-core`'s (re-exported here: [`vfs`], [`views`], [`container`], [`cgroup`], ...), the
//! runtime integration is `nsview-oci` ([`oci`]), and the wire is `nsview-proto`.
#![warn(missing_docs)]

pub mod agent;
pub mod cli;
pub mod control;
pub mod ctl;
pub mod fuse;
pub mod keeper;
pub mod serve;
pub mod stats;

/// The runtime integration (hooks, `oci-patch`, reattach).
pub use nsview_oci as oci;

/// The core's modules, as this crate's own: the daemon is built on them.
pub use nsview_core::{
    caller, cgroup, container, error, loadavg, mounts, nsfs, procfs, registry, service, tasks, vfs,
    views,
};
