//! `nsview serve`: checks, mountpoint recovery, the mount, the signals (see [`on_signal`]) and
//! the shutdown on SIGINT/SIGTERM/SIGQUIT.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use fuser::{Config, MountOption, Session, SessionACL};
use log::{error, info, warn};
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{SigSet, Signal};

use crate::agent::{Pool, PoolConfig};
use crate::cgroup::CgroupReader;
use crate::cli::ServeArgs;
use crate::container::carried::{Carried, UNCLAIMED_FOR};
use crate::control::{self, Registrations};
use crate::fuse::Fs;
use crate::mounts::mounts_at;
use crate::procfs::ProcRoot;
use crate::service::Service;
#[cfg(feature = "test-nodes")]
use crate::vfs::TEST_TABLE;
use crate::vfs::{Spec, TABLE};
use crate::views::sysctl::standing::HostNs;
use crate::views::sysctl::stores::Stores;

pub use nsview_core::mounts::{FSNAME, is_nsview_mount};

/// Why `serve` could not start or stopped with an error. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Not running as root.
    #[error("nsview serve must run as root (effective uid is {0})")]
    NotRoot(u32),
    /// `/dev/fuse` is missing or not the FUSE device.
    #[error("/dev/fuse is not available ({0}); load the fuse module or run where /dev/fuse exists")]
    NoFuse(String),
    /// The mountpoint exists and is not a directory.
    #[error("mountpoint {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A live nsview already serves the mountpoint.
    #[error(
        "mountpoint {0} is already served by a live nsview; stop it first or choose another mountpoint"
    )]
    AlreadyServed(PathBuf),
    /// The mountpoint could not be inspected, created or recovered.
    #[error("mountpoint {path}: {source}")]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The runtime directory could not be created or locked.
    #[error("runtime dir {path}: {source}")]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the runtime directory's lock.
    #[error("runtime dir {0} is in use by another nsview (see its nsview.pid)")]
    RuntimeDirBusy(PathBuf),
    /// The daemon's state could not be set up.
    #[error("setup: {0}")]
    Setup(#[from] crate::error::Error),
    /// Mounting failed.
    #[error("mount at {path}: {source}")]
    Mount {
        /// The mountpoint.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Signal handling could not be set up.
    #[error("signals: {0}")]
    Signals(#[from] nix::Error),
    /// The agent settings or binary are unusable.
    #[error("{0}")]
    Agent(String),
    /// An option's value is unusable.
    #[error("{0}")]
    BadOption(String),
}

mod connection;
mod upgrade;

/// What ended the serving loop.
enum Stop {
    Signal(Signal),
    SessionEnded(io::Result<()>),
    /// An accepted `upgrade`: exec this binary.
    Upgrade(PathBuf),
}

/// Runs `nsview serve` until SIGINT, SIGTERM or SIGQUIT (then unmounts and returns), or until the mount
/// goes away under it.
pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    // Block every handled signal before any thread exists, so every thread inherits the mask
    // and only the waiting thread receives them.
    let signals = handled_signals();
    signals.thread_block()?;
    // While this is the only thread: an upgraded image's inherited children.
    upgrade::reap_inherited();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let exe = upgrade::own_exe();
    if !(args.keeper_timeout.is_finite() && (0.0..1e6).contains(&args.keeper_timeout)) {
        return Err(ServeError::BadOption(format!(
            "--keeper-timeout must be 0 (no keeper) or a positive number of seconds, not {}",
            args.keeper_timeout
        )));
    }
    check_root()?;
    check_dev_fuse()?;
    let abs = canonical(&args.mountpoint)?;
    // Nothing mounted there: a stat cannot wait on a mount a keeper holds.
    if mounts_at(&abs).is_ok_and(|m| m.is_empty()) && fs::metadata(&abs).is_ok_and(|m| !m.is_dir())
    {
        return Err(ServeError::NotADirectory(abs));
    }
    let _lock = lock_runtime_dir(&args.runtime_dir)?;
    // A predecessor's connection, if a keeper holds it: served as it is (its mount, its
    // descriptors in containers). Else the mountpoint is recovered and mounted anew.
    let mut keeper = (args.keeper_timeout > 0.0)
        .then(|| {
            crate::keeper::Client::connect(&args.runtime_dir)
                .ok()
                .map(Arc::new)
        })
        .flatten();
    let taken = keeper
        .as_ref()
        .and_then(|keeper| connection::take_back(keeper, &abs));
    let mountpoint = match &taken {
        Some(_) => abs,
        None => {
            let (mountpoint, stale) = prepare_mountpoint(&args.mountpoint)?;
            // The predecessor's device: reattach replaces binds of it.
            for dev in stale {
                remember_device(&args.runtime_dir, dev);
            }
            mountpoint
        }
    };
    raise_fd_limit();
    let started = std::time::Instant::now();

    #[cfg(feature = "test-nodes")]
    let specs: Vec<Spec> = if args.test_nodes {
        TABLE.iter().chain(TEST_TABLE).copied().collect()
    } else {
        TABLE.to_vec()
    };
    #[cfg(not(feature = "test-nodes"))]
    let specs: Vec<Spec> = TABLE.to_vec();
    let agents = Pool::new(agent_config(args)?, ProcRoot::default())?;
    let registered = Registrations::load(&args.runtime_dir, ProcRoot::default())?;
    let stores_dir = args.runtime_dir.join("stores");
    let boot_id = ProcRoot::default().read_host("sys/kernel/random/boot_id")?;
    let stores =
        Stores::load(&stores_dir, boot_id.trim(), ProcRoot::default()).map_err(|source| {
            ServeError::RuntimeDir {
                path: stores_dir.clone(),
                source,
            }
        })?;
    let parts = crate::views::Parts {
        agents: agents.clone(),
        registered: Arc::new(registered),
        host_ns: HostNs::read(&ProcRoot::default())?,
        sysctl_stores: Arc::new(stores),
    };
    let service = Service::new(
        &specs,
        ProcRoot::default(),
        CgroupReader::new(&args.cgroup_root),
        args.cpu_view,
        args.uptime,
        parts,
    )?;
    let service = Arc::new(service);
    // What the containers' views kept under a predecessor: their baselines and load averages.
    let carried = carry_over(&service, &args.runtime_dir);
    // Every sampling round (5 s), the containers that ended are forgotten (their cgroup
    // descriptors close), and what their views carry over a restart is written.
    let weak = Arc::downgrade(&service);
    let round_carried = carried.clone();
    service.env.sampler.after_every_round(move || {
        if let Some(service) = weak.upgrade() {
            service.containers.prune();
            if let Some(carried) = &round_carried {
                keep_carried(&service, carried, started);
            }
        }
    });
    let mount = |fs: Fs| {
        let session = Session::new(fs, &mountpoint, &fuse_config(args.threads))?;
        // From mountinfo: a stat of the mountpoint would wait for the session, not yet running.
        let dev = match mounts_at(&mountpoint).map(|m| m.into_iter().rfind(is_nsview_mount)) {
            Ok(Some(ours)) => {
                remember_device(&args.runtime_dir, ours.dev);
                ours.dev
            }
            _ => {
                warn!("cannot find this daemon's own mount in mountinfo");
                (0, 0)
            }
        };
        Ok((session, dev))
    };
    let mut served = connection::serve_connection(
        &service,
        &agents,
        &args.runtime_dir,
        taken,
        mount,
        fuse_config(args.threads),
    )
    .map_err(|source| ServeError::Mount {
        path: mountpoint.clone(),
        source,
    })?;
    if keeper.is_none() {
        keeper = keeper_client(args, exe.as_deref());
    }
    let kept = keeper.as_ref().is_some_and(|keeper| {
        let exe = exe.clone().unwrap_or_default();
        connection::keep(
            keeper.clone(),
            &mut served,
            &mountpoint,
            exe,
            args.keeper_timeout,
        )
    });
    crate::stats::mark_kept(kept);
    let (tx, rx) = mpsc::channel();
    if kept {
        let tx = std::sync::Mutex::new(tx.clone());
        control::on_upgrade(exe.clone(), upgrade::check, move |exe| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(Stop::Upgrade(exe));
            }
        });
    }
    info!(
        "serving {} ({} threads, cgroups at {})",
        mountpoint.display(),
        args.threads,
        args.cgroup_root.display()
    );

    if let Err(e) = control::start(&args.runtime_dir, service.clone()) {
        error!(
            "cannot serve the control socket in {}: {e}",
            args.runtime_dir.display()
        );
    }

    // The load-average sampler: one thread for every container, stopped with the daemon.
    let sampler = service.env.sampler.clone();
    let sampler_thread = sampler.spawn();
    if let Err(e) = &sampler_thread {
        error!("cannot start the load-average sampler: {e}; loadavg shows first samples only");
    }

    let stores = service.env.sysctl_stores.clone();
    #[cfg(feature = "test-nodes")]
    let keep_stores = args.test_keep_stores;
    #[cfg(not(feature = "test-nodes"))]
    let keep_stores = false;
    let janitor = if keep_stores {
        Err(io::Error::other("--test-keep-stores"))
    } else {
        stores.spawn_janitor()
    };
    if let Err(e) = &janitor {
        warn!("no janitor for the stores ({e}): stores of ended containers stay");
    }

    // Every start: binds a dead predecessor left (in registered containers and elsewhere)
    // get this mount's files.
    spawn_reattach(args, &mountpoint);

    let status_of = {
        let service = service.clone();
        move || serde_json::to_string(&control::status(&service, started)).unwrap_or_default()
    };
    start_serving(served.session, signals, status_of, tx)?;
    let stop = loop {
        match rx.recv().unwrap_or(Stop::SessionEnded(Ok(()))) {
            Stop::Upgrade(exe) => {
                // A stop asked for meanwhile wins over the upgrade.
                if let Ok(stop @ (Stop::Signal(_) | Stop::SessionEnded(_))) = rx.try_recv() {
                    break stop;
                }
                // Without a keeper holding the connection, the exec would end it.
                let held = keeper
                    .as_ref()
                    .is_some_and(|keeper| keeper.holds(&mountpoint));
                if !held {
                    error!("upgrade refused: no keeper holds the FUSE connection now; serving on");
                    continue;
                }
                if let Some(carried) = &carried {
                    keep_carried(&service, carried, started);
                }
                let e = upgrade::exec(&exe, &argv);
                error!("upgrade: exec {}: {e}; serving on", exe.display());
            }
            stop => break stop,
        }
    };
    sampler.stop();
    agents.stop();
    stores.stop();
    if let Ok(thread) = janitor {
        let _ = thread.join();
    }
    if let Ok(thread) = sampler_thread {
        let _ = thread.join();
    }
    // Stopping on purpose (or the mount is gone): the keeper lets go, so the connection ends
    // with this process.
    if let Some(keeper) = &keeper
        && kept
        && let Err(e) = keeper.release()
    {
        warn!("keeper: {e}");
    }
    let fallbacks = service
        .env
        .stats
        .host_fallbacks
        .load(std::sync::atomic::Ordering::Relaxed);
    match stop {
        Stop::Signal(sig) => {
            info!("{sig}: unmounting {}", mountpoint.display());
            // Lazy: readers may hold files open; they get ENOTCONN once this process exits.
            if let Err(e) = umount2(&mountpoint, MntFlags::MNT_DETACH) {
                error!("unmount {}: {e}", mountpoint.display());
            }
        }
        Stop::SessionEnded(Ok(())) => warn!("{} was unmounted from outside", mountpoint.display()),
        Stop::SessionEnded(Err(e)) => error!("FUSE session ended: {e}"),
        Stop::Upgrade(_) => {}
    }
    let _ = fs::remove_file(control::socket_path(&args.runtime_dir));
    info!("stopped; {fallbacks} renders fell back to host files");
    Ok(())
}

