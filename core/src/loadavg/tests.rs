//! Tests of the load-average math and of the sampler on fixture procfs trees.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::error::Error;
use crate::tasks::tests::write_task;

// ---- the kernel's arithmetic ----

#[test]
fn one_busy_task_for_30_s_gives_the_kernels_values() {
    // Six 5-second samples of one active task from a fresh start, as the kernel computes them.
    let mut load = [0; 3];
    let mut one_min = Vec::new();
    for _ in 0..6 {
        for (avg, exp) in load.iter_mut().zip(EXP) {
            *avg = calc_load(*avg, exp, 1);
        }
        one_min.push(load[0]);
    }
    assert_eq!(one_min, [164, 315, 454, 582, 700, 808]);
    assert_eq!(load, [808, 198, 66]);
    assert_eq!(render_loadavg(load, 1, 1, 1), "0.39 0.10 0.03 1/1 1\n");
    for _ in 0..3 {
        load[0] = calc_load(load[0], EXP[0], 1);
    }
    // 45 s.
    assert_eq!(render_loadavg(load, 1, 1, 1), "0.53 0.10 0.03 1/1 1\n");
}

#[test]
fn rising_loads_round_up_and_falling_loads_truncate() {
    // (100 * 1884 + 2048 * 164) / 2048 = 255.99: rounded up to 256 as the load rises.
    assert_eq!(calc_load(100, EXP[0], 1), 256);
    // 1000 * 1884 / 2048 = 919.92: truncated as it falls.
    assert_eq!(calc_load(1000, EXP[0], 0), 919);
    // A load equal to the count stays put.
    assert_eq!(calc_load(3 * FIXED_1, EXP[2], 3), 3 * FIXED_1);
}

#[test]
fn a_constant_count_is_reached_exactly_and_idle_decays_to_zero() {
    let steps_to = |mut load: u64, active: u64, target: u64| {
        let mut steps = 0;
        while load != target {
            let next = calc_load(load, EXP[0], active);
            assert!(next != load, "stuck at {load}");
            load = next;
            steps += 1;
        }
        steps
    };
    assert_eq!(steps_to(0, 1, FIXED_1), 68);
    assert_eq!(steps_to(FIXED_1, 0, 0), 68);
}

#[test]
fn missed_windows_fold_like_repeated_steps() {
    assert_eq!(fixed_pow(EXP[0], 0), FIXED_1);
    assert_eq!(fixed_pow(EXP[0], 1), EXP[0]);
    assert_eq!(calc_load_n(700, EXP[0], 2, 1), calc_load(700, EXP[0], 2));
    let mut stepped = 4 * FIXED_1;
    for _ in 0..12 {
        stepped = calc_load(stepped, EXP[0], 0);
    }
    let folded = calc_load_n(4 * FIXED_1, EXP[0], 0, 12);
    assert!(stepped.abs_diff(folded) <= 8, "{stepped} vs {folded}");
}

#[test]
fn rendering_rounds_to_two_decimals_like_the_kernel() {
    assert_eq!(
        render_loadavg([1065, 266, 82], 1, 87, 1234),
        "0.52 0.13 0.04 1/87 1234\n"
    );
    assert_eq!(
        render_loadavg([FIXED_1 - 1, 2 * FIXED_1 + FIXED_1 / 2, 0], 0, 5, 42),
        "1.00 2.50 0.00 0/5 42\n"
    );
}

#[test]
fn a_late_round_counts_the_windows_it_missed() {
    let interval = Duration::from_secs(5);
    let start = Instant::now();
    let mut next = start;
    assert_eq!(windows_due(&mut next, start, interval), 1);
    assert_eq!(next, start + interval);
    let late = next + interval * 2 + interval / 2;
    assert_eq!(windows_due(&mut next, late, interval), 3);
    assert_eq!(next, start + interval * 4);
    assert!(next > late);
}

// ---- the sampler on fixture trees ----

/// A container whose tasks are a fixed list, counting how often it is asked for them.
#[derive(Debug, Default)]
struct FakeSource {
    tids: Vec<u32>,
    level: usize,
    calls: AtomicUsize,
    gone: AtomicBool,
    dead: AtomicBool,
    identity: Option<crate::container::carried::Identity>,
}

