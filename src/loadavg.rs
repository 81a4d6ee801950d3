//! Per-container load averages, kept the way the kernel keeps the host's.
//!
//! One background thread samples, every 5 s, the containers whose `proc/loadavg` (or
//! `proc/stat`) was read in the last 10 minutes: for each, it lists the tasks of its cgroup
//! and counts those runnable (R) or in uninterruptible sleep (D), and folds that count into
//! three exponentially decayed averages with the kernel's fixed-point constants. Its cost
//! grows with the containers read recently, never with every task or cgroup on the host
//! (LXCFS walks every container's tasks and freezes beyond a few hundred: #407, #504).
//! Containers not read for 10 minutes, and containers whose cgroup is gone, are forgotten.
//!
//! A container seen for the first time starts at 0, as the kernel's averages do at boot: one
//! busy task then reads 0.39 after 30 s and 0.5 after 45 s, exactly as on a host. (Starting
//! from the first sample's count instead was tried: an instantaneous count is too noisy, as
//! a freshly forked helper or the reader's own shell is often runnable at that moment.) The
//! reader's own task is not counted: it sleeps uninterruptibly in its FUSE request while it
//! is sampled.
//!
//! Between samples, a read returns the last sample's counts: the running/total field and the
//! last-pid field are at most one interval old. The last-pid field is the highest pid number
//! among the container's tasks in its own pid namespace (the kernel prints the last pid the
//! namespace allocated, which nothing outside the namespace can read); never a host pid.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::debug;
use parking_lot::{Condvar, Mutex};

use crate::container::Container;
use crate::procfs::ProcRoot;

/// Fixed-point shift of the kernel's load averages.
const FSHIFT: u32 = 11;
/// 1.0 in fixed point.
pub const FIXED_1: u64 = 1 << FSHIFT;
/// exp(-5 s / 1 min), exp(-5 s / 5 min), exp(-5 s / 15 min) in fixed point.
const EXP: [u64; 3] = [1884, 2014, 2037];
/// Most containers followed at once.
const MAX_FOLLOWED: usize = 4096;

/// Task counts of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Runnable tasks (state R).
    pub running: u32,
    /// Tasks in uninterruptible sleep (state D).
    pub blocked: u32,
    /// All tasks read.
    pub total: u32,
    /// The highest pid number, in the container's pid namespace, among those of its tasks
    /// that live in that namespace (a task joined into the cgroup from outside has none).
    pub max_ns_pid: u32,
}

/// The state letter of a `/proc/<tid>/stat` text: the field after the last `)` (the command
/// name may hold spaces and parentheses).
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The pid of a task in the pid namespace `level` levels below the reader's (field `level`
/// of `NSpid:` in its `/proc/<tid>/status`); `None` when the task is not that deep.
pub fn parse_ns_pid(status: &str, level: usize) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().nth(1 + level)?.parse().ok()
}

/// Counts the states of `tids` (host TIDs), skipping `exclude` and tasks that exit meanwhile;
/// pids are read at pid-namespace depth `level` (the container's).
pub fn count_tasks(
    proc: &ProcRoot,
    tids: &[u32],
    exclude: Option<u32>,
    level: usize,
) -> TaskCounts {
    let mut counts = TaskCounts::default();
    for &tid in tids.iter().filter(|&&t| Some(t) != exclude) {
        let Ok(stat) = std::fs::read_to_string(proc.pid_path(tid, "stat")) else {
            continue;
        };
        match parse_state(&stat) {
            Some('R') => counts.running += 1,
            Some('D') => counts.blocked += 1,
            Some(_) => {}
            None => continue,
        }
        counts.total += 1;
        if let Ok(status) = std::fs::read_to_string(proc.pid_path(tid, "status"))
            && let Some(pid) = parse_ns_pid(&status, level)
        {
            counts.max_ns_pid = counts.max_ns_pid.max(pid);
        }
    }
    counts
}

/// One step of the kernel's `calc_load`: `load` decayed by `exp` towards `active` tasks.
pub fn calc_load(load: u64, exp: u64, active: u64) -> u64 {
    let active = active.saturating_mul(FIXED_1);
    let mut new = load
        .saturating_mul(exp)
        .saturating_add(active.saturating_mul(FIXED_1 - exp));
    if active >= load {
        new = new.saturating_add(FIXED_1 - 1);
    }
    new / FIXED_1
}

/// `proc/loadavg` text as the kernel prints it (two decimals, rounded).
pub fn render_loadavg(avgs: [u64; 3], running: u32, total: u32, last_pid: u32) -> String {
    let fmt = |x: u64| {
        let x = x + FIXED_1 / 200;
        format!(
            "{}.{:02}",
            x >> FSHIFT,
            ((x & (FIXED_1 - 1)) * 100) >> FSHIFT
        )
    };
    format!(
        "{} {} {} {running}/{total} {last_pid}\n",
        fmt(avgs[0]),
        fmt(avgs[1]),
        fmt(avgs[2])
    )
}

/// What a read of a container's load returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReading {
    /// 1, 5 and 15-minute averages, fixed point.
    pub avgs: [u64; 3],
    /// The last sample's counts.
    pub counts: TaskCounts,
}

#[derive(Debug)]
struct Followed {
    container: Arc<Container>,
    reading: LoadReading,
    last_read: Instant,
}

