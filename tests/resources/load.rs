//! Load and pressure: a container's own load average, and `/proc/pressure` (with
//! `/proc/slabinfo`, bound alongside), PSI triggers included.

use std::time::{Duration, Instant};

use crate::rig::{Container, ContainerBuilder, Daemon, Limits};

use super::{Hog, PYTHON, container, limited, run};

/// The 1-minute load of `c` as it reads its `/proc/loadavg`.
fn load1(c: &Container) -> f64 {
    let text = run(c, "cat /proc/loadavg");
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_busy_loop_lifts_its_containers_load_and_not_its_siblings() {
    let daemon = Daemon::start();
    let busy = container(&daemon, Limits::default());
    let idle = container(&daemon, Limits::default());
    // Both are read once first, so the daemon samples both from now on.
    let (busy0, idle0) = (load1(&busy), load1(&idle));
    assert!(busy0 < 0.5 && idle0 < 0.5, "{busy0} {idle0}");
    let _hog = Hog::start(&busy);
    let started = Instant::now();
    // A live check only: `loadavg/tests.rs` proves the averages (0.39 after 30 s of one busy
    // task, as the kernel's) with an injected clock. Here the busy container's 1-minute load
    // must rise within a few of the daemon's 5-second samples (0.08 after one, 0.15 after
    // two) with the hog counted running in the last one (it may take a sample or two to
    // start in a slow VM), and its idle sibling's load must not rise.
    let sample = || -> (f64, Vec<String>) {
        let fields: Vec<String> = run(&busy, "cat /proc/loadavg")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (fields[0].parse().unwrap(), fields)
    };
    let running =
        |fields: &[String]| -> u32 { fields[3].split_once('/').unwrap().0.parse().unwrap() };
    let (mut seen, mut fields) = sample();
    while (seen <= 0.05 || running(&fields) < 1) && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        (seen, fields) = sample();
    }
    assert!(
        seen > 0.05 && running(&fields) >= 1,
        "busy container's load after {:?}: {fields:?}",
        started.elapsed()
    );
    eprintln!("load {seen} after {:?}", started.elapsed());
    let sibling = load1(&idle);
    assert!(
        sibling < seen / 2.0,
        "idle sibling's load {sibling}, the busy one's {seen}"
    );
    let total: u32 = fields[3].split_once('/').unwrap().1.parse().unwrap();
    // init (sleep), the hog's shell, this cat: a handful of tasks, not the host's hundreds.
    assert!(total < 20, "{}", fields[3]);
    // The last pid as the container numbers its tasks, not a host pid.
    assert!(fields[4].parse::<u32>().unwrap() < 100, "{}", fields[4]);
}

#[test]
fn pressure_and_slabinfo_answer_and_slabinfo_is_root_only() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(limited())
        .bind_from(&daemon, &["proc/pressure", "proc/slabinfo"])
        .start();
    for kind in ["cpu", "memory", "io"] {
        let text = run(&c, &format!("cat /proc/pressure/{kind}"));
        // This host is cgroup v1: the host's pressure, in the kernel's format.
        assert!(text.starts_with("some avg10="), "{kind}: {text}");
    }
    let slab = run(&c, "head -2 /proc/slabinfo");
    assert!(slab.starts_with("slabinfo - version"), "{slab}");
    let out = c.sh("setpriv --reuid 1000 --regid 1000 --clear-groups cat /proc/slabinfo");
    assert!(!out.status.success());
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
}

/// A PSI trigger written to `proc/pressure/cpu` fires through the FUSE file as through the
/// kernel's: the container's cgroup's pressure on cgroup v2, the host's on v1 placements.
#[test]
fn a_psi_trigger_on_proc_pressure_fires_when_the_container_stalls() {
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        return; // no PSI on this kernel
    }
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(limited())
        .bind_from(&daemon, &["proc/pressure"])
        .start();
    let script = r#"import errno, os, select, subprocess
p = "/proc/pressure/cpu"
def attempt(text):
    fd = os.open(p, os.O_RDWR)
    try:
        return os.write(fd, text), fd
    except OSError as e:
        os.close(fd)
        return errno.errorcode[e.errno], None
print(attempt(b"sometimes 1 2\n")[0])
print(attempt(b"some 100000 1000000\n")[0])
n, fd = attempt(b"some 100000 2000000\n")
print(n)
try:
    os.write(fd, b"some 100000 2000000\n")
    print("again")
except OSError as e:
    print(errno.errorcode[e.errno])
hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(3)]
poller = select.poll()
poller.register(fd, select.POLLPRI)
events = poller.poll(20000)
print("fired" if events and events[0][1] & select.POLLPRI else "timeout")
print("error" if events and events[0][1] & select.POLLERR else "no error")
for h in hogs:
    h.kill()
# A pressure file without a trigger polls as the kernel's: at once, POLLERR and POLLPRI.
bare = os.open(p, os.O_RDONLY)
poller = select.poll()
poller.register(bare, select.POLLPRI)
events = poller.poll(0)
print("bare", bool(events and events[0][1] & select.POLLERR))
"#;
    let out = c.exec(&[PYTHON, "-c", script]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lines[0], "EINVAL", "a malformed trigger");
    // A 1 s window: refused without CAP_SYS_RESOURCE on Linux 6.5+, as natively.
    let native = std::process::Command::new(PYTHON)
        .args(["-c", "import errno, os\nfd = os.open('/proc/pressure/cpu', os.O_RDWR)\ntry:\n    print(os.write(fd, b'some 100000 1000000\\n'))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"])
        .output()
        .unwrap();
    assert_eq!(lines[1], String::from_utf8_lossy(&native.stdout).trim());
    assert_eq!(
        &lines[2..],
        ["20", "EBUSY", "fired", "no error", "bare True"],
        "{}",
        out.stderr
    );
}
