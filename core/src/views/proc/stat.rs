//! `proc/stat` for a container.
//!
//! - `cpuN`: one line per CPU the container sees, by the host's number, in
//!   clock ticks. user/system come from the cgroup's accounting: per host CPU where the kernel
//!   splits it (v1 `cpuacct.usage_all`), plus an even share of what the cgroup ran on host
//!   CPUs it no longer sees (its cpuset or quota changed), so no busy time is lost; spread
//!   evenly over the visible CPUs where the kernel does not split it (v2). idle = its uptime
//!   (`super::uptime`) − user − system, per CPU. nice, iowait, irq, softirq, steal
//!   and guest are 0: cgroups do not account them.
//! - `cpu`: the sum of the `cpuN` lines.
//! - Every counter is monotonic from one read to the next ([`monotonic`], fixing LXCFS #500
//!   where idle went backwards).
//! - `processes`, `procs_running`, `procs_blocked`: the container's own tasks (LXCFS #654
//!   shows the host's). `processes` (forks since boot on the host) is the number of pids the
//!   container's pid namespace has handed out as far as its tasks show: the highest pid
//!   number in it.
//! - `intr`, `ctxt`, `softirq`: interrupts and context switches are not accounted per cgroup,
//!   so the host's, scaled to the container's uptime ([`super::counters`]): their rate since
//!   boot is the host's, not host uptime / uptime times it (vmstat's `in` and `cs`).
//! - `btime`: the host's boot time, the base of every start time in `/proc/<pid>/stat`; in a
//!   time namespace of its own, shifted by its boottime offset, as the kernel shifts it and
//!   the start times there.

use super::counters::{SCALED_STAT_LINES, Scaled, push_scaled_stat_line};
use crate::cgroup::CpuUsage;

pub use crate::container::state::CpuLine;

impl CpuLine {
    fn fields(&self) -> [u64; 10] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
            self.guest,
            self.guest_nice,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 10] {
        [
            &mut self.user,
            &mut self.nice,
            &mut self.system,
            &mut self.idle,
            &mut self.iowait,
            &mut self.irq,
            &mut self.softirq,
            &mut self.steal,
            &mut self.guest,
            &mut self.guest_nice,
        ]
    }
}

/// The container's view of the file, besides the host's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatView {
    /// One line per visible CPU.
    pub cpus: Vec<CpuLine>,
    /// Their host numbers, which name the lines (`cpu1`).
    pub ids: Vec<u32>,
    /// The `cpu` line: the sum of `cpus`, never below the one served before (a CPU that
    /// leaves the container takes its counters out of the sum).
    pub total: CpuLine,
    /// Pids handed out in the container.
    pub processes: u64,
    /// Its runnable tasks.
    pub procs_running: u64,
    /// Its tasks in uninterruptible sleep.
    pub procs_blocked: u64,
    /// Seconds to add to the host's `btime`: minus the boottime offset of the container's
    /// time namespace (0 without one), as the kernel shifts it there.
    pub btime_shift: i64,
}

/// The per-CPU lines of a container that has used `usage`, sees the host CPUs `visible` and
/// is up `uptime_secs` (its CPUs count as idle for all of it that it did not use).
pub fn container_cpu_lines(
    usage: &CpuUsage,
    visible: &[u32],
    uptime_secs: f64,
    ticks_per_sec: u64,
) -> Vec<CpuLine> {
    let n = visible.len().max(1) as u64;
    let ns_per_tick = 1_000_000_000 / ticks_per_sec.max(1);
    let capacity = (uptime_secs.max(0.0) * ticks_per_sec as f64) as u64;
    let per_cpu: Vec<(u64, u64)> = match &usage.per_cpu {
        Some(times) => {
            let on = |cpu: u32| times.get(cpu as usize).copied().unwrap_or_default();
            let seen: Vec<_> = visible.iter().map(|&c| on(c)).collect();
            let all_user: u64 = times.iter().map(|t| t.user_ns).fold(0, u64::saturating_add);
            let all_sys: u64 = times
                .iter()
                .map(|t| t.system_ns)
                .fold(0, u64::saturating_add);
            let seen_user: u64 = seen.iter().map(|t| t.user_ns).fold(0, u64::saturating_add);
            let seen_sys: u64 = seen
                .iter()
                .map(|t| t.system_ns)
                .fold(0, u64::saturating_add);
            let (extra_user, extra_sys) = (
                all_user.saturating_sub(seen_user) / n,
                all_sys.saturating_sub(seen_sys) / n,
            );
            seen.iter()
                .map(|t| {
                    (
                        t.user_ns.saturating_add(extra_user),
                        t.system_ns.saturating_add(extra_sys),
                    )
                })
                .collect()
        }
        None => {
            let (user, system) = split_total(usage);
            vec![(user / n, system / n); visible.len()]
        }
    };
    per_cpu
        .into_iter()
        .map(|(user_ns, system_ns)| {
            let (user, system) = (user_ns / ns_per_tick, system_ns / ns_per_tick);
            CpuLine {
                user,
                system,
                idle: capacity.saturating_sub(user.saturating_add(system)),
                ..CpuLine::default()
            }
        })
        .collect()
}

