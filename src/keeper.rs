//! `nsview keeper`: a process that holds a descriptor of the daemon's FUSE connection, so that
//! the kernel side of the mount outlives a daemon that crashes or is upgraded. While no daemon
//! serves it, requests wait (they do not fail with ENOTCONN), and descriptors containers hold
//! stay valid; the next daemon takes the connection back ([`Client::take`]).
//!
//! Its whole state is one descriptor and what it is (`nsview_proto::keeper::Connection`). It
//! listens on `keeper.sock` in the daemon's runtime directory, takes requests from root only,
//! and gives the descriptor up after `--timeout` seconds without any daemon connected, so a
//! daemon stopped for good ends in ENOTCONN rather than in containers waiting forever. A
//! daemon that unmounts on purpose (SIGTERM) releases it first ([`Client::release`]).
//!
//! `nsview serve` starts one when none listens (in a session of its own, so that a signal to
//! the daemon's process group spares it). Under a supervisor that ends the daemon's whole
//! group on a crash (systemd's `KillMode=control-group`, a container's restart), the keeper
//! runs on its own instead (`--stay`: its own unit, its own container in the pod).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt, listen,
    socket, sockopt,
};
use nsview_proto::keeper::{Connection, KeeperError, KeeperReply, KeeperRequest, recv, send};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Options of `nsview keeper`.
#[derive(Debug, clap::Args)]
pub struct KeeperArgs {
    /// The daemon's runtime directory (the keeper's socket is `keeper.sock` in it).
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,

    /// Seconds the connection is held with no daemon connected; then it is closed and the
    /// mount answers ENOTCONN.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub timeout: f64,

    /// Keep running while nothing is held (under a supervisor); without it the keeper ends
    /// once it holds nothing and no daemon is connected. With it, a keeper finding another
    /// one running waits to take its place instead of ending.
    #[arg(long)]
    pub stay: bool,
}

/// What stops the keeper.
#[derive(Debug, thiserror::Error)]
pub enum KeeperFailure {
    /// Its socket could not be made.
    #[error("keeper socket {path}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `--timeout` is not a positive number.
    #[error("--timeout must be a positive number of seconds, not {0}")]
    Timeout(f64),
}

/// The socket's path in `runtime_dir`.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("keeper.sock")
}

/// The keeper's pid file in `runtime_dir`.
pub fn pid_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("keeper.pid")
}

/// Time the keeper waits for its first daemon before it ends (without `--stay`).
const FIRST_CONTACT: Duration = Duration::from_secs(10);

