//! Reads and writes: each caller sees and writes its own namespaces' values (net, uts, ipc,
//! pid, user), with the kernel's own answers, and `sysctl -a` lists what it would natively.

use std::collections::BTreeMap;
use std::process::Command;

use crate::rig;
use crate::rig::{Container, ContainerBuilder, Daemon, host_sysctl};

use super::container;

#[test]
fn containers_and_the_host_keep_their_own_namespaced_values() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    let mut keys = vec![
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/ip_default_ttl", "99"),
        ("net/core/somaxconn", "1234"),
        ("net/ipv4/tcp_keepalive_time", "600"),
    ];
    if std::path::Path::new("/proc/sys/net/ipv6/conf/all/disable_ipv6").exists() {
        keys.push(("net/ipv6/conf/all/disable_ipv6", "1"));
    }
    let read = |c: &Container, key: &str| c.run(&format!("cat /proc/sys/{key}"));
    for (key, value) in keys {
        let (a0, b0, h0) = (read(&a, key), read(&b, key), host_sysctl(key));
        assert_ne!(a0, value, "{key} starts at another value");
        a.run(&format!("echo {value} > /proc/sys/{key}"));
        assert_eq!(read(&a, key), value, "{key} in A");
        assert_eq!(
            (read(&b, key), host_sysctl(key)),
            (b0.clone(), h0.clone()),
            "{key} elsewhere"
        );
        a.run(&format!("echo {a0} > /proc/sys/{key}"));
        assert_eq!(read(&a, key), a0);
        assert_eq!(
            (read(&b, key), host_sysctl(key)),
            (b0, h0),
            "{key} after A reverted"
        );
    }
}

#[test]
fn uts_ipc_and_pid_values_follow_the_callers_namespaces() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    assert_eq!(
        a.run("hostname nsview-a && cat /proc/sys/kernel/hostname"),
        "nsview-a"
    );
    assert_ne!(host_sysctl("kernel/hostname"), "nsview-a");
    let shmmax = host_sysctl("kernel/shmmax");
    assert_eq!(
        a.run("echo 4096 > /proc/sys/kernel/shmmax && cat /proc/sys/kernel/shmmax"),
        "4096"
    );
    assert_eq!(host_sysctl("kernel/shmmax"), shmmax);
    // The container's pid namespace has handed out a handful of pids; the host thousands.
    let inside: u32 = a.run("cat /proc/sys/kernel/ns_last_pid").parse().unwrap();
    assert!(inside < 100, "ns_last_pid inside: {inside}");
}

#[test]
fn an_interface_made_inside_is_listed_in_its_namespace_only() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    // A bridge: this kernel has no dummy driver.
    a.run("ip link add nsv0 type bridge");
    assert!(
        a.run("ls /proc/sys/net/ipv4/conf")
            .lines()
            .any(|l| l == "nsv0")
    );
    assert!(
        !b.run("ls /proc/sys/net/ipv4/conf")
            .lines()
            .any(|l| l == "nsv0")
    );
    let host_list = std::fs::read_dir(daemon.path("proc/sys/net/ipv4/conf")).unwrap();
    assert!(!host_list.flatten().any(|e| e.file_name() == "nsv0"));
    assert_eq!(a.run("cat /proc/sys/net/ipv4/conf/nsv0/forwarding"), "0");
    // The kernel keeps the names of directories every namespace has (`conf` here), never of
    // one only some have: right after `a` found it, `b` and the host do not.
    let probe = "test -e /proc/sys/net/ipv4/conf/nsv0 && echo yes || echo no; \
                 cat /proc/sys/net/ipv4/conf/nsv0/forwarding 2>&1; true";
    let out = b.run(probe);
    assert!(
        out.starts_with("no\n") && out.contains("No such file"),
        "{out}"
    );
    assert!(std::fs::read(daemon.path("proc/sys/net/ipv4/conf/nsv0/forwarding")).is_err());
    assert_eq!(a.run(probe), "yes\n0");
}

#[test]
fn a_fresh_network_namespace_inside_sees_its_own_defaults() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    a.run("echo 1 > /proc/sys/net/ipv4/ip_forward");
    assert_eq!(a.run("unshare -n cat /proc/sys/net/ipv4/ip_forward"), "0");
    assert_eq!(a.run("cat /proc/sys/net/ipv4/ip_forward"), "1");
}