/// Runs `nsview reattach` (the registered containers, then any other mount namespace holding
/// binds of an earlier mount of this nsview) in a child process (joining mount namespaces
/// needs a single-threaded process), and logs its line per container as it comes. The child's
/// requests to the mount wait until the session runs; it gets SIGKILL if this thread ends
/// first (the daemon stopped).
fn spawn_reattach(args: &ServeArgs, mountpoint: &Path) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            error!("cannot reattach: {e}");
            return;
        }
    };
    let mut command = Command::new(exe);
    command
        .arg("reattach")
        .arg("--mountpoint")
        .arg(mountpoint)
        .arg("--runtime-dir")
        .arg(&args.runtime_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
    let spawned = std::thread::Builder::new()
        .name("reattach".into())
        .spawn(move || {
            info!("reattaching: registered containers, then other mount namespaces");
            let started = std::time::Instant::now();
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    error!("cannot run nsview reattach: {e}");
                    return;
                }
            };
            // stderr on its own thread: a full pipe on one must not stall the other.
            let errors = child.stderr.take().map(|err| {
                std::thread::spawn(move || {
                    for line in io::BufReader::new(err).lines().map_while(Result::ok) {
                        warn!("reattach: {line}");
                    }
                })
            });
            if let Some(out) = child.stdout.take() {
                for line in io::BufReader::new(out).lines().map_while(Result::ok) {
                    info!("reattach: {line}");
                }
            }
            if let Some(errors) = errors {
                let _ = errors.join();
            }
            let verdict = match child.wait() {
                Ok(status) if status.success() => "all reattached".to_owned(),
                Ok(status) => format!("some not: {status}"),
                Err(e) => format!("unknown: {e}"),
            };
            info!(
                "reattach done in {} ms ({verdict})",
                started.elapsed().as_millis()
            );
        });
    if let Err(e) = spawned {
        error!("cannot reattach: {e}");
    }
}