/// Runs the keeper until it has nothing to keep (or forever, with `--stay`). A keeper already
/// listening on the socket makes this one end at once, successfully.
pub fn run(args: &KeeperArgs) -> Result<(), KeeperFailure> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout < 1e9) {
        return Err(KeeperFailure::Timeout(args.timeout));
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let path = socket_path(&args.runtime_dir);
    let failed = |source| KeeperFailure::Socket {
        path: path.clone(),
        source,
    };
    let Some((listener, _lock)) = listen_once(&args.runtime_dir, args.stay).map_err(failed)? else {
        info!("a keeper already listens on {}", path.display());
        return Ok(());
    };
    let _ = fs::write(
        pid_path(&args.runtime_dir),
        format!("{}\n", std::process::id()),
    );
    info!(
        "keeper on {} (connection held {}s without a daemon)",
        path.display(),
        args.timeout
    );
    let mut keeper = Keeper {
        held: None,
        clients: Vec::new(),
        alone_since: Some(Instant::now()),
        taken_since: None,
    };
    let mut contacted = false;
    loop {
        contacted |= !keeper.clients.is_empty();
        let deadline = keeper.alone_since.map(|since| {
            let limit = match (&keeper.held, contacted) {
                (Some(_), _) => timeout,
                // Nothing held and the daemon gone: nothing to wait for.
                (None, true) => Duration::ZERO,
                (None, false) => FIRST_CONTACT,
            };
            since + limit
        });
        // A daemon that took the connection and has not said it serves it (its Hold) within
        // the timeout: one failing at start, maybe over and over under a supervisor, which
        // must not keep containers waiting for ever.
        let unconfirmed = keeper.taken_since.map(|since| since + timeout);
        let deadline = match (deadline, unconfirmed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = deadline
            && Instant::now() >= deadline
        {
            keeper.taken_since = None;
            if keeper.held.take().is_some() {
                warn!(
                    "no daemon for {}s: closing the FUSE connection (its mount answers ENOTCONN now)",
                    args.timeout
                );
                keeper.alone_since = Some(Instant::now());
            } else if !args.stay {
                break;
            } else {
                keeper.alone_since = None;
            }
            continue;
        }
        let wait = deadline.map_or(PollTimeout::NONE, |d| {
            let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
            PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
        });
        let ready = {
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                keeper
                    .clients
                    .iter()
                    .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, wait) {
                Ok(_) => fds
                    .iter()
                    .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<_>>(),
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    warn!("keeper poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        };
        // Clients first, from the last, so that removing one leaves the others' indices.
        for i in (0..keeper.clients.len()).rev() {
            if ready[i + 1] && !keeper.serve(i) {
                keeper.clients.swap_remove(i);
                if keeper.clients.is_empty() {
                    keeper.alone_since = Some(Instant::now());
                }
            }
        }
        if ready[0] {
            keeper.accept(&listener);
        }
    }
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(pid_path(&args.runtime_dir));
    info!("keeper: nothing to keep, ending");
    Ok(())
}

/// The keeper's state.
struct Keeper {
    held: Option<(OwnedFd, Connection)>,
    clients: Vec<OwnedFd>,
    /// Since when no daemon is connected (`None` while one is, or with `--stay` and
    /// nothing held).
    alone_since: Option<Instant>,
    /// Since when a daemon has taken the connection without holding it back (serving).
    taken_since: Option<Instant>,
}

/// The most generations a connection has: handle ids carry 24 bits of it (see
/// `fuse::Handles`), so a connection served that often is let go, and the next daemon mounts
/// anew, rather than let ids repeat.
const MAX_GENERATION: u32 = (1 << 24) - 1;

/// Whether `fd` is a descriptor of `/dev/fuse` (character device 10:229).
pub fn is_dev_fuse(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice
            && rustix::fs::major(st.st_rdev) == 10
            && rustix::fs::minor(st.st_rdev) == 229
    })
}

impl Keeper {
    fn accept(&mut self, listener: &OwnedFd) {
        let Ok(raw) = accept4(
            std::os::fd::AsRawFd::as_raw_fd(listener),
            SockFlag::SOCK_CLOEXEC,
        ) else {
            return;
        };
        // SAFETY: accept4 just returned this new descriptor; nothing else owns it.
        let client = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        // Only root (the daemon's user) may take or replace the connection: whoever holds it
        // serves every container's /proc.
        match getsockopt(&client, sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() == nix::unistd::geteuid().as_raw() => {
                // A client that never reads its answers cannot wedge the keeper: a reply
                // that does not go within a second drops it.
                let limit = nix::sys::time::TimeVal::new(1, 0);
                let _ = nix::sys::socket::setsockopt(&client, sockopt::SendTimeout, &limit);
                self.clients.push(client);
                self.alone_since = None;
            }
            Ok(cred) => warn!("keeper: refused a client of uid {}", cred.uid()),
            Err(e) => warn!("keeper: cannot identify a client: {e}"),
        }
    }

    /// Serves one request of client `i`; `false` when it is gone (or broke the protocol).
    fn serve(&mut self, i: usize) -> bool {
        let client = &self.clients[i];
        let (request, fd) = match recv::<KeeperRequest>(client.as_fd()) {
            Ok(got) => got,
            Err(KeeperError::Closed) => return false,
            Err(e) => {
                warn!("keeper: {}", nsview_proto::chain(&e));
                return false;
            }
        };
        let (reply, with) = match request {
            KeeperRequest::Take { mountpoint } => {
                if self
                    .held
                    .as_ref()
                    .is_some_and(|(_, c)| c.generation >= MAX_GENERATION)
                {
                    warn!("keeper: the connection has had {MAX_GENERATION} daemons; letting it go");
                    self.held = None;
                }
                if let Some((_, connection)) = &mut self.held
                    && connection.mountpoint == mountpoint
                {
                    self.taken_since = Some(Instant::now());
                    connection.generation += 1;
                    info!(
                        "keeper: handing {} over to a daemon (generation {})",
                        mountpoint.display(),
                        connection.generation
                    );
                }
                match &self.held {
                    Some((held, connection)) if connection.mountpoint == mountpoint => {
                        let reply = KeeperReply::Held {
                            connection: connection.clone(),
                        };
                        (reply, Some(held.as_fd()))
                    }
                    _ => (KeeperReply::Empty, None),
                }
            }
            KeeperRequest::Check { mountpoint } => match &self.held {
                Some((_, connection)) if connection.mountpoint == mountpoint => {
                    (KeeperReply::Ok, None)
                }
                _ => (KeeperReply::Empty, None),
            },
            KeeperRequest::Hold { connection } => match fd {
                Some(fd) if !is_dev_fuse(fd.as_fd()) => (
                    KeeperReply::Refused {
                        reason: "not a /dev/fuse descriptor".into(),
                    },
                    None,
                ),
                Some(fd) => {
                    self.taken_since = None;
                    info!(
                        "keeper: holding {} (generation {})",
                        connection.mountpoint.display(),
                        connection.generation
                    );
                    self.held = Some((fd, connection));
                    (KeeperReply::Ok, None)
                }
                None => (
                    KeeperReply::Refused {
                        reason: "hold without a descriptor".into(),
                    },
                    None,
                ),
            },
            KeeperRequest::Release => {
                self.taken_since = None;
                if let Some((_, connection)) = self.held.take() {
                    info!("keeper: released {}", connection.mountpoint.display());
                }
                (KeeperReply::Ok, None)
            }
        };
        match send(client.as_fd(), &reply, with) {
            Ok(()) => true,
            Err(e) => {
                warn!("keeper: {}", nsview_proto::chain(&e));
                false
            }
        }
    }
}

/// Binds the keeper's socket under its lock: `None` when another keeper holds the lock, or,
/// with `wait` (a supervised keeper), once it has the lock.
fn listen_once(runtime_dir: &Path, wait: bool) -> io::Result<Option<(OwnedFd, File)>> {
    fs::create_dir_all(runtime_dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(runtime_dir.join("keeper.lock"))?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) if wait => {
            // A daemon's own keeper holds it: this one takes over once that one ends.
            info!("another keeper runs; waiting to take its place");
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        }
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let path = socket_path(runtime_dir);
    // Ours by the lock: a file there is a dead keeper's.
    let _ = fs::remove_file(&path);
    let socket = seqpacket()?;
    let addr = UnixAddr::new(&path)?;
    // Root's alone: no other user may even connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &addr);
    nix::sys::stat::umask(old);
    bound?;
    listen(&socket, nix::sys::socket::Backlog::new(16)?)?;
    Ok(Some((socket, lock)))
}

/// A daemon's connection to its keeper. Kept open for the daemon's life: the keeper counts
/// its time without a daemon from the moment it closes.
#[derive(Debug)]
pub struct Client {
    runtime_dir: PathBuf,
    socket: Mutex<OwnedFd>,
    /// Set by [`Client::release`]: a keeper ending now is not replaced.
    stopping: AtomicBool,
}

impl Client {
    /// Connects to the keeper of `runtime_dir`, if one listens.
    pub fn connect(runtime_dir: &Path) -> io::Result<Client> {
        Ok(Client {
            runtime_dir: runtime_dir.to_path_buf(),
            socket: Mutex::new(connect_to(runtime_dir)?),
            stopping: AtomicBool::new(false),
        })
    }

    /// Whether the keeper holds the connection of `mountpoint` now (asked of it).
    pub fn holds(&self, mountpoint: &Path) -> bool {
        let request = KeeperRequest::Check {
            mountpoint: mountpoint.to_path_buf(),
        };
        matches!(self.ask(&request, None), Ok((KeeperReply::Ok, _)))
    }

    /// Connects to the keeper of `runtime_dir`, starting one (`exe keeper`, timing out after
    /// `timeout`) if none listens.
    pub fn connect_or_start(runtime_dir: &Path, exe: &Path, timeout: f64) -> io::Result<Client> {
        if let Ok(client) = Client::connect(runtime_dir) {
            return Ok(client);
        }
        start(runtime_dir, exe, timeout)?;
        Ok(Client {
            runtime_dir: runtime_dir.to_path_buf(),
            socket: Mutex::new(connect_when_up(runtime_dir)?),
            stopping: AtomicBool::new(false),
        })
    }

    /// Takes the connection the keeper holds for `mountpoint`, if any.
    pub fn take(&self, mountpoint: &Path) -> io::Result<Option<(OwnedFd, Connection)>> {
        let request = KeeperRequest::Take {
            mountpoint: mountpoint.to_path_buf(),
        };
        match self.ask(&request, None)? {
            (KeeperReply::Held { connection }, Some(fd)) => Ok(Some((fd, connection))),
            (KeeperReply::Empty, _) => Ok(None),
            (reply, _) => Err(unexpected(&reply)),
        }
    }

    /// Has the keeper hold `fd`, the descriptor of `connection`.
    pub fn hold(&self, fd: BorrowedFd<'_>, connection: &Connection) -> io::Result<()> {
        let request = KeeperRequest::Hold {
            connection: connection.clone(),
        };
        match self.ask(&request, Some(fd))? {
            (KeeperReply::Ok, _) => Ok(()),
            (reply, _) => Err(unexpected(&reply)),
        }
    }

    /// Has the keeper close its descriptor (before a deliberate unmount).
    pub fn release(&self) -> io::Result<()> {
        self.stopping.store(true, Ordering::SeqCst);
        match self.ask(&KeeperRequest::Release, None)? {
            (KeeperReply::Ok, _) => Ok(()),
            (reply, _) => Err(unexpected(&reply)),
        }
    }

    fn ask(
        &self,
        request: &KeeperRequest,
        fd: Option<BorrowedFd<'_>>,
    ) -> io::Result<(KeeperReply, Option<OwnedFd>)> {
        let socket = self.socket.lock();
        if matches!(request, KeeperRequest::Hold { .. }) && self.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::other("released: the daemon is stopping"));
        }
        send(socket.as_fd(), request, fd).map_err(io::Error::other)?;
        recv(socket.as_fd()).map_err(io::Error::other)
    }

    /// Watches the keeper for the daemon's life: if it ends (killed), starts another and has
    /// it hold `fd` (the connection, `connection`) again, so the next crash still leaves a
    /// holder. Runs on a thread of its own.
    pub fn watch(
        self: std::sync::Arc<Self>,
        fd: OwnedFd,
        connection: Connection,
        exe: PathBuf,
        timeout: f64,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("keeper-watch".into())
            .spawn(move || {
                loop {
                    {
                        let socket = self.socket.lock().try_clone();
                        let Ok(socket) = socket else { return };
                        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::empty())];
                        match poll(&mut fds, PollTimeout::NONE) {
                            Ok(_) => {}
                            Err(nix::Error::EINTR) => continue,
                            Err(_) => return,
                        }
                    }
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    warn!("the keeper ended: starting another");
                    loop {
                        let renewed = start(&self.runtime_dir, &exe, timeout)
                            .and_then(|()| connect_when_up(&self.runtime_dir))
                            .and_then(|socket| {
                                let mut held = self.socket.lock();
                                // Checked under the socket's lock, which release holds while
                                // it asks: no Hold after a Release.
                                if self.stopping.load(Ordering::SeqCst) {
                                    return Ok(());
                                }
                                *held = socket;
                                drop(held);
                                match self.hold(fd.as_fd(), &connection) {
                                    Err(_) if self.stopping.load(Ordering::SeqCst) => Ok(()),
                                    other => other,
                                }
                            });
                        match renewed {
                            Ok(()) => break,
                            Err(e) => {
                                warn!("cannot start a keeper again ({e}); retrying in 5 s");
                                std::thread::sleep(Duration::from_secs(5));
                            }
                        }
                    }
                }
            })
    }
}

