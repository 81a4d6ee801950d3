//! Lanes: at most one FUSE worker per namespace set waits on an agent; further requests of
//! that set queue on a thread of its own (its lane) and run one after another there.
//!
//! An agent serves one request at a time and has a deadline per request, so a caller whose
//! agent is slow or stuck (a container that stops its own agent) would otherwise hold a FUSE
//! worker per request it makes, for up to the deadline each: a handful of such requests
//! would stop the daemon for every container. The first request of a set runs on its worker
//! (a hop to another thread costs about as much as the agent's round trip, and a set rarely
//! has two requests at once); while it runs, the set's next requests go to its lane, and
//! the workers go on serving everyone else. At most a few workers wait on agents at once
//! over all sets (a container can make new sets). A lane's thread ends after [`IDLE`]
//! without work; at most [`MAX_LANES`] exist, each with at most [`QUEUE`] requests waiting
//! (beyond either, EIO). When all lanes exist, the idle ones are ended at once to make room:
//! a container making namespace sets by the hundred (`unshare -n` in a loop) must not leave
//! every other container without a lane for 30 s.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use log::{debug, warn};
use parking_lot::Mutex;

use crate::agent::NsKey;

/// A request's work, replying by itself.
pub type Job = Box<dyn FnOnce() + Send>;

/// How long a lane's thread waits for work before it ends.
pub const IDLE: Duration = Duration::from_secs(30);
/// Most lanes at once; beyond, a request that would need one gets EIO.
pub const MAX_LANES: usize = 512;
/// Most requests waiting on one lane; beyond, EIO (each holds its reply, and a write its
/// data, until the agent gets to it).
pub const QUEUE: usize = 256;
/// A lane thread's stack: a request renders a few KiB and talks JSON to an agent.
const STACK: usize = 512 << 10;

/// One lane as the registry keeps it: its queue, and how many of its requests are queued or
/// running (shared with its thread; also what tells this lane from a later one of its set).
#[derive(Debug)]
struct Lane {
    tx: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
}

type LaneMap = Mutex<HashMap<NsKey, Lane>>;

/// The lanes by namespace set.
#[derive(Debug)]
pub struct Lanes {
    lanes: Arc<LaneMap>,
    /// Sets with a request running on a FUSE worker.
    inline: Mutex<HashSet<NsKey>>,
    /// Most workers waiting on agents at once, over all sets: a container can make new sets
    /// (`unshare -Ur`) and stop each one's agent.
    max_inline: usize,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes::new(4)
    }
}

/// The right to run a request of a set on the current worker; given back on drop.
#[derive(Debug)]
pub struct Inline<'a> {
    lanes: &'a Lanes,
    key: NsKey,
}

impl Drop for Inline<'_> {
    fn drop(&mut self) {
        self.lanes.inline.lock().remove(&self.key);
    }
}

impl Lanes {
    /// Lanes letting at most `max_inline` requests wait on agents on FUSE workers at once.
    pub fn new(max_inline: usize) -> Lanes {
        Lanes {
            lanes: Arc::default(),
            inline: Mutex::default(),
            max_inline: max_inline.max(1),
        }
    }

