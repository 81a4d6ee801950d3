//! The agent pool: one long-lived `nsview-nsenter` per namespace key (the caller's user,
//! net, uts, ipc, cgroup and pid namespace inodes), reused by every later request with that
//! key.
//!
//! - **Concurrency**: one agent per key, one request at a time; concurrent requests with the
//!   same key queue on the key's lock (an agent is single-threaded and a sysctl request takes
//!   microseconds, so a queue beats spawning more). Requests with different keys run in
//!   parallel.
//! - **Deadline**: every exchange has `timeout`; an agent that misses it (stopped, stuck,
//!   dead, or answering garbage) is killed and reaped, and the caller gets EIO. The next
//!   request with that key spawns a fresh agent.
//! - **Bounds**: at most `max_agents`; spawning beyond evicts the least recently used idle
//!   one. A reaper thread ends agents idle for `idle` and reaps agents whose process exited
//!   (an agent lives in its container's pid namespace, so it dies with the container's init).
//!   It sleeps until an agent's socket hangs up, the next agent falls idle, or a new agent
//!   is spawned, and never on a timer of its own. An agent is killed and waited for outside
//!   the pool's lock, so one slow to die holds up no other key.
//! - **Attribute cache**: a lookup's answer (an entry's kind, mode and owner, which no
//!   caller's credentials change) is kept per key for [`STAT_TTL`], as are the attributes a
//!   listing returns, so a path walk through `proc/sys/net/ipv4/` costs the agent one round
//!   trip for the file's content rather than one per component. Only entries that exist are
//!   kept (a new entry is visible at once; a removed one may stat for up to the TTL, and its
//!   read then fails as natively). Contents are never cached.
//! - **One-shot mode** (`--agent-mode oneshot`): an agent per request, the sysbox-fs model,
//!   for the benchmark.

mod spawn;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nsview_nsenter::protocol::{Kind, Op, Payload, Response, Stat};
use parking_lot::Mutex;

use crate::error::{AgentFailure, Error, Result};
use crate::procfs::ProcRoot;

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
}

/// How soon the reaper looks again at an agent that was busy when it last looked.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

/// How long a lookup's answer is reused for the same namespace key.
pub const STAT_TTL: Duration = Duration::from_secs(1);
/// Most attributes cached per key; beyond, expired ones go, then all.
const STAT_CACHE_MAX: usize = 4096;

#[derive(Debug)]
struct Slot {
    agent: Mutex<Option<Agent>>,
    last_used: Mutex<Instant>,
    /// Attributes by agent path, with when they were learnt.
    stats: Mutex<HashMap<String, (Stat, Instant)>>,
}

impl Slot {
    /// What a lookup of `path` answered within [`STAT_TTL`], or a listing did, except for a
    /// file: a listing does not tell its length.
    fn cached(&self, path: &str) -> Option<Stat> {
        let stats = self.stats.lock();
        let (stat, at) = stats.get(path)?;
        let whole = stat.kind != Kind::File || stat.len.is_some();
        (whole && at.elapsed() < STAT_TTL).then_some(*stat)
    }

    fn remember(&self, entries: impl IntoIterator<Item = (String, Stat)>) {
        let now = Instant::now();
        let mut stats = self.stats.lock();
        for (path, stat) in entries {
            if stats.len() >= STAT_CACHE_MAX {
                // Less than half left after dropping the expired ones, or nothing: either
                // way the next STAT_CACHE_MAX / 2 inserts need no scan.
                stats.retain(|_, (_, at)| at.elapsed() < STAT_TTL);
                if stats.len() >= STAT_CACHE_MAX / 2 {
                    stats.clear();
                }
            }
            stats.insert(path, (stat, now));
        }
    }

    /// Keeps the attributes `result` of `op` tells.
    fn learn(&self, op: &Op, result: &Result<Payload>) {
        match (op, result) {
            (Op::Lookup { path }, Ok(Payload::Entry(stat))) => {
                self.remember([(path.clone(), *stat)]);
            }
            (Op::Readdir { path }, Ok(Payload::Entries(items))) => {
                let dir = path.trim_end_matches('/');
                self.remember(
                    items
                        .iter()
                        .map(|item| (format!("{dir}/{}", item.name), item.stat)),
                );
            }
            _ => {}
        }
    }
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    cfg: PoolConfig,
    proc: ProcRoot,
    /// The daemon's own namespaces: kinds equal to these are not joined.
    own: NsKey,
    slots: Mutex<HashMap<NsKey, Arc<Slot>>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// The reaper's doorbell: a byte written to `.0` wakes it, which reads them from `.1`.
    bell: (UnixStream, UnixStream),
}

