//! `sys/devices/system/cpu` end to end: the CPU count real programs see inside a container.
//!
//! Containers here: new pid, mount, uts, ipc, net and cgroup namespaces in fresh
//! `nsview-test-*` cgroups, with nsview's `sys/devices/system/cpu` bound over theirs. Limits
//! are stated per test; this machine has 2 CPUs.

use crate::rig::{Container, ContainerBuilder, Daemon, Limits};

fn host_cpus() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

fn container(daemon: &Daemon, limits: Limits) -> Container {
    ContainerBuilder::new()
        .limits(limits)
        .bind_from(
            daemon,
            &[
                "sys/devices/system/cpu",
                "sys/devices/system/node",
                "proc/stat",
                "proc/cpuinfo",
            ],
        )
        .start()
}

fn one_cpu_by_cpuset_and_half_a_cpu_of_quota() -> Limits {
    Limits {
        cpuset_cpus: Some((host_cpus() - 1).to_string()),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(100_000),
        ..Limits::default()
    }
}

/// stdout of `script` inside `c`, which must succeed.
fn run(c: &Container, script: &str) -> String {
    let out = c.sh(script);
    assert!(out.status.success(), "{script}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

#[test]
fn programs_inside_a_one_cpu_container_count_one_cpu() {
    let daemon = Daemon::start();
    let c = container(&daemon, one_cpu_by_cpuset_and_half_a_cpu_of_quota());
    let dir = "/sys/devices/system/cpu";
    // The CPU by its own number, the one the kernel's affinity calls take.
    let last = (host_cpus() - 1).to_string();
    for file in ["online", "possible", "present"] {
        assert_eq!(run(&c, &format!("cat {dir}/{file}")), last, "{file}");
    }
    assert_eq!(run(&c, &format!("cat {dir}/offline")), "");
    assert_eq!(
        run(&c, &format!("ls -d {dir}/cpu[0-9]*")),
        format!("{dir}/cpu{last}")
    );
    run(&c, &format!("taskset -c \"$(cat {dir}/online)\" true"));
    let ids = run(
        &c,
        "grep ^processor /proc/cpuinfo | cut -d: -f2; grep -o '^cpu[0-9][0-9]*' /proc/stat; \
         python3 -c 'import os; print(*os.sched_getaffinity(0))'",
    );
    let ids: Vec<&str> = ids.lines().map(str::trim).collect();
    assert_eq!(ids, [last.clone(), format!("cpu{last}"), last.clone()]);
    assert_eq!(run(&c, "nproc --all"), "1");
    assert_eq!(run(&c, "getconf _NPROCESSORS_CONF"), "1");
    assert_eq!(run(&c, "getconf _NPROCESSORS_ONLN"), "1");
    let lscpu = run(&c, "lscpu");
    let cpus = lscpu.lines().find(|l| l.starts_with("CPU(s):")).unwrap();
    assert_eq!(cpus.split_whitespace().last(), Some("1"), "{lscpu}");
    // NUMA: the node holding the CPU lists it alone (lscpu reads the nodes' cpumap).
    if std::path::Path::new("/sys/devices/system/node/node0").exists() {
        let node = "/sys/devices/system/node/node0";
        let listed = run(&c, &format!("cat {node}/cpulist; ls -d {node}/cpu[0-9]*"));
        assert_eq!(listed, format!("{last}\n{node}/cpu{last}"));
        let numa = lscpu
            .lines()
            .find(|l| l.starts_with("NUMA node0 CPU(s):"))
            .unwrap_or_else(|| panic!("{lscpu}"));
        assert_eq!(
            numa.split_whitespace().last(),
            Some(last.as_str()),
            "{lscpu}"
        );
    }
    assert_eq!(
        run(&c, "python3 -c 'import os; print(os.cpu_count())'"),
        "1"
    );
}

#[test]
fn the_containers_cpu_is_the_host_cpu_its_cpuset_names() {
    let daemon = Daemon::start();
    let last = host_cpus() - 1;
    let c = container(
        &daemon,
        Limits {
            cpuset_cpus: Some(last.to_string()),
            ..Limits::default()
        },
    );
    let inside = run(
        &c,
        &format!(
            "readlink -f /sys/devices/system/cpu/cpu{last}/topology; \
             ls /sys/devices/system/cpu/cpu{last}/topology"
        ),
    );
    let host = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{last}/topology"))
        .unwrap()
        .count();
    assert_eq!(inside.lines().count(), host + 1, "{inside}");
    let ours = run(
        &c,
        &format!("cat /sys/devices/system/cpu/cpu{last}/topology/core_cpus_list"),
    );
    let theirs = std::fs::read_to_string(format!(
        "/sys/devices/system/cpu/cpu{last}/topology/core_cpus_list"
    ))
    .unwrap();
    assert_eq!(ours, theirs.trim());
}

#[test]
fn cpuset_view_ignores_the_quota() {
    let daemon = Daemon::start_with(&["--cpu-view", "cpuset"]);
    let c = container(
        &daemon,
        Limits {
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            ..Limits::default()
        },
    );
    assert_eq!(run(&c, "nproc --all"), host_cpus().to_string());
}

#[test]
fn the_host_sees_its_own_directory_unchanged() {
    let daemon = Daemon::start();
    let ours = std::fs::read_to_string(daemon.path("sys/devices/system/cpu/online")).unwrap();
    let host = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(ours, host);
    let mut names: Vec<String> = std::fs::read_dir(daemon.path("sys/devices/system/cpu"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut host_names: Vec<String> = std::fs::read_dir("/sys/devices/system/cpu")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    host_names.sort();
    assert_eq!(names, host_names);
    for file in ["node/node0/cpulist", "node/node0/cpumap", "node/online"] {
        let host = format!("/sys/devices/system/{file}");
        if let Ok(host) = std::fs::read_to_string(&host) {
            let ours = daemon.path(&format!("sys/devices/system/{file}"));
            assert_eq!(std::fs::read_to_string(ours).unwrap(), host, "{file}");
        }
    }
}

#[test]
fn writes_are_refused_even_for_container_root() {
    let daemon = Daemon::start();
    let c = container(&daemon, Limits::default());
    let out = c.sh("echo 0 > /sys/devices/system/cpu/cpu1/online");
    assert!(!out.status.success());
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    let mode = run(&c, "stat -c %a /sys/devices/system/cpu/cpu1/online");
    assert_eq!(mode, "444");
    // A node's compact (write-only on the host, 0200) would compact the host's memory.
    let compact = "/sys/devices/system/node/node0/compact";
    if std::path::Path::new(compact).exists() {
        let out = c.sh(&format!("echo 1 > {compact}"));
        assert!(
            !out.status.success(),
            "a container compacted the host's memory"
        );
        assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    }
}

#[test]
fn a_cpu_the_container_does_not_have_is_not_there() {
    let daemon = Daemon::start();
    let c = container(&daemon, one_cpu_by_cpuset_and_half_a_cpu_of_quota());
    let out = c.sh("cat /sys/devices/system/cpu/cpu0/online");
    assert!(!out.status.success());
    assert!(out.stderr.contains("No such file"), "{}", out.stderr);
}

#[test]
fn a_quota_alone_counts_in_the_files_not_in_the_affinity_mask() {
    let daemon = Daemon::start();
    let c = container(
        &daemon,
        Limits {
            cpu_quota_us: Some(100_000),
            cpu_period_us: Some(100_000),
            ..Limits::default()
        },
    );
    // The files say one CPU, the first of the cpuset; the kernel's affinity mask is the whole
    // cpuset, and coreutils' nproc asks it (nproc --all too, where the files say 1 or 2:
    // gnulib takes such counts for a missing /sys). The README says so.
    let all = host_cpus().to_string();
    let out = run(
        &c,
        "cat /sys/devices/system/cpu/online; getconf _NPROCESSORS_ONLN; \
         getconf _NPROCESSORS_CONF; nproc; nproc --all",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0", "1", "1"], "{out}");
    assert_eq!(lines[3], all, "{out}");
    if host_cpus() <= 2 {
        assert_eq!(lines[4], all, "{out}");
    }
    run(
        &c,
        "taskset -c \"$(cat /sys/devices/system/cpu/online)\" true",
    );
}
