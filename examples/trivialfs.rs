//! The "trivial FUSE file" that `scripts/bench` measures nsview against: the cheapest file a
//! fuser filesystem can serve, mounted and threaded the way nsview is, so that the difference
//! between the two is the cost of nsview's own work (finding the caller's container, reading
//! its cgroups, rendering) and not the cost of FUSE itself.
//!
//! It serves a fixed tree whose paths match nsview's (`proc/uptime`, plus `uptime` at the
//! root) and whose file is a constant 32-byte line. Run as root:
//!
//! ```text
//! trivialfs MOUNTPOINT [--threads N]
//! ```
//!
//! It stays in the foreground until SIGINT or SIGTERM, then detaches the mount and exits 0.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use clap::Parser;
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request, Session, SessionACL,
};
use log::{error, info, warn};
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{SigSet, Signal};

/// Entry and attribute TTL. The tree never changes; 1 s lets the kernel skip almost every
/// LOOKUP in a tight open/read/close loop while staying a realistic, finite cache time.
const TTL: Duration = Duration::from_secs(1);

/// Uptime and idle time in centiseconds. Chosen so that the rendered line is exactly
/// [`CONTENT_LEN`] bytes: "123456789012.34 234567890123.45\n".
const UPTIME_CS: u64 = 12_345_678_901_234;
const IDLE_CS: u64 = 23_456_789_012_345;
const CONTENT_LEN: usize = 32;

/// Set once a stop signal arrived, so the session watcher does not report the unmount that
/// follows as an unmount from outside.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// One node of the fixed tree.
struct Node {
    ino: u64,
    parent: u64,
    name: &'static str,
    kind: FileType,
}

const ROOT: u64 = 1;

/// The whole tree: `/`, `/proc/`, `/proc/uptime` and `/uptime`.
const NODES: [Node; 4] = [
    Node {
        ino: ROOT,
        parent: ROOT,
        name: "",
        kind: FileType::Directory,
    },
    Node {
        ino: 2,
        parent: ROOT,
        name: "proc",
        kind: FileType::Directory,
    },
    Node {
        ino: 3,
        parent: 2,
        name: "uptime",
        kind: FileType::RegularFile,
    },
    Node {
        ino: 4,
        parent: ROOT,
        name: "uptime",
        kind: FileType::RegularFile,
    },
];

fn node(ino: INodeNo) -> Option<&'static Node> {
    NODES.iter().find(|n| n.ino == ino.0)
}

fn child(parent: INodeNo, name: &OsStr) -> Option<&'static Node> {
    NODES
        .iter()
        .find(|n| n.ino != ROOT && n.parent == parent.0 && OsStr::new(n.name) == name)
}

fn attr(node: &Node) -> FileAttr {
    let (perm, nlink) = match node.kind {
        FileType::Directory => (0o555, 2),
        _ => (0o444, 1),
    };
    FileAttr {
        ino: INodeNo(node.ino),
        // Size 0 like procfs (and nsview): the content comes only through direct-I/O reads.
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: node.kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The filesystem: a fixed tree and one constant line.
struct Trivial {
    content: Vec<u8>,
}

impl Trivial {
    fn new() -> Self {
        let content = format!(
            "{}.{:02} {}.{:02}\n",
            UPTIME_CS / 100,
            UPTIME_CS % 100,
            IDLE_CS / 100,
            IDLE_CS % 100
        )
        .into_bytes();
        assert_eq!(content.len(), CONTENT_LEN, "uptime line length");
        Trivial { content }
    }
}

impl Filesystem for Trivial {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match child(parent, name) {
            Some(n) => reply.entry(&TTL, &attr(n), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match node(ino) {
            Some(n) => reply.attr(&TTL, &attr(n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match node(ino).map(|n| n.kind) {
            // Direct I/O: every read(2) reaches the daemon, as with nsview's views. No FLUSH on
            // close, as nsview asks too, so both pay the same four requests per
            // open+read+read(EOF)+close.
            Some(FileType::RegularFile) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH,
            ),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if node(ino).map(|n| n.kind) != Some(FileType::RegularFile) {
            reply.error(Errno::EISDIR);
            return;
        }
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.content.len());
        let end = start.saturating_add(size as usize).min(self.content.len());
        reply.data(&self.content[start..end]);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = node(ino).filter(|n| n.kind == FileType::Directory) else {
            reply.error(Errno::ENOTDIR);
            return;
        };
        let dots = [(dir.ino, "."), (dir.parent, "..")]
            .into_iter()
            .map(|(ino, name)| (ino, FileType::Directory, name));
        let children = NODES
            .iter()
            .filter(|n| n.ino != ROOT && n.parent == dir.ino)
            .map(|n| (n.ino, n.kind, n.name));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in dots.chain(children).enumerate().skip(skip) {
            // The offset handed back is where the next readdir resumes.
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "trivialfs",
    about = "A constant-content FUSE file, the bench baseline"
)]
struct Args {
    /// Where to mount (must exist).
    mountpoint: PathBuf,

    /// FUSE worker threads; nsview's default is 8.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

/// The same session shape as `nsview serve`: allow_other, one cloned /dev/fuse descriptor
/// per worker thread.
fn fuse_config(threads: u16) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("trivialfs".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.into());
    config.clone_fd = true;
    config
}

/// Waits for the session to end on its own (an unmount from outside, or an error) and ends
/// the process with it.
fn watch(session: BackgroundSession) {
    let result = session.join();
    if STOPPING.load(Ordering::SeqCst) {
        return;
    }
    match result {
        Ok(()) => {
            warn!("unmounted from outside; exiting");
            std::process::exit(0);
        }
        Err(e) => {
            error!("FUSE session ended: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> io::Result<()> {
    // Blocked before any thread exists, so every thread inherits the mask and the signals
    // are only ever taken by the sigwait below.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block()?;

    let session = Session::new(Trivial::new(), &args.mountpoint, &fuse_config(args.threads))?;
    let background = session.spawn()?;
    info!(
        "serving {} ({} threads)",
        args.mountpoint.display(),
        args.threads
    );
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || watch(background))?;

    let signal = stop.wait()?;
    STOPPING.store(true, Ordering::SeqCst);
    info!("{signal}: unmounting {}", args.mountpoint.display());
    // Lazy, so a reader still holding the file open cannot keep the mount alive; returning
    // from main then closes /dev/fuse, which ends the connection without waiting for the
    // worker threads (they may be blocked in read(2) on a detached but busy mount).
    umount2(&args.mountpoint, MntFlags::MNT_DETACH)?;
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trivialfs: {}: {e}", args.mountpoint.display());
            ExitCode::FAILURE
        }
    }
}
