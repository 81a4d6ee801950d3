//! Restarts without a trace: the daemon SIGKILLed and started again, or upgraded in place,
//! while containers hold its files open and read them. The keeper holds the FUSE connection
//! meanwhile, so requests wait instead of failing; the next daemon takes it back, has the
//! kernel resend what the dead one had read (`FUSE_NOTIFY_RESEND`, Linux 6.9+), and takes
//! over the descriptors opened before. And the keeper's limits: its timeout ends a
//! connection no daemon comes back for, and no one but root reaches it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::rig::{self, ContainerBuilder, Daemon, HostFiles, Limits};

const MIB: u64 = 1024 * 1024;

/// Whether this kernel resends requests a dead daemon had read (`FUSE_NOTIFY_RESEND`, 6.9):
/// without it, a request in flight at the kill is never answered, so a test that kills the
/// daemon under load would hang, and is skipped.
fn kernel_resends() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 9)
}

fn skip_without_resend(test: &str) -> bool {
    if kernel_resends() {
        return false;
    }
    eprintln!("{test}: skipped: this kernel has no FUSE_NOTIFY_RESEND (Linux 6.9+)");
    true
}

/// The daemon's status, as JSON.
fn status(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(&daemon.ctl(&["--json", "status"])).expect("status is JSON")
}

fn connection(daemon: &Daemon) -> serde_json::Value {
    status(daemon)["connection"].clone()
}

/// A Python reader inside a container: holds `/proc/meminfo`, `/proc/stat`, `/proc/uptime`
/// and `/proc/sys/net/ipv4/ip_forward` open and re-reads them (`lseek(0)` + `read`) every
/// 50 ms for `argv[4]` seconds, checking MemTotal is `argv[2]` kB and ip_forward `argv[3]`;
/// its last line is `done reads=N errors=M`, every failure a line before it.
const HOLDER: &str = r#"
import os, sys, time
out = open(sys.argv[1], "w", buffering=1)
mem, fwd, secs = sys.argv[2], sys.argv[3], float(sys.argv[4])
paths = ["/proc/meminfo", "/proc/stat", "/proc/uptime", "/proc/sys/net/ipv4/ip_forward"]
fds = [(p, os.open(p, os.O_RDONLY)) for p in paths]
reads = errors = 0
end = time.time() + secs
while time.time() < end:
    for p, fd in fds:
        try:
            os.lseek(fd, 0, 0)
            data = os.read(fd, 1 << 16).decode()
            reads += 1
            bad = not data
            if p == "/proc/meminfo":
                bad = bad or data.split("\n")[0].split()[1] != mem
            if p.endswith("ip_forward"):
                bad = bad or data.strip() != fwd
            if bad:
                errors += 1
                out.write("wrong %s: %r\n" % (p, data[:80]))
        except OSError as e:
            errors += 1
            out.write("error %s: %s\n" % (p, e))
            time.sleep(0.05)
    time.sleep(0.05)
out.write("done reads=%d errors=%d\n" % (reads, errors))
"#;

/// [`HOLDER`] in `c` for `secs` seconds, expecting 256 MiB and ip_forward `forward`; it
/// writes to `out/holder`.
fn holder(c: &rig::Container, out: &Path, forward: &str, secs: u32) -> Child {
    let log = out.join("holder").display().to_string();
    c.spawn(&[
        "python3",
        "-c",
        HOLDER,
        &log,
        "262144",
        forward,
        &secs.to_string(),
    ])
}

fn spawn_in(c: &rig::Container, script: &str) -> Child {
    c.spawn(&["sh", "-c", script])
}

fn finish(child: Child, what: &str, limit: Duration) -> Output {
    let mut child = child;
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "{what} still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A scratch directory for a daemon's mountpoint and runtime directory ([`daemon_on`]), and
/// its `out` directory for what containers write.
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let dirs = rig::scratch_dir();
    let out = dirs.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (dirs, out)
}

/// A container of `mib` MiB memory with `daemon`'s `binds`.
fn limited(daemon: &Daemon, mib: u64, binds: &[&str]) -> rig::Container {
    ContainerBuilder::new()
        .limits(Limits {
            memory_bytes: Some(mib * MIB),
            ..Limits::default()
        })
        .bind_from(daemon, binds)
        .start()
}

