//! `podman run`'s options: the containers of a pod, a user namespace of its own, `--cpus`,
//! `--read-only`, `--privileged` and `--pid host`, each with its views and its values.

use crate::rig::oci::{field, registered};
use crate::rig::{Daemon, HostFiles};

use super::{HOST_KEYS, IMAGE, annotated};

#[test]
fn the_containers_of_a_pod_share_their_values_and_no_one_else_sees_them() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let parent = format!("/{}", podman.cgroup.name());
    let (ok, _, err) = podman.podman(&[
        "pod",
        "create",
        "--name",
        "p",
        "--network",
        "none",
        "--cgroup-parent",
        &parent,
        "--infra-image",
        IMAGE,
        "--infra-command",
        "/bin/pause",
    ]);
    assert!(ok, "pod create: {err}");
    let member = [
        "--annotation",
        "io.nsview.enabled=true",
        "--security-opt",
        "unmask=/proc/sys",
    ];
    let writer: Vec<&str> = ["-d", "--pod", "p", "--cap-add", "SYS_ADMIN"]
        .into_iter()
        .chain(member)
        .collect();
    let a = podman.run(&writer, &["/bin/pause"]);
    let (ok, out, err) = podman.exec(
        a.trim(),
        "echo 3 > /proc/sys/kernel/panic && cat /proc/sys/kernel/panic",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "3");
    let reader: Vec<&str> = ["--rm", "--pod", "p"].into_iter().chain(member).collect();
    let out = podman.run(&reader, &["cat", "/proc/sys/kernel/panic"]);
    assert_eq!(out.trim(), "3", "a container of the same pod");
    let outsider: Vec<&str> = ["--rm"].into_iter().chain(member).collect();
    let out = podman.run(&outsider, &["cat", "/proc/sys/kernel/panic"]);
    assert_eq!(
        out.trim(),
        host.saved("/proc/sys/kernel/panic").unwrap().trim(),
        "outside the pod"
    );
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}

#[test]
fn a_container_with_its_own_user_namespace_sees_its_limits_and_keeps_its_values() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let script = "cat /proc/self/uid_map; head -1 /proc/meminfo; \
                  echo 1 > /proc/sys/vm/overcommit_memory && cat /proc/sys/vm/overcommit_memory; \
                  echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused";
    let out = podman.run(
        &[
            "--rm",
            "--annotation",
            "io.nsview.enabled=true",
            "--uidmap",
            "0:200000:65536",
            "--gidmap",
            "0:200000:65536",
            "--memory",
            "64m",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "unmask=/proc/sys",
        ],
        &["sh", "-c", script],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    assert_eq!(lines[1], "MemTotal:          65536 kB");
    assert_eq!(lines[2], "1");
    assert_eq!(lines[3], "core refused");
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}

#[test]
fn cpus_read_only_privileged_and_pid_host_containers_get_their_views() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let on = [
        "--rm",
        "--annotation",
        "io.nsview.enabled=true",
        "-v",
        "/usr:/usr:ro",
    ];
    let with = |extra: &[&str], script: &str| {
        let args = [&on[..], extra].concat();
        podman.run(&args, &["sh", "-c", script])
    };
    // --cpus 1 (a quota on this 2-CPU host): one CPU in every file and program.
    let out = with(
        &["--cpus", "1"],
        "echo \"online $(cat /sys/devices/system/cpu/online)\"; \
         echo \"getconf $(/usr/bin/getconf _NPROCESSORS_ONLN)\"; \
         echo \"cpuinfo $(grep -c ^processor /proc/cpuinfo)\"",
    );
    assert_eq!(field(&out, "getconf "), "1", "{out}");
    assert_eq!(field(&out, "cpuinfo "), "1", "{out}");
    assert!(!field(&out, "online ").contains(['-', ',']), "{out}");
    // --read-only: the binds are made before the rootfs turns read-only.
    let out = with(
        &["--read-only", "--memory", "96m"],
        "echo \"mem $(head -1 /proc/meminfo)\"; touch /x 2>/dev/null && echo rw || echo ro",
    );
    assert_eq!(field(&out, "mem "), "MemTotal:          98304 kB", "{out}");
    assert_eq!(field(&out, "ro"), "", "{out}");
    // --privileged: /proc/sys is writable without an unmask, still only the container's.
    let out = with(
        &["--privileged", "--memory", "128m"],
        "echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
         echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused",
    );
    assert_eq!(field(&out, "fwd "), "1", "{out}");
    assert_eq!(field(&out, "core "), "refused", "{out}");
    // --pid host: its tasks are host processes; its files follow its cgroup, and it is not
    // registered (the host's pid namespace is nobody's container).
    let out = with(
        &["--pid", "host", "--memory", "128m"],
        "echo \"mem $(head -1 /proc/meminfo)\"; echo \"pid1 $(cat /proc/1/comm)\"",
    );
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB", "{out}");
    assert_ne!(field(&out, "pid1 "), "sh", "{out}");
    assert!(registered(&daemon).is_empty(), "{:?}", registered(&daemon));
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}
