//! The control socket's server side.

use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use super::{
    CtlData, CtlRequest, CtlResponse, MAX_CLIENTS, MAX_LINE, Named, Status, Upgrading, socket_path,
};
use crate::service::Service;
use crate::views::cpus::CpuView;
use nsview_proto::agent::{encode, read_line};

/// How long a client may stay silent before its connection is closed.
const IDLE: Duration = Duration::from_secs(10);

/// How long a client must have been without a request before a new one may take its slot.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Binds the socket under `runtime_dir` (removing a stale one: the caller holds the runtime
/// dir's lock) and serves it on a thread for the life of the process.
pub fn start(runtime_dir: &Path, service: Arc<Service>) -> std::io::Result<()> {
    let path = socket_path(runtime_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let started = Instant::now();
    let clients = Arc::new(Clients::default());
    std::thread::Builder::new()
        .name("nsview-control".into())
        .spawn(move || {
            loop {
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                // A slot for it: beyond MAX_CLIENTS the client that has waited longest
                // without a request in progress is closed, so idle or trickling clients
                // never keep a hook or `ctl status` out.
                let Some(id) = clients.admit(&stream) else {
                    continue;
                };
                let service = service.clone();
                let clients_of_thread = clients.clone();
                let spawned = std::thread::Builder::new()
                    .name("nsview-ctl-client".into())
                    .spawn(move || {
                        serve_client(stream, &service, started, &clients_of_thread, id);
                        clients_of_thread.leave(id);
                    });
                if spawned.is_err() {
                    warn!("control: cannot start a client thread");
                    clients.leave(id);
                }
            }
        })?;
    Ok(())
}

/// The connections being served: at most [`MAX_CLIENTS`].
#[derive(Default)]
struct Clients {
    state: Mutex<ClientTable>,
    /// Rung when a client leaves or finishes a request.
    freed: Condvar,
}

#[derive(Default)]
struct ClientTable {
    next: u64,
    open: std::collections::HashMap<u64, Client>,
}

struct Client {
    /// For closing it from the accepting thread.
    stream: UnixStream,
    /// Since when it has had no request in progress (`None` while one is).
    idle_since: Option<Instant>,
}

impl Clients {
    /// Takes a slot for `stream`, closing the longest-idle client when all are taken, or
    /// waiting while every one has a request in progress (each is short). `None` when the
    /// stream cannot be kept.
    fn admit(&self, stream: &UnixStream) -> Option<u64> {
        let kept = stream.try_clone().ok()?;
        let mut table = self.state.lock();
        while table.open.len() >= MAX_CLIENTS {
            // Idle for a moment at least: a client that has just connected, or just had its
            // answer, may be about to send (a hook between its requests).
            let idlest = table
                .open
                .iter()
                .filter_map(|(&id, c)| c.idle_since.map(|t| (t, id)))
                .filter(|(t, _)| t.elapsed() >= EVICTABLE_AFTER)
                .min();
            match idlest {
                Some((_, id)) => {
                    if let Some(c) = table.open.remove(&id) {
                        debug!("control: {MAX_CLIENTS} clients; closing the longest idle");
                        let _ = c.stream.shutdown(std::net::Shutdown::Both);
                    }
                }
                None => {
                    self.freed.wait_for(&mut table, Duration::from_millis(100));
                }
            }
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            Client {
                stream: kept,
                idle_since: Some(Instant::now()),
            },
        );
        Some(id)
    }

    /// Marks client `id` busy with a request; `false` if it was closed meanwhile (the
    /// request is then not carried out).
    fn begin(&self, id: u64) -> bool {
        let mut table = self.state.lock();
        match table.open.get_mut(&id) {
            Some(c) => {
                c.idle_since = None;
                true
            }
            None => false,
        }
    }

    /// Marks client `id` idle again.
    fn end(&self, id: u64) {
        if let Some(c) = self.state.lock().open.get_mut(&id) {
            c.idle_since = Some(Instant::now());
        }
        self.freed.notify_one();
    }

    /// Gives client `id`'s slot back.
    fn leave(&self, id: u64) {
        self.state.lock().open.remove(&id);
        self.freed.notify_one();
    }
}

fn reply(mut stream: &UnixStream, response: &CtlResponse) -> std::io::Result<()> {
    stream.write_all(&encode(response))
}

/// Serves client `id` until it closes, breaks the protocol, stays silent for [`IDLE`] or is
/// closed to make room.
fn serve_client(
    stream: UnixStream,
    service: &Service,
    started: Instant,
    clients: &Clients,
    id: u64,
) {
    match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            warn!("control: refused a client with uid {}", cred.uid());
            let _ = reply(&stream, &CtlResponse::err("permission denied: root only"));
            return;
        }
        Err(e) => {
            warn!("control: no peer credentials ({e})");
            return;
        }
    }
    // A client that never reads its answers cannot hold its slot for longer either.
    if stream.set_read_timeout(Some(IDLE)).is_err() || stream.set_write_timeout(Some(IDLE)).is_err()
    {
        return;
    }
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    loop {
        let line = match read_line(&mut reader, MAX_LINE) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let _ = reply(&stream, &CtlResponse::err(e.to_string()));
                return;
            }
            Err(_) => return, // a read error or the idle deadline
        };
        if !clients.begin(id) {
            return;
        }
        let mut upgrade = None;
        let response = match serde_json::from_slice::<CtlRequest>(&line) {
            Ok(request) => handle(request, service, started, &mut upgrade),
            Err(e) => CtlResponse::err(format!("bad request: {e}")),
        };
        let sent = reply(&stream, &response);
        clients.end(id);
        // Only once the client has its answer: the exec ends this thread.
        if let (Some(exe), Some(upgrades)) = (upgrade, UPGRADES.get()) {
            (upgrades.go)(exe);
        }
        if sent.is_err() {
            return;
        }
    }
}

