//! `proc/uptime`: the container's uptime and idle time.
//!
//! - first field: the boot clock the container's processes live by. Where its init is in a
//!   time namespace of its own, that namespace's boot clock, as the kernel's file says there;
//!   otherwise the host's ([`Clock::Boot`], the default). The kernel counts every start time
//!   in `/proc/<pid>/stat` (and `btime`) on that same clock, and `ps` computes a process's
//!   elapsed time as uptime − start time: any smaller uptime would make `ps -o etime` wrap
//!   (`441077233-23:23:44`) for every process started after the container's init. A
//!   container gets its own uptime from a time namespace (`nsview oci-patch
//!   --time-namespace`, runc 1.2+). [`Clock::Age`] (`serve --uptime age`) serves the age of
//!   the container's init instead, as LXCFS and sysbox-fs do, with their broken `ps`.
//! - second field: idle seconds = uptime × CPUs the container may use − CPU time its cgroup
//!   used (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`; where that cgroup is a hierarchy's
//!   root, which accounts for the host, its processes' own times), clamped at 0 and never
//!   below the value served before (the CPU count or the accounting may change under a
//!   running container). The CPUs count as idle before the container ran on them.
//!
//! `proc/stat`'s CPU lines and the counters tools divide by the uptime (see `counters`) go by
//! the same clock, so rates since boot come out right whichever it is.
//!
//! Host callers (and host scopes: tasks of a cgroup in the daemon's pid namespace) get the
//! host's file unchanged.

use std::str::FromStr;

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

/// Which clock a container without a time namespace of its own is up by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The host's boot clock, which its processes' start times count on: `ps` agrees.
    #[default]
    Boot,
    /// The age of its init (LXCFS's uptime): `ps -o etime` inside wraps.
    Age,
}

impl Clock {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Clock::Boot => "boot",
            Clock::Age => "age",
        }
    }
}

impl FromStr for Clock {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "boot" => Ok(Clock::Boot),
            "age" => Ok(Clock::Age),
            other => Err(format!(
                "unknown uptime clock {other:?} (expected boot or age)"
            )),
        }
    }
}

/// The uptime of container `c` now, in seconds: its time namespace's boot clock where it has
/// one, else by `clock`.
pub fn uptime_secs(clock: Clock, c: &Container, ticks_per_sec: u64) -> f64 {
    let now = boottime_secs();
    match (c.boottime_offset, clock) {
        (Some(offset), _) => (now + offset).max(0.0),
        (None, Clock::Boot) => now,
        (None, Clock::Age) => age_secs(now, c.start_ticks, ticks_per_sec),
    }
}

/// `proc/uptime` for a container; a host scope gets the host's file (its age is the host's).
pub fn read(env: &Env, c: &Container) -> Result<String> {
    if c.is_host_scope() {
        return env.host("uptime");
    }
    let uptime = env.uptime_of(c);
    let cpus = container_cpus(env, c)?.len();
    let busy = c.cpu_usage_ns()?.unwrap_or(0);
    let idle = c.monotonic_idle_cs(idle_cs(uptime, cpus, busy));
    Ok(render_uptime(uptime, idle as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_parse_by_name_and_refuse_others() {
        for clock in [Clock::Boot, Clock::Age] {
            assert_eq!(clock.name().parse::<Clock>(), Ok(clock));
        }
        assert_eq!(Clock::default(), Clock::Boot);
        assert!("host".parse::<Clock>().unwrap_err().contains("boot or age"));
    }

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
