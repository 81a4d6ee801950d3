//! Per-container load averages, kept the way the kernel keeps the host's.
//!
//! One background thread samples, every interval (5 s in the daemon, like the kernel's
//! `LOAD_FREQ`), the containers whose `proc/loadavg` or `proc/stat` was read within the idle
//! window (10 minutes in the daemon): for each it lists the container's tasks, counts those
//! runnable (`R`) or in uninterruptible sleep (`D`) with [`crate::tasks::count_tasks`], and
//! folds that count into three exponentially decayed averages with the kernel's fixed-point
//! `calc_load`. Its cost grows with the containers read recently, never with every task or
//! cgroup on the host (LXCFS's sampler walks every container's tasks and stalls beyond a few
//! hundred containers: lxcfs #407, #504). Containers not read within the idle window, and
//! containers that are gone (init exited, cgroup unreadable), are forgotten; at most
//! [`MAX_FOLLOWED`] are followed, the one read longest ago giving way.
//!
//! A container read for the first time is counted at once (its running/total fields are real
//! from the first read) and its averages start at 0, as the kernel's do at boot: one busy task
//! then reads 0.39 after 30 s and 0.53 after 45 s, exactly as on a host. (Starting from the
//! first count instead is too noisy: a freshly forked helper or the reader's own shell is often
//! runnable at that moment.) The reader's own task is left out of that first count: it is in
//! uninterruptible sleep in its FUSE request while it is counted.
//!
//! Between samples a read returns the last sample's counts, so the running/total and last-pid
//! fields are at most one interval old and a read costs one hash lookup. The last-pid field is
//! [`TaskCounts::max_ns_pid`]: a pid in the container's own namespace, never a host pid.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::debug;
use parking_lot::{Condvar, Mutex};

use crate::container::Container;
use crate::container::carried::{Carried, Identity};
use crate::error::Result;
use crate::procfs::ProcRoot;
use crate::tasks::{TaskCounts, count_tasks};

/// Fixed-point shift of the kernel's load averages (`FSHIFT`).
const FSHIFT: u32 = 11;
/// 1.0 in fixed point (`FIXED_1`).
pub const FIXED_1: u64 = 1 << FSHIFT;
/// `EXP_1`, `EXP_5`, `EXP_15`: exp(-5 s / 1, 5, 15 min) in fixed point.
const EXP: [u64; 3] = [1884, 2014, 2037];
/// Most containers followed at once.
pub const MAX_FOLLOWED: usize = 4096;

/// One step of the kernel's `calc_load`: `load` (fixed point) decayed by `exp` towards `active`
/// tasks (a plain count). Like the kernel, it rounds up while the load rises, so a constant
/// count is reached exactly, and truncates while it falls, so an idle load reaches 0.
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

/// `n` steps of [`calc_load`] with the same `active` count in one, as the kernel's
/// `calc_load_n` folds sampling windows it missed: `exp` is raised to the `n`th power in fixed
/// point, rounding each product to nearest.
pub fn calc_load_n(load: u64, exp: u64, active: u64, n: u32) -> u64 {
    calc_load(load, fixed_pow(exp, n), active)
}

/// `x`^`n` in fixed point (`x` below [`FIXED_1`]), by repeated squaring with products rounded
/// to nearest.
fn fixed_pow(mut x: u64, mut n: u32) -> u64 {
    let round = |v: u64| v.saturating_add(FIXED_1 / 2) >> FSHIFT;
    let mut result = FIXED_1;
    while n > 0 {
        if n & 1 == 1 {
            result = round(result.saturating_mul(x));
        }
        n >>= 1;
        x = round(x.saturating_mul(x));
    }
    result
}

/// `proc/loadavg` text as the kernel prints it: each average rounded to two decimals
/// (`LOAD_INT`/`LOAD_FRAC` after adding `FIXED_1/200`), then `running/total last_pid`.
pub fn render_loadavg(avgs: [u64; 3], running: u32, total: u32, last_pid: u32) -> String {
    let fmt = |x: u64| {
        let x = x + FIXED_1 / 200;
        let frac = ((x & (FIXED_1 - 1)) * 100) >> FSHIFT;
        format!("{}.{frac:02}", x >> FSHIFT)
    };
    let [one, five, fifteen] = avgs.map(fmt);
    format!("{one} {five} {fifteen} {running}/{total} {last_pid}\n")
}

/// Where the sampler finds a container's tasks.
pub trait TaskSource: Send + Sync + std::fmt::Debug {
    /// Host TIDs of every thread of the container; an error means the container is gone.
    fn tasks(&self) -> Result<Vec<u32>>;
    /// How deep the container's pid namespace lies below the daemon's (see
    /// [`count_tasks`]).
    fn ns_level(&self) -> usize;
    /// Whether the container still lives; a dead one is forgotten at the next sample.
    fn is_alive(&self) -> bool {
        true
    }
    /// Who the container is across daemons (its load averages are carried over a restart);
    /// `None`: not carried.
    fn identity(&self) -> Option<Identity> {
        None
    }
}

