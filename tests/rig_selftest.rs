//! Tests of the test rig itself (no nsview daemon needed): containers really are in their own
//! namespaces and cgroups, and everything the rig makes is gone after drop, also after a
//! panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use crate::rig::{Cgroup, Container, ContainerBuilder, Limits, is_mounted, parse_mountinfo};

const MIB: u64 = 1 << 20;

fn host_link(path: &str) -> String {
    std::fs::read_link(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every cgroup directory of `c`, and its init pid with its start time.
fn footprint(c: &Container) -> (Vec<PathBuf>, u32, u64) {
    let dirs = c
        .cgroup()
        .procs_files()
        .iter()
        .map(|f| f.parent().unwrap().to_path_buf())
        .collect();
    (dirs, c.init_pid(), c.start_time_ticks())
}

/// Whether the process `pid` that started at `ticks` still exists (a reused pid does not count).
fn still_running(pid: u32, ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after
        .split_whitespace()
        .nth(19)
        .and_then(|f| f.parse().ok())
        == Some(ticks)
}

fn assert_gone((dirs, pid, ticks): &(Vec<PathBuf>, u32, u64)) {
    assert!(!still_running(*pid, *ticks), "init {pid} survived");
    for dir in dirs {
        assert!(!dir.exists(), "{} survived", dir.display());
    }
}

#[test]
fn container_has_its_own_pid_namespace_with_sleep_as_init() {
    let c = ContainerBuilder::new().start();
    let out = c.sh("cat /proc/1/comm; readlink /proc/self/ns/pid; ls /proc | grep -c '^[0-9]'");
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "sleep", "{lines:?}");
    assert_ne!(lines[1], host_link("/proc/self/ns/pid"));
    let pids: u32 = lines[2].parse().unwrap();
    assert!(pids < 10, "the container's /proc lists {pids} processes");
}

#[test]
fn container_hostname_changes_leave_the_hosts_alone() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let c = ContainerBuilder::new().start();
    let out = c.sh("hostname nsview-rig-selftest && hostname");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "nsview-rig-selftest");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host
    );
}

#[test]
fn container_commands_run_in_its_cgroup_and_cgroup_namespace() {
    let c = ContainerBuilder::new()
        .limits(Limits {
            memory_bytes: Some(64 * MIB),
            ..Limits::default()
        })
        .start();
    let memory = c.cgroup().path("memory");
    let file = if c.cgroup().is_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limit = std::fs::read_to_string(memory.join(file)).unwrap();
    assert_eq!(limit.trim(), (64 * MIB).to_string());
    assert!(c.cgroup().pids().contains(&c.init_pid()));

    // A command started through the rig: nsenter's child is in the cgroup too.
    let mut sleeper = c.spawn(&["sleep", "30"]);
    let host_pid = wait_for_child_of(sleeper.id());
    let procs = std::fs::read_to_string(memory.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == host_pid.to_string()),
        "{host_pid} not in {procs}"
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // Inside the cgroup namespace, the container's cgroup is the root.
    let out = c.exec(&["cat", "/proc/self/cgroup"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(":memory:") || l.starts_with("0::"))
        .unwrap();
    assert!(line.ends_with(":/"), "{}", out.stdout);
}

fn wait_for_child_of(pid: u32) -> u32 {
    for _ in 0..500 {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nsenter {pid} never forked");
}

#[test]
fn cgroup_limits_read_back_on_the_host() {
    let cg = Cgroup::create(&Limits {
        memory_bytes: Some(32 * MIB),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(200_000),
        cpuset_cpus: Some("0".into()),
        swap_bytes: Some(16 * MIB),
    });
    assert!(
        cg.name()
            .starts_with(&format!("nsview-test-{}-", std::process::id()))
    );
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(cg.path(c).join(f))
            .unwrap()
            .trim()
            .to_owned()
    };
    if cg.is_v2() {
        assert_eq!(read("cpu", "cpu.max"), "50000 200000");
        assert_eq!(read("memory", "memory.max"), (32 * MIB).to_string());
        assert_eq!(read("memory", "memory.swap.max"), (16 * MIB).to_string());
    } else {
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "200000");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (32 * MIB).to_string()
        );
        assert_eq!(
            read("memory", "memory.memsw.limit_in_bytes"),
            (48 * MIB).to_string()
        );
    }
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    assert!(cg.pids().is_empty());
    let dirs: Vec<PathBuf> = cg
        .procs_files()
        .iter()
        .map(|f| f.parent().unwrap().into())
        .collect();
    drop(cg);
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
}

