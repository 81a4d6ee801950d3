//! One namespace set: its worker thread, the only thing that talks to the set's agent, and
//! the bounded queue in front of it.
//!
//! - A FUSE thread that may wait ([`super::Permit`]) queues a [`Call`] and waits for its
//!   answer: until the worker takes it, at most one agent deadline (a call that waited
//!   longer, behind a stuck agent, is given up and never sent, so a write the caller saw
//!   fail is never made later); once taken, until the worker answers, which the agent's
//!   deadline bounds.
//! - A request that may not wait on a FUSE thread is queued whole ([`Job`]) and runs on the
//!   worker, which replies for it; its exchanges with this set's agent then need no hop.
//! - The worker ends, and its agent with it, when nothing came for the pool's idle time, when
//!   the agent hung up (its container's init died) with nothing queued, or when the pool
//!   evicts or stops the set. It sleeps in `poll` on its doorbell and its agent's socket, and
//!   wakes for nothing else. Killing and reaping its agent happens here, under no lock.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use nsview_proto::agent::{Op, Payload};
use parking_lot::{Condvar, Mutex};

use super::cache::AttrCache;
use super::{Agent, NsKey, Shared};
use crate::error::{AgentFailure, Error, Result};

/// A request's work, replying by itself.
pub type Job = Box<dyn FnOnce() + Send>;

/// Most requests queued on one set; beyond, EIO (each holds its reply, and a write its data,
/// until the agent gets to it).
pub const QUEUE: usize = 256;
/// A worker's stack: a request renders a few KiB and talks JSON to an agent.
const STACK: usize = 512 << 10;

/// Where a call stands, as its waiter and the worker see it.
enum CallState {
    Queued,
    Taken,
    Done(Result<Payload>),
    /// The waiter gave up before the worker took it: it is never sent.
    Abandoned,
}

/// One exchange a FUSE thread waits for: the handover of its answer.
struct Answer {
    state: Mutex<CallState>,
    ready: Condvar,
}

enum Work {
    Call {
        tid: u32,
        op: Op,
        answer: Arc<Answer>,
    },
    Job(Job),
}

/// Why work was not queued; the work given back.
enum Refused {
    Full,
    Closed(Work),
}

#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// The worker runs something.
    busy: bool,
    /// Asked to end once nothing is queued (evicted, or the pool stops).
    closing: bool,
    /// Ended: nothing more is taken; a sender makes a new set.
    closed: bool,
}

/// What only the worker touches: the agent.
#[derive(Default)]
struct Conn {
    agent: Option<Agent>,
}

/// One namespace set.
pub struct Set {
    key: NsKey,
    queue: Mutex<Queue>,
    /// The worker's doorbell (an eventfd).
    bell: OwnedFd,
    conn: Mutex<Conn>,
    /// Attributes its agent told, read by every thread.
    pub stats: AttrCache,
    /// A FUSE thread waits on this set now.
    waited_on: AtomicBool,
    last_used: Mutex<Instant>,
    worker: OnceLock<ThreadId>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// It has an agent now (for the pool's count).
    alive: AtomicBool,
    /// The set it replaced (evicted to make room) has ended, agent and all: until then only
    /// the worker, which waits for that, may spawn this one's agent.
    ready: AtomicBool,
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Set({})", self.key)
    }
}

impl Set {
    /// A set for `key` and its worker, which first waits for `after` (the worker of a set
    /// evicted to make room: its agent is gone before this one's comes).
    pub(super) fn start(
        shared: &Arc<Shared>,
        key: NsKey,
        after: Option<JoinHandle<()>>,
    ) -> Result<Arc<Set>> {
        use rustix::event::{EventfdFlags, eventfd};
        let bell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| Error::task("eventfd", std::process::id(), e.into()))?;
        let set = Arc::new(Set {
            key,
            queue: Mutex::default(),
            bell,
            conn: Mutex::default(),
            stats: AttrCache::default(),
            waited_on: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            worker: OnceLock::new(),
            thread: Mutex::new(None),
            alive: AtomicBool::new(false),
            ready: AtomicBool::new(after.is_none()),
        });
        let (me, pool) = (set.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("nsview-agent".into())
            .stack_size(STACK)
            .spawn(move || {
                if let Some(before) = after {
                    let _ = before.join();
                    me.ready.store(true, Ordering::Release);
                }
                me.work(&pool);
            })
            .map_err(|e| Error::task("start a worker", std::process::id(), e))?;
        *set.thread.lock() = Some(thread);
        Ok(set)
    }

    /// Its namespaces.
    pub fn key(&self) -> &NsKey {
        &self.key
    }

    /// Whether it has an agent.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// When it last served a request.
    pub fn last_used(&self) -> Instant {
        *self.last_used.lock()
    }

    /// Whether the current thread is its worker.
    pub fn is_worker(&self) -> bool {
        self.worker.get() == Some(&std::thread::current().id())
    }

