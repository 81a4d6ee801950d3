//! Process-wide counters for `nsview ctl status`: requests served (by FUSE operation),
//! errors by errno, and how requests reached agents, which is where a `proc/sys` read's time
//! goes (`scripts/bench` reports them per read).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use nsview_proto::control::ConnectionStatus;
use parking_lot::Mutex;

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static BY_OP: [AtomicU64; Op::COUNT] = [const { AtomicU64::new(0) }; Op::COUNT];
static AGENT: [AtomicU64; Agent::COUNT] = [const { AtomicU64::new(0) }; Agent::COUNT];
static ERRORS: Mutex<BTreeMap<i32, u64>> = Mutex::new(BTreeMap::new());
static TAKEN_OVER: AtomicU64 = AtomicU64::new(0);
static RESENT: AtomicU64 = AtomicU64::new(0);
static CONNECTION: Mutex<Option<ConnectionStatus>> = Mutex::new(None);

/// A FUSE operation, as counted.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// LOOKUP.
    Lookup,
    /// GETATTR.
    Getattr,
    /// OPEN.
    Open,
    /// READ.
    Read,
    /// WRITE.
    Write,
    /// RELEASE.
    Release,
    /// OPENDIR, READDIR and RELEASEDIR.
    Dir,
    /// Anything else (FLUSH, FORGET, SETATTR, READLINK, POLL, xattrs, ...).
    Other,
}

impl Op {
    const COUNT: usize = 8;
    const NAMES: [&'static str; Op::COUNT] = [
        "lookup", "getattr", "open", "read", "write", "release", "dir", "other",
    ];
}

/// A step on the way to an agent, as counted.
#[derive(Debug, Clone, Copy)]
pub enum Agent {
    /// A lookup answered from the attribute cache, without the agent.
    Cached,
    /// An exchange with an agent (a request sent and answered, or failed).
    Exchange,
    /// An exchange a FUSE thread handed to the set's worker and waited for.
    Handed,
    /// A whole request queued on the set's worker, which replied for it.
    Deferred,
    /// An agent spawned.
    Spawned,
}

impl Agent {
    const COUNT: usize = 5;
    const NAMES: [&'static str; Agent::COUNT] =
        ["cached", "exchanges", "handed", "deferred", "spawned"];
}

/// Counts one FUSE request of kind `op`.
pub fn request(op: Op) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    BY_OP[op as usize].fetch_add(1, Ordering::Relaxed);
}

/// Counts one step `what` on the way to an agent.
pub fn agent(what: Agent) {
    AGENT[what as usize].fetch_add(1, Ordering::Relaxed);
}

/// Requests so far by operation.
pub fn by_op() -> BTreeMap<&'static str, u64> {
    counts(&Op::NAMES, &BY_OP)
}

/// Steps on the way to agents so far.
pub fn agents() -> BTreeMap<&'static str, u64> {
    counts(&Agent::NAMES, &AGENT)
}

fn counts(names: &[&'static str], values: &[AtomicU64]) -> BTreeMap<&'static str, u64> {
    names
        .iter()
        .zip(values)
        .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
        .collect()
}

/// Counts one handle of a predecessor taken over.
pub fn taken_over() {
    TAKEN_OVER.fetch_add(1, Ordering::Relaxed);
}

/// Counts one request the kernel sent again (a predecessor had read it).
pub fn resent() {
    RESENT.fetch_add(1, Ordering::Relaxed);
}

/// Records how this daemon came by its FUSE connection.
pub fn set_connection(status: ConnectionStatus) {
    *CONNECTION.lock() = Some(status);
}

/// Records whether a keeper holds this daemon's connection.
pub fn mark_kept(kept: bool) {
    CONNECTION.lock().get_or_insert_with(Default::default).kept = kept;
}

/// How this daemon came by its FUSE connection, with the handles taken over so far.
pub fn connection() -> ConnectionStatus {
    ConnectionStatus {
        handles_taken_over: TAKEN_OVER.load(Ordering::Relaxed),
        requests_resent: RESENT.load(Ordering::Relaxed),
        ..CONNECTION.lock().clone().unwrap_or_default()
    }
}

/// Counts one request answered with `errno`.
pub fn error(errno: i32) {
    *ERRORS.lock().entry(errno).or_default() += 1;
}

/// Requests served so far.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Errors so far by errno name (`ENOENT`, ...).
pub fn errors() -> BTreeMap<String, u64> {
    ERRORS
        .lock()
        .iter()
        .map(|(errno, n)| (errno_name(*errno), *n))
        .collect()
}

fn errno_name(errno: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    if name.starts_with('E') {
        name
    } else {
        format!("errno {errno}")
    }
}
