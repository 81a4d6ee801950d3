//! The emulated values of each network namespace, under an identity the kernel never hands
//! out twice, and gone with the namespace.
//!
//! - **Identity**: a store is keyed by its namespace's cookie (`SO_NETNS_COOKIE`, reported
//!   by the agent that joined it), never by the namespace's inode: the kernel reuses inode
//!   numbers as soon as a namespace is freed, and a new container must never read a dead
//!   one's values. The inode is kept beside the cookie only to find stores to delete.
//! - **Persistence**: each store is `<dir>/<cookie>.json` (written to a temporary file and
//!   renamed) with the boot id it belongs to; at start, stores of another boot (cookies
//!   start over at boot) are deleted, and so are stores whose namespace no process holds.
//! - **Deletion**: at once when a store is claimed by a namespace with the same inode and
//!   another cookie (the old namespace is dead), and by the janitor thread when a container
//!   that used a store dies and no process (nor an `ip netns` bind mount) holds its
//!   namespace any more. The janitor waits on the containers' pidfds: it wakes only when
//!   one ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::container::Container;
use crate::procfs::ProcRoot;

use super::emulation;

/// Most stores kept at once: one per live network namespace that set a value, so this is
/// reached only by containers making namespaces by the thousand; beyond it, a namespace
/// without a store yet gets ENOSPC for its first write.
pub const MAX_STORES: usize = 8192;
/// Most stores one container (pid namespace) makes: a pod has one network namespace, a
/// container with containers inside a few dozen. Beyond, the stores of dead namespaces are
/// swept first, and then its next new namespace gets ENOSPC, not everybody else's.
pub const PER_CONTAINER: usize = 64;
/// Least time between two sweeps a full store table asks for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which network namespace a store belongs to: its cookie (the identity) and its inode now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreId {
    /// `SO_NETNS_COOKIE` of the namespace.
    pub cookie: u64,
    /// The namespace's inode.
    pub netns: u64,
}

#[derive(Debug)]
struct Store {
    netns: u64,
    /// The key of the container that made it (0: loaded from disk, unknown).
    creator: u64,
    values: HashMap<&'static str, String>,
}

/// A store as kept on disk.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    boot_id: String,
    netns_cookie: u64,
    netns_inode: u64,
    values: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    stores: HashMap<u64, Store>,
    /// The cookies of the stores by namespace inode (two only when a dead namespace's store
    /// and its inode's new owner's are both there).
    by_netns: HashMap<u64, Vec<u64>>,
    /// Containers that used a store, by container key: the janitor watches their inits.
    witnesses: HashMap<u64, Arc<Container>>,
    /// When a full table last swept.
    swept: Option<Instant>,
    /// A sweep was asked for (an unregistration).
    sweep: bool,
    stop: bool,
}

impl Inner {
    /// The store of `cookie` (namespace inode `netns`), made by container `creator` if
    /// there is none.
    fn insert(&mut self, cookie: u64, netns: u64, creator: u64) -> &mut Store {
        let cookies = self.by_netns.entry(netns).or_default();
        if !cookies.contains(&cookie) {
            cookies.push(cookie);
        }
        self.stores.entry(cookie).or_insert_with(|| Store {
            netns,
            creator,
            values: HashMap::new(),
        })
    }

    /// Whether a new store by container `creator` stays within the bounds.
    fn room_for(&self, creator: u64) -> bool {
        self.stores.len() < MAX_STORES
            && self
                .stores
                .values()
                .filter(|s| s.creator == creator)
                .count()
                < PER_CONTAINER
    }
}

/// Every network namespace's store.
#[derive(Debug)]
pub struct Stores {
    inner: Mutex<Inner>,
    dir: Option<PathBuf>,
    boot_id: String,
    /// Where live namespaces are looked up.
    proc: ProcRoot,
    /// Written to wake the janitor (a new witness, a sweep asked for, or stop).
    wake: OwnedFd,
}

