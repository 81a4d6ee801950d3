//! The daemon's life cycle: start, stop under load, a second daemon, a crashed daemon's stale
//! mount, restarts, and command-line misuse.

mod rig;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use rig::{ContainerBuilder, Daemon, Limits, is_mounted, nsview_bin};

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

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    let (code, err) = nsview(&["serve", path, "--runtime-dir", "/nonexistent-nsview-test"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("is not a directory"), "{err}");
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