#[test]
fn user_namespace_maps_container_root_to_host_root() {
    let c = ContainerBuilder::new().userns(true).start();
    let out = c.sh("readlink /proc/self/ns/user; cat /proc/self/uid_map; id -u");
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_ne!(lines[0], host_link("/proc/self/ns/user"));
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "1"]
    );
    assert_eq!(lines[2], "0");
}

#[test]
fn binds_are_visible_inside_only() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("uptime");
    std::fs::write(&fake, "12.34 5.67\n").unwrap();
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let c = ContainerBuilder::new().bind(&fake, "/proc/uptime").start();
    let out = c.exec(&["cat", "/proc/uptime"]);
    assert_eq!(out.stdout, "12.34 5.67\n", "{}", out.stderr);
    assert!(!is_mounted(std::path::Path::new("/proc/uptime")));
    assert_eq!(
        parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()).len(),
        parse_mountinfo(&host_before).len()
    );
    // The container's init is pid 1 of a /proc of its own.
    let out = c.exec(&["readlink", "/proc/self"]);
    assert!(
        out.stdout.trim().parse::<u32>().unwrap() < 10,
        "{}",
        out.stdout
    );
}

#[test]
fn a_dropped_container_leaves_no_process_and_no_cgroup() {
    let c = ContainerBuilder::new()
        .limits(Limits {
            cpuset_cpus: Some("0".into()),
            ..Limits::default()
        })
        .start();
    let mut busy = c.spawn(&["sh", "-c", "while :; do :; done"]);
    let footprint = footprint(&c);
    drop(c);
    assert_gone(&footprint);
    // nsenter passes on how its child ended: killed with the pid namespace.
    let status = busy.wait().unwrap();
    assert!(!status.success(), "{status:?}");
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let mut seen = None;
    let mut sleeper = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let c = ContainerBuilder::new()
            .limits(Limits {
                memory_bytes: Some(64 * MIB),
                ..Limits::default()
            })
            .start();
        sleeper = Some(c.spawn(&["sleep", "100"]));
        seen = Some(footprint(&c));
        panic!("deliberate panic with a live container");
    }));
    assert!(result.is_err());
    assert_gone(&seen.expect("the container started"));
    let _ = sleeper.expect("the sleeper started").wait();
}

#[test]
fn a_failing_bind_fails_start_with_unshares_stderr() {
    let result = catch_unwind(|| {
        ContainerBuilder::new()
            .bind("/nonexistent/nsview-rig-selftest", "/proc/uptime")
            .start()
    });
    let err = result.err().expect("start must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("/nonexistent/nsview-rig-selftest"), "{msg}");
}

#[test]
fn mountinfo_octal_escapes_are_decoded() {
    let text = "36 35 98:0 /mnt1 /mnt/a\\040b\\134c rw,noatime master:1 - fuse.nsview nsview rw\n\
                bogus line\n\
                37 36 0:52 / /x rw - proc proc rw\n";
    let mounts = parse_mountinfo(text);
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/a b\\c"));
    assert_eq!(mounts[0].fstype, "fuse.nsview");
    assert_eq!(mounts[0].dev, (98, 0));
    assert_eq!(mounts[0].source, "nsview");
    assert_eq!((mounts[1].mount_id, mounts[1].parent_id), (37, 36));
}