impl Pool {
    /// A pool spawning `cfg.exe`, reading namespaces through `proc`.
    pub fn new(cfg: PoolConfig, proc: ProcRoot) -> Result<Arc<Pool>> {
        let own = NsKey::of(&proc, std::process::id())?;
        let bell = UnixStream::pair()
            .and_then(|(ring, hear)| {
                ring.set_nonblocking(true)?;
                hear.set_nonblocking(true)?;
                Ok((ring, hear))
            })
            .map_err(|e| Error::task("socketpair (reaper)", std::process::id(), e))?;
        Ok(Arc::new(Pool {
            cfg,
            proc,
            own,
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            bell,
        }))
    }

    /// The daemon's own namespaces.
    pub fn own(&self) -> &NsKey {
        &self.own
    }

    /// The namespace key of task `tid` (the one [`with_key`] gave for it, within that call).
    pub fn key_of(&self, tid: u32) -> Result<NsKey> {
        match KNOWN.get() {
            Some((known, key)) if known == tid => Ok(key),
            _ => NsKey::of(&self.proc, tid),
        }
    }

    /// Performs `op` in the namespaces `key` of task `tid` (which spawns the agent if none is
    /// alive for `key`).
    pub fn request(&self, tid: u32, key: NsKey, op: Op) -> Result<Payload> {
        if self.cfg.mode == AgentMode::Oneshot {
            let mut agent = self.spawn(tid, key)?;
            let result = agent.call(self.next_id(), op, self.cfg.timeout);
            agent.end();
            return result;
        }
        let slot = self.slot(key);
        if let Op::Lookup { path } = &op
            && let Some(stat) = slot.cached(path)
        {
            *slot.last_used.lock() = Instant::now();
            return Ok(Payload::Entry(stat));
        }
        let (mut guard, spawned) = self.live_agent(&slot, tid, key)?;
        let agent = guard.as_mut().ok_or(Error::Os(libc::EIO))?;
        let learns = matches!(op, Op::Lookup { .. } | Op::Readdir { .. });
        let asked = if learns { Some(op.clone()) } else { None };
        let result = agent.call(self.next_id(), op, self.cfg.timeout);
        if let Some(op) = &asked {
            slot.learn(op, &result);
        }
        if let Err(Error::Agent(failure)) = &result {
            warn!("agent for {key} failed ({failure}); killed");
            if let Some(a) = guard.take() {
                a.end();
            }
        }
        *slot.last_used.lock() = Instant::now();
        drop(guard);
        if spawned {
            self.ring();
        }
        result
    }

    /// The cookie of the network namespace of `key` (which task `tid` is in), as its agent
    /// reported it (spawning the agent if none is alive): `None` on kernels without
    /// `SO_NETNS_COOKIE`. A live agent holds its namespace, so the cookie and the key's inode
    /// name the same namespace.
    pub fn netns_cookie(&self, tid: u32, key: NsKey) -> Result<Option<u64>> {
        if self.cfg.mode == AgentMode::Oneshot {
            let agent = self.spawn(tid, key)?;
            let cookie = agent.netns_cookie();
            agent.end();
            return Ok(cookie);
        }
        let slot = self.slot(key);
        let (guard, spawned) = self.live_agent(&slot, tid, key)?;
        *slot.last_used.lock() = Instant::now();
        let cookie = guard.as_ref().and_then(Agent::netns_cookie);
        drop(guard);
        if spawned {
            self.ring();
        }
        Ok(cookie)
    }