/// The agent pool's settings from the command line; the agent binary must exist.
fn agent_config(args: &ServeArgs) -> Result<PoolConfig, ServeError> {
    let exe = match &args.agent_exe {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| ServeError::Agent(format!("cannot find this binary: {e}")))?
            .with_file_name("nsview-nsenter"),
    };
    if !exe.is_file() {
        return Err(ServeError::Agent(format!(
            "agent binary {} not found (build it with cargo build --workspace, or pass --agent-exe)",
            exe.display()
        )));
    }
    let secs = |what: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v < 1e6 {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(ServeError::Agent(format!(
                "--{what} must be a positive number of seconds, not {v}"
            )))
        }
    };
    Ok(PoolConfig {
        exe,
        max_agents: args.max_agents as usize,
        idle: secs("agent-idle", args.agent_idle)?,
        timeout: secs("agent-timeout", args.agent_timeout)?,
        mode: args.agent_mode,
        #[cfg(feature = "test-nodes")]
        allow_faults: args.test_faults,
        #[cfg(not(feature = "test-nodes"))]
        allow_faults: false,
        // The other half stays free for everyone else while agents are slow.
        max_waiting: usize::from(args.threads / 2).max(1),
    })
}

/// Raises the soft limit on open descriptors to the hard one: the daemon keeps cgroup files
/// open per container (see `cgroup::OpenFiles`) and pidfds of their inits, and the common
/// soft default of 1024 would run out at a hundred containers.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => warn!("cannot read the open-file limit: {e}"),
    }
}

