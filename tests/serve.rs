//! The daemon's life cycle: start, stop under load, a second daemon, a crashed daemon's stale
//! mount, restarts, and command-line misuse.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::rig::{ContainerBuilder, Daemon, Limits, is_mounted, nsview_bin};

#[test]
fn sigterm_with_readers_active_unmounts_cleanly_and_exits_0() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(Limits::default())
        .bind_from(&daemon, &["proc/uptime"])
        .start();
    let mut readers: Vec<_> = (0..3)
        .map(|_| c.spawn(&["sh", "-c", "while cat /proc/uptime >/dev/null; do :; done"]))
        .collect();
    let host_path = daemon.path("proc/uptime");
    let host_reader = std::thread::spawn(move || {
        let mut ok = 0u32;
        while std::fs::read(&host_path).is_ok() {
            ok += 1;
        }
        ok
    });
    std::thread::sleep(Duration::from_millis(500));
    let mountpoint = daemon.mountpoint().to_path_buf();
    let (status, took, log) = daemon.terminate();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(took < Duration::from_secs(2), "took {took:?} to exit");
    assert!(!is_mounted(&mountpoint));
    assert!(
        host_reader.join().unwrap() > 0,
        "the host reader never read"
    );
    for r in &mut readers {
        let _ = r.kill();
        let _ = r.wait();
    }
}

#[test]
fn the_daemon_serves_on_through_every_signal_but_the_stop_signals() {
    let daemon = Daemon::start();
    let read = |daemon: &Daemon| std::fs::read_to_string(daemon.path("proc/uptime"));
    read(&daemon).unwrap();
    // What a service manager, an admin or a resource limit may send. Before, SIGHUP, SIGUSR1
    // and SIGUSR2 killed the daemon and left every container with ENOTCONN.
    let signals = [
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGPIPE,
        libc::SIGWINCH,
        libc::SIGURG,
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGCONT,
    ];
    for sig in signals {
        // SAFETY: kill(2) on the daemon this test started, by its pid.
        assert_eq!(unsafe { libc::kill(daemon.pid() as i32, sig) }, 0);
        std::thread::sleep(std::time::Duration::from_millis(100));
        if sig == libc::SIGTSTP {
            continue; // stopped until the SIGCONT that follows
        }
        assert!(
            read(&daemon).is_ok(),
            "after signal {sig}:\n{}",
            daemon.log()
        );
    }
    let log = daemon.log();
    for name in ["SIGHUP", "SIGUSR1", "SIGUSR2"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{name}: status {{")))
            .unwrap_or_else(|| panic!("no status line for {name}:\n{log}"));
        assert!(line.contains("\"containers_seen\""), "{line}");
    }
    assert!(log.contains("SIGALRM: ignored"), "{log}");
    // SIGQUIT stops it as SIGTERM does: unmounted, exit status 0.
    let (status, _, log) = daemon.stop_with(libc::SIGQUIT);
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("SIGQUIT: unmounting"), "{log}");
}

#[test]
fn sigint_stops_the_daemon_cleanly() {
    let daemon = Daemon::start();
    std::fs::read_to_string(daemon.path("proc/meminfo")).unwrap();
    let (status, _, log) = daemon.stop_with(libc::SIGINT);
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("SIGINT: unmounting"), "{log}");
}

/// The command lines of `deploy/nsview.service` with key `key`, each split into words, with
/// the unit's paths replaced by this test's (`/usr/local/bin/nsview` by the built binary).
fn unit_lines(key: &str, mountpoint: &Path, runtime_dir: &Path) -> Vec<Vec<String>> {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nsview.service"),
    )
    .unwrap();
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|line| {
            line.trim_start_matches(['-', '@', '+', '!'])
                .split_whitespace()
                .map(|w| match w {
                    "/usr/local/bin/nsview" => nsview_bin().display().to_string(),
                    "/var/lib/nsview" => mountpoint.display().to_string(),
                    "/run/nsview" => runtime_dir.display().to_string(),
                    w => w.to_string(),
                })
                .collect()
        })
        .collect()
}

