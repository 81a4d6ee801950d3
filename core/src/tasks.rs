//! Counting a container's tasks by scheduler state, cheaply, from procfs.
//!
//! The kernel's load average counts tasks that are runnable (`R`) or in uninterruptible sleep
//! (`D`); `/proc/loadavg` also prints the runnable count, the number of threads and the last pid
//! allocated in the reader's pid namespace. Given the host TIDs of a container's threads,
//! [`count_tasks`] reads one `/proc/<tid>/stat` per thread for the state and, once per call, one
//! `/proc/<tid>/status` for a pid as the container sees it (see [`TaskCounts::max_ns_pid`]).
//! Tasks exit while they are counted: a task whose files are gone is skipped, not an error.

use crate::procfs::{self, ProcRoot};

/// Most `status` files read per count looking for a task that lives in the container's pid
/// namespace: a cgroup may hold tasks joined from outside it, which have no pid there, and
/// such a cgroup must not cost one more read per task.
const MAX_STATUS_READS: usize = 8;

/// Task counts of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Runnable tasks (state `R`): the kernel's `nr_running`.
    pub running: u32,
    /// Tasks in uninterruptible sleep (state `D`), which the kernel's load average counts too.
    pub blocked: u32,
    /// Every task whose state could be read: the kernel's `nr_threads`.
    pub total: u32,
    /// The pid, in the container's pid namespace, of its newest task: the stand-in for the
    /// kernel's "last pid allocated in the reader's namespace", which nothing outside that
    /// namespace can read. "Newest" is the task with the highest host TID among those that
    /// have a pid in the container's namespace; as both namespaces hand out pids in creation
    /// order, this is also the highest pid in the container unless a pid counter wrapped. 0
    /// when no such task was found. Never a host pid for a container in a child pid namespace.
    pub max_ns_pid: u32,
}

/// The state letter of a `/proc/<tid>/stat` text: the field after the last `)`, because the
/// command name (field 2) may itself hold spaces and parentheses.
pub fn parse_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Counts the states of `tids` (host TIDs) read through `proc`; `level` is how deep the
/// container's pid namespace lies below the reader's (its tasks' pids there are field `level`
/// of their `NSpid` line). Costs one `stat` read per task and a few `status` reads per call.
pub fn count_tasks(proc: &ProcRoot, tids: &[u32], level: usize) -> TaskCounts {
    let mut counts = TaskCounts::default();
    for &tid in tids {
        // A read error is a task that exited since the list was taken.
        let Ok(stat) = procfs::read_to_string(&proc.pid_path(tid, "stat")) else {
            continue;
        };
        match parse_state(&stat) {
            Some('R') => counts.running += 1,
            Some('D') => counts.blocked += 1,
            Some(_) => {}
            None => continue,
        }
        counts.total += 1;
    }
    counts.max_ns_pid = newest_ns_pid(proc, tids, level).unwrap_or(0);
    counts
}

/// The pid at namespace depth `level` of the newest task among `tids` that has one, trying at
/// most [`MAX_STATUS_READS`] tasks from the highest host TID down.
///
/// Reading `status` for every task would double the cost of a count for one number; the
/// highest host TID is the task created last (pids rise in creation order in every namespace
/// at once, as one `alloc_pid` call allocates them all), so its pid is normally the highest.
fn newest_ns_pid(proc: &ProcRoot, tids: &[u32], level: usize) -> Option<u32> {
    let mut below = u32::MAX;
    for _ in 0..MAX_STATUS_READS {
        let tid = highest_below(tids, below)?;
        below = tid;
        let Ok(status) = proc.status(tid) else {
            continue;
        };
        if let Some(&pid) = status.nspid.get(level) {
            return Some(pid);
        }
    }
    None
}

/// The processes of pid namespace `pidns` (by its inode), found by a walk of `proc`: one
/// `ns/pid` link read per host process. For a container whose cgroup is a hierarchy's root,
/// where the cgroup holds the whole host.
pub fn pidns_members(proc: &ProcRoot, pidns: u64) -> Vec<u32> {
    proc.pids()
        .unwrap_or_default()
        .into_iter()
        .filter(|&pid| proc.ns_inode(pid, "pid").ok() == Some(pidns))
        .collect()
}

/// The host TIDs of every thread of `pids`, at most [`crate::cgroup::MAX_TASKS`].
pub fn threads_of(proc: &ProcRoot, pids: &[u32]) -> Vec<u32> {
    let mut tids = Vec::new();
    for &pid in pids {
        let Ok(dir) = std::fs::read_dir(proc.pid_path(pid, "task")) else {
            continue;
        };
        tids.extend(
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
        );
        if tids.len() >= crate::cgroup::MAX_TASKS {
            tids.truncate(crate::cgroup::MAX_TASKS);
            break;
        }
    }
    tids
}

/// User and system time of `stat` (a `/proc/<pid>/stat` text) in clock ticks: the process's
/// own threads' and its waited-for children's (fields 14 to 17).
pub fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 4).then(|| (f[0] + f[2], f[1] + f[3]))
}

