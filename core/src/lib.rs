//! nsview's core: everything a view of `/proc` and `/sys` is made of, without FUSE. The node
//! table ([`vfs`]), the views that render files ([`views`]), who a caller is and whose view it
//! gets ([`caller`], [`container`], [`service`]), the cgroup reader for v1, v2 and hybrid hosts
//! ([`cgroup`]), the load-average sampler ([`loadavg`]), the registry of containers runtimes
//! registered ([`registry`]) and what the views need of agents ([`agents`]).
#![warn(missing_docs)]

pub mod agents;
pub mod caller;
pub mod cgroup;
pub mod container;
pub mod error;
pub mod loadavg;
pub mod mounts;
pub mod ns;
pub mod nsfs;
pub mod procfs;
pub mod registry;
pub mod service;
pub mod tasks;
pub mod vfs;
pub mod views;
