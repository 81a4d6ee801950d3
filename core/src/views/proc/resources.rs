//! The reads behind the resource views: what a container's cgroup says, fed to the pure
//! renderers of the sibling modules. Each returns the whole file for container `c`; errors
//! make the caller serve the host's file instead (see `views::with_host_fallback`).

use crate::cgroup::PressureKind;
use crate::container::Container;
use crate::error::Result;
use crate::procfs::boottime_secs;
use crate::views::Env;
use crate::views::cpus::container_cpus;
use crate::views::proc::counters::{self, SCALED_STAT_LINES, Scaled};
use crate::views::proc::meminfo::{MemView, render_meminfo};
use crate::views::proc::stat::{StatView, container_cpu_lines, monotonic, render_stat, sum};
use crate::views::proc::{cpuinfo, disks, vmstat};

/// `proc/meminfo`.
pub fn meminfo(env: &Env, c: &Container) -> Result<String> {
    let host = env.host("meminfo")?;
    // Swap is only worth reading where the host has some: without, every swap line is 0.
    let host_swap = host
        .lines()
        .find(|l| l.starts_with("SwapTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|v| v != "0");
    let mem = c.cgroups.memory(host_swap)?.unwrap_or_else(|| MemView {
        limit: None,
        ..MemView::default()
    });
    Ok(render_meminfo(&host, &mem))
}

/// `proc/cpuinfo`.
pub fn cpuinfo(env: &Env, c: &Container) -> Result<String> {
    let host = env.host("cpuinfo")?;
    Ok(cpuinfo::render_cpuinfo(&host, &container_cpus(env, c)?))
}

/// `proc/stat`, read by task `reader`.
pub fn stat(env: &Env, c: &std::sync::Arc<Container>, reader: u32) -> Result<String> {
    let host = env.host("stat")?;
    let cpus = container_cpus(env, c)?;
    let usage = c.cpu_usage()?.unwrap_or_default();
    let uptime = env.uptime_of(c);
    let mut lines = container_cpu_lines(&usage, &cpus, uptime, env.ticks_per_sec);
    let mut total = [sum(&lines)];
    {
        let mut last = c.last_stat.lock();
        monotonic(&last.0, &mut lines);
        monotonic(&[last.1], &mut total);
        last.0.clone_from(&lines);
        last.1 = total[0];
    }
    let load = env.sampler.read(c.key(), c, reader)?;
    let mut baselines = c.baselines.lock();
    let scaled = baselines.stat.get_or_insert_with(|| {
        let lines = host.lines().filter(|l| {
            let key = l.split_whitespace().next().unwrap_or("");
            SCALED_STAT_LINES.contains(&key)
        });
        let counters: Vec<_> = lines.flat_map(counters::stat_line_counters).collect();
        let host_up = boottime_secs();
        Scaled::new(
            uptime,
            host_up,
            counters.iter().map(|(k, v)| (k.as_str(), *v)),
        )
    });
    let view = StatView {
        total: total[0],
        cpus: lines,
        ids: cpus.to_vec(),
        btime_shift: c.boottime_offset.map_or(0, |o| -(o.round() as i64)),
        processes: u64::from(load.counts.max_ns_pid),
        procs_running: u64::from(load.counts.running),
        procs_blocked: u64::from(load.counts.blocked),
    };
    Ok(render_stat(&host, &view, scaled))
}

/// `proc/interrupts` (`softirqs` false) or `proc/softirqs`: the columns of the container's
/// CPUs, scaled to its uptime.
pub fn per_cpu_table(env: &Env, c: &Container, softirqs: bool) -> Result<String> {
    let file = if softirqs { "softirqs" } else { "interrupts" };
    let host = env.host(file)?;
    let cpus = container_cpus(env, c)?;
    let mut baselines = c.baselines.lock();
    let slot = if softirqs {
        &mut baselines.softirqs
    } else {
        &mut baselines.interrupts
    };
    let scaled = slot.get_or_insert_with(|| {
        let uptime = env.uptime_of(c);
        let counters = counters::table_counters(&host);
        Scaled::new(
            uptime,
            boottime_secs(),
            counters.iter().map(|(k, v)| (k.as_str(), *v)),
        )
    });
    Ok(counters::render_table(&host, &cpus, scaled))
}

/// `proc/vmstat`.
pub fn vmstat(env: &Env, c: &Container) -> Result<String> {
    let host = env.host("vmstat")?;
    let mut own = c.cgroups.memory_events()?.unwrap_or_default();
    // The gauges meminfo shows too, from the container's meminfo: the two files agree.
    let page_kb = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4, |bytes| (bytes / 1024).max(1) as u64);
    // Without the container's meminfo, its gauges stay the host's, as before; the counters
    // are no reason to fall back.
    if let Ok(text) = meminfo(env, c) {
        own.extend(vmstat::gauges(&text, page_kb));
    }
    // Block IO as the cgroup accounts it (as `proc/diskstats` shows it); the host's, scaled,
    // only without any accounting: one source for the container's life, so it never goes
    // back.
    if c.cgroups.has_io_accounting() {
        let io = c.cgroups.io_stats()?;
        let kib = |f: fn(&crate::cgroup::IoStat) -> u64| io.iter().map(f).sum::<u64>() / 1024;
        own.push(("pgpgin".to_string(), kib(|s| s.read_bytes)));
        own.push(("pgpgout".to_string(), kib(|s| s.write_bytes)));
    }
    let mut baselines = c.baselines.lock();
    let scaled = baselines.vmstat.get_or_insert_with(|| {
        let uptime = env.uptime_of(c);
        Scaled::new(uptime, boottime_secs(), vmstat::counters(&host))
    });
    Ok(vmstat::render_vmstat(&host, &own, scaled))
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
    let host = env.host("diskstats")?;
    Ok(disks::render_diskstats(&host, &c.cgroups.io_stats()?))
}

/// `proc/swaps`.
pub fn swaps(env: &Env, c: &Container) -> Result<String> {
    let host = env.host("swaps")?;
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
        None => env.host("slabinfo"),
    }
}

/// The kernel file behind `proc/pressure/<kind>` for `subject`: its cgroup's (cgroup v2),
/// else the host's. A trigger written to the view is made there.
pub fn pressure_file(
    env: &Env,
    subject: &crate::views::Subject,
    kind: PressureKind,
) -> std::path::PathBuf {
    let cgroup = match subject {
        crate::views::Subject::Container(c) => c.cgroups.pressure_file(kind),
        crate::views::Subject::Host => None,
    };
    cgroup.unwrap_or_else(|| env.proc.path().join(format!("pressure/{}", kind.name())))
}

/// `proc/pressure/<kind>`: the cgroup's (cgroup v2); on v1 placements the host's.
pub fn pressure(env: &Env, c: &Container, kind: PressureKind) -> Result<String> {
    match c.cgroups.pressure(kind)? {
        Some(text) => Ok(text),
        None => env.host(&format!("pressure/{}", kind.name())),
    }
}