fn fuse_config(threads: u16) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(FSNAME.into()),
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.into());
    // One /dev/fuse descriptor for every worker, which the keeper holds too: requests a
    // worker has read stay queued on it when the daemon dies, for the next one to be sent
    // again. (With a cloned descriptor per worker, the kernel would fail those requests
    // with ECONNABORTED as the dead daemon's clones close.)
    config.clone_fd = false;
    config
}

/// What the daemon does on each signal it handles (every other keeps its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSignal {
    /// Unmount and exit (SIGINT, SIGTERM, SIGQUIT).
    Stop,
    /// Log one status line and serve on (SIGHUP: there is no configuration to reload;
    /// SIGUSR1, which Debian's `lxcfs.service` sends on reload; SIGUSR2).
    Status,
    /// Log it and serve on: signals whose default would end the daemon and every container's
    /// view with it, though nothing here asked for them (SIGALRM, SIGVTALRM, SIGPROF, SIGIO,
    /// SIGPWR, SIGXCPU, SIGXFSZ).
    Ignore,
}

/// The daemon's answer to `sig`; `None`: the signal's default (SIGKILL, SIGSTOP, SIGCONT,
/// SIGCHLD, SIGWINCH, faults, job control).
pub fn on_signal(sig: Signal) -> Option<OnSignal> {
    use Signal::*;
    match sig {
        SIGINT | SIGTERM | SIGQUIT => Some(OnSignal::Stop),
        SIGHUP | SIGUSR1 | SIGUSR2 => Some(OnSignal::Status),
        SIGALRM | SIGVTALRM | SIGPROF | SIGIO | SIGPWR | SIGXCPU | SIGXFSZ => {
            Some(OnSignal::Ignore)
        }
        _ => None,
    }
}

