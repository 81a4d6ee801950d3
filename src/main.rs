//! The `nsview` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use nsview::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A signal mask is inherited through exec: hooks started by runtimes begin with none
    // blocked. `serve` keeps what it inherited: after an upgrade's exec, its own handled
    // signals, blocked until its waiting thread takes them (it blocks the same set first).
    if !matches!(cli.command, Command::Serve(_)) {
        let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result: Result<(), Box<dyn std::error::Error>> = match &cli.command {
        Command::Serve(args) => nsview::serve::run(args).map_err(Into::into),
        Command::Ctl(args) => nsview::ctl::run(args).map_err(Into::into),
        Command::OciPatch(args) => nsview::oci::patch::run(args).map_err(Into::into),
        Command::OciHook(args) => nsview::oci::hook::run(args).map_err(Into::into),
        Command::LxcHook(args) => nsview::oci::lxc::run(args).map_err(Into::into),
        Command::Reattach(args) => nsview::oci::reattach::run(args).map_err(Into::into),
        Command::Keeper(args) => nsview::keeper::run(args).map_err(Into::into),
        Command::Upgrade(args) => nsview::ctl::upgrade(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nsview: {}", nsview_proto::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