impl Default for Stores {
    fn default() -> Self {
        Stores::new(None, String::new(), ProcRoot::default())
    }
}

impl Stores {
    fn new(dir: Option<PathBuf>, boot_id: String, proc: ProcRoot) -> Stores {
        Stores {
            inner: Mutex::new(Inner::default()),
            dir,
            boot_id,
            proc,
            wake: eventfd(),
        }
    }

    /// The stores persisted in `dir` (created if missing) for boot `boot_id`, whose
    /// namespaces are looked up in `proc`; files of another boot and files that are not
    /// stores are deleted, values of paths no longer in the table dropped.
    pub fn load(dir: &Path, boot_id: &str, proc: ProcRoot) -> std::io::Result<Stores> {
        std::fs::create_dir_all(dir)?;
        let stores = Stores::new(Some(dir.to_path_buf()), boot_id.to_owned(), proc);
        let mut inner = stores.inner.lock();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let parsed = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<OnDisk>(&text).ok());
            let named_right = |d: &OnDisk| {
                entry.file_name().to_str() == Some(&format!("{}.json", d.netns_cookie))
            };
            match parsed {
                Some(d) if d.boot_id == boot_id && named_right(&d) => {
                    let values = d
                        .values
                        .iter()
                        .filter_map(|(p, v)| Some((emulation::find(p)?.path, v.clone())))
                        .collect();
                    inner.insert(d.netns_cookie, d.netns_inode, 0).values = values;
                }
                _ => {
                    info!("{}: not a store of this boot; deleted", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        drop(inner);
        Ok(stores)
    }

    /// The value `id`'s store holds for `path`, if it was set.
    pub fn get(&self, id: StoreId, path: &'static str) -> Option<String> {
        let mut inner = self.inner.lock();
        self.claim(&mut inner, id);
        inner.stores.get(&id.cookie)?.values.get(path).cloned()
    }

    /// Sets `path` in `id`'s store, used by container `by` (whose end the janitor watches);
    /// `false` when a new store would be beyond the bounds (see [`Stores::fits`]).
    pub fn set(&self, id: StoreId, path: &'static str, value: String, by: &Arc<Container>) -> bool {
        let mut inner = self.inner.lock();
        self.claim(&mut inner, id);
        if !inner.stores.contains_key(&id.cookie) && !inner.room_for(by.key()) {
            return false;
        }
        let store = inner.insert(id.cookie, id.netns, by.key());
        store.values.insert(path, value);
        self.persist(id.cookie, store);
        self.witness(&mut inner, by);
        true
    }

    /// Whether `id` has a store or there is room for container `by` to make one: at most
    /// [`MAX_STORES`] in all and [`PER_CONTAINER`] of its own. When there is none, the stores
    /// of dead namespaces are deleted first (at most once per [`SWEEP_EVERY`]).
    pub fn fits(&self, id: StoreId, by: &Container) -> bool {
        let inner = self.inner.lock();
        if inner.stores.contains_key(&id.cookie) || inner.room_for(by.key()) {
            return true;
        }
        let recent = inner.swept.is_some_and(|at| at.elapsed() < SWEEP_EVERY);
        drop(inner);
        if !recent {
            let live = live_netns(&self.proc);
            self.prune(&live);
            self.inner.lock().swept = Some(Instant::now());
        }
        self.inner.lock().room_for(by.key())
    }

    /// Asks the janitor to delete the stores of dead namespaces soon.
    pub fn sweep_soon(&self) {
        self.inner.lock().sweep = true;
        self.poke();
    }

    /// Records that container `c` reads `id`'s store (if there is one): the store must not
    /// go before `c` does.
    pub fn used_by(&self, id: StoreId, c: &Arc<Container>) {
        let mut inner = self.inner.lock();
        if inner.stores.contains_key(&id.cookie) {
            self.witness(&mut inner, c);
        }
    }

    /// Drops every store of the namespace with inode `netns`.
    pub fn remove_netns(&self, netns: u64) {
        let mut inner = self.inner.lock();
        let gone = inner.by_netns.get(&netns).cloned().unwrap_or_default();
        for cookie in gone {
            self.delete(&mut inner, cookie, "its container was unregistered");
        }
    }

    /// Deletes the stores whose namespace inode is not in `live`; the number deleted.
    pub fn prune(&self, live: &HashSet<u64>) -> usize {
        let mut inner = self.inner.lock();
        let dead: Vec<u64> = inner
            .stores
            .iter()
            .filter(|(_, s)| !live.contains(&s.netns))
            .map(|(cookie, _)| *cookie)
            .collect();
        for cookie in &dead {
            self.delete(&mut inner, *cookie, "its network namespace is gone");
        }
        dead.len()
    }

    /// How many stores there are.
    pub fn len(&self) -> usize {
        self.inner.lock().stores.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A namespace with `id`'s inode and another cookie is a dead one whose inode the kernel
    /// handed out again: its store goes now.
    fn claim(&self, inner: &mut Inner, id: StoreId) {
        let stale: Vec<u64> = inner
            .by_netns
            .get(&id.netns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|cookie| *cookie != id.cookie)
            .collect();
        for cookie in stale {
            self.delete(inner, cookie, "its namespace's inode belongs to a new one");
        }
    }

    fn witness(&self, inner: &mut Inner, c: &Arc<Container>) {
        if c.init_pid().is_some() && !inner.witnesses.contains_key(&c.key()) {
            inner.witnesses.insert(c.key(), c.clone());
            self.poke();
        }
    }

    fn delete(&self, inner: &mut Inner, cookie: u64, why: &str) {
        if let Some(store) = inner.stores.remove(&cookie) {
            info!("emulated values of netns cookie {cookie} deleted: {why}");
            if let Some(cookies) = inner.by_netns.get_mut(&store.netns) {
                cookies.retain(|c| *c != cookie);
                if cookies.is_empty() {
                    inner.by_netns.remove(&store.netns);
                }
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(format!("{cookie}.json")));
        }
    }

    fn persist(&self, cookie: u64, store: &Store) {
        let Some(dir) = &self.dir else { return };
        let on_disk = OnDisk {
            boot_id: self.boot_id.clone(),
            netns_cookie: cookie,
            netns_inode: store.netns,
            values: store
                .values
                .iter()
                .map(|(p, v)| ((*p).to_owned(), v.clone()))
                .collect(),
        };
        let path = dir.join(format!("{cookie}.json"));
        let tmp = dir.join(format!(".{cookie}.json.tmp"));
        let text = serde_json::to_string(&on_disk).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            warn!("cannot persist emulated values to {}: {e}", path.display());
        }
    }

    fn poke(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Starts the janitor: deletes the stores of namespaces already gone, then again each
    /// time a container that used a store ends or a sweep is asked for. It runs until
    /// [`Stores::stop`].
    pub fn spawn_janitor(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("nsview-stores".into())
            .spawn(move || {
                let proc = me.proc.clone();
                me.sweep(&proc);
                // A namespace outlives its container's init by a moment when a process
                // outside the pid namespace is in it too (`unshare`'s parent, a runtime
                // helper): after an end, sweep again a little later.
                let mut later: Vec<Duration> = Vec::new();
                loop {
                    match me.wait_for_an_end(later.last().copied()) {
                        Wake::Stop => return,
                        Wake::Ended | Wake::Asked => {
                            later = vec![
                                Duration::from_secs(5),
                                Duration::from_secs(1),
                                Duration::from_millis(200),
                            ]
                        }
                        Wake::Timeout => {
                            later.pop();
                        }
                    }
                    me.sweep(&proc);
                }
            })
    }

    /// Ends the janitor.
    pub fn stop(&self) {
        self.inner.lock().stop = true;
        self.poke();
    }

    /// Deletes the stores of dead namespaces and forgets dead witnesses.
    fn sweep(&self, proc: &ProcRoot) {
        // Dead witnesses first: their pidfds stay readable, and would wake the janitor again.
        self.inner.lock().witnesses.retain(|_, c| c.is_alive());
        if self.is_empty() {
            return;
        }
        let n = self.prune(&live_netns(proc));
        debug!("stores swept: {n} deleted, {} kept", self.len());
    }

    /// Blocks until a watched container ends, the janitor is stopped, or `timeout` passes.
    fn wait_for_an_end(&self, timeout: Option<Duration>) -> Wake {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let watched: Vec<Arc<Container>> = {
                let mut inner = self.inner.lock();
                if inner.stop {
                    return Wake::Stop;
                }
                if std::mem::take(&mut inner.sweep) {
                    return Wake::Asked;
                }
                inner.witnesses.values().cloned().collect()
            };
            let left = match deadline {
                None => PollTimeout::NONE,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    None => return Wake::Timeout,
                    Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                },
            };
            let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                watched
                    .iter()
                    .filter_map(|c| c.pidfd())
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
            if poll(&mut fds, left).is_err() {
                continue;
            }
            let ended = fds[1..].iter().any(|f| f.any().unwrap_or(false));
            if fds[0].any().unwrap_or(false) {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut count);
            }
            if ended {
                return Wake::Ended;
            }
        }
    }
}