impl TaskSource for Container {
    /// The threads of the container (see [`Container::tasks`]).
    fn tasks(&self) -> Result<Vec<u32>> {
        Container::tasks(self)
    }

    fn ns_level(&self) -> usize {
        self.ns_level
    }

    fn is_alive(&self) -> bool {
        Container::is_alive(self)
    }

    fn identity(&self) -> Option<Identity> {
        Identity::of(self)
    }
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
    source: Arc<dyn TaskSource>,
    reading: LoadReading,
    last_read: Instant,
}

/// The sampling thread's stop flag, shared with the thread apart from the [`Sampler`] so that
/// dropping the sampler can stop a thread that holds only a weak reference to it.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn stop(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    /// Sleeps until `deadline`; false as soon as a stop is asked for.
    fn sleep_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock();
        while !*stopped && Instant::now() < deadline {
            self.wake.wait_until(&mut stopped, deadline);
        }
        !*stopped
    }
}

/// Per-container load averages: the containers followed, by key, and the thread sampling them.
#[derive(Debug)]
pub struct Sampler {
    proc: ProcRoot,
    interval: Duration,
    idle_after: Duration,
    followed: Mutex<HashMap<u64, Followed>>,
    signal: Arc<StopSignal>,
    /// Run after every round: the daemon's other housekeeping that needs no thread of its own.
    after_round: Mutex<Option<AfterRound>>,
    /// Load averages a predecessor daemon kept (see `container::carried`).
    carried: std::sync::OnceLock<Arc<Carried>>,
}

/// Work [`Sampler::after_every_round`] was given.
struct AfterRound(Box<dyn Fn() + Send>);

impl std::fmt::Debug for AfterRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterRound")
    }
}

impl Sampler {
    /// A sampler reading tasks through `proc` that samples, every `interval` (at least 1 ms),
    /// the containers read within `idle_after`.
    pub fn new(proc: ProcRoot, interval: Duration, idle_after: Duration) -> Arc<Sampler> {
        Arc::new(Sampler {
            proc,
            interval: interval.max(Duration::from_millis(1)),
            idle_after,
            followed: Mutex::new(HashMap::new()),
            signal: Arc::default(),
            after_round: Mutex::new(None),
            carried: std::sync::OnceLock::new(),
        })
    }

    /// Starts each container first read from now on from the load averages `carried` kept
    /// for it, aged by the time since they were kept (at the load the first count finds).
    pub fn carry_from(&self, carried: Arc<Carried>) {
        let _ = self.carried.set(carried);
    }

    /// The load averages of the containers followed now that are carried over restarts.
    pub fn loads(&self) -> Vec<(Identity, [u64; 3])> {
        self.followed
            .lock()
            .values()
            .filter_map(|f| Some((f.source.identity()?, f.reading.avgs)))
            .collect()
    }

    /// Runs `work` on the sampling thread after every round (every `interval`), replacing
    /// what an earlier call gave.
    pub fn after_every_round(&self, work: impl Fn() + Send + 'static) {
        *self.after_round.lock() = Some(AfterRound(Box::new(work)));
    }

