//! The control socket and `nsview ctl`, end to end against a real daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig::{ContainerBuilder, Daemon, Limits};

/// `nsview ctl --runtime-dir <daemon's> ARGS...`: (success, stdout, stderr).
fn ctl(daemon_runtime: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nsview"))
        .arg("ctl")
        .arg("--runtime-dir")
        .arg(daemon_runtime)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn socket(daemon: &Daemon) -> std::path::PathBuf {
    daemon.runtime_dir().join("nsview.sock")
}

/// Sends `line` on a fresh connection and reads one answer line ("" when the daemon closes).
fn exchange(daemon: &Daemon, line: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket(daemon)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(line);
    let mut answer = String::new();
    let _ = BufReader::new(&stream).read_line(&mut answer);
    answer
}

#[test]
fn register_list_and_unregister_through_ctl() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new().start();
    let pid = c.init_pid().to_string();
    let run = daemon.runtime_dir().to_path_buf();
    let (ok, out, err) = ctl(&run, &["register", "--id", "web-1", "--pid", &pid]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "registered web-1");
    // Idempotent.
    assert!(ctl(&run, &["register", "--id", "web-1", "--pid", &pid]).0);
    let (_, table, _) = ctl(&run, &["list"]);
    assert!(
        table.lines().nth(1).unwrap().starts_with("web-1"),
        "{table}"
    );
    let (_, json, _) = ctl(&run, &["--json", "list"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["pid"].to_string(), pid);
    assert!(ctl(&run, &["unregister", "--id", "web-1"]).0);
    let (ok, _, err) = ctl(&run, &["unregister", "--id", "web-1"]);
    assert!(!ok && err.contains("not registered"), "{err}");
    let (ok, _, err) = ctl(&run, &["register", "--id", "../evil", "--pid", &pid]);
    assert!(!ok && err.starts_with("nsview: "), "{err}");
}

#[test]
fn status_counts_requests_and_errors() {
    let daemon = Daemon::start();
    let _ = std::fs::read_to_string(daemon.path("proc/uptime")).unwrap();
    let _ = std::fs::read_to_string(daemon.path("proc/nonexistent"));
    let (ok, out, err) = ctl(daemon.runtime_dir(), &["--json", "status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status["requests"].as_u64().unwrap() >= 2, "{status}");
    assert!(
        status["errors"]["ENOENT"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn registrations_survive_a_restart_and_dead_ones_do_not() {
    let (mount, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let daemon = Daemon::start_on(mount.path(), runtime.path(), &[]);
    let alive = ContainerBuilder::new().start();
    let run = daemon.runtime_dir().to_path_buf();
    assert!(
        ctl(
            &run,
            &[
                "register",
                "--id",
                "alive",
                "--pid",
                &alive.init_pid().to_string()
            ]
        )
        .0
    );
    {
        let doomed = ContainerBuilder::new().start();
        assert!(
            ctl(
                &run,
                &[
                    "register",
                    "--id",
                    "doomed",
                    "--pid",
                    &doomed.init_pid().to_string()
                ]
            )
            .0
        );
    }
    let (status, _, _) = daemon.terminate();
    assert!(status.success());
    let daemon = Daemon::start_on(mount.path(), runtime.path(), &[]);
    let (_, json, _) = ctl(daemon.runtime_dir(), &["--json", "list"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alive"]);
}

#[test]
fn a_registered_cpu_view_overrides_the_daemons() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(Limits {
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            ..Limits::default()
        })
        .bind_from(&daemon, &["sys/devices/system/cpu"])
        .start();
    // getconf, not nproc --all: gnulib's nproc distrusts a sysconf answer of 1 and uses the
    // affinity mask then (both CPUs here, the container being limited by quota only).
    let nproc = || c.sh("getconf _NPROCESSORS_CONF").stdout.trim().to_owned();
    assert_eq!(nproc(), "1");
    let pid = c.init_pid().to_string();
    let args = [
        "register",
        "--id",
        "c",
        "--pid",
        &pid,
        "--cpu-view",
        "cpuset",
    ];
    assert!(ctl(daemon.runtime_dir(), &args).0);
    let all = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    // The CPU list is re-read at most once a second: the cpuset view shows within a few
    // (a generous bound for a loaded machine), not necessarily at once.
    let registered = Instant::now();
    let mut seen = nproc();
    while seen != all && registered.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        seen = nproc();
    }
    assert_eq!(seen, all, "after {:?}", registered.elapsed());
}

#[test]
fn bad_clients_get_errors_and_do_not_disturb_others() {
    let daemon = Daemon::start();
    // A client that connects and never writes.
    let _silent = UnixStream::connect(socket(&daemon)).unwrap();
    let answer = exchange(&daemon, b"{not json\n");
    assert!(
        answer.contains("\"ok\":false") && answer.contains("bad request"),
        "{answer}"
    );
    let answer = exchange(&daemon, b"{\"op\":\"format_disk\"}\n");
    assert!(answer.contains("unknown variant"), "{answer}");
    let mut long = vec![b'x'; 70 * 1024];
    long.push(b'\n');
    let answer = exchange(&daemon, &long);
    assert!(answer.contains("longer than"), "{answer}");
    // A client that is not root: the runtime dir is 0700 and the socket 0600, so open both
    // up to reach SO_PEERCRED. The refusal comes at once, before any request (sending one
    // could race the close).
    let path = socket(&daemon);
    let mode = std::os::unix::fs::PermissionsExt::from_mode;
    std::fs::set_permissions(daemon.runtime_dir(), mode(0o711)).unwrap();
    std::fs::set_permissions(&path, mode(0o666)).unwrap();
    let probe = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
         print(s.recv(4096).decode())",
        path.display().to_string()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &probe,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("root only"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Everyone else is still served.
    let (ok, _, err) = ctl(daemon.runtime_dir(), &["status"]);
    assert!(ok, "{err}");
}

#[test]
fn ctl_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = ctl(dir.path(), &["list"]);
    assert!(!ok);
    assert!(err.contains("nsview is not running"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn idle_and_trickling_clients_never_keep_a_new_one_out() {
    let daemon = Daemon::start();
    // Every slot held by a client that has finished a request and then went silent...
    let mut held: Vec<UnixStream> = (0..nsview::control::MAX_CLIENTS)
        .map(|_| UnixStream::connect(socket(&daemon)).unwrap())
        .collect();
    for stream in &mut held {
        stream.write_all(b"{\"op\":\"list\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&*stream).read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":true"), "{line}");
    }
    // ... and a few more that trickle half a request, a byte now and then.
    let mut tricklers: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(socket(&daemon)).unwrap())
        .collect();
    for stream in &mut tricklers {
        stream.write_all(b"{\"op\"").unwrap();
    }
    // Before, `ctl status` then waited for a slot until the idle deadline (10 s) and its own
    // timeout failed it. Now the longest-idle clients are closed to make room.
    for _ in 0..3 {
        let (ok, out, err) = ctl(daemon.runtime_dir(), &["--json", "status"]);
        assert!(ok, "{err}");
        assert!(out.contains("\"version\""), "{out}");
    }
    // The tricklers took the slots of idle clients (which, among nearly equally idle ones,
    // is up to the order their threads marked them idle).
    let closed = held
        .iter()
        .filter(|stream| {
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut rest = String::new();
            matches!(BufReader::new(*stream).read_line(&mut rest), Ok(0))
        })
        .count();
    assert!(closed >= 1, "no idle client was closed");
}

#[test]
fn registration_takes_only_a_pid_namespaces_init_and_one_id_for_it() {
    let daemon = Daemon::start();
    let run = daemon.runtime_dir().to_path_buf();
    let c = ContainerBuilder::new().start();
    // A host process (this test) and a process inside the container that is not its init.
    let me = std::process::id().to_string();
    let (ok, _, err) = ctl(&run, &["register", "--id", "host", "--pid", &me]);
    assert!(
        !ok && err.contains("not the init of a pid namespace"),
        "{err}"
    );
    let mut inner = c.spawn(&["sleep", "30"]);
    let children = format!("/proc/{0}/task/{0}/children", inner.id());
    let mut sleeper = String::new();
    for _ in 0..500 {
        sleeper = std::fs::read_to_string(&children).unwrap_or_default();
        if !sleeper.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let sleeper = sleeper.split_whitespace().next().expect("no sleep child");
    let (ok, _, err) = ctl(&run, &["register", "--id", "inner", "--pid", sleeper]);
    assert!(
        !ok && err.contains("not the init of a pid namespace"),
        "{err}"
    );
    let _ = inner.kill();
    let _ = inner.wait();
    // Its init registers, under one id only.
    let init = c.init_pid().to_string();
    assert!(ctl(&run, &["register", "--id", "one", "--pid", &init]).0);
    let (ok, _, err) = ctl(&run, &["register", "--id", "two", "--pid", &init]);
    assert!(!ok && err.contains("is registered as one"), "{err}");
    // Said in the daemon's log as well (crun drops a failed hook's stderr).
    assert!(
        daemon
            .log()
            .contains("container two: refused: register two"),
        "{}",
        daemon.log()
    );
    let (_, json, _) = ctl(&run, &["--json", "list"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn unknown_fields_are_refused_and_a_closed_stdout_is_no_crash() {
    let daemon = Daemon::start();
    let answer = exchange(&daemon, b"{\"op\":\"list\",\"x\":1}\n");
    assert!(
        answer.contains("\"ok\":false") && answer.contains("unknown field"),
        "{answer}"
    );
    // `nsview ctl status | head -1` where head is gone before ctl writes: before, a panic
    // ("failed printing to stdout: Broken pipe") and exit status 101.
    let out = Command::new("bash")
        .arg("-c")
        .arg("\"$0\" ctl --runtime-dir \"$1\" status | (exec <&-; sleep 0.5); echo \"rc ${PIPESTATUS[0]}\"")
        .arg(env!("CARGO_BIN_EXE_nsview"))
        .arg(daemon.runtime_dir())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout.trim(), "rc 0", "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
