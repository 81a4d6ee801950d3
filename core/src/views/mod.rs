//! Views: what a node shows to one caller. Each view is a pure renderer plus the few reads
//! that feed it; offsets, handles and fuser types never reach this module.

pub mod cpus;
pub mod proc;
pub mod sys;
pub mod sysctl;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use log::warn;

use std::path::PathBuf;

use crate::cgroup::{CgroupReader, CpuSet, OpenFiles};
use crate::container::Container;
use crate::error::Result;
use crate::loadavg::Sampler;
use crate::procfs::ProcRoot;

pub use crate::vfs::ViewId;

/// What a write did: the bytes taken, and the file position after it as the kernel would
/// leave it (the next write on the same descriptor starts there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes taken.
    pub n: usize,
    /// The position after.
    pub pos: u64,
}

impl Written {
    /// All `len` bytes taken at `offset`, the position moving on by them.
    pub fn all(offset: u64, len: usize) -> Written {
        Written::counted(offset, len, true)
    }

    /// `n` bytes taken at `offset`; the position moves on by them when `moved`, else stays
    /// (the kernel's handlers of numbers leave it).
    pub fn counted(offset: u64, n: usize, moved: bool) -> Written {
        let pos = if moved { offset + n as u64 } else { offset };
        Written { n, pos }
    }
}

/// A write as the FUSE layer hands it on.
#[derive(Debug, Clone, Copy)]
pub struct WriteOp<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// The native file position they go to.
    pub at: u64,
    /// The namespaces of the task that opened the file, where they decide whose knob it is
    /// (`proc/sys`).
    pub opened_in: Option<crate::ns::NsKey>,
}

/// Who made a request, as the kernel told: the task and its fsuid and fsgid (in the
/// daemon's user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    /// The calling task's id in the daemon's pid namespace (0 when the kernel has none).
    pub pid: u32,
    /// Its fsuid.
    pub uid: u32,
    /// Its fsgid.
    pub gid: u32,
    /// Its namespaces, where the request needs an agent: read once, when the request came
    /// (for a read through a descriptor, when it was opened: as natively, a `proc/sys` file
    /// answers for the namespaces it was opened in).
    pub ns: Option<crate::ns::NsKey>,
}

impl ViewId {
    /// Whether writes to the view go through to the host (from the caller's root only).
    pub fn is_host_global(self) -> bool {
        self == ViewId::ConntrackHashsize
    }

    /// Whether rendering the view asks the reader's agent.
    pub fn needs_agent(self) -> bool {
        #[cfg(feature = "test-nodes")]
        if let ViewId::TestAgentFault(_) = self {
            return true;
        }
        false
    }
}

/// Whose view is rendered.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A caller in the daemon's own pid namespace, or one that cannot be identified.
    Host,
    /// A caller in a container (a child pid namespace).
    Container(Arc<Container>),
}

/// Counters the views keep; read by the daemon for its logs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Renders that fell back to the host file because the container's facts were unreadable.
    pub host_fallbacks: AtomicU64,
    /// When the last fallback was logged (ms since the Unix epoch) and how many were not.
    fallback_logged: parking_lot::Mutex<(u64, u64)>,
}

/// At most one log line about host fallbacks per this many milliseconds.
const FALLBACK_LOG_MS: u64 = 10_000;

impl Stats {
    /// Counts a render that served the host's values to a container, and says so in the log:
    /// at warn, at most once per 10 s, with how many more there were meanwhile.
    pub fn host_fallback(&self, why: std::fmt::Arguments<'_>) {
        self.host_fallbacks.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut logged = self.fallback_logged.lock();
        if now.saturating_sub(logged.0) < FALLBACK_LOG_MS {
            logged.1 += 1;
            return;
        }
        let unlogged = std::mem::replace(&mut *logged, (now, 0)).1;
        drop(logged);
        if unlogged > 0 {
            warn!("host values served: {why} ({unlogged} more since the last such line)");
        } else {
            warn!("host values served: {why}");
        }
    }
}