    /// Marks a FUSE thread as waiting on it; false if one already does.
    pub fn claim_waiter(&self) -> bool {
        !self.waited_on.swap(true, Ordering::AcqRel)
    }

    /// Ends the mark of [`Set::claim_waiter`].
    pub fn release_waiter(&self) {
        self.waited_on.store(false, Ordering::Release);
    }

    /// Asks it to end, if it is idle now (nothing queued or running, no waiter); whether
    /// it was.
    pub(super) fn evict(&self) -> bool {
        let Some(mut queue) = self.queue.try_lock() else {
            return false;
        };
        if queue.busy || !queue.work.is_empty() || self.waited_on.load(Ordering::Acquire) {
            return false;
        }
        queue.closing = true;
        drop(queue);
        self.ring();
        true
    }

    /// Asks it to end after what is queued.
    pub(super) fn close(&self) {
        self.queue.lock().closing = true;
        self.ring();
    }

    /// Its worker's handle, to join (once), outside the pool's lock.
    pub(super) fn take_thread(&self) -> Option<JoinHandle<()>> {
        self.thread.lock().take()
    }

    /// Whether it has ended and takes nothing more.
    pub(super) fn closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// Queues a whole request. `Err` gives it back when the set has ended (the caller
    /// tries a new one); a job the queue has no room for is dropped, which answers EIO.
    pub fn defer(&self, job: Job) -> std::result::Result<(), Job> {
        match self.push(Work::Job(job)) {
            Err(Refused::Closed(Work::Job(job))) => Err(job),
            _ => Ok(()),
        }
    }

    /// Queues `op` for task `tid` and waits for the answer (see the module's doc). `Err`
    /// gives `op` back when the set has ended before taking it (the caller retries on a new
    /// one).
    pub fn call(
        &self,
        tid: u32,
        op: Op,
        deadline: Duration,
    ) -> std::result::Result<Result<Payload>, Op> {
        let answer = Arc::new(Answer {
            state: Mutex::new(CallState::Queued),
            ready: Condvar::new(),
        });
        let work = Work::Call {
            tid,
            op,
            answer: answer.clone(),
        };
        match self.push(work) {
            Ok(()) => {}
            Err(Refused::Full) => return Ok(Err(Error::Agent(AgentFailure::Busy))),
            Err(Refused::Closed(Work::Call { op, .. })) => return Err(op),
            Err(Refused::Closed(Work::Job(_))) => return Ok(Err(Error::Os(libc::EIO))),
        }
        let queued_until = Instant::now() + deadline;
        // Taken: the worker's own deadline bounds the exchange; this only guards against a
        // worker that never answers (a bug), so that no FUSE thread waits forever.
        let taken_until = queued_until + 3 * deadline;
        let mut state = answer.state.lock();
        loop {
            match std::mem::replace(&mut *state, CallState::Abandoned) {
                CallState::Done(result) => return Ok(result),
                CallState::Queued if Instant::now() >= queued_until => {
                    debug!(
                        "a request for {} waited {deadline:?} in its queue",
                        self.key
                    );
                    return Ok(Err(Error::Agent(AgentFailure::Queued)));
                }
                CallState::Queued => {
                    *state = CallState::Queued;
                    answer.ready.wait_until(&mut state, queued_until);
                }
                CallState::Taken if Instant::now() >= taken_until => {
                    error!(
                        "the worker for {} did not answer a request it took",
                        self.key
                    );
                    return Ok(Err(Error::Agent(AgentFailure::Deadline)));
                }
                CallState::Taken => {
                    *state = CallState::Taken;
                    answer.ready.wait_until(&mut state, taken_until);
                }
                CallState::Abandoned => return Ok(Err(Error::Agent(AgentFailure::Queued))),
            }
        }
    }