/// User and system time whose sum is the precise total: the tick-sampled user/system ratio
/// applied to `total_ns` (v1's `cpuacct.stat` lags `cpuacct.usage`); all user without a ratio.
fn split_total(usage: &CpuUsage) -> (u64, u64) {
    let sampled = usage.user_ns.saturating_add(usage.system_ns);
    let total = usage.total_ns.max(sampled);
    if sampled == 0 {
        return (total, 0);
    }
    let user = (total as u128 * usage.user_ns as u128 / sampled as u128) as u64;
    (user, total - user)
}

/// Raises every counter of `next` to at least the same counter of `prev` (same CPU index;
/// CPUs beyond the shorter list are left alone).
pub fn monotonic(prev: &[CpuLine], next: &mut [CpuLine]) {
    for (before, after) in prev.iter().zip(next.iter_mut()) {
        for (b, a) in before.fields().into_iter().zip(after.fields_mut()) {
            *a = (*a).max(b);
        }
    }
}

/// The sum of `lines`, field by field.
pub fn sum(lines: &[CpuLine]) -> CpuLine {
    let mut total = CpuLine::default();
    for line in lines {
        for (t, v) in total.fields_mut().into_iter().zip(line.fields()) {
            *t = t.saturating_add(v);
        }
    }
    total
}

/// Idle seconds over all `lines`: what `proc/uptime`'s second column shows.
pub fn idle_secs(lines: &[CpuLine], ticks_per_sec: u64) -> f64 {
    let ticks: u64 = lines.iter().map(|l| l.idle).fold(0, u64::saturating_add);
    ticks as f64 / ticks_per_sec.max(1) as f64
}

fn push_cpu(out: &mut String, name: &str, line: &CpuLine) {
    out.push_str(name);
    for value in line.fields() {
        out.push(' ');
        out.push_str(&value.to_string());
    }
    out.push('\n');
}