/// Judges a binary for an upgrade: its version line, or why not.
type CheckExe = Box<dyn Fn(&Path) -> Result<String, String> + Send + Sync>;

/// Where accepted `upgrade` requests go (see [`on_upgrade`]).
struct Upgrades {
    default_exe: Option<PathBuf>,
    check: CheckExe,
    go: Box<dyn Fn(PathBuf) + Send + Sync>,
}

static UPGRADES: OnceLock<Upgrades> = OnceLock::new();

/// Has `upgrade` requests served: `check` judges the binary (`default_exe` without one
/// named) and returns its version, and `go` gets it once the client has its answer. Without
/// this, `upgrade` is refused.
pub fn on_upgrade(
    default_exe: Option<PathBuf>,
    check: impl Fn(&Path) -> Result<String, String> + Send + Sync + 'static,
    go: impl Fn(PathBuf) + Send + Sync + 'static,
) {
    let _ = UPGRADES.set(Upgrades {
        default_exe,
        check: Box::new(check),
        go: Box::new(go),
    });
}

fn upgrade_to(exe: Option<PathBuf>, upgrade: &mut Option<PathBuf>) -> CtlResponse {
    let Some(upgrades) = UPGRADES.get() else {
        return CtlResponse::err(
            "this daemon cannot be upgraded in place (it runs without a keeper)",
        );
    };
    let Some(exe) = exe.or_else(|| upgrades.default_exe.clone()) else {
        return CtlResponse::err("the daemon's own binary is unknown: name one with --exe");
    };
    match (upgrades.check)(&exe) {
        Ok(version) => {
            info!("control: upgrade to {} ({version})", exe.display());
            *upgrade = Some(exe.clone());
            CtlResponse::ok(CtlData::Upgrading(Upgrading {
                exe,
                version,
                pid: std::process::id(),
            }))
        }
        Err(why) => {
            warn!("control: upgrade refused: {why}");
            CtlResponse::err(format!("upgrade refused: {why}"))
        }
    }
}

