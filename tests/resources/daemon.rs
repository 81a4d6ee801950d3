//! The daemon's own side: refused writes and reads past the end, the descriptors it keeps
//! into containers' cgroups (closed when a container ends, fewer when it is short of them),
//! and its memory under a read loop.

use std::time::{Duration, Instant};

use crate::rig::{Container, Daemon};

use super::{MIB, container, limited, meminfo_bytes, run};

/// How many of `daemon`'s descriptors lead into cgroup `name` (or a cgroup below it).
fn descriptors_into(daemon: &Daemon, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().contains(&format!("/{name}")))
        .count()
}

#[test]
fn an_ended_containers_cgroup_descriptors_are_closed() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let name = c.cgroup().name().to_owned();
    run(
        &c,
        "cat /proc/meminfo /proc/stat /proc/cpuinfo /proc/loadavg >/dev/null",
    );
    let held = descriptors_into(&daemon, &name);
    assert!(
        held > 0,
        "the daemon reads the container's cgroup through descriptors"
    );
    drop(c);
    // Within a round of the daemon's 5-second housekeeping (a descriptor held into a removed
    // cgroup keeps it in the kernel as a dying cgroup).
    let started = Instant::now();
    while descriptors_into(&daemon, &name) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{} of {held} descriptors into {name} still open",
            descriptors_into(&daemon, &name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{held} descriptors closed {:?} after the container ended",
        started.elapsed()
    );
}

#[test]
fn a_daemon_short_of_descriptors_keeps_fewer_cgroup_files_open_and_reads_on() {
    let daemon = Daemon::start();
    // An open-file limit of 200: at most 100 cgroup files are kept open (half the limit),
    // where 16 containers reading five files each would keep about 14 apiece.
    let limited_fds = std::process::Command::new("prlimit")
        .args(["--pid", &daemon.pid().to_string(), "--nofile=200:200"])
        .status()
        .unwrap();
    assert!(limited_fds.success());
    let containers: Vec<Container> = (0..16).map(|_| container(&daemon, limited())).collect();
    for c in &containers {
        let text = run(
            c,
            "cat /proc/stat /proc/cpuinfo /proc/loadavg /proc/uptime >/dev/null && cat /proc/meminfo",
        );
        assert_eq!(meminfo_bytes(&text, "MemTotal"), 256 * MIB, "{text}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&daemon.ctl(&["--json", "status"])).unwrap();
    let kept = status["cgroup_files_kept"].as_u64().unwrap();
    assert_eq!(
        status["cgroup_files_budget"].as_u64(),
        Some(100),
        "{status}"
    );
    assert!(
        (50..=100).contains(&kept),
        "{kept} cgroup files kept: {status}"
    );
    let open = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .count();
    assert!(open < 200, "{open} descriptors open");
    assert_eq!(status["host_fallbacks"].as_u64(), Some(0), "{status}");
}

#[test]
fn writes_are_refused_and_reads_past_the_end_are_empty() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    for file in ["meminfo", "stat", "cpuinfo", "loadavg", "vmstat"] {
        let out = c.sh(&format!("echo 1 > /proc/{file}"));
        assert!(!out.status.success(), "{file}");
        assert!(
            out.stderr.contains("Permission denied"),
            "{file}: {}",
            out.stderr
        );
    }
    let tail = run(
        &c,
        "dd if=/proc/meminfo bs=1 skip=1000000 2>/dev/null | wc -c",
    );
    assert_eq!(tail, "0");
}

#[test]
fn reading_sys_cpu_online_in_a_loop_leaves_the_daemons_memory_flat() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let script = "for t in $(seq 100); do \
                  (end=$(( $(date +%s) + SECS )); while [ $(date +%s) -lt $end ]; do \
                  cat /sys/devices/system/cpu/online >/dev/null; done) & done; wait";
    // A warm-up until the RSS stops growing, then the long run: the daemon's RSS may grow
    // while it warms up (each FUSE worker's stack and allocator arena fills as the workers
    // take turns; on a slow machine that takes longer), not with the number of requests.
    let mut warm = rss();
    for _ in 0..8 {
        run(&c, &script.replace("SECS", "4"));
        let now = rss();
        let settled = now <= warm + 256;
        warm = now;
        if settled {
            break;
        }
    }
    run(&c, &script.replace("SECS", "30"));
    let after = rss();
    assert!(
        after <= warm + 2048,
        "RSS grew from {warm} kB to {after} kB over 30 s of reads"
    );
}