/// The signals [`on_signal`] answers.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator().filter(|&s| on_signal(s).is_some()) {
        set.add(sig);
    }
    set
}

/// Serves the session on its own threads, and waits for signals on another: each sends
/// what ends the serving to `tx` (a stop signal, the session's end); on a status signal,
/// logs `status_of()`.
fn start_serving(
    session: Session<Fs>,
    signals: SigSet,
    status_of: impl Fn() -> String + Send + 'static,
    tx: mpsc::Sender<Stop>,
) -> Result<(), ServeError> {
    let session_tx = tx.clone();
    std::thread::Builder::new()
        .name("session".into())
        .spawn(move || {
            let _ = session_tx.send(Stop::SessionEnded(session.run()));
        })
        .map_err(|source| ServeError::Mount {
            path: PathBuf::new(),
            source,
        })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                match on_signal(sig) {
                    Some(OnSignal::Stop) => {
                        let _ = tx.send(Stop::Signal(sig));
                        return;
                    }
                    Some(OnSignal::Status) => info!("{sig}: status {}", status_of()),
                    Some(OnSignal::Ignore) | None => info!("{sig}: ignored"),
                }
            }
            error!("waiting for signals failed; SIGKILL is the only way to stop");
        })
        .map_err(|source| ServeError::Mount {
            path: PathBuf::new(),
            source,
        })?;
    Ok(())
}

/// The keeper of this daemon's connection (started if none runs), unless
/// `--keeper-timeout 0`.
fn keeper_client(args: &ServeArgs, exe: Option<&Path>) -> Option<Arc<crate::keeper::Client>> {
    if args.keeper_timeout <= 0.0 {
        return None;
    }
    let exe = exe?;
    match crate::keeper::Client::connect_or_start(&args.runtime_dir, exe, args.keeper_timeout) {
        Ok(client) => Some(Arc::new(client)),
        Err(e) => {
            warn!("no keeper ({e}): a crash of this daemon will end its connection");
            None
        }
    }
}

/// What a predecessor kept of the containers' views (`<runtime-dir>/carried/`), handed to the
/// containers and the load sampler as they are first seen.
fn carry_over(service: &Arc<Service>, runtime_dir: &Path) -> Option<Arc<Carried>> {
    let dir = runtime_dir.join("carried");
    match Carried::open(&dir, crate::procfs::boottime_secs()) {
        Ok(carried) => {
            let carried = Arc::new(carried);
            service.containers.carry_from(carried.clone());
            service.env.sampler.carry_from(carried.clone());
            Some(carried)
        }
        Err(e) => {
            warn!(
                "{}: {e}; the containers' baselines and load averages start afresh at the next restart",
                dir.display()
            );
            None
        }
    }
}

/// Writes what the containers' views carry over a restart; drops, once, what was taken over
/// for containers not seen within [`UNCLAIMED_FOR`] of the start.
fn keep_carried(service: &Service, carried: &Carried, started: std::time::Instant) {
    static DROPPED: std::sync::Once = std::sync::Once::new();
    carried.keep_baselines(&service.containers.all());
    carried.keep_loads(service.env.sampler.loads(), crate::procfs::boottime_secs());
    if started.elapsed().as_secs_f64() > UNCLAIMED_FOR {
        DROPPED.call_once(|| carried.drop_unclaimed());
    }
}

/// Whether the mount at `mountpoint` (the topmost) is nsview's of device `dev`.
fn mounted_at(mountpoint: &Path, dev: (u32, u32)) -> bool {
    mounts_at(mountpoint).is_ok_and(|m| {
        m.last()
            .is_some_and(|top| is_nsview_mount(top) && top.dev == dev)
    })
}