impl FakeSource {
    fn new(tids: &[u32]) -> Arc<FakeSource> {
        Arc::new(FakeSource {
            tids: tids.to_vec(),
            level: 1,
            ..FakeSource::default()
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TaskSource for FakeSource {
    fn tasks(&self) -> Result<Vec<u32>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.gone.load(Ordering::SeqCst) {
            let e = std::io::Error::from(std::io::ErrorKind::NotFound);
            return Err(Error::read("/sys/fs/cgroup/gone/tasks", e));
        }
        Ok(self.tids.clone())
    }

    fn ns_level(&self) -> usize {
        self.level
    }

    fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::SeqCst)
    }

    fn identity(&self) -> Option<crate::container::carried::Identity> {
        self.identity
    }
}

/// A fixture procfs with tasks 10, 11 and 12 in states `states`.
fn tree(root: &Path, states: [char; 3]) {
    for (i, state) in states.into_iter().enumerate() {
        let tid = 10 + i as u32;
        write_task(root, tid, state, Some(&[tid, tid - 9]));
    }
}

fn sampler(root: &Path, interval: Duration, idle_after: Duration) -> Arc<Sampler> {
    Sampler::new(ProcRoot::new(root), interval, idle_after)
}

const LONG: Duration = Duration::from_secs(3600);

/// Polls `cond` for up to 5 s.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn a_first_read_counts_at_once_and_starts_the_averages_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['R', 'D', 'S']);
    let s = sampler(dir.path(), LONG, LONG);
    let src = FakeSource::new(&[10, 11, 12]);
    let r = s.read_source(7, &src, None).unwrap();
    assert_eq!(r.avgs, [0; 3]);
    let expected = TaskCounts {
        running: 1,
        blocked: 1,
        total: 3,
        max_ns_pid: 3,
    };
    assert_eq!(r.counts, expected);
    // Later reads are served from the entry, without listing tasks again.
    assert_eq!(s.read_source(7, &src, None).unwrap(), r);
    assert_eq!(src.calls(), 1);
}

#[test]
fn a_container_carried_over_a_restart_goes_on_from_its_averages_aged_by_the_gap() {
    use crate::container::carried::{Carried, Identity};
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['R', 'R', 'S']);
    let kept = tempfile::tempdir().unwrap();
    let id = Identity {
        pidns: 4026532100,
        start_ticks: 42,
    };
    let before = [3 * FIXED_1, 2 * FIXED_1, FIXED_1];
    Carried::open(kept.path(), 0.0)
        .unwrap()
        .keep_loads(vec![(id, before)], 100.0);
    let s = sampler(dir.path(), Duration::from_secs(5), LONG);
    s.carry_from(Arc::new(Carried::open(kept.path(), 110.0).unwrap()));
    let src = Arc::new(FakeSource {
        tids: vec![10, 11, 12],
        level: 1,
        identity: Some(id),
        ..FakeSource::default()
    });
    let r = s.read_source(7, &src, None).unwrap();
    // 10 s, two sampling windows, at the 2 runnable tasks counted now.
    let aged: Vec<u64> = before
        .iter()
        .zip(EXP)
        .map(|(avg, exp)| calc_load_n(*avg, exp, 2, 2))
        .collect();
    assert_eq!(r.avgs.to_vec(), aged);
    assert_eq!(s.loads(), vec![(id, r.avgs)]);
    // Another container (same namespace inode, another init) starts from zero.
    let s = sampler(dir.path(), Duration::from_secs(5), LONG);
    s.carry_from(Arc::new(Carried::open(kept.path(), 110.0).unwrap()));
    let other = Arc::new(FakeSource {
        tids: vec![10, 11, 12],
        level: 1,
        identity: Some(Identity {
            start_ticks: 43,
            ..id
        }),
        ..FakeSource::default()
    });
    assert_eq!(s.read_source(7, &other, None).unwrap().avgs, [0; 3]);
}

#[test]
fn the_reader_is_left_out_of_the_first_count() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['D', 'S', 'S']);
    let s = sampler(dir.path(), LONG, LONG);
    let r = s.read_source(7, &FakeSource::new(&[10, 11, 12]), Some(10));
    assert_eq!(
        (r.as_ref().unwrap().counts.blocked, r.unwrap().counts.total),
        (0, 2)
    );
}

#[test]
fn averages_rise_with_runnable_and_blocked_tasks_and_fall_without() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['R', 'D', 'S']);
    let s = sampler(dir.path(), LONG, LONG);
    let src = FakeSource::new(&[10, 11, 12]);
    s.read_source(7, &src, None).unwrap();
    let mut kernel = 0;
    for _ in 0..6 {
        s.sample_all(1);
        kernel = calc_load(kernel, EXP[0], 2);
    }
    let busy = s.read_source(7, &src, None).unwrap();
    assert_eq!(busy.avgs[0], kernel);
    assert!(busy.avgs[0] > FIXED_1 / 2 && busy.avgs[2] > 0, "{busy:?}");

    tree(dir.path(), ['S', 'S', 'Z']);
    for _ in 0..6 {
        s.sample_all(1);
    }
    let idle = s.read_source(7, &src, None).unwrap();
    assert!(
        idle.avgs.iter().zip(busy.avgs).all(|(i, b)| *i < b),
        "{idle:?}"
    );
    assert_eq!((idle.counts.running, idle.counts.total), (0, 3));
}