/// What every view may read: the host's procfs, the cgroup reader, host facts.
#[derive(Debug)]
pub struct Env {
    /// The host's procfs.
    pub proc: ProcRoot,
    /// The cgroup hierarchies.
    pub cgroups: CgroupReader,
    /// The host's sysfs (`/sys`; beside the procfs root in fixture trees).
    pub sys: PathBuf,
    /// The CPUs online on the host.
    pub host_online: CpuSet,
    /// How a CPU quota counts towards the CPUs a container sees.
    pub cpu_view: cpus::CpuView,
    /// Per-container load averages (its thread is started by `serve`).
    pub sampler: Arc<Sampler>,
    /// The host's procfs files, kept open (`pread` at 0 regenerates them).
    host_files: OpenFiles,
    /// The agents that serve `proc/sys`.
    pub agents: Arc<dyn crate::agents::Agents>,
    /// Containers registered by runtimes, with their options.
    pub registered: Arc<crate::registry::Registrations>,
    /// The host's namespaces, which the write rules of `proc/sys` judge callers by.
    pub host_ns: sysctl::standing::HostNs,
    /// The running kernel's (major, minor) version: which sysctls it confines to a namespace.
    pub kernel_release: (u32, u32),
    /// Container-local values of emulated sysctls.
    pub sysctl_stores: Arc<sysctl::stores::Stores>,
    /// Clock ticks per second (start times are in ticks).
    pub ticks_per_sec: u64,
    /// The clock a container without a time namespace is up by.
    pub clock: proc::uptime::Clock,
    /// Counters.
    pub stats: Stats,
}

/// What the daemon builds before its views can serve: the agent pool, the registrations, the
/// host's namespaces and the container-local sysctl values.
#[derive(Debug)]
pub struct Parts {
    /// The agents that serve `proc/sys`.
    pub agents: Arc<dyn crate::agents::Agents>,
    /// Containers registered by runtimes.
    pub registered: Arc<crate::registry::Registrations>,
    /// The host's namespaces.
    pub host_ns: sysctl::standing::HostNs,
    /// Container-local values of emulated sysctls.
    pub sysctl_stores: Arc<sysctl::stores::Stores>,
}

impl Env {
    /// An environment reading from `proc` (with the sysfs beside it) and `cgroups`, built
    /// whole from the daemon's `parts`.
    pub fn new(
        proc: ProcRoot,
        cgroups: CgroupReader,
        cpu_view: cpus::CpuView,
        clock: proc::uptime::Clock,
        parts: Parts,
    ) -> Self {
        let sys = proc
            .path()
            .parent()
            .map_or_else(|| PathBuf::from("/sys"), |p| p.join("sys"));
        let host_online = proc::online_cpus(&sys).unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            CpuSet::of(0..n as u32)
        });
        let sampler_proc = proc.clone();
        Env {
            proc,
            cgroups,
            sys,
            host_online,
            cpu_view,
            host_files: OpenFiles::default(),
            agents: parts.agents,
            registered: parts.registered,
            host_ns: parts.host_ns,
            kernel_release: sysctl::namespaces::running_release(),
            sysctl_stores: parts.sysctl_stores,
            sampler: Sampler::new(
                sampler_proc,
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(600),
            ),
            ticks_per_sec: crate::procfs::clock_ticks_per_sec(),
            clock,
            stats: Stats::default(),
        }
    }

    /// Container `c`'s uptime now, in seconds (see `proc::uptime`).
    pub fn uptime_of(&self, c: &crate::container::Container) -> f64 {
        proc::uptime::uptime_secs(self.clock, c, self.ticks_per_sec)
    }
}

impl Env {
    /// The host's procfs file `rel` (`meminfo`, `pressure/cpu`, ...), read through a kept
    /// descriptor: no open and close per request.
    pub fn host(&self, rel: &str) -> Result<String> {
        let path = self.proc.path().join(rel);
        self.host_files.read(&path)?.ok_or_else(|| {
            crate::error::Error::read(&path, std::io::Error::from_raw_os_error(libc::ENOENT))
        })
    }
}

/// The host file behind [`ViewId::ConntrackHashsize`], below the sysfs root.
pub const HASHSIZE: &str = "module/nf_conntrack/parameters/hashsize";

