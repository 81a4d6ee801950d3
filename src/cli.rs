//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// nsview: a container-aware /proc and /sys filesystem.
#[derive(Debug, Parser)]
#[command(name = "nsview", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the filesystem and serve it in the foreground until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Talk to a running daemon: list, status, register, unregister.
    Ctl(CtlArgs),
    /// Add nsview's hooks to an OCI runtime config.json (idempotently).
    OciPatch(OciPatchArgs),
    /// The OCI runtime hook (createRuntime/prestart and poststop); reads the state on stdin.
    OciHook(OciHookArgs),
    /// LXC's mount and post-stop hook (lxc.hook.mount, lxc.hook.post-stop).
    LxcHook(LxcHookArgs),
    /// Replace the binds a dead daemon left in registered containers with live ones (the
    /// daemon does this itself at start).
    Reattach(ReattachArgs),
    /// Hold the daemon's FUSE connection across its crashes and upgrades (`serve` starts one
    /// itself when none runs).
    Keeper(crate::keeper::KeeperArgs),
    /// Replace the running daemon by a new binary without unmounting: held descriptors and
    /// requests in flight carry over.
    Upgrade(UpgradeArgs),
}

/// Options of `nsview upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The daemon's runtime directory (where its control socket is).
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,

    /// The binary to run (default: the path the daemon was started from, where a package
    /// upgrade puts the new one).
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,

    /// Seconds to wait for the new daemon to answer.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub wait: f64,
}

pub use nsview_oci::cli::{
    HookDaemon, HookStage, LxcHookArgs, OciHookArgs, OciPatchArgs, ReattachArgs,
};

/// Options of `nsview ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's runtime directory (where its control socket is).
    #[arg(long, value_name = "DIR", default_value = "/run/nsview", global = true)]
    pub runtime_dir: PathBuf,

    /// Print the answer as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The requests of `nsview ctl`.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The registered containers.
    List,
    /// The daemon's status: version, uptime, containers, agents, requests, errors.
    Status,
    /// Register a container (idempotent).
    Register {
        /// The runtime's id for it.
        #[arg(long)]
        id: String,
        /// Host pid of its init.
        #[arg(long)]
        pid: u32,
        /// Its CPU view (overrides the daemon's --cpu-view).
        #[arg(long, value_name = "VIEW")]
        cpu_view: Option<crate::views::cpus::CpuView>,
        /// Whether its writes may raise host values where the emulation table allows
        /// (`nf_conntrack_max` max-wins, `nf_conntrack_tcp_be_liberal`, conntrack `hashsize`).
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        host_writes: bool,
    },
    /// Forget a registered container.
    Unregister {
        /// The runtime's id for it.
        #[arg(long)]
        id: String,
    },
}

/// Options of `nsview serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to mount (created if missing).
    #[arg(default_value = "/var/lib/nsview")]
    pub mountpoint: PathBuf,

    /// Directory for the daemon's lock, pid file, control socket and registry.
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,

    /// Where the cgroup hierarchies are mounted.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,

    /// How a CPU quota counts towards the CPUs a container sees: `quota` (the cpuset cut to
    /// ceil(quota/period) CPUs) or `cpuset` (the cpuset alone).
    #[arg(long, value_name = "VIEW", default_value = "quota")]
    pub cpu_view: crate::views::cpus::CpuView,

    /// The uptime of a container without a time namespace of its own: `boot` (the host's boot
    /// clock, which its processes' start times count on, so `ps` agrees) or `age` (its init's
    /// age, LXCFS's uptime, under which `ps -o etime` inside wraps). A time namespace's own
    /// boot clock always wins.
    #[arg(long, value_name = "CLOCK", default_value = "boot")]
    pub uptime: crate::views::proc::uptime::Clock,

    /// How `proc/sys` agents are used: `pooled` (long-lived, one per namespace set) or
    /// `oneshot` (a fresh agent per request, for comparison).
    #[arg(long, value_name = "MODE", default_value = "pooled")]
    pub agent_mode: crate::agent::AgentMode,

    /// Most agents alive at once (the least recently used idle one is ended beyond).
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_agents: u32,

    /// Seconds an agent may stay idle before it is ended.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub agent_idle: f64,

    /// Seconds an agent has to answer a request; beyond, it is killed and the caller gets EIO.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub agent_timeout: f64,

    /// The agent binary (default: `nsview-nsenter` beside this one).
    #[arg(long, value_name = "PATH")]
    pub agent_exe: Option<PathBuf>,

    /// Test only: agents obey fault requests.
    #[cfg(feature = "test-nodes")]
    #[arg(long, hide = true)]
    pub test_faults: bool,

    /// Seconds a keeper holds the FUSE connection while no daemon serves it (after a crash);
    /// 0: no keeper, a crash ends the connection (ENOTCONN) and the next daemon mounts anew.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub keeper_timeout: f64,

    /// FUSE worker threads (each serves one request at a time).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Test only: also serve `test/panic` (a view that panics) and `test/pattern`.
    #[cfg(feature = "test-nodes")]
    #[arg(long, hide = true)]
    pub test_nodes: bool,

    /// Test only: no janitor deletes the stores of ended containers (so a test can show
    /// that a store's identity alone keeps it from a new namespace).
    #[cfg(feature = "test-nodes")]
    #[arg(long, hide = true)]
    pub test_keep_stores: bool,
}
