//! The control socket's server side.

use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};
use serde_json::json;

use super::{CtlRequest, CtlResponse, MAX_CLIENTS, MAX_LINE, socket_path};
use crate::service::Service;
use crate::views::cpus::CpuView;
use nsview_nsenter::protocol::{encode, read_line};

/// How long a client may stay silent before its connection is closed.
const IDLE: Duration = Duration::from_secs(10);

/// Binds the socket under `runtime_dir` (removing a stale one: the caller holds the runtime
/// dir's lock) and serves it on a thread for the life of the process.
pub fn start(runtime_dir: &Path, service: Arc<Service>) -> std::io::Result<()> {
    let path = socket_path(runtime_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let started = Instant::now();
    let slots = Arc::new((Mutex::new(0usize), Condvar::new()));
    std::thread::Builder::new()
        .name("nsview-control".into())
        .spawn(move || {
            loop {
                // Beyond MAX_CLIENTS, connections wait in the listen backlog (their requests
                // are answered once a client leaves) rather than being turned away: a burst
                // of container starts must not fail hooks.
                {
                    let (count, freed) = &*slots;
                    let mut count = count.lock();
                    while *count >= MAX_CLIENTS {
                        freed.wait(&mut count);
                    }
                    *count += 1;
                }
                let slot = ClientSlot(slots.clone());
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                let service = service.clone();
                let spawned = std::thread::Builder::new()
                    .name("nsview-ctl-client".into())
                    .spawn(move || {
                        serve_client(stream, &service, started);
                        drop(slot);
                    });
                if spawned.is_err() {
                    warn!("control: cannot start a client thread");
                }
            }
        })?;
    Ok(())
}

/// One taken client slot; given back on drop (also when its thread never started).
struct ClientSlot(Arc<(Mutex<usize>, Condvar)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let (count, freed) = &*self.0;
        *count.lock() -= 1;
        freed.notify_one();
    }
}

fn reply(mut stream: &UnixStream, response: &CtlResponse) -> std::io::Result<()> {
    stream.write_all(&encode(response))
}

/// Serves one client until it closes, breaks the protocol or stays silent for [`IDLE`].
fn serve_client(stream: UnixStream, service: &Service, started: Instant) {
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
    if stream.set_read_timeout(Some(IDLE)).is_err() {
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
        let response = match serde_json::from_slice::<CtlRequest>(&line) {
            Ok(request) => handle(request, service, started),
            Err(e) => CtlResponse::err(format!("bad request: {e}")),
        };
        if reply(&stream, &response).is_err() {
            return;
        }
    }
}

fn handle(request: CtlRequest, service: &Service, started: Instant) -> CtlResponse {
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
                Ok(r) => CtlResponse::ok(json!(r)),
                Err(e) => CtlResponse::err(format!("register {id} (pid {pid}): {e}")),
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
                CtlResponse::ok(json!({ "id": id }))
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
                warn!(
                    "container {id}: bound {}; skipped (no such target in the container) {}",
                    bound.join(" "),
                    skipped.join(" ")
                );
            }
            CtlResponse::ok(json!({ "id": id }))
        }
        CtlRequest::Failed { id, error } => {
            warn!("container {id}: nsview's hook failed its start: {error}");
            CtlResponse::ok(json!({ "id": id }))
        }
        CtlRequest::List => CtlResponse::ok(json!(registry.list())),
        CtlRequest::Set { id, key, value } => match registry.set(&id, &key, &value) {
            Ok(r) => CtlResponse::ok(json!(r)),
            Err(e) => CtlResponse::err(format!("set {key}={value} on {id}: {e}")),
        },
        CtlRequest::Status => CtlResponse::ok(status(service, started)),
    }
}

/// The daemon's status (`ctl status`; also logged on SIGHUP, SIGUSR1, SIGUSR2), for a daemon
/// serving since `started`.
pub fn status(service: &Service, started: Instant) -> serde_json::Value {
    let env = &service.env;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": started.elapsed().as_secs(),
        "containers_seen": service.containers.len(),
        "containers_registered": env.registered.list().len(),
        "agents_alive": env.agents.len(),
        "requests": crate::stats::requests(),
        "host_fallbacks": env.stats.host_fallbacks.load(Ordering::Relaxed),
        "errors": crate::stats::errors(),
        "cgroup_files_kept": crate::cgroup::kept_files(),
        "cgroup_files_budget": crate::cgroup::kept_files_budget(),
    })
}
