//! Where a request runs: on the FUSE worker that read it, or, when it needs an agent that this
//! worker may not wait on, on that agent's worker (see `crate::agent`).

use super::{Core, Fs, Source, nodes};
use crate::views::Requester;

impl Fs {
    /// Runs `job` for `who`. One that needs an agent learns `who`'s namespaces here, once
    /// for the whole request, and runs here if this worker may wait on that agent; else it
    /// is queued on the agent's worker, which replies for it (so a slow or stuck agent
    /// holds up one FUSE worker at most, never the daemon; see `agent`).
    pub(super) fn dispatch(
        &self,
        agent: bool,
        who: Requester,
        job: impl FnOnce(&Core, Requester) + Send + 'static,
    ) {
        if !agent {
            return job(&self.core, who);
        }
        let pool = &self.core.agents;
        let ns = who.ns.or_else(|| pool.key_of(who.pid).ok());
        let who = Requester { ns, ..who };
        // Namespaces unreadable (the task has gone): the request fails as it would anyway.
        let Some(key) = ns else {
            return job(&self.core, who);
        };
        match pool.permit(key) {
            Some(_waiting) => job(&self.core, who),
            None => {
                let core = self.core.clone();
                pool.defer(key, Box::new(move || job(&core, who)));
            }
        }
    }

    /// Whether reads and writes through handle `fh` of inode `ino` need an agent (for a
    /// handle a predecessor made, whether its node does: see `Core::handle_for`).
    pub(super) fn handle_bound(&self, fh: u64, ino: u64) -> bool {
        match self.core.handles.get(fh) {
            Some(handle) => match &handle.source {
                Source::Subtree(id, _) => nodes::agent_subtree(*id),
                Source::View(view) => view.needs_agent(),
            },
            None if self.core.handles.is_inherited(fh) => self
                .core
                .target(ino)
                .is_ok_and(|target| nodes::needs_agent(&target)),
            None => false,
        }
    }
}