/// The CPU time `pids` used, as [`crate::cgroup::CpuUsage`] (not split by CPU): theirs and
/// their reaped children's, from their `stat` files.
pub fn cpu_usage_of(proc: &ProcRoot, pids: &[u32], ticks_per_sec: u64) -> crate::cgroup::CpuUsage {
    let ns_per_tick = 1_000_000_000 / ticks_per_sec.max(1);
    let (mut user, mut system) = (0u64, 0u64);
    for &pid in pids {
        let Ok(stat) = procfs::read_to_string(&proc.pid_path(pid, "stat")) else {
            continue;
        };
        if let Some((u, s)) = parse_cpu_ticks(&stat) {
            user = user.saturating_add(u.saturating_mul(ns_per_tick));
            system = system.saturating_add(s.saturating_mul(ns_per_tick));
        }
    }
    crate::cgroup::CpuUsage {
        total_ns: user.saturating_add(system),
        user_ns: user,
        system_ns: system,
        per_cpu: None,
    }
}

/// The highest TID in `tids` strictly below `bound` (the list need not be sorted).
fn highest_below(tids: &[u32], bound: u32) -> Option<u32> {
    tids.iter().copied().filter(|&t| t < bound).max()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    /// Writes a fixture task `tid` with state `state` into the procfs tree at `root`; `nspid`
    /// is its `NSpid` line (host TID first), or `None` for a task without a `status` file.
    pub(crate) fn write_task(root: &Path, tid: u32, state: char, nspid: Option<&[u32]>) {
        let dir = root.join(tid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let stat = format!("{tid} (a) (b R) {state} 1 {tid} {tid} 0 -1 4194560 0 0 0 0 1 2\n");
        std::fs::write(dir.join("stat"), stat).unwrap();
        if let Some(nspid) = nspid {
            let ids: Vec<String> = nspid.iter().map(u32::to_string).collect();
            let status = format!(
                "Name:\ta) (b R\nState:\t{state}\nTgid:\t{tid}\nPid:\t{tid}\n\
                 Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nNSpid:\t{}\n",
                ids.join("\t")
            );
            std::fs::write(dir.join("status"), status).unwrap();
        }
    }

    #[test]
    fn cpu_ticks_are_own_plus_reaped_childrens() {
        let stat = "42 (a) (b) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 100 20 20 0 1 0 500\n";
        assert_eq!(parse_cpu_ticks(stat), Some((107, 23)));
        assert_eq!(parse_cpu_ticks("42 (short) S 1 2"), None);
    }

    #[test]
    fn state_is_the_field_after_the_last_parenthesis() {
        assert_eq!(parse_state("42 (a) (b R) S 1 2 3"), Some('S'));
        assert_eq!(parse_state("42 (cat) R 1"), Some('R'));
        assert_eq!(parse_state("7 ()) D 1"), Some('D'));
        assert_eq!(parse_state("42 (truncated)"), None);
        assert_eq!(parse_state("garbage"), None);
    }

    #[test]
    fn running_blocked_and_total_count_the_kernels_states() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_task(root, 100, 'R', Some(&[100, 1]));
        write_task(root, 101, 'D', Some(&[101, 2]));
        write_task(root, 102, 'S', Some(&[102, 3]));
        write_task(root, 103, 'Z', Some(&[103, 4]));
        std::fs::create_dir_all(root.join("104")).unwrap();
        std::fs::write(root.join("104/stat"), "104 (half").unwrap();
        // 105 vanished between listing and reading.
        let counts = count_tasks(&ProcRoot::new(root), &[100, 101, 102, 103, 104, 105], 1);
        assert_eq!(
            counts,
            TaskCounts {
                running: 1,
                blocked: 1,
                total: 4,
                max_ns_pid: 4,
            }
        );
    }

    #[test]
    fn last_pid_is_the_newest_task_inside_the_namespace_never_a_host_pid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_task(root, 500, 'S', Some(&[500, 1]));
        write_task(root, 510, 'S', Some(&[510, 9]));
        // Joined into the cgroup from the host: no pid in the container's namespace.
        write_task(root, 520, 'S', Some(&[520]));
        // Exited between its stat and status reads.
        write_task(root, 530, 'R', None);
        let proc = ProcRoot::new(root);
        assert_eq!(count_tasks(&proc, &[530, 500, 520, 510], 1).max_ns_pid, 9);
        // Seen from the host (level 0) every task has a pid: the newest one's host pid.
        assert_eq!(count_tasks(&proc, &[500, 520, 510], 0).max_ns_pid, 520);
        // Nobody lives in the namespace: 0, not a host pid.
        assert_eq!(count_tasks(&proc, &[520], 1).max_ns_pid, 0);
        assert_eq!(count_tasks(&proc, &[], 1), TaskCounts::default());
    }

    #[test]
    fn a_nested_task_reports_its_pid_at_the_containers_depth() {
        let dir = tempfile::tempdir().unwrap();
        // A task two namespaces down: 700 on the host, 12 in the container, 1 in its own.
        write_task(dir.path(), 700, 'R', Some(&[700, 12, 1]));
        let counts = count_tasks(&ProcRoot::new(dir.path()), &[700], 1);
        assert_eq!((counts.running, counts.max_ns_pid), (1, 12));
    }

    #[test]
    fn the_real_proc_counts_this_process_threads() {
        let tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let counts = count_tasks(&ProcRoot::default(), &tids, 0);
        assert!(counts.total >= 1, "{counts:?}");
        // The thread reading its own stat is running while it does.
        assert!(counts.running >= 1, "{counts:?}");
        assert!(counts.max_ns_pid >= 1, "{counts:?}");
    }
}
