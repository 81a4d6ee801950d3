//! The agent pool: one long-lived `nsview-nsenter` per namespace set (the caller's user,
//! net, uts, ipc, cgroup and pid namespace inodes), owned by that set's worker thread and
//! reused by every later request of the set ([`set`]).
//!
//! - **Concurrency**: only a set's worker talks to its agent, one request at a time; FUSE
//!   threads queue their exchanges on it and wait. Sets run in parallel. At most one FUSE
//!   thread waits on a set at once, and at most [`PoolConfig::max_waiting`] over all sets
//!   (a container can make new sets with `unshare -n` and stop each one's agent): a request
//!   beyond either is queued whole on its set's worker ([`Pool::defer`]), and the FUSE
//!   thread goes on serving others. So a stuck agent holds up its own set only.
//! - **Deadline**: every exchange has `timeout`; an agent that misses it (stopped, stuck,
//!   dead, or answering garbage) is killed and reaped, and the caller gets EIO. The next
//!   request of that set spawns a fresh agent.
//! - **Bounds**: at most `max_agents` sets; a new one beyond evicts the least recently used
//!   idle set, whose agent is gone before the new set's is spawned. A set ends, with its
//!   agent, after `idle` without requests or when its agent hangs up (it lives in its
//!   container's pid namespace, so it dies with the container's init). No thread wakes on a
//!   timer.
//! - **Attribute cache** ([`cache`]): answered by the FUSE thread, without a hop.
//! - **One-shot mode** (`--agent-mode oneshot`): an agent per request, the sysbox-fs model,
//!   for the benchmark.

mod cache;
pub mod set;
mod spawn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use log::{debug, info, warn};
use nsview_proto::agent::{Op, Payload, Response, VERSION};
use parking_lot::Mutex;

use crate::error::{AgentFailure, Error, Result};
use crate::procfs::ProcRoot;

pub use cache::STAT_TTL;
pub use set::{Job, Set};
pub use spawn::{Agent, NsKey, NsKind};

/// How agents are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AgentMode {
    /// Long-lived agents, one per namespace key.
    #[default]
    Pooled,
    /// A fresh agent for every request.
    Oneshot,
}

impl std::str::FromStr for AgentMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pooled" => Ok(AgentMode::Pooled),
            "oneshot" => Ok(AgentMode::Oneshot),
            other => Err(format!(
                "unknown agent mode {other:?} (expected pooled or oneshot)"
            )),
        }
    }
}

/// The pool's settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The agent binary.
    pub exe: std::path::PathBuf,
    /// Most agents alive at once.
    pub max_agents: usize,
    /// Idle time after which an agent is ended.
    pub idle: Duration,
    /// Deadline of one request.
    pub timeout: Duration,
    /// Pooled or one-shot.
    pub mode: AgentMode,
    /// Test only: agents obey fault requests.
    pub allow_faults: bool,
    /// Most FUSE threads waiting on agents at once (see the module's doc).
    pub max_waiting: usize,
}

/// What the pool and its workers share.
#[derive(Debug)]
pub struct Shared {
    cfg: PoolConfig,
    proc: ProcRoot,
    /// The daemon's own namespaces: kinds equal to these are not joined.
    own: NsKey,
    sets: Mutex<HashMap<NsKey, Arc<Set>>>,
    next_id: AtomicU64,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn spawn(&self, tid: u32, key: NsKey) -> Result<Agent> {
        let agent = Agent::spawn(&self.cfg, &self.proc, tid, key, &self.own)?;
        crate::stats::agent(crate::stats::Agent::Spawned);
        debug!("agent spawned for {key} (pid {})", agent.pid());
        Ok(agent)
    }

    /// Drops `set` from the map, if it is still the one for its key.
    fn forget(&self, set: &Set) {
        let mut sets = self.sets.lock();
        let key = *set.key();
        if sets.get(&key).is_some_and(|s| std::ptr::eq(&**s, set)) {
            sets.remove(&key);
        }
    }
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    /// FUSE threads waiting on agents now.
    waiting: AtomicUsize,
}

/// The right of a FUSE thread to wait on a set's agent; given back on drop.
#[derive(Debug)]
pub struct Permit<'a> {
    pool: &'a Pool,
    set: Arc<Set>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.set.release_waiter();
        self.pool.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl nsview_core::agents::Agents for Pool {
    fn own(&self) -> &NsKey {
        Pool::own(self)
    }

    fn key_of(&self, tid: u32) -> Result<NsKey> {
        Pool::key_of(self, tid)
    }

    fn request(&self, tid: u32, key: NsKey, op: Op) -> Result<Payload> {
        Pool::request(self, tid, key, op)
    }

    fn netns_cookie(&self, tid: u32, key: NsKey) -> Result<Option<u64>> {
        Pool::netns_cookie(self, tid, key)
    }

    fn alive(&self) -> usize {
        self.len()
    }
}

/// How many times a request tries a new set when the one it found ended under it.
const RETRIES: usize = 3;

