//! Agents that misbehave (garbage, oversized or no answers), are killed or stopped, or get
//! stuck: their callers get EIO within the deadline and no one else waits; and an answer
//! that came while the daemon itself was stopped is taken.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig::{ContainerBuilder, Daemon};

use super::{agents, container};

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
