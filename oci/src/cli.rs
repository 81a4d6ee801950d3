//! The command lines of the runtime integration: `nsview oci-hook`, `lxc-hook`, `oci-patch`
//! and `reattach` (the `nsview` binary's clap parser takes these as its subcommands' options).

use std::path::PathBuf;

use clap::Args;

/// Options of `nsview reattach`.
#[derive(Debug, Args)]
pub struct ReattachArgs {
    /// The daemon's mountpoint.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nsview")]
    pub mountpoint: PathBuf,

    /// The daemon's runtime directory.
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,
}

/// When the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookStage {
    /// createRuntime (or prestart, for older runtimes: the same step): register and bind
    /// the files into the container.
    #[value(alias = "prestart")]
    CreateRuntime,
    /// poststop: unregister.
    Poststop,
}

/// Options of `nsview oci-hook`.
#[derive(Debug, Args)]
pub struct OciHookArgs {
    /// Which hook this is.
    #[arg(long, value_enum)]
    pub stage: HookStage,

    /// Where the daemon is, and whether it may be missing.
    #[command(flatten)]
    pub daemon: HookDaemon,
}

/// The options both hooks take: where the daemon is, and whether it may be missing.
#[derive(Debug, Args)]
pub struct HookDaemon {
    /// The daemon's mountpoint.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nsview")]
    pub mountpoint: PathBuf,

    /// The daemon's runtime directory.
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,

    /// When the daemon is not running, log and let the container start without nsview.
    #[arg(long)]
    pub optional: bool,
}

/// Options of `nsview lxc-hook`.
#[derive(Debug, Args)]
pub struct LxcHookArgs {
    /// Where the daemon is, and whether it may be missing.
    #[command(flatten)]
    pub daemon: HookDaemon,

    /// What LXC appends: the container's name, the section and the hook type (the hook
    /// reads them from LXC's environment).
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub lxc_args: Vec<String>,
}

/// Options of `nsview oci-patch`.
#[derive(Debug, Args)]
pub struct OciPatchArgs {
    /// The bundle's config.json, patched in place.
    pub config: PathBuf,

    /// The daemon's mountpoint.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nsview")]
    pub mountpoint: PathBuf,

    /// The daemon's runtime directory.
    #[arg(long, value_name = "DIR", default_value = "/run/nsview")]
    pub runtime_dir: PathBuf,

    /// The hook binary (default: this nsview).
    #[arg(long, value_name = "PATH")]
    pub hook: Option<PathBuf>,

    /// Keep /proc/sys in linux.readonlyPaths.
    #[arg(long)]
    pub keep_readonly: bool,

    /// Give the container a time namespace whose boot clock starts now (runc 1.2+), so
    /// that uptime, ps's elapsed times and btime inside agree.
    #[arg(long)]
    pub time_namespace: bool,

    /// The hooks get `--optional`: the container starts without nsview when its daemon (or
    /// mount) is not there (for a base spec every container uses, nsview's own pod included).
    #[arg(long)]
    pub optional: bool,
}
