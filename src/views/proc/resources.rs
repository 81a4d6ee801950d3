//! The reads behind the resource views: what a container's cgroup says, fed to the pure
//! renderers of the sibling modules. Each returns the whole file for container `c`; errors
//! make the caller serve the host's file instead (see `views::with_host_fallback`).

use crate::cgroup::PressureKind;
use crate::container::Container;
use crate::error::Result;
use crate::procfs::boottime_secs;
use crate::views::Env;
use crate::views::cpus::container_cpus;
use crate::views::proc::meminfo::{MemView, render_meminfo};
use crate::views::proc::stat::{StatView, container_cpu_lines, monotonic, render_stat};
use crate::views::proc::uptime::age_secs;
use crate::views::proc::{cpuinfo, disks};

/// `proc/meminfo`.
pub fn meminfo(env: &Env, c: &Container) -> Result<String> {
    let host = env.proc.read_host("meminfo")?;
    Ok(render_meminfo(&host, &mem_view(c)?))
}

fn mem_view(c: &Container) -> Result<MemView> {
    let g = &c.cgroups;
    Ok(MemView {
        limit: g.memory_limit()?,
        usage: g.memory_usage()?.unwrap_or(0),
        stat: g.memory_stat()?.unwrap_or_default(),
        swap_limit: g.swap_limit()?,
        swap_usage: g.swap_usage()?.unwrap_or(0),
    })
}

/// `proc/cpuinfo`.
pub fn cpuinfo(env: &Env, c: &Container) -> Result<String> {
    let host = env.proc.read_host("cpuinfo")?;
    Ok(cpuinfo::render_cpuinfo(&host, &container_cpus(env, c)?))
}

/// `proc/stat`, read by task `reader`.
pub fn stat(env: &Env, c: &std::sync::Arc<Container>, reader: u32) -> Result<String> {
    let host = env.proc.read_host("stat")?;
    let cpus = container_cpus(env, c)?;
    let usage = c.cgroups.cpu_usage()?.unwrap_or_default();
    let age = age_secs(boottime_secs(), c.start_ticks, env.ticks_per_sec);
    let mut lines = container_cpu_lines(&usage, &cpus, age, env.ticks_per_sec);
    {
        let mut last = c.last_stat.lock();
        monotonic(&last, &mut lines);
        last.clone_from(&lines);
    }
    let load = env.sampler.read(c.key(), c, reader)?;
    let view = StatView {
        cpus: lines,
        processes: u64::from(load.counts.max_ns_pid),
        procs_running: u64::from(load.counts.running),
        procs_blocked: u64::from(load.counts.blocked),
    };
    Ok(render_stat(&host, &view))
}

/// `proc/loadavg`, read by task `reader`.
pub fn loadavg(env: &Env, c: &std::sync::Arc<Container>, reader: u32) -> Result<String> {
    let load = env.sampler.read(c.key(), c, reader)?;
    let n = load.counts;
    Ok(crate::loadavg::render_loadavg(
        load.avgs,
        n.running,
        n.total,
        n.max_ns_pid,
    ))
}

/// `proc/diskstats`.
pub fn diskstats(env: &Env, c: &Container) -> Result<String> {
    let host = env.proc.read_host("diskstats")?;
    Ok(disks::render_diskstats(&host, &c.cgroups.io_stats()?))
}

/// `proc/swaps`.
pub fn swaps(env: &Env, c: &Container) -> Result<String> {
    let host = env.proc.read_host("swaps")?;
    let host_total = crate::views::proc::host_meminfo_bytes(env, "SwapTotal")?;
    let total = c
        .cgroups
        .swap_limit()?
        .map_or(host_total, |l| l.min(host_total));
    Ok(disks::render_swaps(
        &host,
        total,
        c.cgroups.swap_usage()?.unwrap_or(0),
    ))
}

/// `proc/slabinfo`: the memory cgroup's own (v1 `memory.kmem.slabinfo`) where the kernel
/// has it, else the host's.
pub fn slabinfo(env: &Env, c: &Container) -> Result<String> {
    match c.cgroups.kmem_slabinfo()? {
        Some(text) => Ok(text),
        None => env.proc.read_host("slabinfo"),
    }
}

/// `proc/pressure/<kind>`: the cgroup's (cgroup v2); on v1 placements the host's.
pub fn pressure(env: &Env, c: &Container, kind: PressureKind) -> Result<String> {
    match c.cgroups.pressure(kind)? {
        Some(text) => Ok(text),
        None => env.proc.read_host(&format!("pressure/{}", kind.name())),
    }
}