fn unexpected(reply: &KeeperReply) -> io::Error {
    match reply {
        KeeperReply::Refused { reason } => io::Error::other(format!("keeper refused: {reason}")),
        other => io::Error::other(format!("unexpected keeper reply {other:?}")),
    }
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Connects to the keeper just started for `runtime_dir`, trying for up to 5 s.
fn connect_when_up(runtime_dir: &Path) -> io::Result<OwnedFd> {
    let since = Instant::now();
    loop {
        match connect_to(runtime_dir) {
            Ok(socket) => return Ok(socket),
            Err(e) if since.elapsed() > Duration::from_secs(5) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn connect_to(runtime_dir: &Path) -> io::Result<OwnedFd> {
    let socket = seqpacket()?;
    let addr = UnixAddr::new(&socket_path(runtime_dir))?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&socket), &addr)?;
    // A keeper that does not answer (stopped, wedged) fails the request within 5 s rather
    // than hang the daemon's start or stop.
    let limit = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&socket, sockopt::ReceiveTimeout, &limit)?;
    nix::sys::socket::setsockopt(&socket, sockopt::SendTimeout, &limit)?;
    Ok(socket)
}

/// Starts `exe keeper` for `runtime_dir` in a session of its own; a thread reaps it.
fn start(runtime_dir: &Path, exe: &Path, timeout: f64) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(exe);
    command
        .arg("keeper")
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .arg("--timeout")
        .arg(timeout.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let mut child = command.spawn()?;
    info!(
        "started keeper {} for {}",
        child.id(),
        runtime_dir.display()
    );
    std::thread::Builder::new()
        .name("keeper-reap".into())
        .spawn(move || {
            let _ = child.wait();
        })?;
    Ok(())
}