    /// The right to run a request of `key` here, unless one of its set already runs on a
    /// worker or as many as allowed of all sets do.
    pub fn inline(&self, key: NsKey) -> Option<Inline<'_>> {
        let mut inline = self.inline.lock();
        if inline.len() >= self.max_inline {
            return None;
        }
        // `then`, not `then_some`: a token made and dropped here would give back another's.
        let taken = inline.insert(key);
        drop(inline);
        taken.then(|| Inline { lanes: self, key })
    }

    /// Queues `job` on the lane of `key` (made if there is none), or runs it here when no
    /// lane can be had.
    pub fn run(&self, key: NsKey, job: Job) {
        let mut lanes = self.lanes.lock();
        let job = match lanes.get(&key) {
            None => job,
            Some(lane) => match lane.tx.try_send(job) {
                Ok(()) => {
                    lane.pending.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(TrySendError::Full(job)) => {
                    drop(lanes);
                    warn!("lane for {key} has {QUEUE} requests waiting: EIO");
                    // Dropping a request's reply answers EIO.
                    return drop(job);
                }
                // Its thread ended (it removes itself under this lock, so this is rare).
                Err(TrySendError::Disconnected(job)) => job,
            },
        };
        if lanes.len() >= MAX_LANES {
            // Idle lanes end when their queue goes (nothing is queued on them, and sends
            // happen under this lock).
            lanes.retain(|_, lane| lane.pending.load(Ordering::Relaxed) > 0);
        }
        if lanes.len() >= MAX_LANES {
            drop(lanes);
            warn!("{MAX_LANES} lanes busy: EIO for a request of {key}");
            return drop(job);
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let registry = self.lanes.clone();
        let pending = Arc::new(AtomicUsize::new(1));
        let ours = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("nsview-lane".into())
            .stack_size(STACK)
            .spawn(move || serve(key, &rx, &ours, &registry));
        match spawned {
            Ok(_) => {
                // The thread cannot have ended (it needs this lock to), the queue is empty.
                let _ = tx.try_send(job);
                lanes.insert(key, Lane { tx, pending });
            }
            Err(e) => {
                drop(lanes);
                warn!("cannot start a lane for {key}: {e}; EIO");
                drop(job);
            }
        }
    }

    /// Lanes alive now.
    pub fn len(&self) -> usize {
        self.lanes.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lanes with a job queued or running.
    #[cfg(test)]
    fn busy(&self) -> usize {
        let lanes = self.lanes.lock();
        lanes
            .values()
            .filter(|l| l.pending.load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// A lane's thread: runs its jobs in order until it has none for [`IDLE`] (or the registry
/// dropped it to make room).
fn serve(key: NsKey, rx: &Receiver<Job>, pending: &Arc<AtomicUsize>, registry: &LaneMap) {
    let run = |job: Job| {
        run_guarded(job);
        pending.fetch_sub(1, Ordering::Relaxed);
    };
    loop {
        match rx.recv_timeout(IDLE) {
            Ok(job) => run(job),
            Err(RecvTimeoutError::Timeout) => {
                // Senders send while holding the registry lock: once the lane is out of the
                // registry under it, and the queue is empty, nothing more can come.
                let mut lanes = registry.lock();
                match rx.try_recv() {
                    Ok(job) => {
                        drop(lanes);
                        run(job);
                    }
                    Err(_) => {
                        // Only this lane's entry: a later lane of the set may have its key.
                        if lanes
                            .get(&key)
                            .is_some_and(|lane| Arc::ptr_eq(&lane.pending, pending))
                        {
                            lanes.remove(&key);
                        }
                        debug!("lane for {key} idle; ended");
                        return;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Runs `job`; a panic ends the job only (its reply, dropped, answers EIO).
fn run_guarded(job: Job) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        warn!("a request panicked on its lane");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> NsKey {
        NsKey::new([n; 6])
    }

    #[test]
    fn a_lane_runs_its_jobs_in_order_and_others_meanwhile() {
        let lanes = Lanes::default();
        let (tx, rx) = mpsc::channel();
        let (release, blocked) = mpsc::channel::<()>();
        // Lane 1 is held up by its first job; lane 2 is not held up by lane 1.
        lanes.run(
            key(1),
            Box::new(move || {
                let _ = blocked.recv();
            }),
        );
        for n in 0..3 {
            let tx = tx.clone();
            lanes.run(key(1), Box::new(move || tx.send((1, n)).unwrap()));
        }
        let tx2 = tx.clone();
        lanes.run(key(2), Box::new(move || tx2.send((2, 0)).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (2, 0));
        release.send(()).unwrap();
        let order: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(order, [(1, 0), (1, 1), (1, 2)]);
        assert_eq!(lanes.len(), 2);
    }

    #[test]
    fn one_request_per_set_runs_inline_and_few_over_all_sets() {
        let lanes = Lanes::new(2);
        let first = lanes.inline(key(4)).unwrap();
        assert!(lanes.inline(key(4)).is_none());
        let second = lanes.inline(key(5)).unwrap();
        assert!(lanes.inline(key(6)).is_none(), "at most two over all sets");
        drop(first);
        assert!(lanes.inline(key(4)).is_some());
        drop(second);
    }

    #[test]
    fn idle_lanes_make_room_when_all_exist() {
        let lanes = Lanes::default();
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Arc::new(Mutex::new(blocked));
        // One lane held up, every other one idle after its job.
        let hold = blocked.clone();
        lanes.run(
            key(0),
            Box::new(move || {
                let _ = hold.lock().recv();
            }),
        );
        let (tx, rx) = mpsc::channel();
        for n in 1..MAX_LANES as u64 {
            let tx = tx.clone();
            lanes.run(key(n), Box::new(move || tx.send(n).unwrap()));
        }
        for _ in 1..MAX_LANES {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(lanes.len(), MAX_LANES);
        // A lane counts as idle once its job has returned, just after the job's send.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lanes.busy() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let tx2 = tx.clone();
        lanes.run(key(9999), Box::new(move || tx2.send(9999).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 9999);
        assert!(lanes.len() <= 2, "the idle ones went: {}", lanes.len());
        release.send(()).unwrap();
    }

    #[test]
    fn a_panicking_job_leaves_its_lane_working() {
        let lanes = Lanes::default();
        lanes.run(key(3), Box::new(|| panic!("boom")));
        let (tx, rx) = mpsc::channel();
        lanes.run(key(3), Box::new(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
    }
}
