//! The daemon's shared state behind the FUSE layer: the node table, the view environment, the
//! container registry, and the rule that maps a request's TID to whose view it gets.

use log::debug;

use crate::caller::pidns_of;
use crate::cgroup::CgroupReader;
use crate::container::Containers;
use crate::error::Result;
use crate::procfs::ProcRoot;
use crate::vfs::{Spec, Vfs};
use crate::views::cpus::CpuView;
use crate::views::{self, Env, Subject, ViewId};

/// Everything a request needs, shared by all FUSE worker threads.
#[derive(Debug)]
pub struct Service {
    /// The node table.
    pub vfs: Vfs,
    /// What views read.
    pub env: Env,
    /// Containers seen so far.
    pub containers: Containers,
    /// The daemon's own pid namespace: callers there are "the host".
    self_pidns: u64,
}

impl Service {
    /// A service over `specs`, reading procfs at `proc` and cgroups through `cgroups`.
    pub fn new(
        specs: &[Spec],
        proc: ProcRoot,
        cgroups: CgroupReader,
        cpu_view: CpuView,
        clock: crate::views::proc::uptime::Clock,
        parts: crate::views::Parts,
    ) -> Result<Service> {
        let self_pidns = pidns_of(&proc, std::process::id())?;
        Ok(Service {
            vfs: Vfs::build(specs),
            containers: Containers::new(proc.clone(), cgroups.clone()),
            env: Env::new(proc, cgroups, cpu_view, clock, parts),
            self_pidns,
        })
    }

    /// Whose view task `tid` gets. Callers the kernel could not name (pid 0) and callers that
    /// vanished get the host's; a caller in the daemon's pid namespace gets its cgroup's host
    /// scope (the host's view when it sits in the root cgroups); a caller in a child pid
    /// namespace gets its container's, or the host's (counted) when that container's init
    /// cannot be resolved.
    pub fn subject(&self, tid: u32) -> Subject {
        let pidns = match pidns_of(&self.env.proc, tid) {
            Ok(ns) => ns,
            Err(e) => {
                debug!("caller {tid} not identified ({e}); host view");
                return Subject::Host;
            }
        };
        if pidns == self.self_pidns {
            return match self.containers.host_scope(pidns, tid) {
                Ok(Some(scope)) => Subject::Container(scope),
                Ok(None) => Subject::Host,
                Err(e) => {
                    debug!("cgroups of caller {tid} unreadable ({e}); host view");
                    Subject::Host
                }
            };
        }
        match self.containers.get(pidns, tid) {
            Ok(c) => Subject::Container(c),
            Err(e) => {
                self.env.stats.host_fallback(format_args!(
                    "a caller in pidns {pidns}, whose container is not resolved ({e})"
                ));
                Subject::Host
            }
        }
    }

    /// Renders `view` for `subject`, read by task `reader`.
    pub fn render(&self, view: ViewId, subject: &Subject, reader: u32) -> Result<Vec<u8>> {
        views::render(view, &self.env, subject, reader)
    }
}
