//! nsview's integration tests: one test binary (`cargo test --test integration`), one module
//! per area, all on the shared rig ([`rig`]), which therefore compiles once.
//!
//! Tests are named `MODULE::TEST`, or `MODULE::TOPIC::TEST` where a module is a directory
//! split by topic (`runc::binds::with_oci_patch_...`): `cargo test --test integration --
//! runc::` runs one module (libtest's filter is a substring of the full name, and a module's
//! path ends in `::`), `--skip runc::binds::NAME` leaves a test out.
//! `scripts/vm-suite` runs the modules one at a time in a VM.
//!
//! Every test builds what it needs (daemons, cgroups, containers, runtimes' state) under
//! names of its own, so tests of different modules run side by side in this one process.
//! What they do share is the machine's sysctls and module parameters: a test that changes
//! one on purpose holds [`rig::MachineValues`] exclusively, one that asserts the host's
//! values stay as they were holds it shared (through [`rig::HostFiles`]).

mod rig;

mod containerd;
mod control;
mod deploy;
mod docker;
mod emulation;
mod fidelity;
mod fuse_layer;
mod lxc;
mod oci_hook;
mod oci_patch;
mod podman;
mod resources;
mod restart;
mod rig_selftest;
mod runc;
mod serve;
mod sys_cpu;
mod sysctl;
mod sysctl_namespaces;
mod sysctl_safety;
mod uptime;