/// `proc/stat` for a container, from the host's text `host`; `intr`, `ctxt` and `softirq`
/// scaled by `scaled` (see [`super::counters`]).
pub fn render_stat(host: &str, view: &StatView, scaled: &Scaled) -> String {
    let mut out = String::with_capacity(host.len());
    let total = view.total;
    for line in host.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        match key {
            // The kernel pads the total line's name to five columns.
            "cpu" => {
                push_cpu(&mut out, "cpu ", &total);
                for (id, cpu) in view.ids.iter().zip(&view.cpus) {
                    push_cpu(&mut out, &format!("cpu{id}"), cpu);
                }
            }
            k if k.starts_with("cpu") => {}
            k if SCALED_STAT_LINES.contains(&k) => push_scaled_stat_line(&mut out, line, scaled),
            "processes" => out.push_str(&format!("processes {}\n", view.processes)),
            "procs_running" => out.push_str(&format!("procs_running {}\n", view.procs_running)),
            "procs_blocked" => out.push_str(&format!("procs_blocked {}\n", view.procs_blocked)),
            "btime" if view.btime_shift != 0 => {
                let host: i64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                out.push_str(&format!(
                    "btime {}\n",
                    host.saturating_add(view.btime_shift)
                ));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CpuTimes;

    const HOST: &str = "cpu  31222 0 28109 1946936 1133 0 90 37 0 0\n\
cpu0 14569 0 12934 976115 108 0 31 15 0 0\n\
cpu1 16653 0 15175 970820 1024 0 58 21 0 0\n\
intr 5866369 0 0\n\
ctxt 24138107\n\
btime 1795404542\n\
processes 25558\n\
procs_running 2\n\
procs_blocked 0\n\
softirq 853260 0 127118\n";

    const S: u64 = 1_000_000_000;

    #[test]
    fn per_cpu_accounting_maps_onto_the_visible_cpus() {
        let usage = CpuUsage {
            total_ns: 6 * S,
            user_ns: 0,
            system_ns: 0,
            per_cpu: Some(vec![
                CpuTimes {
                    user_ns: S,
                    system_ns: S,
                },
                CpuTimes {
                    user_ns: 2 * S,
                    system_ns: 2 * S,
                },
            ]),
        };
        let lines = container_cpu_lines(&usage, &[1], 10.0, 100);
        assert_eq!(lines.len(), 1);
        // CPU 1's 2 s + 2 s, plus CPU 0's 1 s + 1 s the container ran before.
        assert_eq!(
            (lines[0].user, lines[0].system, lines[0].idle),
            (300, 300, 400)
        );
    }

    #[test]
    fn unsplit_accounting_is_spread_evenly() {
        let usage = CpuUsage {
            total_ns: 4 * S,
            user_ns: 3 * S,
            system_ns: S,
            per_cpu: None,
        };
        let lines = container_cpu_lines(&usage, &[0, 2], 5.0, 100);
        assert_eq!(
            lines,
            vec![
                CpuLine {
                    user: 150,
                    system: 50,
                    idle: 300,
                    ..CpuLine::default()
                };
                2
            ]
        );
        assert_eq!(idle_secs(&lines, 100), 6.0);
    }

    #[test]
    fn counters_never_go_back() {
        let prev = vec![CpuLine {
            user: 10,
            idle: 500,
            ..CpuLine::default()
        }];
        let mut next = vec![
            CpuLine {
                user: 12,
                idle: 490,
                ..CpuLine::default()
            },
            CpuLine {
                idle: 1,
                ..CpuLine::default()
            },
        ];
        monotonic(&prev, &mut next);
        assert_eq!((next[0].user, next[0].idle), (12, 500));
        assert_eq!(next[1].idle, 1);
    }

    #[test]
    fn the_total_does_not_step_down_when_a_cpu_leaves() {
        let two = [CpuLine {
            idle: 100,
            ..CpuLine::default()
        }; 2];
        let mut total = [sum(&two)];
        let one = [CpuLine {
            idle: 110,
            ..CpuLine::default()
        }];
        let mut next = [sum(&one)];
        monotonic(&total, &mut next);
        assert_eq!(next[0].idle, 200);
        total = next;
        assert_eq!(total[0].idle, 200);
    }

    #[test]
    fn a_time_namespace_shifts_btime() {
        let view = StatView {
            btime_shift: 1000,
            ..StatView::default()
        };
        let all = Scaled::new(1.0, 1.0, []);
        assert!(render_stat(HOST, &view, &all).contains("\nbtime 1795405542\n"));
        assert!(render_stat(HOST, &StatView::default(), &all).contains("\nbtime 1795404542\n"));
    }

    #[test]
    fn the_file_shows_the_containers_cpus_and_tasks() {
        let cpus = vec![CpuLine {
            user: 1,
            system: 2,
            idle: 3,
            ..CpuLine::default()
        }];
        let view = StatView {
            total: sum(&cpus),
            cpus,
            ids: vec![1],
            btime_shift: 0,
            processes: 7,
            procs_running: 1,
            procs_blocked: 0,
        };
        // A tenth of the host's age when it first read the file; the host's 1000 more
        // context switches since are its own too.
        let first = HOST
            .lines()
            .filter(|l| SCALED_STAT_LINES.iter().any(|k| l.starts_with(k)));
        let counters: Vec<_> = first
            .flat_map(super::super::counters::stat_line_counters)
            .collect();
        let scaled = Scaled::new(10.0, 100.0, counters.iter().map(|(k, v)| (k.as_str(), *v)));
        let host = HOST.replace("ctxt 24138107", "ctxt 24139107");
        let text = render_stat(&host, &view, &scaled);
        let expected = "cpu  1 0 2 3 0 0 0 0 0 0\ncpu1 1 0 2 3 0 0 0 0 0 0\nintr 586637 0 0\n\
ctxt 2414811\nbtime 1795404542\nprocesses 7\nprocs_running 1\nprocs_blocked 0\n\
softirq 85326 0 12712\n";
        assert_eq!(text, expected);
    }

    proptest::proptest! {
        #[test]
        fn monotonic_never_lowers_a_counter(a: [u64; 10], b: [u64; 10]) {
            let line = |f: [u64; 10]| CpuLine {
                user: f[0], nice: f[1], system: f[2], idle: f[3], iowait: f[4],
                irq: f[5], softirq: f[6], steal: f[7], guest: f[8], guest_nice: f[9],
            };
            let prev = [line(a)];
            let mut next = [line(b)];
            monotonic(&prev, &mut next);
            for (p, n) in prev[0].fields().into_iter().zip(next[0].fields()) {
                proptest::prop_assert!(n >= p);
            }
        }
    }
}
