//! `proc/uptime` end to end: a real daemon, real pid namespaces and cgroups, real readers.
//!
//! Containers here: new pid, mount, uts, ipc, net and cgroup namespaces, in fresh
//! `nsview-test-*` cgroups (limits stated per test), with nsview's `proc/uptime` bound over
//! their `/proc/uptime`. By default a container without a time namespace is up by the host's
//! boot clock (so `ps` agrees); the age tests run a daemon with `--uptime age`, LXCFS's
//! uptime. Time namespaces are in `tests/fidelity.rs`.

use std::time::{Duration, Instant};

use crate::rig::{Container, ContainerBuilder, Daemon, Limits};

/// Seconds since boot, the clock /proc/uptime and task start times use.
fn boottime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The container's age now, from its init's start time.
fn age(c: &Container) -> f64 {
    boottime() - c.start_time_ticks() as f64 / ticks_per_sec()
}

fn parse(line: &str) -> (f64, f64) {
    let mut fields = line.split_whitespace().map(|f| f.parse::<f64>().unwrap());
    let pair = (fields.next().unwrap(), fields.next().unwrap());
    assert_eq!(fields.next(), None, "uptime has two fields: {line:?}");
    pair
}

/// A daemon whose containers are up by their init's age (`--uptime age`).
fn age_clock_daemon() -> Daemon {
    Daemon::start_with(&["--uptime", "age"])
}

fn container_with_uptime(daemon: &Daemon, limits: Limits) -> Container {
    ContainerBuilder::new()
        .limits(limits)
        .bind_from(daemon, &["proc/uptime"])
        .start()
}

fn read_inside(c: &Container) -> (f64, f64) {
    let out = c.exec(&["cat", "/proc/uptime"]);
    assert!(out.status.success(), "cat failed: {}", out.stderr);
    parse(&out.stdout)
}

#[test]
fn on_the_age_clock_a_containers_uptime_is_the_age_of_its_init() {
    let daemon = age_clock_daemon();
    // The init starts between these two instants; the read happens between the next two.
    let before_start = Instant::now();
    let c = container_with_uptime(&daemon, Limits::default());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let before_read = Instant::now();
    let (up, idle) = read_inside(&c);
    let youngest = before_read.duration_since(started).as_secs_f64();
    let oldest =
        started.elapsed().as_secs_f64() + started.duration_since(before_start).as_secs_f64();
    // Start times tick in hundredths of a second.
    assert!(
        (youngest - 0.01..=oldest + 0.01).contains(&up),
        "uptime {up}, expected between {youngest:.2} and {oldest:.2}"
    );
    assert!(idle >= 0.0, "idle {idle}");
}

#[test]
fn by_default_uptime_ps_btime_and_psutil_tell_the_boot_clocks_story() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/uptime", "proc/stat"])
        .start();
    // A process 2 s old, its elapsed time by ps (uptime − start time), the uptime, and the
    // uptime psutil and glances derive from btime.
    let before = boottime();
    let out = c.sh(
        "sleep 60 & sleep 2; echo \"etimes $(ps -o etimes= -p $!)\"; \
         echo \"etime $(ps -o etime= -p $!)\"; echo \"up $(cat /proc/uptime)\"; \
         echo \"btime $(grep ^btime /proc/stat | cut -d\" \" -f2) now $(date +%s)\"; \
         /usr/bin/python3 -c 'import psutil; print(\"psutil\", psutil.boot_time())'; kill $!; true",
    );
    let after = boottime();
    assert!(out.status.success(), "{}", out.stderr);
    let text = &out.stdout;
    let field = |key: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in {text}"))
            .trim()
    };
    let etimes: u64 = field("etimes ")
        .parse()
        .unwrap_or_else(|_| panic!("{text}"));
    // 2 s and what a slow machine adds; a wrapped value is billions.
    assert!((1..=30).contains(&etimes), "ps -o etimes {etimes}: {text}");
    assert!(
        !field("etime ").contains('-'),
        "ps -o etime wrapped: {text}"
    );
    let (up, _) = parse(field("up "));
    assert!(
        (before - 0.02..=after + 0.02).contains(&up),
        "uptime {up}, the boot clock read {before:.2}..{after:.2}: {text}"
    );
    // btime, read right after the uptime: now - btime is the uptime.
    let words: Vec<f64> = field("btime ")
        .split(" now ")
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(
        (words[1] - words[0] - up).abs() < 3.0,
        "now - btime {} and uptime {up} differ: {text}",
        words[1] - words[0]
    );
    // psutil's (and so glances') boot time is btime.
    let psutil: f64 = field("psutil ").parse().unwrap();
    assert!(
        (psutil - words[0]).abs() < 2.0,
        "psutil's boot time {psutil}, btime {}",
        words[0]
    );
}

