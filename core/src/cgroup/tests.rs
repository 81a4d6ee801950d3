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

fn v1_memory_tree(root: &Path) {
    write(
        root,
        "memory/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(root, "memory/lim/memory.limit_in_bytes", "268435456\n");
    write(
        root,
        "memory/lim/memory.memsw.limit_in_bytes",
        "536870912\n",
    );
    write(
        root,
        "memory/lim/ctr/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(
        root,
        "memory/lim/ctr/memory.memsw.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(root, "memory/lim/ctr/memory.usage_in_bytes", "104857600\n");
    write(
        root,
        "memory/lim/ctr/memory.memsw.usage_in_bytes",
        "110100480\n",
    );
    write(
        root,
        "memory/lim/ctr/memory.stat",
        "cache 1\nrss 2\nhierarchical_memory_limit 268435456\n\
         hierarchical_memsw_limit 536870912\ntotal_cache 4096\ntotal_rss 8192\ntotal_rss_huge 0\ntotal_shmem 16\n\
         total_mapped_file 32\ntotal_dirty 64\ntotal_writeback 128\ntotal_active_anon 256\n\
         total_inactive_anon 512\ntotal_active_file 1024\ntotal_inactive_file 2048\n\
         total_unevictable 7\n",
    );
    write(root, "memory/lim/ctr/tasks", "10\n11\n");
    write(root, "memory/lim/ctr/sub/tasks", "12\n");
}

#[test]
fn v1_memory_limit_is_the_minimum_up_the_tree_and_stat_uses_totals() {
    let dir = tempfile::tempdir().unwrap();
    v1_memory_tree(dir.path());
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup("4:memory:/lim/ctr\n"));
    assert_eq!(set.memory_limit().unwrap(), Some(256 << 20));
    assert_eq!(set.memory_usage().unwrap(), Some(100 << 20));
    // memsw 512 MiB − memory 256 MiB on the parent; the child sets neither.
    assert_eq!(set.swap_limit().unwrap(), Some(256 << 20));
    assert_eq!(set.swap_usage().unwrap(), Some(5 << 20));
    let stat = set.memory_stat().unwrap().unwrap();
    assert_eq!(
        (stat.file, stat.anon, stat.shmem, stat.file_mapped),
        (4096, 8192, 16, 32)
    );
    assert_eq!(
        (stat.active_file, stat.inactive_file, stat.unevictable),
        (1024, 2048, 7)
    );
    assert_eq!(set.tasks().unwrap(), [10, 11, 12]);
    // The one-read path agrees with the walk up the tree.
    let mem = set.memory(true).unwrap().unwrap();
    assert_eq!(
        (mem.limit, mem.usage, mem.stat),
        (Some(256 << 20), 100 << 20, stat)
    );
    assert_eq!((mem.swap_limit, mem.swap_usage), (Some(256 << 20), 5 << 20));
    let no_swap = set.memory(false).unwrap().unwrap();
    assert_eq!((no_swap.swap_limit, no_swap.swap_usage), (None, 0));
}

#[test]
fn v2_memory_max_swap_and_stat_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "cgroup.controllers", "cpu memory io\n");
    write(root, "a/memory.max", "max\n");
    write(root, "a/memory.swap.max", "0\n");
    write(root, "a/b/memory.max", "1073741824\n");
    write(root, "a/b/memory.swap.max", "max\n");
    write(root, "a/b/memory.current", "4096\n");
    write(root, "a/b/memory.swap.current", "0\n");
    write(
        root,
        "a/b/memory.stat",
        "anon 1\nfile 2\nslab_reclaimable 3\nslab_unreclaimable 4\n",
    );
    write(root, "a/b/cgroup.threads", "7\n");
    write(
        root,
        "a/b/cpu.pressure",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
    write(
        root,
        "a/b/io.stat",
        "8:0 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    );
    let set = CgroupReader::new(root).resolve(&parse_proc_cgroup("0::/a/b\n"));
    assert_eq!(set.memory_limit().unwrap(), Some(1 << 30));
    assert_eq!(set.swap_limit().unwrap(), Some(0));
    assert_eq!(set.memory_usage().unwrap(), Some(4096));
    let stat = set.memory_stat().unwrap().unwrap();
    assert_eq!(
        (
            stat.anon,
            stat.file,
            stat.slab_reclaimable,
            stat.slab_unreclaimable
        ),
        (1, 2, 3, 4)
    );
    assert_eq!(set.tasks().unwrap(), [7]);
    assert!(
        set.pressure(PressureKind::Cpu)
            .unwrap()
            .unwrap()
            .starts_with("some")
    );
    assert_eq!(set.pressure(PressureKind::Io).unwrap(), None);
    assert_eq!(set.io_stats().unwrap()[0].read_bytes, 512);
}

#[test]
fn unlimited_memory_and_missing_files_are_none() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "memory/c/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup("4:memory:/c\n"));
    assert_eq!(set.memory_limit().unwrap(), None);
    assert_eq!(set.memory_usage().unwrap(), None);
    assert_eq!(set.swap_limit().unwrap(), None);
    assert_eq!(set.memory_stat().unwrap(), None);
    assert_eq!(set.pressure(PressureKind::Memory).unwrap(), None);
    assert!(set.io_stats().unwrap().is_empty());
}

#[test]
fn the_real_hosts_cgroups_read() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let set = CgroupReader::new("/sys/fs/cgroup").resolve(&parse_proc_cgroup(&own));
    assert!(set.memory_usage().unwrap().unwrap_or(0) > 0);
    assert!(set.cpu_usage().unwrap().unwrap().total_ns > 0);
}

#[test]
fn v1_cpu_totals_are_the_precise_per_cpu_ones_split_by_the_sampled_ratio() {
    let dir = tempfile::tempdir().unwrap();
    // usage_all's tick-sampled split sums to less than the precise per-CPU totals.
    write(dir.path(), "cpuacct/c/cpuacct.usage_percpu", "3000 1000 \n");
    write(
        dir.path(),
        "cpuacct/c/cpuacct.usage_all",
        "cpu user system\n0 1000 1000\n1 300 600\n",
    );
    write(dir.path(), "cpuacct/c/cpuacct.usage", "4000\n");
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup("2:cpuacct:/c\n"));
    let usage = set.cpu_usage().unwrap().unwrap();
    assert_eq!(usage.total_ns, 4000);
    assert_eq!(usage.total_ns, set.cpu_usage_ns().unwrap().unwrap());
    let per_cpu = usage.per_cpu.unwrap();
    assert_eq!((per_cpu[0].user_ns, per_cpu[0].system_ns), (1500, 1500));
    assert_eq!((per_cpu[1].user_ns, per_cpu[1].system_ns), (333, 667));
    assert_eq!(usage.user_ns + usage.system_ns, 4000);
}

#[test]
fn paths_outside_the_readers_cgroup_namespace_are_no_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "memory/memory.limit_in_bytes", "1048576\n");
    let set = CgroupReader::new(dir.path()).resolve(&parse_proc_cgroup("4:memory:/../../x\n"));
    assert_eq!(set.memory_limit().unwrap(), None);
    assert_eq!(set.memory_usage().unwrap(), None);
}