/// The outcome of writing `value` to `path` as `as_who` (a `setpriv` prefix): "ok" or the
/// errno's name; through nsview, or `native`ly.
fn write_outcome(c: &Container, path: &str, value: &str, as_who: &str, native: bool) -> String {
    if !native {
        return c.try_write(path, value, as_who);
    }
    let cmd = rig::write_probe(path, value, as_who);
    // Natively: the host's procfs, opened from the container's namespaces (no mount ns).
    let out = Command::new("nsenter")
        .args([
            "--target",
            &c.init_pid().to_string(),
            "--net",
            "--uts",
            "--ipc",
            "--",
            "sh",
            "-c",
            &cmd,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn writes_to_the_containers_own_namespaces_get_the_kernels_own_answer() {
    // (Knobs of the whole machine are refused to containers: tests/sysctl_safety.rs.)
    let daemon = Daemon::start();
    let a = container(&daemon);
    let capless = "setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-all";
    let user = "setpriv --reuid 1000 --regid 1000 --clear-groups";
    let cases = [
        ("net/ipv4/ip_forward", "1\n", ""),
        ("net/ipv4/ip_forward", "0\n", capless),
        ("net/ipv4/ip_forward", "1\n", user),
        ("net/ipv4/ip_forward", "not a number\n", ""),
        ("kernel/hostname", "nsview-x\n", user),
        ("kernel/hostname", "nsview-y\n", capless),
        ("kernel/shmmax", "8192\n", user),
        ("kernel/shmmax", "8192\n", capless),
        ("kernel/msg_next_id", "5\n", capless),
    ];
    for (key, value, who) in cases {
        let ours = write_outcome(&a, &format!("/proc/sys/{key}"), value, who, false);
        let native = write_outcome(&a, &format!("/proc/sys/{key}"), value, who, true);
        assert_eq!(ours, native, "{key} <- {value:?} as {who:?}");
    }
    assert_eq!(
        write_outcome(&a, "/proc/sys/net/ipv4/ip_forward", "0\n", user, false),
        "EACCES"
    );
    assert_eq!(
        write_outcome(&a, "/proc/sys/net/ipv4/ip_forward", "0\n", capless, false),
        "EPERM"
    );
}

#[test]
fn container_root_in_a_user_namespace_writes_its_own_network_knobs() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .userns(true)
        .bind_from(&daemon, &["proc/sys"])
        .start();
    c.run("echo 1 > /proc/sys/net/ipv4/ip_forward");
    assert_eq!(c.run("cat /proc/sys/net/ipv4/ip_forward"), "1");
    assert_eq!(host_sysctl("net/ipv4/ip_forward"), "0");
    // Owners as the container sees them: its root.
    assert_eq!(c.run("stat -c %u:%g /proc/sys/net/ipv4/ip_forward"), "0:0");
}

#[test]
fn sysctl_a_lists_what_the_namespaces_show_natively() {
    // Machine-wide values (nf_conntrack_max, the buckets of conntrack's hashsize) are read
    // twice: no other test may change one on purpose in between.
    let _steady = rig::MachineValues::steady();
    let daemon = Daemon::start();
    let a = container(&daemon);
    // Values that change by themselves between two runs.
    let moving = [
        "fs.dentry-state",
        "fs.file-nr",
        "fs.inode-nr",
        "fs.inode-state",
        "kernel.ns_last_pid",
        "kernel.random.entropy_avail",
        "kernel.random.uuid",
        "kernel.pty.nr",
        "fs.aio-nr",
        "kernel.sched_domain",
        "net.netfilter.nf_conntrack_count",
        "vm.stat_refresh",
    ];
    let parse = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once(" = "))
            .filter(|(k, _)| !moving.iter().any(|m| k.starts_with(m)))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let mut ours = parse(&a.run("sysctl -a 2>/dev/null"));
    // Nothing is invented (emulated entries exist only where the kernel has them); boot_id
    // is the container's own.
    ours.remove("kernel.random.boot_id");
    let out = Command::new("nsenter")
        .args([
            "--target",
            &a.init_pid().to_string(),
            "--net",
            "--uts",
            "--ipc",
            "--pid",
            "--",
            "sysctl",
            "-a",
        ])
        .output()
        .unwrap();
    let mut native = parse(&String::from_utf8_lossy(&out.stdout));
    native.remove("kernel.random.boot_id");
    assert!(ours.len() > 500, "{} keys", ours.len());
    let missing: Vec<_> = native.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !native.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    let differ: Vec<_> = ours
        .iter()
        .filter(|(k, v)| native.get(*k) != Some(v))
        .collect();
    assert!(differ.is_empty(), "values differ: {differ:?}");
}

#[test]
fn pid_namespace_knobs_are_the_containers_own_though_the_agent_is_outside_it() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    // Written through nsview, the container's next pid follows; the host's does not.
    let out = a.sh("echo 4999 > /proc/sys/kernel/ns_last_pid && sh -c 'echo $$'");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "5000");
    let host_next = std::process::Command::new("sh")
        .args(["-c", "echo $$"])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&host_next.stdout).trim(), "5000");
    // Read through nsview, it is the container's count: the reading cat's own pid, as
    // natively (the agent's own children in the namespace, which take pids too, not counted).
    let read: u32 = a.run("cat /proc/sys/kernel/ns_last_pid").parse().unwrap();
    assert!((5000..5100).contains(&read), "{read}");
    for _ in 0..3 {
        let out = a.run("cat /proc/sys/kernel/ns_last_pid & echo $!; wait");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], lines[1], "cat's pid and what it read");
    }
    // Set back to the last reader's pid (as CRIU sets it back), in one shell so that no
    // process of the test's lies in between: the next cat takes the pid the last read's
    // child had, and still reads its own.
    let out = a.run(
        "for i in 1 2 3; do cat /proc/sys/kernel/ns_last_pid >/dev/null & last=$!; wait; done; \
         echo $last > /proc/sys/kernel/ns_last_pid; \
         cat /proc/sys/kernel/ns_last_pid & echo $!; wait",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], lines[1], "after setting it back: {out}");
}