fn handle(
    request: CtlRequest,
    service: &Service,
    started: Instant,
    upgrade: &mut Option<PathBuf>,
) -> CtlResponse {
    debug!("control: {request:?}");
    let registry = &service.env.registered;
    match request {
        CtlRequest::Register {
            id,
            pid,
            cpu_view,
            host_writes,
        } => {
            let view = match cpu_view.as_deref().map(str::parse::<CpuView>).transpose() {
                Ok(v) => v,
                Err(e) => return CtlResponse::err(e),
            };
            match registry.register(&id, pid, view, host_writes.unwrap_or(true)) {
                Ok(r) => CtlResponse::ok(CtlData::Container(r)),
                Err(e) => {
                    // In the log too: a runtime may drop the hook's stderr (crun does).
                    let why = format!("register {id} (pid {pid}): {e}");
                    warn!("container {id}: refused: {why}");
                    CtlResponse::err(why)
                }
            }
        }
        CtlRequest::Unregister { id } => match registry.unregister(&id) {
            Some(r) => {
                // Its emulated values go with it, unless another registered container
                // shares its network namespace; by inode only while its init still shows
                // which namespace that is, else the janitor finds the dead namespace's.
                let stores = &service.env.sysctl_stores;
                match registry.current_netns(&r) {
                    Some(netns) => {
                        let list = registry.list();
                        let shared = list
                            .iter()
                            .any(|other| registry.current_netns(other) == Some(netns));
                        if !shared {
                            stores.remove_netns(netns);
                        }
                    }
                    None => stores.sweep_soon(),
                }
                CtlResponse::ok(CtlData::Id(Named { id }))
            }
            None => CtlResponse::err(format!("{id} is not registered")),
        },
        CtlRequest::Bound { id, bound, skipped } => {
            if !registry.list().iter().any(|r| r.id == id) {
                return CtlResponse::err(format!("{id} is not registered"));
            }
            if skipped.is_empty() {
                info!("container {id}: bound {}", bound.join(" "));
            } else {
                // Info, not a warning: the default list names files some machines lack
                // (product_uuid without DMI, pressure without PSI).
                info!(
                    "container {id}: bound {}; skipped (no such target in the container) {}",
                    bound.join(" "),
                    skipped.join(" ")
                );
            }
            CtlResponse::ok(CtlData::Id(Named { id }))
        }
        CtlRequest::Failed { id, error } => {
            warn!("container {id}: nsview's hook failed its start: {error}");
            CtlResponse::ok(CtlData::Id(Named { id }))
        }
        CtlRequest::List {} => CtlResponse::ok(CtlData::Containers(registry.list())),
        CtlRequest::Set { id, key, value } => match registry.set(&id, &key, &value) {
            Ok(r) => CtlResponse::ok(CtlData::Container(r)),
            Err(e) => CtlResponse::err(format!("set {key}={value} on {id}: {e}")),
        },
        CtlRequest::Status {} => CtlResponse::ok(CtlData::Status(status(service, started))),
        CtlRequest::Upgrade { exe } => upgrade_to(exe, upgrade),
    }
}

/// The daemon's status (`ctl status`; also logged on SIGHUP, SIGUSR1, SIGUSR2), for a daemon
/// serving since `started`.
pub fn status(service: &Service, started: Instant) -> Status {
    let env = &service.env;
    let named = |counts: std::collections::BTreeMap<&'static str, u64>| {
        counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: started.elapsed().as_secs(),
        containers_seen: service.containers.len(),
        containers_registered: env.registered.list().len(),
        agents_alive: env.agents.alive(),
        requests: crate::stats::requests(),
        requests_by_op: named(crate::stats::by_op()),
        agent_steps: named(crate::stats::agents()),
        host_fallbacks: env.stats.host_fallbacks.load(Ordering::Relaxed),
        errors: crate::stats::errors(),
        cgroup_files_kept: crate::cgroup::kept_files(),
        cgroup_files_budget: crate::cgroup::kept_files_budget(),
        connection: crate::stats::connection(),
    }
}
