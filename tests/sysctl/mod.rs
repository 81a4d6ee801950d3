//! `proc/sys` end to end: agents in the callers' own namespaces.
//!
//! Containers here: new pid, mount, uts, ipc, net and cgroup namespaces (a user namespace
//! where stated) in fresh `nsview-test-*` cgroups, with nsview's `proc/sys` bound over their
//! `/proc/sys`. Native behaviour is observed through the host's procfs from a process that
//! joined the container's namespaces (`nsenter` without the mount namespace): `/proc/sys/net`
//! and friends answer for the namespaces of the task that opens them.
//!
//! By topic: [`values`] (reads and writes: each caller's namespaces' values, as natively),
//! [`agents`] (the agents' lifecycle: pool, idle ends, what they hold, how they die) and
//! [`faults`] (agents that misbehave, stall or get stuck: what their callers and the others
//! get).

mod agents;
mod faults;
mod values;

use crate::rig::{Container, ContainerBuilder, Daemon};

fn container(daemon: &Daemon) -> Container {
    ContainerBuilder::new()
        .bind_from(daemon, &["proc/sys"])
        .start()
}

/// The agent processes of `daemon`: its children running `nsview-nsenter`, and theirs.
fn agents(daemon: &Daemon) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![daemon.pid()];
    while let Some(pid) = todo.pop() {
        for child in children(pid) {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == "nsview-nsenter" {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}
