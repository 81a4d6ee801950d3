//! `proc/sys` end to end: agents in the callers' own namespaces.
//!
//! Containers here: new pid, mount, uts, ipc, net and cgroup namespaces (a user namespace
//! where stated) in fresh `nsview-test-*` cgroups, with nsview's `proc/sys` bound over their
//! `/proc/sys`. Native behaviour is observed through the host's procfs from a process that
//! joined the container's namespaces (`nsenter` without the mount namespace): `/proc/sys/net`
//! and friends answer for the namespaces of the task that opens them.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::{Container, ContainerBuilder, Daemon};

fn container(daemon: &Daemon) -> Container {
    ContainerBuilder::new()
        .bind_from(daemon, &["proc/sys"])
        .start()
}

fn host(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The agent processes of `daemon`: its children running `nsview-nsenter`, and theirs.
fn agents(daemon: &Daemon) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![daemon.pid()];
    while let Some(pid) = todo.pop() {
        for child in children(pid) {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == "nsview-nsenter" {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

/// Whether process `pid` exists and has not ended: an ended agent whose parent died stays a
/// zombie until the machine's init reaps it (a second or more here).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}

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
        let (a0, b0, h0) = (read(&a, key), read(&b, key), host(key));
        assert_ne!(a0, value, "{key} starts at another value");
        a.run(&format!("echo {value} > /proc/sys/{key}"));
        assert_eq!(read(&a, key), value, "{key} in A");
        assert_eq!(
            (read(&b, key), host(key)),
            (b0.clone(), h0.clone()),
            "{key} elsewhere"
        );
        a.run(&format!("echo {a0} > /proc/sys/{key}"));
        assert_eq!(read(&a, key), a0);
        assert_eq!(
            (read(&b, key), host(key)),
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
    assert_ne!(host("kernel/hostname"), "nsview-a");
    let shmmax = host("kernel/shmmax");
    assert_eq!(
        a.run("echo 4096 > /proc/sys/kernel/shmmax && cat /proc/sys/kernel/shmmax"),
        "4096"
    );
    assert_eq!(host("kernel/shmmax"), shmmax);
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
    assert_eq!(host("net/ipv4/ip_forward"), "0");
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
fn a_misbehaving_agent_costs_one_request_and_is_replaced() {
    let daemon = Daemon::start_with(&["--test-nodes", "--test-faults", "--agent-timeout", "1"]);
    let a = container(&daemon);
    let fault = |kind: &str| {
        daemon
            .path(&format!("test/agent-fault/{kind}"))
            .display()
            .to_string()
    };
    for kind in ["garbage", "oversized", "hang"] {
        a.run("cat /proc/sys/net/ipv4/ip_forward");
        let started = Instant::now();
        let out = a.sh(&format!("cat {}", fault(kind)));
        assert!(!out.status.success(), "{kind}");
        assert!(
            out.stderr.contains("Input/output error"),
            "{kind}: {}",
            out.stderr
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{kind} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            a.run("cat /proc/sys/net/ipv4/ip_forward"),
            "0",
            "after {kind}"
        );
    }
    // The log says how each agent failed.
    let log = daemon.log();
    for cause in ["malformed answer", "no answer within the deadline"] {
        assert!(log.contains(&format!("failed ({cause}); killed")), "{log}");
    }
}

#[test]
fn a_killed_or_stopped_agent_is_eio_within_the_deadline() {
    let daemon = Daemon::start_with(&["--test-nodes", "--test-faults", "--agent-timeout", "1"]);
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    // SIGKILL during a read: the agent hangs in that read, and dies.
    let mut reader = a.spawn(&[
        "cat",
        &daemon.path("test/agent-fault/hang").display().to_string(),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for pid in agents(&daemon) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let status = reader.wait().unwrap();
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.run("cat /proc/sys/net/ipv4/ip_forward"), "0");
    // SIGSTOP: the deadline ends it. The file is opened before the agent stops (a lookup
    // that times out is retried by the kernel with a fresh agent, so an open hides it).
    let reader = a.spawn(&[
        "/bin/sh",
        "-c",
        "exec 3</proc/sys/net/ipv4/ip_forward; sleep 1; cat <&3; echo rc=$?",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    for pid in agents(&daemon) {
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
    }
    let started = Instant::now();
    let out = reader.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rc=1"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.run("cat /proc/sys/net/ipv4/ip_forward"), "0");
}

/// Whether process `pid` is in a sleep syscall (nanosleep or clock_nanosleep).
fn sleeping(pid: u32) -> bool {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    matches!(syscall.split_whitespace().next(), Some("35" | "230"))
}

#[test]
fn an_answer_that_came_while_the_daemon_was_stopped_is_taken() {
    let daemon = Daemon::start_with(&["--test-nodes", "--test-faults", "--agent-timeout", "1"]);
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    let slow = daemon.path("test/agent-fault/slow").display().to_string();
    let reader = a.spawn(&["/bin/sh", "-c", &format!("cat {slow}; echo rc=$?")]);
    // The agent has the request once it sleeps in it (it answers after 0.5 s).
    let started = Instant::now();
    while !agents(&daemon).into_iter().any(sleeping) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no agent slept"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The daemon stopped for twice the agent deadline: the agent answers meanwhile.
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let stopped = Resume(daemon.pid());
    let ok = Command::new("kill")
        .args(["-STOP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    std::thread::sleep(Duration::from_secs(2));
    drop(stopped);
    let out = reader.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rc=0"), "{text}");
}

#[test]
fn agents_go_with_their_container() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    assert!(!agents(&daemon).is_empty());
    drop(a);
    let started = Instant::now();
    while !agents(&daemon).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "agents left: {:?}",
            agents(&daemon)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The voluntary context switches of `daemon`'s thread named `name`.
fn switches_of_thread(daemon: &Daemon, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
        }
    }
    panic!("no thread {name} in the daemon");
}

#[test]
fn idle_agents_end_on_time_and_their_worker_sleeps_between() {
    let daemon = Daemon::start_with(&["--agent-idle", "2"]);
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    let agent = agents(&daemon);
    assert!(!agent.is_empty());
    // While the agent is neither idle long enough nor gone, the worker that owns it has no
    // reason to wake (a 200 ms timer, as an earlier reaper had, woke it about 5 times in
    // this second).
    let before = switches_of_thread(&daemon, "nsview-agent");
    std::thread::sleep(Duration::from_secs(1));
    let woke = switches_of_thread(&daemon, "nsview-agent") - before;
    assert!(woke <= 1, "the agent's worker woke {woke} times in 1 s");
    // It does wake when the agent has been idle for 2 s.
    let started = Instant::now();
    while agent.iter().any(|&pid| running(pid)) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an agent idle for 2 s still runs after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("agent ended {:?} after the check", started.elapsed());
    assert_eq!(a.run("cat /proc/sys/net/ipv4/ip_forward"), "0");
}

#[test]
fn the_pool_never_holds_more_than_max_agents() {
    let daemon = Daemon::start_with(&["--max-agents", "4"]);
    let path = daemon
        .path("proc/sys/net/ipv4/ip_forward")
        .display()
        .to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let most = {
        let stop = stop.clone();
        let pid = daemon.pid();
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Live agents among the daemon's children (a child forked for an agent shows
                // the daemon's name until it execs; one being ended is a zombie until reaped).
                let tops = children(pid)
                    .into_iter()
                    .filter(|c| {
                        let stat =
                            std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
                        stat.contains("(nsview-nsenter)") && !stat.contains(") Z ")
                    })
                    .count();
                most = most.max(tops);
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    // 300 network namespaces, each read once.
    let script =
        format!("for i in $(seq 300); do unshare -n cat {path} >/dev/null || exit 1; done");
    let status = Command::new("sh").args(["-c", &script]).status().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = most.join().unwrap();
    assert!(status.success());
    assert!((1..=4).contains(&most), "at most {most} agents alive");
}

#[test]
fn agents_hold_nothing_of_the_mount_and_show_no_host_mount() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    let all = agents(&daemon);
    assert!(!all.is_empty());
    let mountpoint = daemon.mountpoint().display().to_string();
    for pid in &all {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let target = std::fs::read_link(fd.path())
                .unwrap_or_default()
                .display()
                .to_string();
            assert!(
                !target.starts_with(&mountpoint) && target != "/dev/fuse",
                "agent {pid} holds {target}"
            );
        }
    }
    // The serving agent (the deepest: without the new mount API it forks into the pid
    // namespace) sees only its tmpfs root and its own procfs and sysfs.
    let server = *all.last().unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{server}/mounts")).unwrap();
    let mut kinds: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["proc", "sysfs", "tmpfs"], "{mounts}");
    // From inside, no process is an agent: it is not in the container's pid namespace, so
    // ps, top and the task counts never show it.
    let inside =
        a.run("for p in /proc/[0-9]*; do grep -l nsview-nsenter $p/comm 2>/dev/null; done; true");
    assert!(inside.is_empty(), "agents inside: {inside}");
    let ps = a.run("ps -eo comm");
    assert!(!ps.contains("nsview"), "{ps}");
    let pidns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert!(all.iter().all(|p| pidns(*p) == pidns(daemon.pid())));
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

/// Starts an agent in `c`'s namespaces from a thread of a Python process that ends at
/// once, as a daemon's idle thread does; prints the agent's pid and, half a second later,
/// `alive` or how it ended; then waits to be killed.
const SPAWN_FROM_A_THREAD: &str = r#"
import os, subprocess, sys, threading, time
agent, pid = sys.argv[1], sys.argv[2]
# As the daemon passes them: the kinds that differ, as descriptors 3, 4, ...
kinds = [k for k in ["user", "net", "uts", "ipc", "cgroup", "pid"]
         if os.stat(f"/proc/{pid}/ns/{k}").st_ino != os.stat(f"/proc/self/ns/{k}").st_ino]
args = " ".join(f"--ns {k}={3 + n}" for n, k in enumerate(kinds))
opens = " ".join(f"{3 + n}</proc/{pid}/ns/{k}" for n, k in enumerate(kinds))
box = {}
def spawn():
    box["agent"] = subprocess.Popen(["/bin/sh", "-c", f'exec "$0" {args} {opens}', agent],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    # Past the agent's setup, which a prctl(PR_SET_PDEATHSIG) would have tied to this thread.
    time.sleep(0.5)
thread = threading.Thread(target=spawn)
thread.start()
thread.join()
print(box["agent"].pid, flush=True)
time.sleep(0.5)
code = box["agent"].poll()
print("alive" if code is None else f"ended {code}", flush=True)
time.sleep(60)
"#;

#[test]
fn an_agent_outlives_the_thread_that_started_it_and_not_its_process() {
    use std::io::BufRead;
    let daemon = Daemon::start();
    let c = container(&daemon);
    let agent = rig::nsview_bin().with_file_name("nsview-nsenter");
    let mut parent = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SPAWN_FROM_A_THREAD])
        .arg(&agent)
        .arg(c.init_pid().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(parent.stdout.take().unwrap()).lines();
    let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    // PR_SET_PDEATHSIG would have ended it with its thread (SIGKILL: "ended -9").
    assert_eq!(lines.next().unwrap().unwrap(), "alive");
    // The whole process gone: the agent ends too.
    parent.kill().unwrap();
    parent.wait().unwrap();
    let started = Instant::now();
    while running(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the agent outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("agent ended {:?} after its parent", started.elapsed());
}

#[test]
fn agents_die_with_the_daemon() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    let all = agents(&daemon);
    assert!(!all.is_empty());
    // SIGKILL: no cleanup of its own; the agents see the daemon's pidfd readable and end.
    let stale = daemon.kill_leaving_stale_mount();
    let took = wait_until_ended(&all, "agents outlived the daemon");
    eprintln!("agents ended {took:?} after the daemon's SIGKILL");
    drop(stale);
}

/// Waits until none of `pids` runs, failing with `why` after 2 s; how long it took.
fn wait_until_ended(pids: &[u32], why: &str) -> Duration {
    let started = Instant::now();
    while pids.iter().copied().any(running) {
        assert!(started.elapsed() < Duration::from_secs(2), "{why}");
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

#[test]
fn an_agent_waiting_on_its_child_in_the_namespace_still_dies_with_the_daemon() {
    let daemon = Daemon::start_with(&["--test-nodes", "--test-faults", "--agent-timeout", "30"]);
    let a = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    let all = agents(&daemon);
    assert!(!all.is_empty());
    // The agent waits on a child in the container that never answers (one the container
    // stopped would not either), far inside the deadline.
    let hang = daemon.path("test/agent-fault/hang-in-namespace");
    let reader = a.spawn(&["cat", &hang.display().to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    let stale = daemon.kill_leaving_stale_mount();
    wait_until_ended(&all, "an agent waiting on its child outlived the daemon");
    drop(reader);
    drop(stale);
}

/// A daemon with two FUSE workers, agent faults and a 3 s agent deadline: two requests
/// held on a worker for the deadline would stop it for everyone.
fn two_workers_slow_deadline() -> Daemon {
    Daemon::start_with(&[
        "--test-nodes",
        "--test-faults",
        "--agent-timeout",
        "3",
        "--threads",
        "2",
    ])
}

#[test]
fn a_stuck_agent_holds_up_its_own_callers_only() {
    // Two FUSE workers and a long agent deadline: without lanes, two requests to a stuck
    // agent would hold every worker until the deadline.
    let daemon = two_workers_slow_deadline();
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/sys", "proc/meminfo"])
        .start();
    let b = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    b.run("cat /proc/sys/net/ipv4/ip_forward");
    let hang = daemon.path("test/agent-fault/hang").display().to_string();
    let stuck: Vec<_> = (0..2).map(|_| a.spawn(&["cat", &hang])).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(b.run("cat /proc/sys/net/ipv4/ip_forward"), "0");
    assert!(a.run("head -1 /proc/meminfo").starts_with("MemTotal:"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "others waited {took:?} for a's stuck agent"
    );
    for child in stuck {
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "a stuck agent's read fails (EIO)");
    }
}

#[test]
fn reads_past_offset_zero_of_a_stuck_render_hold_no_worker() {
    // Two FUSE workers. One descriptor of a stuck agent's file: a read at offset 0 renders,
    // holding the descriptor's snapshot while its agent hangs; reads at offset 1 of it must
    // queue on the agent's lane, not wait for that snapshot on a worker (which let one
    // container hold every worker until the deadline).
    let daemon = two_workers_slow_deadline();
    let a = container(&daemon);
    let b = container(&daemon);
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    b.run("cat /proc/sys/net/ipv4/ip_forward");
    const PREADS: &str = r#"import os, sys, threading, time
fd = os.open(sys.argv[1], os.O_RDONLY)
def at(offset):
    try:
        os.pread(fd, 100, offset)
    except OSError:
        pass
first = threading.Thread(target=at, args=(0,))
first.start()
time.sleep(0.3)
later = [threading.Thread(target=at, args=(1,)) for _ in range(4)]
for t in later:
    t.start()
for t in [first] + later:
    t.join()
"#;
    let hang = daemon.path("test/agent-fault/hang").display().to_string();
    let stuck = a.spawn(&["/usr/bin/python3", "-c", PREADS, &hang]);
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    assert_eq!(b.run("cat /proc/sys/net/ipv4/ip_forward"), "0");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "b waited {took:?} for a's reads of a stuck render"
    );
    // Its queued reads would each wait out a deadline of their own: end them now.
    let mut stuck = stuck;
    let _ = stuck.kill();
    let _ = stuck.wait();
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
