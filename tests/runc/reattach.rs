//! The daemon killed and restarted under running containers: every bind back as it was
//! (writable, read-only, or left alone when covered), binds made without the hook too.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig::Daemon;
use crate::rig::oci::{field, outcome, registered, wait_for_reattach};

use super::Bundle;

#[test]
fn a_running_container_gets_its_files_back_after_the_daemon_is_killed() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let bundle = Bundle::new(&daemon, "exec sleep 1000");
    bundle.start_detached();
    let (ok, before, err) = bundle.exec(&["cat", "/proc/meminfo"]);
    assert!(ok, "{err}");
    assert_eq!(field(&before, "MemTotal:"), "131072 kB");
    assert_eq!(registered(&daemon), std::slice::from_ref(&bundle.id));
    let count_binds = || {
        let (ok, out, err) =
            bundle.exec(&["grep", "-c", " - fuse nsview ", "/proc/self/mountinfo"]);
        assert!(ok, "{err}");
        out.trim().parse::<usize>().unwrap()
    };
    let bound = count_binds();
    // All but the DMI file, which this kind of VM may lack.
    assert!(
        bound >= nsview::oci::DEFAULT_FILES.len() - 1,
        "{bound} binds"
    );
    // A descriptor opened before the restart, as procps keeps /proc/meminfo open.
    let state = outcome(bundle.runc().args(["state", &bundle.id])).1;
    let init: serde_json::Value = serde_json::from_str(&state).unwrap();
    let held_path = format!("/proc/{}/root/proc/meminfo", init["pid"]);
    let held = std::fs::File::open(&held_path).unwrap();

    let stale = daemon.kill_leaving_stale_mount();
    let (ok, _, err) = bundle.exec(&["cat", "/proc/meminfo"]);
    assert!(
        !ok && err.contains("not connected"),
        "a dead daemon's bind: {err}"
    );
    let restarted = Instant::now();
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    let (meminfo, took) = loop {
        let (ok, out, err) = bundle.exec(&["cat", "/proc/meminfo"]);
        if ok && out.starts_with("MemTotal:") {
            break (out, restarted.elapsed());
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "no meminfo within 2 s of the restart: {err}\nlog:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("meminfo back {took:?} after the restart");
    assert_eq!(field(&meminfo, "MemTotal:"), "131072 kB");
    // The container's line comes once all its binds are done, which may be after meminfo's.
    wait_for_reattach(&daemon);
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "reattach: {}: reattached ({bound} replaced, 0 live)",
            bundle.id
        )),
        "{log}"
    );
    // Every bind came back, writable where it was: proc/sys takes writes again.
    let (ok, out, err) = bundle.exec(&[
        "sh",
        "-c",
        "echo 1 > /proc/sys/vm/overcommit_memory && cat /proc/sys/vm/overcommit_memory \
         /sys/devices/system/cpu/online",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "0"], "{out}");
    assert_eq!(count_binds(), bound, "no stale bind is left stacked");

    // The old descriptor still names the dead connection; a new open reaches the new daemon.
    let err = std::os::unix::fs::FileExt::read_at(&held, &mut [0; 64], 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // (The test reads from the host's pid namespace: nsview shows it the host's values.)
    let text = std::fs::read_to_string(&held_path).unwrap();
    assert!(text.starts_with("MemTotal:"), "{text}");

    // On demand, with every bind live: nothing to do.
    let again = Command::new(env!("CARGO_BIN_EXE_nsview"))
        .args(["reattach", "--mountpoint"])
        .arg(daemon.mountpoint())
        .arg("--runtime-dir")
        .arg(daemon.runtime_dir())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{said}");
    assert_eq!(
        said.trim(),
        format!("{}: reattached (0 replaced, {bound} live)", bundle.id)
    );
    assert_eq!(count_binds(), bound, "nothing stacked");

    // runc delete runs the poststop hook against the new daemon.
    let (ok, _, err) = outcome(bundle.runc().args(["delete", "--force", &bundle.id]));
    assert!(ok, "{err}");
    assert_eq!(registered(&daemon), Vec::<String>::new());
    drop(bundle);
    drop(daemon);
}