impl Pool {
    /// A pool spawning `cfg.exe`, reading namespaces through `proc`.
    pub fn new(cfg: PoolConfig, proc: ProcRoot) -> Result<Arc<Pool>> {
        let own = NsKey::of(&proc, std::process::id())?;
        Ok(Arc::new(Pool {
            shared: Arc::new(Shared {
                cfg,
                proc,
                own,
                sets: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
            waiting: AtomicUsize::new(0),
        }))
    }

    /// The daemon's own namespaces.
    pub fn own(&self) -> &NsKey {
        &self.shared.own
    }

    /// The namespaces of task `tid`.
    pub fn key_of(&self, tid: u32) -> Result<NsKey> {
        NsKey::of(&self.shared.proc, tid)
    }

    /// The right to wait on the agent of `key` on this thread, unless another thread waits
    /// on it or as many as allowed wait over all sets: then the request is to be deferred.
    pub fn permit(&self, key: NsKey) -> Option<Permit<'_>> {
        let set = self.set(key).ok()?;
        if !set.claim_waiter() {
            return None;
        }
        let max = self.shared.cfg.max_waiting.max(1);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            set.release_waiter();
            return None;
        }
        Some(Permit { pool: self, set })
    }

    /// Runs `job` (a whole request, which replies by itself) on the worker of `key`; when
    /// it can have none (too many sets busy, its queue full), `job` is dropped, which
    /// answers EIO.
    pub fn defer(&self, key: NsKey, mut job: Job) {
        for _ in 0..RETRIES {
            match self.set(key) {
                Ok(set) => match set.defer(job) {
                    Ok(()) => return crate::stats::agent(crate::stats::Agent::Deferred),
                    Err(back) => job = back,
                },
                Err(e) => {
                    warn!("no worker for a request of {key} ({e}): EIO");
                    return;
                }
            }
        }
    }

    /// Performs `op` in the namespaces `key` of task `tid` (whose agent is spawned if the
    /// set has none).
    pub fn request(&self, tid: u32, key: NsKey, op: Op) -> Result<Payload> {
        let cfg = &self.shared.cfg;
        if cfg.mode == AgentMode::Oneshot {
            let mut agent = self.shared.spawn(tid, key)?;
            let result = agent.call(self.shared.next_id(), op, cfg.timeout);
            agent.end();
            return result;
        }
        if let Op::Lookup { path } = &op
            && let Some(stat) = self.find(key).and_then(|set| set.stats.cached(path))
        {
            crate::stats::agent(crate::stats::Agent::Cached);
            return Ok(Payload::Entry(stat));
        }
        let mut op = op;
        for _ in 0..RETRIES {
            let set = self.set(key)?;
            if set.is_worker() {
                return set.exchange(&self.shared, tid, op);
            }
            op = match set.exchange_if_idle(&self.shared, tid, op) {
                Ok(result) => return result,
                Err(back) => back,
            };
            crate::stats::agent(crate::stats::Agent::Handed);
            match set.call(tid, op, cfg.timeout) {
                Ok(result) => return result,
                Err(back) => op = back,
            }
        }
        Err(Error::Agent(AgentFailure::Busy))
    }

    /// The cookie of the network namespace of `key` (which task `tid` is in), as its agent
    /// reported it (spawning the agent if none is alive): `None` on kernels without
    /// `SO_NETNS_COOKIE`. A live agent holds its namespace, so the cookie and the key's inode
    /// name the same namespace.
    pub fn netns_cookie(&self, tid: u32, key: NsKey) -> Result<Option<u64>> {
        match self.request(tid, key, Op::Hello { version: VERSION })? {
            Payload::Hello { netns_cookie, .. } => Ok(netns_cookie),
            _ => Err(Error::Agent(AgentFailure::Malformed)),
        }
    }

    /// The set of `key`, if there is one.
    fn find(&self, key: NsKey) -> Option<Arc<Set>> {
        self.shared.sets.lock().get(&key).cloned()
    }

    /// The set of `key`, made (evicting the least recently used idle set when the pool is
    /// full) if there is none or it has ended.
    fn set(&self, key: NsKey) -> Result<Arc<Set>> {
        let mut sets = self.shared.sets.lock();
        // The workers whose agents must be gone before this set's is spawned.
        let mut before = Vec::new();
        if let Some(set) = sets.get(&key) {
            if !set.closed() {
                return Ok(set.clone());
            }
            // Ended, its agent maybe still being killed: two agents for one set, briefly.
            before.extend(sets.remove(&key).and_then(|s| s.take_thread()));
        }
        if sets.len() >= self.shared.cfg.max_agents.max(1) {
            let mut by_age: Vec<_> = sets.iter().map(|(k, s)| (s.last_used(), *k)).collect();
            by_age.sort_unstable_by_key(|(at, _)| *at);
            let victim = by_age
                .into_iter()
                .map(|(_, k)| k)
                .find(|k| sets.get(k).is_some_and(|s| s.evict()));
            let Some(victim) = victim else {
                drop(sets);
                warn!(
                    "all {} agents busy: EIO for a request of {key}",
                    self.shared.cfg.max_agents
                );
                return Err(Error::Agent(AgentFailure::Busy));
            };
            debug!("agent for {victim} evicted (pool full)");
            before.extend(sets.remove(&victim).and_then(|s| s.take_thread()));
        }
        let set = Set::start(&self.shared, key, before)?;
        sets.insert(key, set.clone());
        Ok(set)
    }