    /// Starts the sampling thread (call it once). It ends soon after [`Sampler::stop`] or after
    /// the last `Arc` of the sampler is dropped, whichever comes first.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let sampler = Arc::downgrade(self);
        let signal = self.signal.clone();
        let interval = self.interval;
        std::thread::Builder::new()
            .name("nsview-loadavg".into())
            .spawn(move || run(&sampler, &signal, interval))
    }

    /// Ends the sampling thread within moments (it is not sleeping out its interval); final.
    pub fn stop(&self) {
        self.signal.stop();
    }

    /// The load of container `c` (keyed by `key`), read by task `reader`: followed from now on.
    pub fn read(&self, key: u64, c: &Arc<Container>, reader: u32) -> Result<LoadReading> {
        self.read_source(key, c, Some(reader))
    }

    /// The load of the container keyed by `key` whose tasks come from `source`, leaving task
    /// `exclude` out of a first count: followed from now on. A source error on the first read
    /// is returned (nothing is followed then).
    pub fn read_source<S: TaskSource + 'static>(
        &self,
        key: u64,
        source: &Arc<S>,
        exclude: Option<u32>,
    ) -> Result<LoadReading> {
        if let Some(f) = self.followed.lock().get_mut(&key) {
            f.last_read = Instant::now();
            return Ok(f.reading);
        }
        let counts = self.count(&**source, exclude)?;
        let carried = self
            .carried
            .get()
            .zip(source.identity())
            .and_then(|(carried, id)| carried.take_load(id));
        let avgs = carried.map_or([0; 3], |(avgs, age)| {
            let windows = (age / self.interval.as_secs_f64()).round().min(1e6) as u32;
            let active = u64::from(counts.running) + u64::from(counts.blocked);
            let mut avgs = avgs;
            for (avg, exp) in avgs.iter_mut().zip(EXP) {
                *avg = calc_load_n(*avg, exp, active, windows);
            }
            avgs
        });
        Ok(self.follow(key, source.clone(), counts, avgs))
    }

    /// Counts `source`'s tasks, without the map lock held.
    fn count(&self, source: &dyn TaskSource, exclude: Option<u32>) -> Result<TaskCounts> {
        let mut tids = source.tasks()?;
        if let Some(tid) = exclude {
            tids.retain(|&t| t != tid);
        }
        Ok(count_tasks(&self.proc, &tids, source.ns_level()))
    }

    /// Starts following `key` with first counts `counts` (a concurrent first read may have
    /// started already: its entry is kept) and returns its reading.
    fn follow(
        &self,
        key: u64,
        source: Arc<dyn TaskSource>,
        counts: TaskCounts,
        avgs: [u64; 3],
    ) -> LoadReading {
        let mut followed = self.followed.lock();
        if followed.len() >= MAX_FOLLOWED && !followed.contains_key(&key) {
            forget_least_recent(&mut followed);
        }
        let now = Instant::now();
        let f = followed.entry(key).or_insert_with(|| Followed {
            source,
            reading: LoadReading { avgs, counts },
            last_read: now,
        });
        f.last_read = now;
        f.reading
    }

    /// One sampling round over the containers read within the idle window, folding `windows`
    /// sampling intervals (more than 1 when the round comes late).
    pub fn sample_all(&self, windows: u32) {
        for (key, source) in self.due() {
            match self.sample(key, &*source) {
                Some(counts) => self.fold(key, counts, windows),
                None => {
                    self.followed.lock().remove(&key);
                }
            }
        }
    }

    /// Forgets the containers not read within the idle window and lists the others' sources,
    /// so that no procfs read happens under the map lock.
    fn due(&self) -> Vec<(u64, Arc<dyn TaskSource>)> {
        let mut followed = self.followed.lock();
        followed.retain(|_, f| f.last_read.elapsed() < self.idle_after);
        followed
            .iter()
            .map(|(key, f)| (*key, f.source.clone()))
            .collect()
    }

    /// The counts of one container, or `None` if it is gone.
    fn sample(&self, key: u64, source: &dyn TaskSource) -> Option<TaskCounts> {
        if !source.is_alive() {
            debug!("loadavg: container {key:#x} exited; forgotten");
            return None;
        }
        self.count(source, None)
            .inspect_err(|e| debug!("loadavg: tasks of {key:#x} unreadable ({e}); forgotten"))
            .ok()
    }

    /// Folds one sample into the averages of `key`, if it is still followed.
    fn fold(&self, key: u64, counts: TaskCounts, windows: u32) {
        let active = u64::from(counts.running) + u64::from(counts.blocked);
        if let Some(f) = self.followed.lock().get_mut(&key) {
            for (avg, exp) in f.reading.avgs.iter_mut().zip(EXP) {
                *avg = calc_load_n(*avg, exp, active, windows);
            }
            f.reading.counts = counts;
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

impl Drop for Sampler {
    /// Stops the sampling thread, which holds only a weak reference to the sampler.
    fn drop(&mut self) {
        self.signal.stop();
    }
}

/// Removes the entry read longest ago.
fn forget_least_recent(followed: &mut HashMap<u64, Followed>) {
    let oldest = followed.iter().min_by_key(|(_, f)| f.last_read);
    if let Some(key) = oldest.map(|(key, _)| *key) {
        followed.remove(&key);
    }
}

/// The sampling thread: one round every `interval` on a fixed schedule (the time a round takes
/// does not stretch the period), until stopped or the sampler is dropped.
fn run(sampler: &Weak<Sampler>, signal: &StopSignal, interval: Duration) {
    let mut next = Instant::now() + interval;
    while signal.sleep_until(next) {
        let windows = windows_due(&mut next, Instant::now(), interval);
        // Holding the sampler only for the round lets its last owner drop it meanwhile.
        let Some(sampler) = sampler.upgrade() else {
            return;
        };
        sampler.sample_all(windows);
        if let Some(work) = &*sampler.after_round.lock() {
            (work.0)();
        }
    }
}

/// How many intervals have ended at `now` since the deadline `next` (at least 1), moving
/// `next` to the first deadline still ahead. A round that comes late (a slow previous round, a
/// stopped process or VM) folds every window it missed, as the kernel does after NO_HZ idle.
fn windows_due(next: &mut Instant, now: Instant, interval: Duration) -> u32 {
    let late = now.saturating_duration_since(*next).as_nanos();
    let missed = late / interval.as_nanos().max(1);
    let windows = u32::try_from(missed + 1).unwrap_or(u32::MAX);
    *next += interval.saturating_mul(windows);
    windows
}

#[cfg(test)]
mod tests;
