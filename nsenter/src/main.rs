//! `nsview-nsenter`: the agent. Started by the daemon with the caller's namespaces as
//! inherited descriptors (`--ns KIND=FD`) and a socket as stdin/stdout; joins them, hides the
//! host behind a private procfs, and serves requests (see the library's modules). Logs go
//! to stderr; stdout carries protocol replies only.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use nsview_nsenter::args;
use nsview_nsenter::join::{self, JoinError};
use nsview_nsenter::ops::{CredsError, Server};

/// What `setup` leaves the agent with: its root, its network namespace's cookie, and the
/// pidfds whose processes' end ends it: the daemon's and, when it serves from outside the
/// pid namespace, that namespace's init.
type Setup = (OwnedFd, Option<u64>, Vec<OwnedFd>);

/// Why the agent could not set itself up; it exits with status 1 and says why on stderr.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    /// Joining the namespaces or making the private root.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// Dropping the daemon's supplementary groups.
    #[error("setgroups")]
    Setgroups(#[source] nix::errno::Errno),
    /// Becoming root of the joined user namespace.
    #[error(transparent)]
    Creds(#[from] CredsError),
    /// Opening the private root requests resolve beneath.
    #[error("open /")]
    OpenRoot(#[source] std::io::Error),
}

fn setup(args: &args::Args) -> Result<Setup, SetupError> {
    // First of all, drop every descriptor but the standard streams and the namespaces: the
    // daemon's (its FUSE device among them) must not live on in here.
    join::close_fds_from(3 + args.ns.len() as u32);
    let daemon = join::parent_pidfd()?;
    // No supplementary groups of the daemon's: a caller's group checks are its own (the
    // kernel counts group 0 for files of root's group), and a user namespace may forbid
    // setgroups later.
    nix::unistd::setgroups(&[]).map_err(SetupError::Setgroups)?;
    // Non-dumpable: nobody in the joined namespaces may ptrace it or open its /proc files.
    join::set_undumpable()?;
    join::join(&args.ns, &join::NsKind::BEFORE_USER)?;
    // The agent stays in the daemon's pid namespace, out of the container's sight; a child
    // in the joined one makes its procfs, and another runs each request whose file depends
    // on the reader's pid namespace (see `ops`). Without the new mount API, the agent forks
    // into the namespace and serves from there.
    let (procfs, init) = match join::procfs_of_pid_namespace() {
        Ok((procfs, init)) => (Some(procfs), Some(init)),
        Err(e) => {
            eprintln!(
                "nsview-nsenter: {}; serving from inside the pid namespace",
                nsview_proto::chain(&e)
            );
            join::fork_into_pid_namespace()?;
            join::set_undumpable()?;
            (None, None)
        }
    };
    join::private_proc(procfs)?;
    join::join(&args.ns, &[join::NsKind::User])?;
    nsview_nsenter::ops::become_namespace_root()?;
    // Joining a user namespace makes a process dumpable again.
    join::set_undumpable()?;
    // Everything but the standard streams and the pidfds.
    let watched: Vec<OwnedFd> = std::iter::once(daemon).chain(init).collect();
    let keep: Vec<_> = watched
        .iter()
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .collect();
    join::close_fds_except(3, &keep);
    // Requests resolve beneath this root, limited to its proc/sys and sys/devices/virtual/net.
    let root = std::fs::File::open("/").map_err(SetupError::OpenRoot)?;
    Ok((root.into(), join::netns_cookie(), watched))
}

fn main() -> ExitCode {
    // The daemon blocks the signals it waits for, and a mask is inherited through exec.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let args = match args::parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("nsview-nsenter: {e}");
            eprintln!(
                "usage: nsview-nsenter [--ns KIND=FD]... [--allow-faults]   (started by nsview serve)"
            );
            return ExitCode::from(2);
        }
    };
    let (root, cookie, init) = match setup(&args) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("nsview-nsenter: {}", nsview_proto::chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let gone: std::rc::Rc<[OwnedFd]> = init.into();
    let agent = Server::new(root, cookie, args.allow_faults).watching(gone.clone());
    let input = nsview_nsenter::ops::UntilGone {
        input: std::io::stdin().lock(),
        fd: 0,
        gone,
    };
    let code = agent.serve(input, std::io::stdout().lock());
    ExitCode::from(code as u8)
}