    /// Queues `work` and rings.
    fn push(&self, work: Work) -> std::result::Result<(), Refused> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(Refused::Closed(work));
        }
        if queue.work.len() >= QUEUE {
            drop(queue);
            warn!("{QUEUE} requests wait for the agent of {}: EIO", self.key);
            // Dropped here: a job's reply, dropped, answers EIO.
            drop(work);
            return Err(Refused::Full);
        }
        queue.work.push_back(work);
        drop(queue);
        self.ring();
        Ok(())
    }

    fn ring(&self) {
        let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
    }

    /// The worker's loop.
    fn work(&self, pool: &Shared) {
        let _ = self.worker.set(std::thread::current().id());
        loop {
            match self.next() {
                Some(work) => {
                    self.run(pool, work);
                    *self.last_used.lock() = Instant::now();
                    self.queue.lock().busy = false;
                }
                None if self.sleep(pool) => {}
                None => {
                    let mut queue = self.queue.lock();
                    if queue.work.is_empty() {
                        queue.closed = true;
                        break;
                    }
                }
            }
        }
        self.end_agent("ended");
        pool.forget(self);
    }

    /// The next work, marked running.
    fn next(&self) -> Option<Work> {
        let mut queue = self.queue.lock();
        let work = queue.work.pop_front()?;
        queue.busy = true;
        Some(work)
    }

    fn run(&self, pool: &Shared, work: Work) {
        match work {
            Work::Call { tid, op, answer } => {
                {
                    let mut state = answer.state.lock();
                    if matches!(*state, CallState::Abandoned) {
                        return;
                    }
                    *state = CallState::Taken;
                }
                let result = catch_unwind(AssertUnwindSafe(|| self.exchange(pool, tid, op)))
                    .unwrap_or(Err(Error::Agent(AgentFailure::Hangup)));
                *answer.state.lock() = CallState::Done(result);
                answer.ready.notify_one();
            }
            Work::Job(job) => {
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    warn!("a request for {} panicked", self.key);
                }
            }
        }
    }

    /// Performs `op` here, on the FUSE thread the set admits ([`super::Permit`]), when the
    /// worker is idle (nothing queued or running): the same exchange the worker would make,
    /// without the two thread wakeups of handing it over (about 30 µs, 15% of a warm
    /// `proc/sys` read on the 2-core test machine). `Err` gives `op` back otherwise.
    pub(super) fn exchange_if_idle(
        &self,
        pool: &Shared,
        tid: u32,
        op: Op,
    ) -> std::result::Result<Result<Payload>, Op> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(op);
        }
        let conn = {
            let queue = self.queue.lock();
            if queue.busy || queue.closed || !queue.work.is_empty() {
                return Err(op);
            }
            // Taken under the queue's lock: the worker takes it only after marking itself
            // busy under that lock, so it cannot be between the two.
            match self.conn.try_lock() {
                Some(conn) => conn,
                None => return Err(op),
            }
        };
        let result = self.exchange_with(conn, pool, tid, op);
        *self.last_used.lock() = Instant::now();
        Ok(result)
    }

    /// Performs `op` with this set's agent, spawned (in task `tid`'s namespaces) if it has
    /// none. A hello is answered from the agent's own, given at spawn.
    pub(super) fn exchange(&self, pool: &Shared, tid: u32, op: Op) -> Result<Payload> {
        self.exchange_with(self.conn.lock(), pool, tid, op)
    }

    /// [`Set::exchange`] with the connection held: one thread at a time talks to the agent.
    fn exchange_with(
        &self,
        mut conn: parking_lot::MutexGuard<'_, Conn>,
        pool: &Shared,
        tid: u32,
        op: Op,
    ) -> Result<Payload> {
        let running = conn.agent.as_mut().is_some_and(Agent::is_running);
        if !running {
            if let Some(old) = conn.agent.take() {
                old.end();
            }
            conn.agent = Some(pool.spawn(tid, self.key)?);
            self.alive.store(true, Ordering::Relaxed);
            if !self.is_worker() {
                // The worker sleeps watching the agent it knew of (none): it must watch this
                // one's socket, whose hangup (its container gone) ends it.
                self.ring();
            }
        }
        let agent = conn.agent.as_mut().ok_or(Error::Os(libc::EIO))?;
        if let Op::Hello { .. } = op {
            return Ok(agent.hello());
        }
        let learns = matches!(op, Op::Lookup { .. } | Op::Readdir { .. });
        let asked = learns.then(|| op.clone());
        let result = agent.call(pool.next_id(), op, pool.cfg.timeout);
        if let Some(op) = &asked {
            self.stats.learn(op, &result);
        }
        if let Err(Error::Agent(failure)) = &result {
            warn!("agent for {} failed ({failure}); killed", self.key);
            conn.agent.take();
            self.alive.store(false, Ordering::Relaxed);
        }
        result
    }

    /// Sleeps until rung, its agent hangs up, or it has been idle for the pool's idle time.
    /// False when it should end: idle, or its agent gone with nothing queued.
    fn sleep(&self, pool: &Shared) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.queue.lock().closing {
            return false;
        }
        let socket = self.conn.lock().agent.as_ref().map(Agent::socket);
        let idle_at = self.last_used() + pool.cfg.idle;
        let left = idle_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = vec![PollFd::new(self.bell.as_fd(), PollFlags::POLLIN)];
        // Of the agent's socket, hangup and error only: they are reported whatever is asked.
        if let Some(socket) = &socket {
            fds.push(PollFd::new(socket.as_fd(), PollFlags::empty()));
        }
        // Rounded up: waking a millisecond early would find it not idle yet.
        let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let hung_up = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
        let mut drain = [0u8; 8];
        let _ = rustix::io::read(&self.bell, &mut drain);
        if hung_up {
            self.end_agent("hung up");
            return !self.queue.lock().work.is_empty();
        }
        true
    }

    /// Kills and reaps its agent, if it has one.
    fn end_agent(&self, why: &str) {
        let agent = self.conn.lock().agent.take();
        if let Some(agent) = agent {
            debug!("agent for {} {why}", self.key);
            self.alive.store(false, Ordering::Relaxed);
            agent.end();
        }
    }
}