/// Starts a daemon on `dirs`' own mountpoint and runtime directory.
fn daemon_on(dirs: &Path, extra: &[&str]) -> Daemon {
    Daemon::start_on(&dirs.join("mnt"), &dirs.join("run"), extra)
}

#[test]
fn top_vmstat_and_a_python_reader_go_on_across_a_sigkill_and_restart() {
    if skip_without_resend("restart") {
        return;
    }
    let _machine = rig::MachineValues::steady();
    let saved = HostFiles::sysctls(&["net/ipv4/ip_forward"]);
    let host_forward: u32 = rig::host_sysctl("net/ipv4/ip_forward").parse().unwrap();
    let forward = (1 - host_forward).to_string();
    let (dirs, out) = scratch();
    let daemon = daemon_on(dirs.path(), &[]);
    let binds = [
        "proc/meminfo",
        "proc/stat",
        "proc/uptime",
        "proc/loadavg",
        "proc/cpuinfo",
        "proc/sys",
    ];
    let a = limited(&daemon, 256, &binds);
    // The container's own ip_forward, unlike the host's.
    a.run(&format!("echo {forward} > /proc/sys/net/ipv4/ip_forward"));
    let o = out.display();
    let top = spawn_in(
        &a,
        &format!("top -b -d 0.5 -n 16 > {o}/top 2> {o}/top.err; echo $? > {o}/top.rc"),
    );
    let vmstat = spawn_in(
        &a,
        &format!("vmstat 1 8 > {o}/vmstat 2> {o}/vmstat.err; echo $? > {o}/vmstat.rc"),
    );
    let holder = holder(&a, &out, &forward, 8);
    std::thread::sleep(Duration::from_secs(2));

    let killed_at = Instant::now();
    let _crashed = daemon.crash();
    std::thread::sleep(Duration::from_millis(500));
    let daemon = daemon_on(dirs.path(), &[]);
    eprintln!(
        "a new daemon serves {:?} after the SIGKILL",
        killed_at.elapsed()
    );

    // A container started now reads its own limits, beside the held descriptors of the first.
    let b = limited(&daemon, 128, &binds);
    assert_eq!(
        b.run("head -1 /proc/meminfo | tr -s ' '"),
        "MemTotal: 131072 kB"
    );

    let limit = Duration::from_secs(30);
    finish(top, "top", limit);
    finish(vmstat, "vmstat", limit);
    finish(holder, "the python reader", limit);
    let holder = read(&out.join("holder"));
    assert!(holder.ends_with("errors=0\n"), "python reader:\n{holder}");
    assert_eq!(
        read(&out.join("top.rc")).trim(),
        "0",
        "top: {}",
        read(&out.join("top.err"))
    );
    assert_eq!(read(&out.join("top.err")), "");
    let frames = read(&out.join("top"));
    assert_eq!(
        frames.matches("MiB Mem :    256.0 total").count(),
        16,
        "top:\n{frames}"
    );
    assert_eq!(
        read(&out.join("vmstat.rc")).trim(),
        "0",
        "vmstat: {}",
        read(&out.join("vmstat.err"))
    );
    assert_eq!(
        read(&out.join("vmstat")).lines().count(),
        10,
        "two headers, 8 lines"
    );

    let conn = connection(&daemon);
    eprintln!("after the restart: {conn}; python: {}", holder.trim());
    assert_eq!(conn["generation"], 1);
    assert_eq!(conn["kept"], true);
    assert_eq!(conn["resend"], "resent");
    // The python reader's four descriptors at least, and top's and vmstat's.
    assert!(conn["handles_taken_over"].as_u64().unwrap() >= 4, "{conn}");
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
}