/// `path` made absolute, its parent canonical (the mountpoint itself may be a dead mount,
/// which a stat would not get through, or wait on).
fn canonical(path: &Path) -> Result<PathBuf, ServeError> {
    let io_err = |source| ServeError::Mountpoint {
        path: path.to_path_buf(),
        source,
    };
    let abs = std::path::absolute(path).map_err(io_err)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => {
            fs::create_dir_all(parent).map_err(io_err)?;
            Ok(parent.canonicalize().map_err(io_err)?.join(name))
        }
        _ => Ok(abs),
    }
}

fn check_root() -> Result<(), ServeError> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(ServeError::NotRoot(euid.as_raw()))
    }
}

fn check_dev_fuse() -> Result<(), ServeError> {
    match fs::metadata("/dev/fuse") {
        Ok(m) if m.file_type().is_char_device() => Ok(()),
        Ok(_) => Err(ServeError::NoFuse("not a character device".into())),
        Err(e) => Err(ServeError::NoFuse(e.to_string())),
    }
}

/// Records `dev`, the device of a dead predecessor's mount, in the runtime directory: reattach
/// replaces binds of it.
fn remember_device(runtime_dir: &Path, dev: crate::oci::devices::Dev) {
    if let Err(e) = crate::oci::devices::record(runtime_dir, dev) {
        warn!("cannot record mount device {}:{}: {e}", dev.0, dev.1);
    }
}

/// Makes `path` ready to mount on and returns its canonical form and the devices of the stale
/// mounts on it: lazily unmounts stale FUSE mounts left by a crashed daemon (ENOTCONN), refuses
/// a mountpoint a live nsview serves, creates a missing directory, refuses a non-directory.
fn prepare_mountpoint(path: &Path) -> Result<(PathBuf, Vec<crate::oci::devices::Dev>), ServeError> {
    let io_err = |source| ServeError::Mountpoint {
        path: path.to_path_buf(),
        source,
    };
    let abs = canonical(path)?;
    // A crashed run can leave several stacked mounts; recover each, but never loop forever.
    let mut stale = Vec::new();
    for _ in 0..16 {
        let top = mounts_at(&abs).map_err(io_err)?.pop();
        let Some(top) = top else { break };
        // statfs always reaches the daemon, where stat may be answered from cached attributes.
        match rustix::fs::statfs(&abs) {
            Err(rustix::io::Errno::NOTCONN) => {
                warn!(
                    "stale {} mount at {} (ENOTCONN, its daemon died): unmounting it lazily",
                    top.fstype,
                    abs.display()
                );
                umount2(&abs, MntFlags::MNT_DETACH).map_err(|e| io_err(e.into()))?;
                if is_nsview_mount(&top) {
                    stale.push(top.dev);
                }
            }
            Ok(_) if is_nsview_mount(&top) => return Err(ServeError::AlreadyServed(abs)),
            _ => break,
        }
    }
    match fs::metadata(&abs) {
        Ok(m) if m.is_dir() => Ok((abs, stale)),
        Ok(_) => Err(ServeError::NotADirectory(abs)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&abs).map_err(io_err)?;
            info!("created mountpoint {}", abs.display());
            Ok((abs, stale))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Creates the runtime directory and takes its lock (held for the daemon's life through the
/// returned file), then records the daemon's pid.
fn lock_runtime_dir(dir: &Path) -> Result<File, ServeError> {
    let io_err = |source| ServeError::RuntimeDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_err)?;
    // Root's alone: what it holds (registrations, containers' emulated values, the inode
    // journal, the carried views) is no other user's to read.
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io_err)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("nsview.lock"))
        .map_err(io_err)?;
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(ServeError::RuntimeDirBusy(dir.to_path_buf()));
        }
        Err(e) => return Err(io_err(e.into())),
    }
    let mut pidfile = File::create(dir.join("nsview.pid")).map_err(io_err)?;
    writeln!(pidfile, "{}", std::process::id()).map_err(io_err)?;
    Ok(lock)
}
