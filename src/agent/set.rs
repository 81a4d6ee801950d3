//! One namespace set: its worker thread, its agent, and the bounded queue in front of it. One
//! thread at a time talks to the agent, holding the set's connection: the worker, for what is
//! queued, or the one FUSE thread the set admits ([`super::Permit`]), when nothing is queued.
//!
//! - A FUSE thread that may wait exchanges with the agent itself when the worker is idle;
//!   else it queues a [`Call`](Work::Call) and waits for its answer: until it is sent, at
//!   most one agent deadline (a call that waited longer, behind a stuck agent, is given up and
//!   never sent, so a write the caller saw fail is never made later); once sent, until the
//!   agent answers or its deadline ends the exchange.
//! - A request that may not wait on a FUSE thread is queued whole ([`Job`]) and runs on the
//!   worker, which replies for it; its exchanges with this set's agent then need no hop.
//! - The worker ends, and its agent with it, when nothing came for the pool's idle time, when
//!   the agent hung up (its container's init died) with nothing queued, or when the pool
//!   evicts or stops the set. It sleeps in `poll` on its doorbell and its agent's socket, and
//!   wakes for nothing else. Killing and reaping its agent happens here, under no pool lock.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use log::{debug, warn};
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
    /// The worker has it, and may spawn the agent or wait for the connection first.
    Taken,
    /// Sent to the agent: the agent's deadline bounds the rest, and the waiter waits for it
    /// (a write that reached the agent is answered as the agent answers it).
    Sent,
    Done(Result<Payload>),
    /// The waiter gave up before it was sent: it never is.
    Abandoned,
}

impl Answer {
    /// Marks the call sent, unless its waiter has given up.
    fn send(&self) -> bool {
        let mut state = self.state.lock();
        if matches!(*state, CallState::Abandoned) {
            return false;
        }
        *state = CallState::Sent;
        true
    }
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
        after: Vec<JoinHandle<()>>,
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
            ready: AtomicBool::new(after.is_empty()),
        });
        let (me, pool) = (set.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("nsview-agent".into())
            .stack_size(STACK)
            .spawn(move || {
                if !after.is_empty() {
                    for before in after {
                        let _ = before.join();
                    }
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
        // Not while it waits for the set it replaced (a chain of sets each waiting for the
        // one before would hold threads without bound), nor while any thread talks to its
        // agent (an inline exchange holds the connection; it checks `closing` under the
        // queue's lock, held here).
        let exchanging = self.conn.is_locked();
        let ready = self.ready.load(Ordering::Acquire);
        if !ready
            || exchanging
            || queue.busy
            || !queue.work.is_empty()
            || self.waited_on.load(Ordering::Acquire)
        {
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
        // Until it is sent, at most one deadline; once sent, until the agent answers or its
        // deadline ends the exchange.
        let unsent_until = Instant::now() + deadline;
        let mut state = answer.state.lock();
        loop {
            match std::mem::replace(&mut *state, CallState::Abandoned) {
                CallState::Done(result) => return Ok(result),
                CallState::Queued | CallState::Taken if Instant::now() >= unsent_until => {
                    // Left Abandoned: the worker will not send it.
                    debug!(
                        "a request for {} waited {deadline:?} for its turn",
                        self.key
                    );
                    return Ok(Err(Error::Agent(AgentFailure::Queued)));
                }
                unsent @ (CallState::Queued | CallState::Taken) => {
                    *state = unsent;
                    answer.ready.wait_until(&mut state, unsent_until);
                }
                CallState::Sent => {
                    *state = CallState::Sent;
                    answer.ready.wait(&mut state);
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
                let exchange =
                    || self.exchange_with(self.conn.lock(), pool, tid, op, Some(&answer));
                let result = catch_unwind(AssertUnwindSafe(exchange))
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
            if queue.busy || queue.closing || queue.closed || !queue.work.is_empty() {
                return Err(op);
            }
            // Taken under the queue's lock: the worker takes it only after marking itself
            // busy under that lock, so it cannot be between the two.
            match self.conn.try_lock() {
                Some(conn) => conn,
                None => return Err(op),
            }
        };
        let result = self.exchange_with(conn, pool, tid, op, None);
        *self.last_used.lock() = Instant::now();
        Ok(result)
    }

    /// Performs `op` with this set's agent, spawned (in task `tid`'s namespaces) if it has
    /// none. A hello is answered from the agent's own, given at spawn.
    pub(super) fn exchange(&self, pool: &Shared, tid: u32, op: Op) -> Result<Payload> {
        self.exchange_with(self.conn.lock(), pool, tid, op, None)
    }

    /// [`Set::exchange`] with the connection held: one thread at a time talks to the agent.
    /// A queued call's `answer` is marked sent just before it is sent, unless its waiter gave
    /// up meanwhile: then it is not sent at all.
    fn exchange_with(
        &self,
        mut conn: parking_lot::MutexGuard<'_, Conn>,
        pool: &Shared,
        tid: u32,
        op: Op,
        answer: Option<&Answer>,
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
        if answer.is_some_and(|a| !a.send()) {
            return Err(Error::Agent(AgentFailure::Queued));
        }
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
            // Only the agent it watched: another thread may have replaced it meanwhile.
            if let Some(watched) = &socket {
                self.end_agent_of(watched, "hung up");
            }
            return !self.queue.lock().work.is_empty();
        }
        true
    }

    /// Kills and reaps its agent if it is the one whose socket is `socket`.
    fn end_agent_of(&self, socket: &Arc<std::os::unix::net::UnixStream>, why: &str) {
        let mut conn = self.conn.lock();
        if conn
            .agent
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(&a.socket(), socket))
        {
            let agent = conn.agent.take();
            drop(conn);
            if let Some(agent) = agent {
                debug!("agent for {} {why}", self.key);
                self.alive.store(false, Ordering::Relaxed);
                agent.end();
            }
        }
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