#[test]
fn requests_in_flight_at_the_kill_are_answered_by_the_next_daemon() {
    if skip_without_resend("in flight") {
        return;
    }
    let (dirs, out) = scratch();
    let args = ["--test-nodes", "--test-faults", "--agent-timeout", "3"];
    let daemon = daemon_on(dirs.path(), &args);
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/sys", "proc/uptime"])
        .start();
    a.run("cat /proc/sys/net/ipv4/ip_forward");
    let o = out.display();
    // A loop of opens and reads, and a read its agent takes 0.5 s over, both across the kill.
    let loop_ = spawn_in(
        &a,
        &format!(
            "n=0; while [ $n -lt 600 ]; do \
               cat /proc/sys/net/ipv4/ip_forward /proc/uptime > /dev/null 2>> {o}/loop.err \
                 || echo fail >> {o}/loop.fail; n=$((n+1)); done; echo $n > {o}/loop.n"
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    let slow_path = daemon.path("test/agent-fault/slow");
    let slow = spawn_in(
        &a,
        &format!(
            "cat {} > {o}/slow 2> {o}/slow.err; echo $? > {o}/slow.rc",
            slow_path.display()
        ),
    );
    std::thread::sleep(Duration::from_millis(200));
    let _crashed = daemon.crash();
    std::thread::sleep(Duration::from_millis(300));
    let daemon = daemon_on(dirs.path(), &args);

    finish(slow, "the slow read", Duration::from_secs(30));
    finish(loop_, "the loop", Duration::from_secs(60));
    assert_eq!(
        read(&out.join("slow.rc")).trim(),
        "0",
        "{}",
        read(&out.join("slow.err"))
    );
    assert_eq!(read(&out.join("loop.n")).trim(), "600");
    let errors = read(&out.join("loop.err"));
    assert_eq!(read(&out.join("loop.fail")), "", "failed opens: {errors}");
    assert!(!errors.contains("not connected"), "{errors}");
    let conn = connection(&daemon);
    eprintln!("requests resent and answered: {}", conn["requests_resent"]);
    // The slow read at least was in flight.
    assert!(conn["requests_resent"].as_u64().unwrap() >= 1, "{conn}");
}

#[test]
fn an_upgrade_under_a_read_loop_fails_no_request() {
    if skip_without_resend("upgrade") {
        return;
    }
    let (dirs, out) = scratch();
    let daemon = daemon_on(dirs.path(), &[]);
    let a = limited(
        &daemon,
        256,
        &["proc/meminfo", "proc/stat", "proc/uptime", "proc/sys"],
    );
    let forward = a.run("cat /proc/sys/net/ipv4/ip_forward");
    let o = out.display();
    let holder = holder(&a, &out, &forward, 5);
    let loop_ = spawn_in(
        &a,
        &format!(
            "end=$(($(date +%s) + 5)); while [ $(date +%s) -lt $end ]; do \
               cat /proc/meminfo /proc/sys/net/ipv4/ip_forward > /dev/null 2>> {o}/loop.err \
                 || echo fail >> {o}/loop.fail; done"
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    let pid = daemon.pid();
    let upgrade = |exe: Option<&Path>| {
        let mut cmd = Command::new(rig::nsview_bin());
        cmd.arg("upgrade")
            .arg("--runtime-dir")
            .arg(daemon.runtime_dir());
        if let Some(exe) = exe {
            cmd.arg("--exe").arg(exe);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    for generation in [1, 2] {
        let started = Instant::now();
        let done = upgrade(None);
        let said = String::from_utf8_lossy(&done.stdout);
        assert!(
            done.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(
            said.contains(&format!(
                "upgraded: the new image serves (generation {generation})"
            )),
            "{said}"
        );
        eprintln!("upgrade {generation} took {:?}", started.elapsed());
        assert_eq!(daemon.pid(), pid);
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the daemon's pid lives on"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Not an nsview binary: refused, said why, and the daemon serves on as it was.
    let refused = upgrade(Some(Path::new("/bin/true")));
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("is not an nsview binary"), "{why}");
    finish(holder, "the python reader", Duration::from_secs(30));
    finish(loop_, "the loop", Duration::from_secs(30));
    let holder = read(&out.join("holder"));
    assert!(holder.ends_with("errors=0\n"), "python reader:\n{holder}");
    assert_eq!(
        read(&out.join("loop.fail")),
        "",
        "{}",
        read(&out.join("loop.err"))
    );
    assert_eq!(connection(&daemon)["generation"], 2);
    // The old images' agents are gone: no zombie is left among the daemon's children.
    let zombies: Vec<String> = children_states(pid)
        .into_iter()
        .filter(|s| s == "Z")
        .collect();
    assert!(zombies.is_empty(), "zombie children: {zombies:?}");
}

/// The states of `pid`'s children.
fn children_states(pid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .collect::<Vec<_>>();
            (rest.get(1)?.parse::<u32>().ok()? == pid).then(|| rest[0].to_owned())
        })
        .collect()
}

#[test]
fn past_the_keepers_timeout_the_mount_ends_in_enotconn_not_a_hang() {
    let dirs = rig::scratch_dir();
    let daemon = daemon_on(dirs.path(), &["--keeper-timeout", "2"]);
    let uptime = daemon.path("proc/uptime");
    let daemon_path = daemon.path("proc/meminfo");
    let keeper = daemon.keeper_pid().expect("a keeper runs");
    let crashed_at = Instant::now();
    let _crashed = daemon.crash();
    // A read now waits for a daemon, then fails once the keeper gives up: never a hang.
    let waiting = std::thread::spawn(move || std::fs::read_to_string(uptime));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !waiting.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a read of the dead mount still waits after 15 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let waited = crashed_at.elapsed();
    let err = waiting.join().unwrap().expect_err("no daemon answered");
    // The waiting request is aborted with the connection; any request after it finds none.
    assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
    assert!(
        waited >= Duration::from_millis(1500),
        "failed after {waited:?}, before the timeout"
    );
    eprintln!("ECONNABORTED {waited:?} after the SIGKILL (keeper timeout 2 s)");
    let started = Instant::now();
    let err = std::fs::read_to_string(daemon_path).expect_err("no connection");
    // (Linux 6.18 answers ENOTCONN there, 6.1 ECONNABORTED.)
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );
    assert!(
        // At once, not after another wait (a bound for hangs, loose for a loaded machine).
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The keeper has ended; a new daemon mounts anew (the stale mount recovered).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{keeper}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the keeper lives on with nothing to keep"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon = daemon_on(dirs.path(), &[]);
    assert_eq!(connection(&daemon)["generation"], 0);
    assert!(std::fs::read_to_string(daemon.path("proc/uptime")).is_ok());
}

#[test]
fn a_killed_keeper_is_replaced_and_the_next_crash_is_still_survived() {
    let dirs = rig::scratch_dir();
    let daemon = daemon_on(dirs.path(), &[]);
    let first = daemon.keeper_pid().expect("a keeper runs");
    // SAFETY: kill(2) on the keeper this test's daemon started (checked by its command line).
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        match daemon.keeper_pid() {
            Some(pid) if pid != first => break pid,
            _ => assert!(
                Instant::now() < deadline,
                "no new keeper; log:\n{}",
                daemon.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Give the new keeper the time to receive the connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    // The first keeper's "holding" line, then the new one's.
    while daemon.log().matches("keeper: holding").count() < 2 {
        assert!(Instant::now() < deadline, "log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = std::fs::File::open(daemon.path("proc/uptime")).unwrap();
    let _crashed = daemon.crash();
    let daemon = daemon_on(dirs.path(), &[]);
    assert_eq!(
        connection(&daemon)["generation"],
        1,
        "taken back from keeper {second}"
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
    assert_eq!(text.split_whitespace().count(), 2, "{text:?}");
}

#[test]
fn no_one_but_root_reaches_the_keeper_or_upgrades_the_daemon() {
    let daemon = Daemon::start();
    let mode = |path: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
            & 0o777
    };
    // The runtime directory and the inode journal are root's alone.
    assert_eq!(mode(daemon.runtime_dir()), 0o700);
    assert_eq!(mode(&daemon.runtime_dir().join("inodes")), 0o600);
    let socket = daemon.runtime_dir().join("keeper.sock");
    let meta = std::fs::metadata(&socket).expect("the keeper's socket");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let connect = format!(
        "import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); \
         s.connect({:?}); print('connected')",
        socket.display().to_string()
    );
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    // As nobody, and as nobody made "root" of a user namespace of its own.
    for prefix in [&nobody[..], &[&nobody[..], &["unshare", "-Ur"]].concat()] {
        let out = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["python3", "-c", &connect])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(!said.contains("connected"), "{prefix:?} reached the keeper");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{prefix:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let up = Command::new(prefix[0])
            .args(&prefix[1..])
            .arg(rig::nsview_bin())
            .args(["upgrade", "--runtime-dir"])
            .arg(daemon.runtime_dir())
            .output()
            .unwrap();
        assert!(!up.status.success(), "{prefix:?} upgraded the daemon");
    }
    assert_eq!(connection(&daemon)["generation"], 0);
}

#[test]
fn a_descriptor_held_across_a_restart_writes_only_what_its_writer_may() {
    let _machine = rig::MachineValues::steady();
    let saved = HostFiles::sysctls(&["kernel/panic", "kernel/core_pattern"]);
    let dirs = rig::scratch_dir();
    let daemon = daemon_on(dirs.path(), &[]);
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/sys"])
        .start();
    // Opened before the restart, written after it: the container's own kernel/panic (an
    // emulated knob), and core_pattern, which it may only read.
    let script = r#"
import os, sys, time
panic = os.open("/proc/sys/kernel/panic", os.O_WRONLY)
core = os.open("/proc/sys/kernel/core_pattern", os.O_RDONLY)
print("opened", flush=True)
sys.stdin.readline()
os.write(panic, b"7\n")
try:
    os.write(core, b"|/tmp/escape %p\n")
    print("core written")
except OSError as e:
    print("core:", e.strerror)
print("panic:", open("/proc/sys/kernel/panic").read().strip())
"#;
    let mut child = a
        .command(&["python3", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "opened");
    let _crashed = daemon.crash();
    let daemon = daemon_on(dirs.path(), &[]);
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut said).unwrap();
    finish(child, "the writer", Duration::from_secs(30));
    assert!(said.contains("core: Bad file descriptor"), "{said}");
    assert!(said.contains("panic: 7"), "{said}");
    assert_eq!(a.run("cat /proc/sys/kernel/panic"), "7");
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
    assert!(connection(&daemon)["handles_taken_over"].as_u64().unwrap() >= 1);
}

#[test]
fn load_averages_and_counters_carry_over_a_restart() {
    let dirs = rig::scratch_dir();
    let daemon = daemon_on(dirs.path(), &[]);
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/loadavg", "proc/stat"])
        .start();
    // Two busy tasks, for the load; the container's first reads make its baselines.
    a.run("for i in 1 2; do (while :; do :; done) > /dev/null 2>&1 & done; true");
    let counter = |name: &str| -> u64 {
        let stat = a.run("cat /proc/stat");
        let line = stat
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        line.split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0)
    };
    let load1 = || -> f64 {
        let text = a.run("cat /proc/loadavg");
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    load1();
    counter("ctxt");
    // Three sampling rounds (5 s each): averages well above zero, and kept on disk.
    let deadline = Instant::now() + Duration::from_secs(60);
    while load1() < 0.3 {
        assert!(Instant::now() < deadline, "no load: {}", load1());
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(6));
    let (before, ctxt_before) = (load1(), counter("ctxt"));
    let _crashed = daemon.crash();
    let _daemon = daemon_on(dirs.path(), &[]);
    let (after, ctxt_after) = (load1(), counter("ctxt"));
    eprintln!("load {before} -> {after}, ctxt {ctxt_before} -> {ctxt_after}");
    // Aged by the gap (a few seconds at a load of 2 raise it), not begun again from zero.
    assert!(
        after >= before * 0.8,
        "load {before} before the restart, {after} after"
    );
    // The counters go on from the baseline the first daemon made: never back, no jump.
    assert!(
        ctxt_after >= ctxt_before,
        "ctxt {ctxt_before} -> {ctxt_after}"
    );
    assert!(
        ctxt_after - ctxt_before < ctxt_before.max(1_000_000),
        "ctxt jumped {ctxt_before} -> {ctxt_after}"
    );
}
