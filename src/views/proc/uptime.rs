//! `proc/uptime`: the container's age and idle time.
//!
//! - first field: seconds since the init of the caller's pid namespace started
//!   (`CLOCK_BOOTTIME` now minus field 22 of `/proc/<init>/stat`), or, where the init is in a
//!   time namespace of its own, the boot clock there, as the kernel's file says: the kernel
//!   shifts every start time in `/proc/<pid>/stat` and `btime` by the same offset, so `ps`
//!   (elapsed time = uptime − start time) agrees with it. Without a time namespace, start
//!   times stay the host's and `ps -o etime` inside is wrong (LXCFS's behaviour too): give
//!   the container one (`nsview oci-patch --time-namespace`, runc 1.2+).
//! - second field: idle seconds = age × CPUs the container may use − CPU time its cgroup used
//!   (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`; where that cgroup is a hierarchy's root,
//!   which accounts for the host, its processes' own times), clamped at 0 and never below the
//!   value served before (the CPU count or the accounting may change under a running
//!   container).
//!
//! Host callers (and host scopes: tasks of a cgroup in the daemon's pid namespace) get the
//! host's file unchanged.

use crate::container::Container;
use crate::error::Result;
use crate::procfs::boottime_secs;
use crate::views::Env;
use crate::views::cpus::container_cpus;

/// The file's text, as the kernel formats it: two fields with two decimals.
pub fn render_uptime(uptime_secs: f64, idle_secs: f64) -> String {
    format!("{:.2} {:.2}\n", uptime_secs.max(0.0), idle_secs.max(0.0))
}

/// Idle time in hundredths of a second for a container `age_secs` old that may use `cpus`
/// CPUs and has used `busy_ns` of CPU time; saturates at 0.
pub fn idle_cs(age_secs: f64, cpus: usize, busy_ns: u64) -> u64 {
    let capacity_cs = (age_secs.max(0.0) * cpus as f64 * 100.0) as u64;
    capacity_cs.saturating_sub(busy_ns / 10_000_000)
}

/// Age of a task started `start_ticks` after boot, at boot-clock time `now_secs`.
pub fn age_secs(now_secs: f64, start_ticks: u64, ticks_per_sec: u64) -> f64 {
    (now_secs - start_ticks as f64 / ticks_per_sec.max(1) as f64).max(0.0)
}

/// `proc/uptime` for a container; a host scope gets the host's file (its age is the host's).
pub fn read(env: &Env, c: &Container) -> Result<String> {
    if c.is_host_scope() {
        return env.host("uptime");
    }
    let age = age_secs(boottime_secs(), c.start_ticks, env.ticks_per_sec);
    let cpus = container_cpus(env, c)?.len();
    let busy = c.cpu_usage_ns()?.unwrap_or(0);
    let idle = c.monotonic_idle_cs(idle_cs(age, cpus, busy));
    // In a time namespace of its own, the kernel's boot clock there (what `ps` subtracts the
    // start times it shifts from); the idle time stays the container's own.
    let uptime = c
        .boottime_offset
        .map_or(age, |offset| boottime_secs() + offset);
    Ok(render_uptime(uptime, idle as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_kernel() {
        assert_eq!(render_uptime(2.345, 4.0), "2.35 4.00\n");
        assert_eq!(render_uptime(12345.678, 0.004), "12345.68 0.00\n");
        assert_eq!(render_uptime(-1.0, -3.0), "0.00 0.00\n");
    }

    #[test]
    fn idle_is_capacity_minus_busy_and_never_negative() {
        // 10 s on 2 CPUs = 20 CPU-seconds; 5 s busy leaves 15 s idle.
        assert_eq!(idle_cs(10.0, 2, 5_000_000_000), 1500);
        assert_eq!(idle_cs(1.0, 1, 9_000_000_000), 0);
        assert_eq!(idle_cs(0.0, 4, u64::MAX), 0);
    }

    #[test]
    fn age_counts_from_the_init_start() {
        assert_eq!(age_secs(100.0, 5000, 100), 50.0);
        assert_eq!(age_secs(10.0, 5000, 100), 0.0);
        assert_eq!(age_secs(10.0, 5000, 0), 0.0);
    }
}