/// Why the janitor woke.
enum Wake {
    /// A watched container ended.
    Ended,
    /// A sweep was asked for.
    Asked,
    /// The time to look again came.
    Timeout,
    /// The daemon stops.
    Stop,
}

/// The inodes of every network namespace a process is in or an nsfs bind mount (`ip netns
/// add`, CNI's pod namespaces) holds, as the host's init and this process see them.
pub fn live_netns(proc: &ProcRoot) -> HashSet<u64> {
    let mut live: HashSet<u64> = proc
        .pids()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| proc.ns_inode(pid, "net").ok())
        .collect();
    for pid in ["1", "self"] {
        let path = proc.path().join(pid).join("mountinfo");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        live.extend(
            crate::mounts::parse_mountinfo(&text)
                .iter()
                .filter(|m| m.fstype == "nsfs")
                .filter_map(|m| {
                    let root = m.root.to_string_lossy();
                    root.strip_prefix("net:")
                        .and_then(|_| crate::procfs::parse_ns_link(&root))
                }),
        );
    }
    live
}

/// A non-blocking eventfd (the janitor's doorbell).
fn eventfd() -> OwnedFd {
    use rustix::event::{EventfdFlags, eventfd};
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .unwrap_or_else(|e| panic!("eventfd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERCOMMIT: &str = "vm/overcommit_memory";

    fn id(cookie: u64, netns: u64) -> StoreId {
        StoreId { cookie, netns }
    }

    fn me() -> Arc<Container> {
        Arc::new(Container::host_scope(
            1,
            Default::default(),
            Default::default(),
        ))
    }

    #[test]
    fn stores_survive_a_reload_of_the_same_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::load(dir.path(), "boot-a", ProcRoot::default()).unwrap();
        assert!(stores.set(id(70, 7), OVERCOMMIT, "2".into(), &me()));
        std::fs::write(dir.path().join("8.json"), r#"{"vm/overcommit_memory":"1"}"#).unwrap();
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        let again = Stores::load(dir.path(), "boot-a", ProcRoot::default()).unwrap();
        assert_eq!(again.get(id(70, 7), OVERCOMMIT).as_deref(), Some("2"));
        assert_eq!(again.len(), 1);
        assert!(
            !dir.path().join("8.json").exists(),
            "an old-format store is deleted"
        );
        assert!(!dir.path().join("junk.json").exists());
        let next_boot = Stores::load(dir.path(), "boot-b", ProcRoot::default()).unwrap();
        assert!(next_boot.is_empty());
        assert!(!dir.path().join("70.json").exists());
    }

    #[test]
    fn a_reused_inode_with_a_new_cookie_never_sees_the_old_values() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::load(dir.path(), "b", ProcRoot::default()).unwrap();
        assert!(stores.set(id(100, 7), OVERCOMMIT, "2".into(), &me()));
        assert_eq!(stores.get(id(101, 7), OVERCOMMIT), None);
        assert_eq!(
            stores.get(id(100, 7), OVERCOMMIT),
            None,
            "deleted, not hidden"
        );
        assert!(!dir.path().join("100.json").exists());
    }

    #[test]
    fn after_a_restart_the_first_namespace_with_an_inode_drops_the_others_stores() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::load(dir.path(), "b", ProcRoot::default()).unwrap();
        assert!(stores.set(id(1, 7), OVERCOMMIT, "1".into(), &me()));
        // A second cookie with the same inode, as a dead namespace and its inode's new owner.
        std::fs::write(
            dir.path().join("2.json"),
            r#"{"boot_id":"b","netns_cookie":2,"netns_inode":7,"values":{"vm/overcommit_memory":"2"}}"#,
        )
        .unwrap();
        let again = Stores::load(dir.path(), "b", ProcRoot::default()).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get(id(2, 7), OVERCOMMIT).as_deref(), Some("2"));
        assert_eq!(again.len(), 1);
        assert!(!dir.path().join("1.json").exists());
    }

    #[test]
    fn stores_are_separate_and_go_with_their_namespace() {
        let stores = Stores::default();
        assert!(stores.set(id(1, 10), OVERCOMMIT, "1".into(), &me()));
        assert!(stores.set(id(2, 20), OVERCOMMIT, "2".into(), &me()));
        assert_eq!(stores.get(id(1, 10), OVERCOMMIT).as_deref(), Some("1"));
        assert_eq!(stores.get(id(2, 20), OVERCOMMIT).as_deref(), Some("2"));
        assert_eq!(stores.prune(&HashSet::from([20])), 1);
        assert_eq!(stores.get(id(1, 10), OVERCOMMIT), None);
        stores.remove_netns(20);
        assert!(stores.is_empty());
    }

    /// A container with a key of its own (a host scope of cgroup `/c<n>`).
    fn container(n: usize) -> Arc<Container> {
        let paths = crate::cgroup::CgroupPaths {
            unified: Some(format!("/c{n}")),
            ..Default::default()
        };
        Arc::new(Container::host_scope(1, paths, Default::default()))
    }

    #[test]
    fn stores_are_bounded_per_container_and_in_all() {
        let stores = Stores::default();
        let (a, b) = (container(0), container(1));
        for n in 0..PER_CONTAINER as u64 {
            assert!(stores.set(id(n, n), OVERCOMMIT, "1".into(), &a));
        }
        assert!(!stores.set(id(1000, 1000), OVERCOMMIT, "1".into(), &a));
        assert!(
            stores.set(id(0, 0), OVERCOMMIT, "2".into(), &a),
            "its own still"
        );
        assert!(
            stores.set(id(1000, 1000), OVERCOMMIT, "1".into(), &b),
            "others' not"
        );
        // Full: a sweep first (none of these fake namespaces lives), then room again.
        assert!(stores.fits(id(2000, 2000), &a));
        assert_eq!(stores.len(), 0);
        let mut n = 0;
        while stores.len() < MAX_STORES {
            let c = container(10 + n / PER_CONTAINER);
            assert!(stores.set(id(n as u64, n as u64), OVERCOMMIT, "1".into(), &c));
            n += 1;
        }
        assert!(!stores.set(
            id(u64::MAX, 1 << 40),
            OVERCOMMIT,
            "1".into(),
            &container(999_999)
        ));
    }

    #[test]
    fn the_live_namespaces_include_this_processs() {
        let proc = ProcRoot::default();
        let mine = proc.ns_inode(std::process::id(), "net").unwrap();
        assert!(live_netns(&proc).contains(&mine));
    }
}