/// A process this test started, SIGTERMed and waited for on drop.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the child this test started, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn the_systemd_units_command_lines_start_nsview_again_on_a_crashed_daemons_mount() {
    // What Restart=on-failure meets: the mountpoint holds a dead mount (ENOTCONN).
    let stale = Daemon::start().kill_leaving_stale_mount();
    let runtime_dir = tempfile::tempdir().unwrap();
    // (Linux 6.1 answers a stat there with ECONNABORTED, 6.18 with ENOTCONN.)
    let err = std::fs::metadata(stale.path()).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "{err}"
    );
    // Every command systemd runs before the daemon succeeds there (the unit's
    // `mkdir -p /var/lib/nsview` did not: "Transport endpoint is not connected").
    for words in unit_lines("ExecStartPre", stale.path(), runtime_dir.path()) {
        let out = Command::new(&words[0]).args(&words[1..]).output().unwrap();
        assert!(out.status.success(), "{words:?}: {out:?}");
    }
    let start = unit_lines("ExecStart", stale.path(), runtime_dir.path());
    assert_eq!(start.len(), 1, "{start:?}");
    let daemon = Started(
        Command::new(&start[0][0])
            .args(&start[0][1..])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let uptime = stale.path().join("proc/uptime");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&uptime).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{start:?} serves nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ExecReload's signal leaves it serving.
    for words in unit_lines("ExecReload", stale.path(), runtime_dir.path()) {
        let words: Vec<String> = words
            .into_iter()
            .map(|w| w.replace("$MAINPID", &daemon.0.id().to_string()))
            .collect();
        let out = Command::new(&words[0]).args(&words[1..]).output().unwrap();
        assert!(out.status.success(), "{words:?}: {out:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::fs::read_to_string(&uptime).is_ok(), "after ExecReload");
    drop(daemon);
}

#[test]
fn second_serve_on_a_served_mountpoint_fails_clearly() {
    let daemon = Daemon::start();
    let other_runtime = tempfile::tempdir().unwrap();
    let out = Command::new(nsview_bin())
        .arg("serve")
        .arg(daemon.mountpoint())
        .arg("--runtime-dir")
        .arg(other_runtime.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("already served by a live nsview"),
        "{stderr}"
    );
    // The first daemon is untouched.
    assert!(std::fs::read_to_string(daemon.path("proc/uptime")).is_ok());
}

#[test]
fn second_serve_with_the_same_runtime_dir_fails_clearly() {
    let daemon = Daemon::start();
    let other_mount = tempfile::tempdir().unwrap();
    let out = Command::new(nsview_bin())
        .arg("serve")
        .arg(other_mount.path())
        .arg("--runtime-dir")
        .arg(daemon.runtime_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("in use by another nsview"), "{stderr}");
    assert!(!is_mounted(other_mount.path()));
}

#[test]
fn a_crashed_daemons_stale_mount_is_recovered() {
    let daemon = Daemon::start();
    let stale = daemon.kill_leaving_stale_mount();
    let err = std::fs::read(stale.path().join("proc/uptime")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let runtime = tempfile::tempdir().unwrap();
    let again = Daemon::start_on(stale.path(), runtime.path(), &[]);
    let text = std::fs::read_to_string(again.path("proc/uptime")).unwrap();
    assert_eq!(text.split_whitespace().count(), 2, "{text:?}");
    assert!(again.log().contains("stale"), "log: {}", again.log());
}

#[test]
fn inode_numbers_survive_a_restart() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let inodes = |d: &Daemon| {
        ["proc", "proc/uptime", "sys"].map(|p| std::fs::metadata(d.path(p)).unwrap().ino())
    };
    let first = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let before = inodes(&first);
    let (status, _, _) = first.terminate();
    assert!(status.success());
    let second = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    assert_eq!(inodes(&second), before);
}

fn nsview(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(nsview_bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn command_line_misuse_says_what_was_wrong() {
    let (code, err) = nsview(&["serve", "--bogus"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unexpected argument '--bogus'") && err.contains("Usage"),
        "{err}"
    );

    let (code, err) = nsview(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("Usage"), "{err}");

    let (code, err) = nsview(&["serve", "--threads", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--threads"), "{err}");

    let (code, err) = nsview(&["serve", "--keeper-timeout=-1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--keeper-timeout must be 0"), "{err}");

    let (code, err) = nsview(&["keeper", "--timeout", "nan"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--timeout must be a positive number"), "{err}");

    let (code, err) = nsview(&["upgrade", "--runtime-dir", "/nonexistent-nsview-test"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nsview is not running"), "{err}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let (code, err) = nsview(&["serve", path, "--runtime-dir", "/nonexistent-nsview-test"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("is not a directory"), "{err}");
    assert!(
        !std::path::Path::new("/nonexistent-nsview-test").exists(),
        "a refused start made its runtime directory"
    );
}

#[test]
fn serving_as_a_non_root_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(nsview_bin())
        .arg("serve")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("must run as root"), "{err}");
}
