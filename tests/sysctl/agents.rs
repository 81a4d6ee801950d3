//! The agents' lifecycle: they go with their container, end when idle, stay within the
//! pool's bound, hold nothing of the mount, and die with the daemon (or with the process
//! that started them), whatever they wait on.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::Daemon;

use super::{agents, children, container};

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
