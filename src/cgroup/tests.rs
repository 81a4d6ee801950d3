//! The reader on fixture trees laid out like v1, v2 and hybrid hosts.

use std::fs;
use std::path::Path;

use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A v1 host with `cpu,cpuacct` co-mounted (plus per-controller symlinks), a cpuset hierarchy
/// and an empty hybrid `unified` mount; container `ctr` nested under `limited`.
fn v1_tree(root: &Path) {
    write(root, "cpu,cpuacct/limited/cpu.cfs_quota_us", "150000\n");
    write(root, "cpu,cpuacct/limited/cpu.cfs_period_us", "100000\n");
    write(root, "cpu,cpuacct/limited/ctr/cpu.cfs_quota_us", "-1\n");
    write(
        root,
        "cpu,cpuacct/limited/ctr/cpu.cfs_period_us",
        "100000\n",
    );
    write(
        root,
        "cpu,cpuacct/limited/ctr/cpuacct.usage",
        "2500000000\n",
    );
    write(root, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    write(root, "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
    write(root, "cpuset/limited/cpuset.effective_cpus", "0-3\n");
    write(root, "cpuset/limited/ctr/cpuset.effective_cpus", "\n");
    write(root, "unified/cgroup.controllers", "hugetlb\n");
}

const V1_PROC_CGROUP: &str = "3:cpuset:/limited/ctr\n2:cpu,cpuacct:/limited/ctr\n0::/\n";

#[test]
fn v1_quota_is_the_minimum_up_the_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    v1_tree(dir.path());
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup(V1_PROC_CGROUP));
    assert_eq!(set.cpu_quota().unwrap(), Some(1.5));
    assert_eq!(set.cpu_usage_ns().unwrap(), Some(2_500_000_000));
}

#[test]
fn v1_empty_cpuset_falls_back_to_the_nearest_ancestor() {
    let dir = tempfile::tempdir().unwrap();
    v1_tree(dir.path());
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup(V1_PROC_CGROUP));
    assert_eq!(set.cpuset().unwrap().unwrap().to_string(), "0-3");
}

#[test]
fn hybrid_unified_without_the_controller_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    v1_tree(dir.path());
    // The task has no v1 cpuset line: the unified mount lacks cpuset, so there is no cpuset.
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup("0::/limited/ctr\n"));
    assert_eq!(set.cpuset().unwrap(), None);
    assert_eq!(set.cpu_quota().unwrap(), None);
}

fn v2_tree(root: &Path) {
    write(root, "cgroup.controllers", "cpuset cpu io memory pids\n");
    write(root, "k8s/cpu.max", "50000 100000\n");
    write(root, "k8s/pod/cpu.max", "max 100000\n");
    write(
        root,
        "k8s/pod/cpu.stat",
        "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n",
    );
    write(root, "k8s/pod/cpuset.cpus.effective", "1,3\n");
}

#[test]
fn v2_cpu_max_usage_and_cpuset() {
    let dir = tempfile::tempdir().unwrap();
    v2_tree(dir.path());
    let paths = parse_proc_cgroup("0::/k8s/pod/init.scope\n");
    let set = CgroupReader::new(dir.path()).resolve(&paths);
    assert_eq!(set.cpu_quota().unwrap(), Some(0.5));
    assert_eq!(set.cpu_usage_ns().unwrap(), Some(1_234_000));
    assert_eq!(set.cpuset().unwrap().unwrap().cpus(), &[1, 3]);
}

#[test]
fn v2_unlimited_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cgroup.controllers", "cpu\n");
    write(dir.path(), "a/cpu.max", "max 100000\n");
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup("0::/a\n"));
    assert_eq!(set.cpu_quota().unwrap(), None);
    assert_eq!(set.cpu_usage_ns().unwrap(), None);
    assert_eq!(set.cpuset().unwrap(), None);
}

#[test]
fn malformed_files_are_parse_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cpuacct/c/cpuacct.usage", "lots\n");
    write(dir.path(), "cpuset/c/cpuset.effective_cpus", "9-1\n");
    let paths = parse_proc_cgroup("2:cpuacct:/c\n3:cpuset:/c\n");
    let set = CgroupReader::new(dir.path()).resolve(&paths);
    assert!(matches!(set.cpu_usage_ns(), Err(Error::Parse { .. })));
    assert!(matches!(set.cpuset(), Err(Error::Parse { .. })));
}

#[test]
fn cpu_count_is_cpuset_limited_by_ceil_quota() {
    assert_eq!(cpu_count(Some(4), 8, Some(1.5)), 2);
    assert_eq!(cpu_count(Some(2), 8, Some(3.0)), 2);
    assert_eq!(cpu_count(None, 8, None), 8);
    assert_eq!(cpu_count(None, 2, Some(0.01)), 1);
    assert_eq!(cpu_count(Some(0), 0, None), 1);
}
