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
}

/// Options of `nsview serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to mount (created if missing).
    #[arg(default_value = "/var/lib/nsview")]
    pub mountpoint: PathBuf,

    /// Directory for the daemon's lock, pid file and (later) control socket and registry.
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,

    /// Where the cgroup hierarchies are mounted.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,

    /// How a CPU quota counts towards the CPUs a container sees: `quota` (the cpuset cut to
    /// ceil(quota/period) CPUs) or `cpuset` (the cpuset alone).
    #[arg(long, value_name = "VIEW", default_value = "quota")]
    pub cpu_view: crate::views::cpus::CpuView,

    /// FUSE worker threads (each serves one request at a time).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Test only: also serve `test/panic` (a view that panics) and `test/pattern`.
    #[arg(long, hide = true)]
    pub test_nodes: bool,
}
