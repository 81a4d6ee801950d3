//! Resource views end to end: what real programs print inside a limited container.
//!
//! The limited container: memory 256 MiB, cpuset `0`, CPU quota 50 ms per 100 ms (half a CPU),
//! in fresh `nsview-test-*` cgroups (v1 on this host), new pid, mount, uts, ipc, net and cgroup
//! namespaces, with nsview's `proc/{meminfo,cpuinfo,stat,uptime,loadavg,diskstats,vmstat,interrupts,softirqs,swaps}` and
//! `sys/devices/system/cpu` bound over the container's own.
//!
//! By topic: [`memory`] (meminfo, free, vmstat's gauges, swap), [`cpu`] (CPU counts, stat,
//! interrupt rates), [`load`] (loadavg, PSI files and triggers), [`io`] (diskstats, block
//! stats, iostat, vmstat's and sar's IO), [`cgroups`] (which cgroup's limits a reader sees,
//! as cgroups nest, move and vanish) and [`daemon`] (the daemon's own descriptors, memory
//! and refused writes).

mod cgroups;
mod cpu;
mod daemon;
mod io;
mod load;
mod memory;

use crate::rig::{Container, ContainerBuilder, Daemon, Limits};

const MIB: u64 = 1024 * 1024;

/// What the tests bind from the daemon into each container.
const BINDS: &[&str] = &[
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/diskstats",
    "proc/vmstat",
    "proc/interrupts",
    "proc/softirqs",
    "proc/swaps",
    "sys/devices/system/cpu",
];

/// Debian's python, which has psutil (a pyenv python may come first on PATH).
const PYTHON: &str = "/usr/bin/python3";

fn limited() -> Limits {
    Limits {
        memory_bytes: Some(256 * MIB),
        cpuset_cpus: Some("0".into()),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(100_000),
        swap_bytes: None,
    }
}

fn container(daemon: &Daemon, limits: Limits) -> Container {
    ContainerBuilder::new()
        .limits(limits)
        .bind_from(daemon, BINDS)
        .start()
}

/// A CPU hog inside a container; the nsenter that started it is killed and reaped on drop
/// (the hog itself dies with the container's pid namespace).
struct Hog(std::process::Child);

impl Hog {
    fn start(c: &Container) -> Hog {
        Hog(c.spawn(&["/bin/sh", "-c", "while :; do :; done"]))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// stdout of `script` inside `c`, which must succeed.
fn run(c: &Container, script: &str) -> String {
    let out = c.sh(script);
    assert!(out.status.success(), "{script}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// The value of `key` (e.g. `MemTotal`) in meminfo text, in bytes.
fn meminfo_bytes(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
