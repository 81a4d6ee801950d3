//! Parsing `/proc/<pid>/cgroup`.

/// A task's cgroup paths as the reader's cgroup namespace shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPaths {
    /// v1 hierarchies: the controller list as written (`cpu,cpuacct`) and the path.
    pub v1: Vec<(String, String)>,
    /// The cgroup2 path (the `0::` line), if the task has one.
    pub unified: Option<String>,
}

impl CgroupPaths {
    /// The path to name the cgroups by in a log line: the cgroup2 one, else the first v1.
    pub fn shown(&self) -> Option<&str> {
        self.unified
            .as_deref()
            .or_else(|| self.v1.first().map(|(_, p)| p.as_str()))
    }

    /// Whether every hierarchy with controllers (and the unified one) places the task at its
    /// root; named hierarchies such as `name=systemd` do not count.
    pub fn is_root(&self) -> bool {
        self.v1
            .iter()
            .filter(|(list, _)| !list.starts_with("name="))
            .all(|(_, path)| path == "/")
            && self.unified.as_deref().is_none_or(|p| p == "/")
    }

    /// Whether the task's CPU accounting (v1 `cpuacct`, else the unified hierarchy) is a
    /// hierarchy's root, which accounts for the whole host.
    pub fn accounts_at_root(&self) -> bool {
        match self.v1_hierarchy("cpuacct") {
            Some((_, path)) => path == "/",
            None => self.unified.as_deref() == Some("/"),
        }
    }

    /// The hierarchy holding v1 controller `name`, as (controller list, path).
    pub fn v1_hierarchy(&self, name: &str) -> Option<(&str, &str)> {
        self.v1
            .iter()
            .find(|(list, _)| list.split(',').any(|c| c == name))
            .map(|(list, path)| (list.as_str(), path.as_str()))
    }
}

/// Parses `/proc/<pid>/cgroup` (`hierarchy-id:controller-list:path` lines). Named v1
/// hierarchies (`name=systemd`) are kept like any other. A trailing `/init.scope` is stripped
/// from every path: systemd moves a container's init there, while the container's limits are
/// set on the parent.
pub fn parse_proc_cgroup(text: &str) -> CgroupPaths {
    let mut paths = CgroupPaths::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(list), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = strip_init_scope(path).to_owned();
        if id == "0" && list.is_empty() {
            paths.unified = Some(path);
        } else if !list.is_empty() {
            paths.v1.push((list.to_owned(), path));
        }
    }
    paths
}

fn strip_init_scope(path: &str) -> &str {
    match path.strip_suffix("/init.scope") {
        Some("") => "/",
        Some(parent) => parent,
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_placement_ignores_named_hierarchies() {
        let root = parse_proc_cgroup("3:name=systemd:/user.slice\n2:cpu,cpuacct:/\n0::/\n");
        assert!(root.is_root());
        let limited = parse_proc_cgroup("4:memory:/machine/a\n2:cpu,cpuacct:/\n0::/\n");
        assert!(!limited.is_root());
        assert!(!parse_proc_cgroup("0::/system.slice/x.service\n").is_root());
    }

    #[test]
    fn hybrid_host_lines_give_v1_and_unified_paths() {
        let text = "9:name=systemd:/\n4:memory:/ctr/a\n2:cpu,cpuacct:/ctr/a\n0::/ctr/a\n";
        let p = parse_proc_cgroup(text);
        assert_eq!(p.unified.as_deref(), Some("/ctr/a"));
        assert_eq!(p.v1_hierarchy("cpuacct"), Some(("cpu,cpuacct", "/ctr/a")));
        assert_eq!(p.v1_hierarchy("memory"), Some(("memory", "/ctr/a")));
        assert_eq!(p.v1_hierarchy("cpuset"), None);
    }

    #[test]
    fn trailing_init_scope_is_stripped() {
        let p = parse_proc_cgroup("0::/machine.slice/ctr.scope/init.scope\n");
        assert_eq!(p.unified.as_deref(), Some("/machine.slice/ctr.scope"));
        let p = parse_proc_cgroup("0::/init.scope\n");
        assert_eq!(p.unified.as_deref(), Some("/"));
        let p = parse_proc_cgroup("0::/a/init.scope.d\n");
        assert_eq!(p.unified.as_deref(), Some("/a/init.scope.d"));
    }

    #[test]
    fn paths_with_colons_and_garbage_lines() {
        let p = parse_proc_cgroup("junk\n5:pids:/a:b\n\n");
        assert_eq!(p.v1_hierarchy("pids"), Some(("pids", "/a:b")));
        assert_eq!(p.unified, None);
    }
}