#[test]
fn a_restart_keeps_a_read_only_proc_sys_read_only_and_leaves_covered_binds_alone() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    // runc's default readonlyPaths keep /proc/sys (bound read-only onto the hook's bind), and
    // a mask inside the bound cpu directory.
    let bundle = Bundle::build(
        &daemon,
        "exec sleep 1000",
        Some(&["--keep-readonly"]),
        |config, _| {
            config["linux"]["maskedPaths"]
                .as_array_mut()
                .unwrap()
                .push("/sys/devices/system/cpu/cpu0".into());
        },
    );
    bundle.start_detached();
    let probe = "cat /proc/sys/kernel/hostname; \
                 echo 1 > /proc/sys/vm/overcommit_memory || echo refused; \
                 cat /sys/devices/system/cpu/online";
    let (ok, before, err) = bundle.exec(&["sh", "-c", probe]);
    assert!(ok, "{err}");
    let own = bundle.hostname();
    assert_eq!(
        before.lines().collect::<Vec<_>>(),
        [own.as_str(), "refused", "0"]
    );
    assert!(err.contains("Read-only file system"), "{err}");

    let stale = daemon.kill_leaving_stale_mount();
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    wait_for_reattach(&daemon);
    let log = daemon.log();
    assert!(
        log.contains(
            "/sys/devices/system/cpu: has /sys/devices/system/cpu/cpu0 beneath it, which \
             cannot be made again; left alone"
        ),
        "{log}"
    );
    let (_, after, err) = bundle.exec(&["sh", "-c", probe]);
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines[..2], [own.as_str(), "refused"], "{after}\n{err}");
    assert!(
        err.contains("Read-only file system"),
        "/proc/sys stays read-only: {err}"
    );
    assert!(
        err.contains("not connected"),
        "the covered directory was left as it was: {err}"
    );
    drop(bundle);
    drop(daemon);
}

#[test]
fn binds_made_without_the_hook_come_back_after_a_restart_too() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    // LXCFS style: the runtime binds the files itself (runc allows these two under /proc).
    let sources = ["proc/meminfo", "proc/uptime"].map(|f| (f, daemon.path(f)));
    let bundle = Bundle::build(&daemon, "exec sleep 1000", None, |config, _| {
        let mounts = config["mounts"].as_array_mut().unwrap();
        for (file, source) in &sources {
            mounts.push(serde_json::json!({
                "destination": format!("/{file}"),
                "type": "bind",
                "source": source,
                "options": ["bind", "ro"],
            }));
        }
    });
    bundle.start_detached();
    let (ok, before, err) = bundle.exec(&["cat", "/proc/meminfo"]);
    assert!(ok, "{err}");
    assert_eq!(field(&before, "MemTotal:"), "131072 kB");
    assert_eq!(registered(&daemon), Vec::<String>::new(), "no hook ran");

    let stale = daemon.kill_leaving_stale_mount();
    // Another nsview (its own mount and runtime dir) leaves these binds alone.
    let other = Daemon::start();
    wait_for_reattach(&other);
    let (ok, _, err) = bundle.exec(&["cat", "/proc/meminfo"]);
    assert!(!ok && err.contains("not connected"), "{err}");
    drop(other);

    let restarted = Instant::now();
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    loop {
        let (ok, out, _) = bundle.exec(&["cat", "/proc/meminfo"]);
        if ok && out.starts_with("MemTotal:") {
            assert_eq!(field(&out, "MemTotal:"), "131072 kB");
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_reattach(&daemon);
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("reattach: mount namespace ")
            && l.ends_with("reattached (2 replaced, 0 live)")),
        "{log}"
    );
    drop(bundle);
    drop(daemon);
}
