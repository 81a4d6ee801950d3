//! The hook pairs as shipped: the annotated pair gives an annotated container its views and
//! registers it over stop, start, restart and rm, brings its files back after the daemon's
//! restart and fails a start saying why with the daemon down; the always pair starts
//! containers with and without a daemon.

use crate::rig::oci::{assert_reattached, field, host_uptime, uptime_in, wait_for_reattach};
use crate::rig::{Daemon, HostFiles};

use super::{HOST_KEYS, IMAGE, Podman, annotated, host_memtotal, wait_registered};

#[test]
fn a_podman_container_sees_its_limits_and_its_own_sysctls() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo \"online $(cat /sys/devices/system/cpu/online)\"; \
                  echo \"nproc $(nproc)\"; \
                  echo \"up $(cat /proc/uptime)\"; \
                  echo \"free $(/usr/bin/free -m | grep Mem:)\"; \
                  echo \"uptime $(/usr/bin/uptime)\"; \
                  echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
                  echo 1 > /proc/sys/vm/overcommit_memory && echo \"oc $(cat /proc/sys/vm/overcommit_memory)\"; \
                  echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused";
    let before = host_uptime();
    let out = podman.run(
        &[
            "--rm",
            "--annotation",
            "io.nsview.enabled=true",
            "--memory",
            "128m",
            "--cpuset-cpus",
            "0",
            "--cap-add",
            "NET_ADMIN,SYS_ADMIN",
            "--security-opt",
            "unmask=/proc/sys",
            "-v",
            "/usr:/usr:ro",
        ],
        &["sh", "-c", script],
    );
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB");
    assert_eq!(field(&out, "online "), "0");
    assert_eq!(field(&out, "nproc "), "1");
    // Without a time namespace, the boot clock its processes' start times count on.
    let up = uptime_in(&out);
    assert!(
        (before - 0.02..=host_uptime() + 0.02).contains(&up),
        "uptime {up}"
    );
    let free: Vec<&str> = field(&out, "free ").split_whitespace().collect();
    assert_eq!(free[..2], ["Mem:", "128"], "procps free -m");
    assert!(field(&out, "uptime ").contains(" up "), "{out}");
    assert_eq!(field(&out, "fwd "), "1");
    assert_eq!(field(&out, "oc "), "1");
    assert_eq!(field(&out, "core "), "refused");
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
    // --rm: podman removed it, and the poststop hook unregistered it.
    wait_registered(&daemon, &[]);

    // Without the annotation the annotated pair leaves a container alone.
    let out = podman.run(
        &["--rm", "--memory", "128m"],
        &["head", "-1", "/proc/meminfo"],
    );
    assert_eq!(field(&out, "MemTotal:"), host_memtotal());
    let log = daemon.log();
    assert_eq!(log.matches(" registered (init ").count(), 1, "{log}");
}

#[test]
fn stop_start_restart_and_rm_register_and_unregister_the_container() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let id = podman.run(
        &[
            "-d",
            "--annotation",
            "io.nsview.enabled=true",
            "--memory",
            "96m",
        ],
        &["/bin/pause"],
    );
    let id = id.trim();
    let meminfo = || {
        let (ok, out, err) = podman.exec(id, "head -1 /proc/meminfo");
        assert!(ok, "{err}");
        field(&out, "MemTotal:").to_owned()
    };
    wait_registered(&daemon, &[id]);
    assert_eq!(meminfo(), "98304 kB");
    podman.lifecycle("stop", id);
    wait_registered(&daemon, &[]);
    podman.lifecycle("start", id);
    wait_registered(&daemon, &[id]);
    assert_eq!(meminfo(), "98304 kB");
    podman.lifecycle("restart", id);
    wait_registered(&daemon, &[id]);
    assert_eq!(meminfo(), "98304 kB");
    podman.lifecycle("rm", id);
    wait_registered(&daemon, &[]);
    let stores = daemon.runtime_dir().join("stores");
    assert!(
        std::fs::read_dir(&stores).unwrap().next().is_none(),
        "a store outlived it"
    );
}