/// Whether `who` may write host-global `view` (see `sysctl::host_global_access`).
pub fn access_write_view(env: &Env, view: ViewId, who: &Requester) -> Result<()> {
    match view {
        ViewId::ConntrackHashsize => sysctl::host_global_access(env, who).map(drop),
        _ => Err(crate::error::Error::Access),
    }
}

/// Writes `op` to host-global `view` for `who`.
pub fn write_view(env: &Env, view: ViewId, who: &Requester, op: WriteOp<'_>) -> Result<Written> {
    match view {
        ViewId::ConntrackHashsize => sysctl::host_global_write(env, who, HASHSIZE, op),
        _ => Err(crate::error::Error::Access),
    }
}

/// Renders `view` for `subject`, read by task `reader`: the whole file.
pub fn render(view: ViewId, env: &Env, subject: &Subject, reader: u32) -> Result<Vec<u8>> {
    use proc::resources as r;
    let fallback = |file: &str, f: &dyn Fn(&Arc<Container>) -> Result<String>| {
        with_host_fallback(env, subject, file, f)
    };
    match view {
        ViewId::Uptime => fallback("uptime", &|c| proc::uptime::read(env, c)),
        ViewId::Meminfo => fallback("meminfo", &|c| r::meminfo(env, c)),
        ViewId::Cpuinfo => fallback("cpuinfo", &|c| r::cpuinfo(env, c)),
        ViewId::Stat => fallback("stat", &|c| r::stat(env, c, reader)),
        ViewId::Loadavg => fallback("loadavg", &|c| r::loadavg(env, c, reader)),
        ViewId::Diskstats => fallback("diskstats", &|c| r::diskstats(env, c)),
        ViewId::Vmstat => fallback("vmstat", &|c| r::vmstat(env, c)),
        ViewId::Interrupts => fallback("interrupts", &|c| r::per_cpu_table(env, c, false)),
        ViewId::Softirqs => fallback("softirqs", &|c| r::per_cpu_table(env, c, true)),
        ViewId::Swaps => fallback("swaps", &|c| r::swaps(env, c)),
        ViewId::Slabinfo => fallback("slabinfo", &|c| r::slabinfo(env, c)),
        ViewId::Pressure(kind) => fallback(&format!("pressure/{}", kind.name()), &|c| {
            r::pressure(env, c, kind)
        }),
        ViewId::ProductUuid => match subject {
            Subject::Container(c) => sys::dmi::read(env, c).map(String::into_bytes),
            Subject::Host => sys::dmi::host(env).map(String::into_bytes),
        },
        ViewId::ConntrackHashsize => sysctl::host_global_read(env, HASHSIZE),
        #[cfg(feature = "test-nodes")]
        ViewId::TestPanic => panic!("test-only view asked to panic"),
        #[cfg(feature = "test-nodes")]
        ViewId::TestPattern => Ok(test_pattern().into_bytes()),
        #[cfg(feature = "test-nodes")]
        ViewId::TestAgentFault(fault) => sysctl::fault(env, reader, fault).map(|()| Vec::new()),
    }
}

/// Renders a container's view; when the container's facts cannot be read (its init died
/// mid-request, its cgroup vanished) the host file is served instead, and counted.
fn with_host_fallback(
    env: &Env,
    subject: &Subject,
    host_file: &str,
    container_view: &dyn Fn(&Arc<Container>) -> Result<String>,
) -> Result<Vec<u8>> {
    if let Subject::Container(c) = subject {
        match container_view(c) {
            Ok(text) => return Ok(text.into_bytes()),
            Err(e) => env.stats.host_fallback(format_args!(
                "{host_file} for container pidns {}, whose facts are unreadable ({e})",
                c.pidns
            )),
        }
    }
    Ok(env.host(host_file)?.into_bytes())
}

/// 20,000 bytes of numbered lines: long enough to span several reads of any size.
#[cfg(feature = "test-nodes")]
fn test_pattern() -> String {
    (0..1000)
        .map(|i| format!("pattern line {i:06}\n"))
        .collect()
}