#[test]
fn readers_only_ever_see_their_own_containers_values() {
    let daemon = Daemon::start();
    let containers: Vec<Container> = (0..5).map(|_| container(&daemon)).collect();
    let key = "/proc/sys/net/ipv4/ip_default_ttl";
    let mut children = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let (low, high) = (60 + i, 100 + i);
        let writer = format!(
            "for n in $(seq 40); do echo {low} > {key}; echo {high} > {key}; done; echo done"
        );
        children.push(c.spawn(&["/bin/sh", "-c", &writer]));
        for _ in 0..10 {
            let reader = format!(
                "echo {low} > {key} 2>/dev/null; for n in $(seq 40); do v=$(cat {key}); \
                 [ \"$v\" = {low} ] || [ \"$v\" = {high} ] || [ \"$v\" = 64 ] || {{ echo bad $v; exit 1; }}; done; echo done"
            );
            children.push(c.spawn(&["/bin/sh", "-c", &reader]));
        }
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.trim() == "done", "{text}");
    }
}

#[test]
fn a_user_namespace_made_inside_a_container_sees_and_writes_as_natively() {
    // Root of `unshare -Ur` inside a container without a user namespace: its user namespace
    // owns none of its other namespaces, and the agent must still join them all.
    let daemon = Daemon::start();
    let a = container(&daemon);
    let inner = "unshare -Ur";
    let read = a.exec(&["unshare", "-Ur", "cat", "/proc/sys/net/ipv4/ip_default_ttl"]);
    assert!(read.status.success(), "{}", read.stderr);
    assert_eq!(
        read.stdout.trim(),
        a.run("cat /proc/sys/net/ipv4/ip_default_ttl")
    );
    for (key, value) in [
        ("net/ipv4/ip_default_ttl", "99\n"),
        ("kernel/hostname", "nsview-inner\n"),
        ("kernel/shmmax", "8192\n"),
    ] {
        let path = format!("/proc/sys/{key}");
        let ours = write_outcome(&a, &path, value, inner, false);
        let native = write_outcome(&a, &path, value, inner, true);
        assert_eq!(
            ours, native,
            "{key} <- {value:?} from a user namespace inside"
        );
    }
}

#[test]
fn a_descriptor_read_from_other_namespaces_than_its_openers_reads_nothing_of_theirs() {
    // A descriptor keeps its namespaces only as inode numbers, which the kernel hands out
    // again once those namespaces are gone: a descriptor read from elsewhere could read
    // whichever container has them now. So only a reader in the opener's namespaces reads
    // (natively the child would read a's value: the kernel's descriptor holds a's namespace;
    // nsview answers EIO instead, and the opener itself reads on).
    let daemon = Daemon::start();
    let a = container(&daemon);
    a.run("echo 99 > /proc/sys/net/ipv4/ip_default_ttl");
    // Opened in a's network namespace, then read by a child in a network namespace of its
    // own (it inherits the descriptor), then again by the opener.
    let out = a.sh("exec 3</proc/sys/net/ipv4/ip_default_ttl
         unshare -n sh -c 'cat <&3; echo rc=$?' 2>&1
         cat /proc/self/fd/3 >/dev/null
         read v <&3; echo own=$v");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("rc=1"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("99\nrc"),
        "read a's value from elsewhere: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("own=99"),
        "the opener reads its own: {}",
        out.stdout
    );
    // The host's value is untouched.
    assert_ne!(host_sysctl("net/ipv4/ip_default_ttl"), "99");
}