#[test]
fn a_container_not_read_within_the_idle_window_is_forgotten_and_not_sampled() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['R', 'R', 'R']);
    let s = sampler(dir.path(), LONG, Duration::from_millis(50));
    let src = FakeSource::new(&[10, 11, 12]);
    s.read_source(7, &src, None).unwrap();
    s.sample_all(1);
    assert_eq!(src.calls(), 2);
    std::thread::sleep(Duration::from_millis(80));
    s.sample_all(1);
    assert_eq!(src.calls(), 2);
    assert!(s.is_empty());
    // Read again, it starts afresh.
    assert_eq!(s.read_source(7, &src, None).unwrap().avgs, [0; 3]);
    assert_eq!(src.calls(), 3);
}

#[test]
fn gone_containers_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['R', 'S', 'S']);
    let s = sampler(dir.path(), LONG, LONG);
    let (cgroup_gone, init_dead) = (FakeSource::new(&[10]), FakeSource::new(&[11]));
    s.read_source(1, &cgroup_gone, None).unwrap();
    s.read_source(2, &init_dead, None).unwrap();
    cgroup_gone.gone.store(true, Ordering::SeqCst);
    init_dead.dead.store(true, Ordering::SeqCst);
    s.sample_all(1);
    assert!(s.is_empty());
    // A dead init is noticed without listing its tasks.
    assert_eq!(init_dead.calls(), 1);
    // And a first read of a gone container is an error that follows nothing.
    assert!(s.read_source(1, &cgroup_gone, None).is_err());
    assert!(s.is_empty());
}

#[test]
fn the_container_read_longest_ago_gives_way_beyond_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let s = sampler(dir.path(), LONG, LONG);
    let src = FakeSource::new(&[]);
    for key in 0..MAX_FOLLOWED as u64 {
        s.read_source(key, &src, None).unwrap();
    }
    // Make key 5 the least recently read, whatever the clock's resolution.
    s.followed.lock().get_mut(&5).unwrap().last_read -= Duration::from_secs(60);
    s.read_source(u64::MAX, &src, None).unwrap();
    assert_eq!(s.len(), MAX_FOLLOWED);
    let calls = src.calls();
    s.read_source(4, &src, None).unwrap();
    assert_eq!(src.calls(), calls, "key 4 is still followed");
    s.read_source(5, &src, None).unwrap();
    assert_eq!(src.calls(), calls + 1, "key 5 was forgotten");
    assert_eq!(s.len(), MAX_FOLLOWED);
}

// ---- the sampling thread ----

#[test]
fn the_thread_samples_until_the_container_is_idle_then_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), ['R', 'D', 'S']);
    let s = sampler(
        dir.path(),
        Duration::from_millis(10),
        Duration::from_millis(300),
    );
    let src = FakeSource::new(&[10, 11, 12]);
    s.read_source(7, &src, None).unwrap();
    let thread = s.spawn().unwrap();
    assert!(eventually(|| src.calls() >= 4), "sampled {}", src.calls());
    assert!(s.read_source(7, &src, None).unwrap().avgs[0] > 0);
    // Not read any more: forgotten after the idle window, then never listed again.
    assert!(eventually(|| s.is_empty()));
    let calls = src.calls();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(src.calls(), calls);
    s.stop();
    thread.join().unwrap();
}

#[test]
fn stop_ends_a_thread_in_the_middle_of_a_long_interval() {
    let dir = tempfile::tempdir().unwrap();
    let s = sampler(dir.path(), LONG, LONG);
    let thread = s.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let asked = Instant::now();
    s.stop();
    assert!(eventually(|| thread.is_finished()));
    thread.join().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn dropping_the_sampler_ends_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let s = sampler(dir.path(), LONG, LONG);
    let thread = s.spawn().unwrap();
    drop(s);
    assert!(eventually(|| thread.is_finished()));
    thread.join().unwrap();
}

// ---- the real /proc ----

/// This process, as a container: its own threads, seen from its own pid namespace.
#[derive(Debug)]
struct ThisProcess;

impl TaskSource for ThisProcess {
    fn tasks(&self) -> Result<Vec<u32>> {
        let dir = "/proc/self/task";
        let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect())
    }

    fn ns_level(&self) -> usize {
        0
    }
}

#[test]
fn the_real_proc_counts_this_process_with_its_reading_thread_running() {
    let s = Sampler::new(ProcRoot::default(), LONG, LONG);
    let r = s.read_source(1, &Arc::new(ThisProcess), None).unwrap();
    assert!(r.counts.total >= 1, "{r:?}");
    assert!(r.counts.running >= 1, "{r:?}");
    assert!(r.counts.max_ns_pid >= 1, "{r:?}");
}