    /// The slot's agent, spawned (in task `tid`'s namespaces `key`) unless one is running, and
    /// whether it was: the caller then rings for the reaper once it has released the slot (the
    /// reaper watches no busy slot).
    fn live_agent<'s>(
        &self,
        slot: &'s Slot,
        tid: u32,
        key: NsKey,
    ) -> Result<(parking_lot::MutexGuard<'s, Option<Agent>>, bool)> {
        let mut guard = slot.agent.lock();
        if guard.as_mut().is_some_and(Agent::is_running) {
            return Ok((guard, false));
        }
        if let Some(old) = guard.take() {
            old.end();
        }
        *guard = Some(self.spawn(tid, key)?);
        Ok((guard, true))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn spawn(&self, tid: u32, key: NsKey) -> Result<Agent> {
        let agent = Agent::spawn(&self.cfg, &self.proc, tid, key, &self.own)?;
        debug!("agent spawned for {key} (pid {})", agent.pid());
        Ok(agent)
    }

    /// The slot of `key`, made (evicting the least recently used idle agent when the pool is
    /// full) if there is none.
    fn slot(&self, key: NsKey) -> Arc<Slot> {
        let mut evicted = Vec::new();
        let slot = {
            let mut slots = self.slots.lock();
            if let Some(slot) = slots.get(&key) {
                return slot.clone();
            }
            while slots.len() >= self.cfg.max_agents.max(1) {
                let victim = slots
                    .iter()
                    .filter(|(_, s)| s.agent.try_lock().is_some())
                    .min_by_key(|(_, s)| *s.last_used.lock())
                    .map(|(k, _)| *k);
                let Some(victim) = victim else { break };
                let Some(slot) = slots.remove(&victim) else {
                    break;
                };
                // Never wait here, under the pool's lock: a slot that became busy since it
                // was picked stays (the pool is one over its bound until a later spawn).
                let Some(mut agent) = slot.agent.try_lock() else {
                    slots.insert(victim, slot.clone());
                    break;
                };
                if let Some(agent) = agent.take() {
                    debug!("agent for {victim} evicted (pool full)");
                    evicted.push(agent);
                }
            }
            let slot = Arc::new(Slot {
                agent: Mutex::new(None),
                last_used: Mutex::new(Instant::now()),
                stats: Mutex::new(HashMap::new()),
            });
            slots.insert(key, slot.clone());
            slot
        };
        evicted.into_iter().for_each(Agent::end);
        slot
    }

    /// Agents alive now.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .values()
            .filter(|s| s.agent.try_lock().is_none_or(|a| a.is_some()))
            .count()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the reaper thread; it runs until [`Pool::stop`].
    pub fn spawn_reaper(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("nsview-reaper".into())
            .spawn(move || {
                while !me.stop.load(Ordering::Acquire) {
                    me.reap();
                    me.sleep();
                }
            })
    }

    /// Wakes the reaper.
    fn ring(&self) {
        use std::io::Write;
        // A full doorbell is one the reaper has yet to hear: it wakes anyway.
        let _ = (&self.bell.0).write(&[1]);
    }

    /// Waits until an agent's socket hangs up, the next agent falls idle or the doorbell
    /// rings, whichever comes first.
    fn sleep(&self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::io::Read;
        use std::os::fd::AsFd;
        let (sockets, next) = self.watch_list();
        let mut fds = Vec::with_capacity(1 + sockets.len());
        fds.push(PollFd::new(self.bell.1.as_fd(), PollFlags::POLLIN));
        // Of an agent's socket, hangup and error only: they are reported whatever is asked.
        fds.extend(
            sockets
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::empty())),
        );
        let timeout = match next {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Rounded up: waking a millisecond early would find nobody idle yet.
                PollTimeout::from(u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX))
            }
        };
        let _ = poll(&mut fds, timeout);
        let mut drain = [0u8; 64];
        while matches!((&self.bell.1).read(&mut drain), Ok(n) if n > 0) {}
    }

    /// The sockets of the agents to watch, and when to look again at the latest (`None`: no
    /// agent to wait for): when the next one falls idle. A busy slot's agent is left out: a
    /// request holds it; it is looked at again within [`BUSY_RECHECK`] (a spawn rings, so
    /// this matters only for an agent that ends just after a request the reaper saw).
    fn watch_list(&self) -> (Vec<Arc<UnixStream>>, Option<Instant>) {
        let slots = self.slots.lock();
        let mut sockets = Vec::with_capacity(slots.len());
        let mut next: Option<Instant> = None;
        let mut soonest = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        for slot in slots.values() {
            match slot.agent.try_lock() {
                Some(agent) => {
                    if let Some(agent) = agent.as_ref() {
                        sockets.push(agent.socket());
                    }
                    soonest(*slot.last_used.lock() + self.cfg.idle);
                }
                None => soonest(Instant::now() + BUSY_RECHECK),
            }
        }
        (sockets, next)
    }

    /// Ends idle agents and reaps exited ones.
    pub fn reap(&self) {
        let mut ended = Vec::new();
        self.slots.lock().retain(|key, slot| {
            let Some(mut agent) = slot.agent.try_lock() else {
                return true; // busy
            };
            let idle = slot.last_used.lock().elapsed() >= self.cfg.idle;
            let exited = agent.as_mut().is_some_and(|a| !a.is_running());
            let hung_up = agent.as_ref().is_some_and(Agent::hung_up);
            match agent.as_mut() {
                Some(_) if exited => {
                    debug!("agent for {key} exited; reaped");
                    agent.take();
                    false
                }
                Some(_) if hung_up => {
                    // Exiting (its descriptors close before it becomes a zombie), or it
                    // closed the socket and runs on: either way ended, and not watched again.
                    debug!("agent for {key} hung up; ended");
                    ended.extend(agent.take());
                    false
                }
                Some(_) if idle => {
                    debug!("agent for {key} idle; ended");
                    ended.extend(agent.take());
                    false
                }
                Some(_) => true,
                None => !idle,
            }
        });
        ended.into_iter().for_each(Agent::end);
    }

    /// Ends the reaper and every agent.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.ring();
        let slots: Vec<Arc<Slot>> = self.slots.lock().drain().map(|(_, s)| s).collect();
        let n = slots.len();
        for slot in slots {
            if let Some(agent) = slot.agent.lock().take() {
                agent.end();
            }
        }
        if n > 0 {
            info!("{n} agents ended");
        }
    }
}