#[test]
fn host_caller_reads_the_host_uptime() {
    let daemon = Daemon::start();
    // Ours is read between two reads of the host's: its values lie between theirs.
    let before = std::fs::read_to_string("/proc/uptime").unwrap();
    let ours = std::fs::read_to_string(daemon.path("proc/uptime")).unwrap();
    let after = std::fs::read_to_string("/proc/uptime").unwrap();
    let (up, idle) = parse(&ours);
    let ((up0, idle0), (up1, idle1)) = (parse(&before), parse(&after));
    // Both columns tick in hundredths of a second.
    assert!(
        (up0 - 0.01..=up1 + 0.01).contains(&up),
        "{ours:?} between {before:?} and {after:?}"
    );
    assert!(
        (idle0 - 0.01..=idle1 + 0.01).contains(&idle),
        "{ours:?} between {before:?} and {after:?}"
    );
    assert!(
        up > 10.0,
        "the host has been up longer than this test: {ours:?}"
    );
}

#[test]
fn on_the_age_clock_a_nested_pid_namespace_sees_its_own_age() {
    let daemon = age_clock_daemon();
    let c = container_with_uptime(&daemon, Limits::default());
    std::thread::sleep(Duration::from_millis(2200));
    // The nested namespace mounts its own /proc (hiding the bind mount), so it reads the file
    // through the nsview mount, which its mount namespace inherited.
    let uptime = daemon.path("proc/uptime");
    let script = format!(
        "cat /proc/uptime; unshare --fork --pid --mount-proc sh -c 'sleep 0.5; cat {}'",
        uptime.display()
    );
    let out = c.sh(&script);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<_> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{:?}", out.stdout);
    let (outer, _) = parse(lines[0]);
    let (nested, _) = parse(lines[1]);
    assert!(outer >= 2.0, "container age {outer}");
    assert!((0.4..1.5).contains(&nested), "nested age {nested}");
}

#[test]
fn on_the_age_clock_procps_uptime_inside_shows_up_0_min() {
    let daemon = age_clock_daemon();
    let c = container_with_uptime(&daemon, Limits::default());
    let out = c.exec(&["uptime"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("up 0 min"),
        "uptime printed {:?}",
        out.stdout
    );
    // The host, by contrast, has been up for longer: by the numbers always (a VM booted
    // seconds ago is up 0 min too), and in uptime's words once it has been up two minutes.
    let (inside, _) = read_inside(&c);
    let host_up = boottime();
    assert!(
        inside + 1.0 < host_up,
        "container up {inside} s, host {host_up} s"
    );
    if host_up >= 120.0 {
        let host = std::process::Command::new("uptime").output().unwrap();
        let host = String::from_utf8_lossy(&host.stdout);
        assert!(!host.contains("up 0 min"), "host uptime {host:?}");
    }
}

#[test]
fn on_the_age_clock_fifty_parallel_readers_in_five_containers_each_get_their_own_value() {
    let daemon = age_clock_daemon();
    let mut containers = Vec::new();
    for _ in 0..5 {
        containers.push(container_with_uptime(&daemon, Limits::default()));
        std::thread::sleep(Duration::from_millis(400));
    }
    let before: Vec<f64> = containers.iter().map(age).collect();
    let readers: Vec<_> = containers
        .iter()
        .map(|c| {
            c.spawn(&[
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10; do cat /proc/uptime & done; wait",
            ])
        })
        .collect();
    let outputs: Vec<_> = readers
        .into_iter()
        .map(|r| r.wait_with_output().unwrap())
        .collect();
    let after: Vec<f64> = containers.iter().map(age).collect();
    for (i, out) in outputs.iter().enumerate() {
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let ups: Vec<f64> = text.lines().map(|l| parse(l).0).collect();
        assert_eq!(ups.len(), 10, "container {i}: {text:?}");
        for up in ups {
            // 0.01 s is the file's resolution; ages of neighbours differ by 0.4 s.
            assert!(
                up >= before[i] - 0.02 && up <= after[i] + 0.02,
                "container {i}: read {up}, age was {:.2}..{:.2}",
                before[i],
                after[i]
            );
        }
    }
}

#[test]
fn idle_never_decreases_and_busy_time_is_taken_off_one_cpus_capacity() {
    let daemon = Daemon::start();
    let c = container_with_uptime(
        &daemon,
        Limits {
            cpuset_cpus: Some("0".into()),
            ..Limits::default()
        },
    );
    let mut busy = c.spawn(&["sh", "-c", "while :; do :; done"]);
    std::thread::sleep(Duration::from_millis(1500));
    let mut last_idle = 0.0;
    for _ in 0..20 {
        let (up, idle) = read_inside(&c);
        assert!(idle >= last_idle, "idle went from {last_idle} to {idle}");
        // One CPU: idle can never exceed the age; the loop kept that CPU mostly busy.
        assert!(idle <= up, "idle {idle} > age {up} on one CPU");
        last_idle = idle;
    }
    let (up, idle) = read_inside(&c);
    assert!(
        up - idle >= 0.7,
        "a busy loop for {up:.2}s left idle at {idle:.2}"
    );
    let _ = busy.kill();
    let _ = busy.wait();
}
