//! nsview: a FUSE filesystem that gives every container a truthful view of `/proc` and `/sys`.
//!
//! Module map (see DESIGN.md): [`fuse`] is the only module that speaks FUSE; [`vfs`] holds the
//! node table; [`views`] render files; [`caller`] and [`container`] turn a request's TID into
//! whose view it gets; [`cgroup`] reads cgroups on v1, v2 and hybrid hosts; [`serve`] runs the
//! daemon.
#![warn(missing_docs)]

pub mod agent;
pub mod caller;
pub mod cgroup;
pub mod cli;
pub mod container;
pub mod control;
pub mod error;
pub mod fuse;
pub mod loadavg;
pub mod mounts;
pub mod nsfs;
pub mod oci;
pub mod procfs;
pub mod serve;
pub mod service;
pub mod stats;
pub mod tasks;
pub mod vfs;
pub mod views;