/// The sampler: followed containers by key, and its thread's stop signal.
#[derive(Debug)]
pub struct Sampler {
    proc: ProcRoot,
    interval: Duration,
    idle_after: Duration,
    followed: Mutex<HashMap<u64, Followed>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Sampler {
    /// A sampler reading tasks through `proc`, sampling every `interval` the containers read
    /// within `idle_after`.
    pub fn new(proc: ProcRoot, interval: Duration, idle_after: Duration) -> Arc<Sampler> {
        Arc::new(Sampler {
            proc,
            interval,
            idle_after,
            followed: Mutex::new(HashMap::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        })
    }

    /// Starts the sampling thread; it runs until [`Sampler::stop`].
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("nsview-loadavg".into())
            .spawn(move || me.run())
    }

    fn run(&self) {
        loop {
            let mut stop = self.stop.lock();
            if !*stop {
                self.wake.wait_for(&mut stop, self.interval);
            }
            if *stop {
                return;
            }
            drop(stop);
            self.sample_all();
        }
    }

    /// Ends the sampling thread within moments.
    pub fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    /// The load of container `c` (keyed by `key`), read by task `reader`: followed from now on.
    pub fn read(
        &self,
        key: u64,
        c: &Arc<Container>,
        reader: u32,
    ) -> crate::error::Result<LoadReading> {
        if let Some(f) = self.followed.lock().get_mut(&key) {
            f.last_read = Instant::now();
            return Ok(f.reading);
        }
        let counts = count_tasks(&self.proc, &c.cgroups.tasks()?, Some(reader), c.ns_level);
        let reading = LoadReading {
            avgs: [0; 3],
            counts,
        };
        let mut followed = self.followed.lock();
        if followed.len() >= MAX_FOLLOWED {
            // Forget the one read longest ago.
            if let Some(oldest) = followed
                .iter()
                .min_by_key(|(_, f)| f.last_read)
                .map(|(k, _)| *k)
            {
                followed.remove(&oldest);
            }
        }
        followed.insert(
            key,
            Followed {
                container: c.clone(),
                reading,
                last_read: Instant::now(),
            },
        );
        Ok(reading)
    }

    /// One sampling round over the containers read recently.
    pub fn sample_all(&self) {
        let due: Vec<(u64, Arc<Container>)> = {
            let mut followed = self.followed.lock();
            followed
                .retain(|_, f| f.last_read.elapsed() < self.idle_after && f.container.is_alive());
            followed
                .iter()
                .map(|(k, f)| (*k, f.container.clone()))
                .collect()
        };
        for (key, container) in due {
            let counts = match container.cgroups.tasks() {
                Ok(tids) => count_tasks(&self.proc, &tids, None, container.ns_level),
                Err(e) => {
                    debug!(
                        "loadavg: tasks of pidns {} unreadable ({e}); forgotten",
                        container.pidns
                    );
                    self.followed.lock().remove(&key);
                    continue;
                }
            };
            let active = u64::from(counts.running + counts.blocked);
            if let Some(f) = self.followed.lock().get_mut(&key) {
                for (avg, exp) in f.reading.avgs.iter_mut().zip(EXP) {
                    *avg = calc_load(*avg, exp, active);
                }
                f.reading.counts = counts;
            }
        }
    }

    /// Number of containers followed.
    pub fn len(&self) -> usize {
        self.followed.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_busy_task_for_30_s_gives_the_kernels_values() {
        let mut load = 0;
        for _ in 0..6 {
            load = calc_load(load, EXP[0], 1);
        }
        // 1 - (1884/2048)^6 ≈ 0.394, with the kernel's rounding up while rising.
        assert_eq!(
            render_loadavg([load, 0, 0], 1, 1, 1),
            "0.39 0.00 0.00 1/1 1\n"
        );
        let mut idle = FIXED_1;
        for _ in 0..12 {
            idle = calc_load(idle, EXP[0], 0);
        }
        assert!(idle < FIXED_1 / 2, "{idle}");
    }

    #[test]
    fn rendering_rounds_like_the_kernel() {
        assert_eq!(
            render_loadavg([0, FIXED_1, 2 * FIXED_1 + FIXED_1 / 2], 0, 5, 42),
            "0.00 1.00 2.50 0/5 42\n"
        );
    }

    #[test]
    fn states_and_ns_pids_parse_around_odd_command_names() {
        assert_eq!(parse_state("42 (a) (b R) S 1 2 3"), Some('S'));
        assert_eq!(parse_state("42 (cat) R 1"), Some('R'));
        assert_eq!(parse_state("garbage"), None);
        assert_eq!(parse_ns_pid("Name:\tx\nNSpid:\t4242\t7\n", 1), Some(7));
        assert_eq!(parse_ns_pid("Name:\tx\nNSpid:\t4242\n", 1), None);
        assert_eq!(parse_ns_pid("Name:\tx\nNSpid:\t4242\t7\n", 0), Some(4242));
        assert_eq!(parse_ns_pid("Name:\tx\n", 0), None);
    }

    #[test]
    fn the_real_proc_counts_this_process_threads() {
        let tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let counts = count_tasks(&ProcRoot::default(), &tids, None, 0);
        assert!(counts.total >= 1);
        assert!(counts.running >= 1, "{counts:?}");
    }
}
