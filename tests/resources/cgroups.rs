//! Which cgroup's limits a reader sees: the tightest up the hierarchy, a host process's
//! own, and a container's cgroup moved or removed under it.

use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::{Container, ContainerBuilder, Daemon, Limits};

use super::{BINDS, MIB, container, limited, meminfo_bytes, run};

#[test]
fn a_container_whose_cgroup_vanishes_gets_an_answer_not_a_hang() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    run(&c, "cat /proc/meminfo /proc/stat");
    // A reader that holds meminfo open across the removal of the container's cgroups (its
    // tasks are moved to the parent cgroups and its own removed, as a runtime tearing it
    // down would), then reads it and opens more.
    let mut reader = c.spawn(&[
        "/bin/sh",
        "-c",
        "exec 3</proc/meminfo; sleep 2; cat <&3 /proc/stat /proc/cpuinfo /proc/loadavg \
         /sys/devices/system/cpu/online >/dev/null; echo rc=$?",
    ]);
    c.cgroup().evacuate_and_remove();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = reader.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "reader hangs");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(reader.stdout.as_mut().unwrap(), &mut out).unwrap();
    // The host view (rc=0) or EIO (rc=1), never a hang; and the daemon serves on.
    assert!(out.trim() == "rc=0" || out.trim() == "rc=1", "{out:?}");
    let host = std::fs::read_to_string(daemon.path("proc/uptime")).unwrap();
    assert!(!host.is_empty());
}

#[test]
fn a_container_moved_out_of_a_removed_cgroup_sees_the_limits_of_the_one_it_is_in() {
    let daemon = Daemon::start();
    let outer = Limits {
        memory_bytes: Some(192 * MIB),
        ..Limits::default()
    };
    let inner = Limits {
        memory_bytes: Some(128 * MIB),
        ..Limits::default()
    };
    let mut c = ContainerBuilder::new()
        .limits(inner)
        .inside(outer)
        .bind_from(&daemon, BINDS)
        .start();
    let memtotal = |c: &Container| meminfo_bytes(&run(c, "cat /proc/meminfo"), "MemTotal");
    assert_eq!(memtotal(&c), 128 * MIB);
    // The runtime moves it up and removes its cgroup: the next read follows it.
    c.cgroup_mut().evacuate_inner();
    assert_eq!(memtotal(&c), 192 * MIB, "{}", daemon.log());
    assert!(daemon.log().contains("is gone; now"), "{}", daemon.log());
}

#[test]
fn a_host_process_in_a_limited_cgroup_sees_its_limit() {
    let daemon = Daemon::start();
    let cgroup = rig::Cgroup::create(&Limits {
        memory_bytes: Some(128 * MIB),
        ..Limits::default()
    });
    let joins: Vec<String> = cgroup
        .procs_files()
        .iter()
        .map(|f| format!("echo $$ > {}", f.display()))
        .collect();
    let script = format!(
        "{}; cat {}",
        joins.join("; "),
        daemon.path("proc/meminfo").display()
    );
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(meminfo_bytes(&text, "MemTotal"), 128 * MIB);
}

/// A container in a cgroup inside a limited one (a pod's, a slice's) sees the tighter limit
/// up its hierarchy: the outer memory limit and CPU quota, the outer cpuset.
#[test]
fn a_container_in_a_limited_parent_cgroup_sees_the_parents_limits() {
    let daemon = Daemon::start();
    let outer = Limits {
        memory_bytes: Some(192 * MIB),
        cpu_quota_us: Some(100_000),
        cpu_period_us: Some(100_000),
        cpuset_cpus: Some("0".into()),
        swap_bytes: None,
    };
    let inner = Limits {
        memory_bytes: Some(512 * MIB),
        ..Limits::default()
    };
    let c = ContainerBuilder::new()
        .limits(inner)
        .inside(outer)
        .bind_from(&daemon, BINDS)
        .start();
    let meminfo = run(&c, "cat /proc/meminfo");
    assert_eq!(meminfo_bytes(&meminfo, "MemTotal"), 192 * MIB, "{meminfo}");
    assert_eq!(run(&c, "nproc"), "1");
    assert_eq!(run(&c, "cat /sys/devices/system/cpu/online"), "0");
}