    /// Agents alive now.
    pub fn len(&self) -> usize {
        self.shared
            .sets
            .lock()
            .values()
            .filter(|s| s.alive())
            .count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every set and its agent, after what is queued on it.
    pub fn stop(&self) {
        let sets: Vec<Arc<Set>> = self.shared.sets.lock().drain().map(|(_, s)| s).collect();
        let n = sets.iter().filter(|s| s.alive()).count();
        for set in &sets {
            set.close();
        }
        for set in &sets {
            if let Some(thread) = set.take_thread() {
                let _ = thread.join();
            }
        }
        if n > 0 {
            info!("{n} agents ended");
        }
    }
}

/// A response as the pool's result: the payload, or the errno the agent reported.
pub fn into_result(response: Response, id: u64) -> Result<Payload> {
    match response {
        Response::Ok { id: got, payload } if got == id => Ok(payload),
        Response::Err {
            id: got,
            errno,
            message,
        } if got == id => {
            debug!("agent: {message}");
            Err(Error::Os(if errno > 0 { errno } else { libc::EIO }))
        }
        other => {
            warn!("agent answered request {id} with {other:?}");
            Err(Error::Agent(AgentFailure::WrongId))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_waiting: usize) -> Arc<Pool> {
        Pool::new(
            PoolConfig {
                exe: "/nonexistent".into(),
                max_agents: 2,
                idle: Duration::from_secs(60),
                timeout: Duration::from_secs(1),
                mode: AgentMode::Pooled,
                allow_faults: false,
                max_waiting,
            },
            ProcRoot::default(),
        )
        .unwrap()
    }

    fn key(n: u64) -> NsKey {
        NsKey::new([n; 6])
    }

    #[test]
    fn one_thread_waits_per_set_and_few_over_all_sets() {
        let pool = pool(2);
        let first = pool.permit(key(4)).unwrap();
        assert!(pool.permit(key(4)).is_none(), "one per set");
        let second = pool.permit(key(5)).unwrap();
        drop(first);
        assert!(pool.permit(key(4)).is_some());
        drop(second);
        pool.stop();
    }

    #[test]
    fn deferred_requests_run_in_order_on_their_sets_worker() {
        let pool = pool(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        pool.defer(
            key(1),
            Box::new(move || {
                let _ = blocked.recv();
            }),
        );
        for n in 0..3 {
            let tx = tx.clone();
            pool.defer(key(1), Box::new(move || tx.send((1, n)).unwrap()));
        }
        let tx2 = tx.clone();
        pool.defer(key(2), Box::new(move || tx2.send((2, 0)).unwrap()));
        let wait = Duration::from_secs(5);
        assert_eq!(
            rx.recv_timeout(wait).unwrap(),
            (2, 0),
            "set 2 is not held up"
        );
        release.send(()).unwrap();
        let order: Vec<_> = (0..3).map(|_| rx.recv_timeout(wait).unwrap()).collect();
        assert_eq!(order, [(1, 0), (1, 1), (1, 2)]);
        pool.stop();
    }

    #[test]
    fn a_full_pool_evicts_an_idle_set_and_refuses_when_all_are_busy() {
        let pool = pool(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let hold = |n: u64| {
            let (release, blocked) = std::sync::mpsc::channel::<()>();
            let tx = tx.clone();
            pool.defer(
                key(n),
                Box::new(move || {
                    tx.send(n).unwrap();
                    let _ = blocked.recv();
                }),
            );
            release
        };
        let one = hold(1);
        let two = hold(2);
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        // Both sets busy: a third cannot be made.
        assert!(matches!(
            pool.set(key(3)),
            Err(Error::Agent(AgentFailure::Busy))
        ));
        drop(one);
        // Set 1 idle once its job has returned.
        let started = std::time::Instant::now();
        while pool.set(key(3)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(pool.find(key(1)).is_none(), "set 1 evicted");
        drop(two);
        pool.stop();
    }

    #[test]
    fn a_panicking_request_leaves_its_worker_serving() {
        let pool = pool(1);
        pool.defer(key(3), Box::new(|| panic!("boom")));
        let (tx, rx) = std::sync::mpsc::channel();
        pool.defer(key(3), Box::new(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        pool.stop();
    }

    #[test]
    fn a_request_to_an_agent_that_cannot_start_fails_and_the_set_recovers() {
        // The agent binary does not exist: the worker answers the error; the next request
        // tries again.
        let pool = pool(1);
        let me = std::process::id();
        let other = NsKey::new([1; 6]);
        for _ in 0..2 {
            let got = pool.request(me, other, Op::Lookup { path: "".into() });
            assert!(got.is_err(), "{got:?}");
        }
        pool.stop();
    }
}