thread_local! {
    /// The key of the task whose request this thread runs, as [`with_key`] set it.
    static KNOWN: std::cell::Cell<Option<(u32, NsKey)>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with `key` as what [`Pool::key_of`] answers for `tid` on this thread: one
/// request reads its caller's six namespace links once, however many lookups it makes.
pub fn with_key<R>(tid: u32, key: NsKey, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(u32, NsKey)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            KNOWN.set(self.0);
        }
    }
    let _restore = Restore(KNOWN.replace(Some((tid, key))));
    f()
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
    use nsview_nsenter::protocol::DirItem;
    use std::panic::AssertUnwindSafe;

    fn slot() -> Slot {
        Slot {
            agent: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            stats: Mutex::new(HashMap::new()),
        }
    }

    const DIR: Stat = Stat {
        kind: Kind::Dir,
        mode: 0o555,
        uid: 0,
        gid: 0,
        len: None,
    };
    const FILE: Stat = Stat {
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        len: None,
    };

    #[test]
    fn lookups_and_listings_teach_attributes_and_failures_teach_nothing() {
        let s = slot();
        let lookup = |path: &str| Op::Lookup { path: path.into() };
        s.learn(&lookup("proc/sys/net"), &Ok(Payload::Entry(DIR)));
        s.learn(&lookup("proc/sys/nope"), &Err(Error::Os(libc::ENOENT)));
        s.learn(
            &Op::Readdir {
                path: "proc/sys/net/ipv4".into(),
            },
            &Ok(Payload::Entries(vec![DirItem {
                name: "ip_forward".into(),
                stat: FILE,
            }])),
        );
        assert_eq!(s.cached("proc/sys/net"), Some(DIR));
        // A listing tells a file's kind and mode, not its length: a lookup still asks.
        assert_eq!(s.cached("proc/sys/net/ipv4/ip_forward"), None);
        assert_eq!(s.cached("proc/sys/nope"), None);
        assert_eq!(s.cached("proc/sys/net/ipv4"), None);
        let sized = Stat {
            len: Some(2),
            ..FILE
        };
        s.learn(
            &lookup("proc/sys/net/ipv4/ip_forward"),
            &Ok(Payload::Entry(sized)),
        );
        assert_eq!(s.cached("proc/sys/net/ipv4/ip_forward"), Some(sized));
    }

    #[test]
    fn a_known_key_answers_for_its_task_only_and_only_within_the_call() {
        let pool = Pool::new(
            PoolConfig {
                exe: "/nonexistent".into(),
                max_agents: 1,
                idle: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                mode: AgentMode::Pooled,
                allow_faults: false,
            },
            ProcRoot::default(),
        )
        .unwrap();
        // No task has this id (pid_max is at most 2^22).
        let ghost = 4_000_000_000;
        let key = NsKey::new([7; 6]);
        assert!(pool.key_of(ghost).is_err());
        with_key(ghost, key, || {
            assert_eq!(pool.key_of(ghost).unwrap(), key);
            assert_ne!(pool.key_of(std::process::id()).unwrap(), key);
        });
        assert!(pool.key_of(ghost).is_err(), "restored after the call");
        let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
            with_key(ghost, key, || panic!("boom"));
        }));
        assert!(unwound.is_err());
        assert!(pool.key_of(ghost).is_err(), "restored after a panic");
    }

    #[test]
    fn attributes_expire_and_the_cache_stays_bounded() {
        let s = slot();
        let old = Instant::now().checked_sub(STAT_TTL).unwrap();
        s.stats.lock().insert("proc/sys/kernel".into(), (DIR, old));
        assert_eq!(s.cached("proc/sys/kernel"), None, "expired");
        s.remember((0..STAT_CACHE_MAX + 10).map(|i| (format!("p/{i}"), DIR)));
        assert!(s.stats.lock().len() <= STAT_CACHE_MAX);
        assert_eq!(s.cached(&format!("p/{}", STAT_CACHE_MAX + 9)), Some(DIR));
    }
}
