//! The tasks of a cgroup and its descendants.

use std::path::{Path, PathBuf};

use super::CgroupSet;
use crate::error::Result;

/// Most tasks returned: bounds the work of one read on a container with a huge task count.
pub const MAX_TASKS: usize = 65_536;
/// Deepest descendant cgroup visited below the container's own.
const MAX_DEPTH: usize = 16;
/// Most cgroup directories visited: a container that makes many empty cgroups must not make
/// every walk (the load sampler's, stat's) expensive.
const MAX_DIRS: usize = 4096;

impl CgroupSet {
    /// Host TIDs of every thread in the cgroup and its descendants (v1 `tasks`, v2
    /// `cgroup.threads`), read from one hierarchy the set has; at most `MAX_TASKS`.
    pub fn tasks(&self) -> Result<Vec<u32>> {
        let dir = [
            &self.cpuacct,
            &self.cpu,
            &self.memory,
            &self.cpuset,
            &self.blkio,
        ]
        .into_iter()
        .flatten()
        .next();
        let Some(dir) = dir else {
            return Ok(Vec::new());
        };
        let file = if dir.v2 { "cgroup.threads" } else { "tasks" };
        let mut tids: Vec<u32> = Vec::new();
        let mut stack: Vec<(PathBuf, usize)> = vec![(dir.path(), 0)];
        let mut visited = 0;
        while let Some((cg, depth)) = stack.pop() {
            visited += 1;
            if visited > MAX_DIRS {
                break;
            }
            // The container's own file is kept open; descendants come and go, so they are
            // read plainly.
            let text = if depth == 0 {
                self.files.read(&cg.join(file))?
            } else {
                std::fs::read_to_string(cg.join(file)).ok()
            };
            tids.extend(
                text.iter()
                    .flat_map(|t| t.lines())
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
            if tids.len() >= MAX_TASKS {
                tids.truncate(MAX_TASKS);
                break;
            }
            if depth < MAX_DEPTH {
                stack.extend(subdirs(&cg).into_iter().map(|d| (d, depth + 1)));
            }
        }
        tids.sort_unstable();
        tids.dedup();
        Ok(tids)
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}