#[test]
fn podman_exec_reads_the_files_again_after_the_daemon_is_killed_and_restarted() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let podman = Podman::new(
        mountpoint.path(),
        runtime.path(),
        &["nsview-annotated", "nsview-annotated-poststop"],
    );
    let id = podman.run(
        &[
            "-d",
            "--annotation",
            "io.nsview.enabled=true",
            "--memory",
            "128m",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "unmask=/proc/sys",
        ],
        &["/bin/pause"],
    );
    let id = id.trim();
    let (ok, out, err) = podman.exec(
        id,
        "echo 1 > /proc/sys/vm/overcommit_memory && head -1 /proc/meminfo",
    );
    assert!(ok, "{err}");
    assert_eq!(field(&out, "MemTotal:"), "131072 kB");

    let stale = daemon.kill_leaving_stale_mount();
    let (ok, _, err) = podman.exec(id, "cat /proc/meminfo");
    assert!(
        !ok && err.contains("not connected"),
        "a dead daemon's bind: {err}"
    );
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    wait_for_reattach(&daemon);
    let (ok, out, err) = podman.exec(
        id,
        "head -1 /proc/meminfo; cat /proc/sys/vm/overcommit_memory /sys/devices/system/cpu/online",
    );
    assert!(ok, "{err}\n{}", daemon.log());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "MemTotal:         131072 kB");
    // The stored value survived the restart with the container's network namespace.
    assert_eq!(lines[1], "1");
    assert_reattached(&daemon, id);
    podman.lifecycle("rm", id);
    wait_registered(&daemon, &[]);
    drop(podman);
    drop(daemon);
}

#[test]
fn the_always_pair_starts_containers_with_and_without_a_daemon() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let podman = Podman::new(
        mountpoint.path(),
        runtime.path(),
        &["nsview-always", "nsview-always-poststop"],
    );
    let read = ["--rm", "--memory", "128m"];
    // No daemon: the container starts, without nsview.
    let out = podman.run(&read, &["head", "-1", "/proc/meminfo"]);
    assert_eq!(field(&out, "MemTotal:"), host_memtotal());
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let out = podman.run(&read, &["head", "-1", "/proc/meminfo"]);
    assert_eq!(
        field(&out, "MemTotal:"),
        "131072 kB",
        "no annotation needed"
    );
    wait_registered(&daemon, &[]);
    drop(podman);
    drop(daemon);
}

#[test]
fn with_the_daemon_down_the_annotated_pair_fails_the_start_saying_why() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let podman = Podman::new(
        mountpoint.path(),
        runtime.path(),
        &["nsview-annotated", "nsview-annotated-poststop"],
    );
    let parent = format!("/{}", podman.cgroup.name());
    // crun drops a hook's stderr unless run.oci.hooks.stderr names a file for it.
    let hook_stderr = podman.dir.path().join("hook-stderr");
    let keep = format!("run.oci.hooks.stderr={}", hook_stderr.display());
    let (ok, out, err) = podman.podman(&[
        "run",
        "--rm",
        "--cgroup-parent",
        &parent,
        "--annotation",
        "io.nsview.enabled=true",
        "--annotation",
        &keep,
        IMAGE,
        "true",
    ]);
    assert!(!ok, "started without nsview: {out}");
    // Before: "... (No such file or directory (os error 2)) ...: OCI runtime attempted to
    // invoke a command that was not found" and exit status 127, podman's reading of that
    // strerror text.
    assert!(!err.contains("command that was not found"), "{err}");
    let said = format!(
        "{err}{}",
        std::fs::read_to_string(&hook_stderr).unwrap_or_default()
    );
    assert!(said.contains("is nsview serve running?"), "{said}");
}
