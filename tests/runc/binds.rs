//! What the hook binds: a symlinked target refused with the host file untouched, missing
//! targets skipped, the annotation's list, `--optional` with the daemon down, and no bind
//! reaching the host's mount table through shared propagation.

use std::path::Path;

use crate::rig;
use crate::rig::oci::{field, registered};
use crate::rig::{Daemon, HostFiles};

use super::{Bundle, runtime, with_host_usr};

/// Whether anything is mounted at `path` in this (the host's) mount namespace.
fn mounted_at(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    text.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

#[test]
fn a_symlinked_target_fails_the_start_and_the_host_file_stays_untouched() {
    let daemon = Daemon::start();
    let host = tempfile::tempdir().unwrap();
    let victim = host.path().join("victim");
    std::fs::write(&victim, "host file\n").unwrap();
    let bundle = Bundle::with(&daemon, "cat /proc/meminfo", |config, rootfs| {
        // No /proc mount: the hook meets the rootfs's own proc directory.
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/proc");
        std::os::unix::fs::symlink(&victim, rootfs.join("proc/meminfo")).unwrap();
    });
    let (ok, out, err) = bundle.run();
    assert!(!ok, "the container started: {out}");
    // runc passes a failed hook's stderr on, crun drops it: the daemon's log has it always.
    let why = "/proc/meminfo in the container's rootfs is a symbolic link: refused";
    assert!(
        daemon.log().contains(why) && (runtime() != "runc" || err.contains(why)),
        "{err}\n{}",
        daemon.log()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");
    assert!(!mounted_at(&victim));
    assert_eq!(registered(&daemon), Vec::<String>::new());
}

#[test]
fn missing_targets_are_skipped_and_the_annotation_narrows_the_binds() {
    let daemon = Daemon::start();
    let script = "grep ' - fuse nsview ' /proc/self/mountinfo | cut -d' ' -f5; \
                  head -1 /proc/meminfo";
    let bundle = Bundle::with(&daemon, script, |config, rootfs| {
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != "/sys");
        // No /sys mount: the rootfs's own sys directory is empty.
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/cut")).unwrap();
        config["annotations"] = serde_json::json!({
            "io.nsview.files": "proc/meminfo,proc/uptime,sys/devices/system/cpu",
        });
    });
    let (ok, out, err) = bundle.run();
    assert!(ok, "{err}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "/proc/meminfo",
            "/proc/uptime",
            "MemTotal:         131072 kB"
        ]
    );
    // runc drops a successful hook's stderr: the daemon logs what was skipped, as info (the
    // default list names files some machines lack, such as product_uuid without DMI).
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains(&format!(
                "container {}: bound /proc/meminfo /proc/uptime; skipped (no such target in \
                 the container) /sys/devices/system/cpu",
                bundle.id
            ))
        })
        .unwrap_or_else(|| panic!("no line for the skip: {log}"));
    assert!(line.contains(" INFO "), "{line}");
}

#[test]
fn with_oci_patch_optional_a_container_starts_while_the_daemon_is_down() {
    let daemon = Daemon::start();
    // oci-patch took /proc/sys out of runc's read-only paths for nsview's bind: without
    // nsview the container's own must be read-only again, never the kernel's writable one
    // (container root without a user namespace could set the host's core_pattern).
    let host = HostFiles::sysctls(&["vm/overcommit_memory", "kernel/core_pattern"]);
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo 1 > /proc/sys/vm/overcommit_memory && echo 'oc taken' || echo 'oc refused'";
    let optional = Bundle::build(&daemon, script, Some(&["--optional"]), |_, _| {});
    let required = Bundle::new(&daemon, script);
    let (status, _, _) = daemon.terminate();
    assert!(status.success());
    // Without the flag a start fails, saying why (before, every container on a node whose
    // base spec carried the hooks failed so, nsview's own pod included).
    let (ok, out, err) = required.run();
    assert!(!ok, "started without nsview: {out}");
    assert!(
        err.contains("nsview is not running") || runtime() != "runc",
        "{err}"
    );
    // With it, the container starts and sees the host's file.
    let (ok, out, err) = optional.run();
    assert!(ok, "{} run: {err}\n{out}", runtime());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(
        field(&out, "mem "),
        meminfo.lines().next().unwrap(),
        "{out}"
    );
    assert_eq!(field(&out, "oc "), "refused", "{out}");
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}

/// The host's mounts of nsview's filesystem (`fuse` with source `nsview`) beneath `dirs`.
fn nsview_mounts_on_the_host_beneath(dirs: &[&Path]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter(|l| l.contains(" - fuse nsview "))
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|point| dirs.iter().any(|d| Path::new(point).starts_with(d)))
        .collect()
}

#[test]
fn with_shared_propagation_no_nsview_bind_reaches_the_hosts_mount_table() {
    let daemon = Daemon::start();
    // The bundle and a volume on shared mounts of the host (as on a node whose / is shared),
    // the rootfs rshared, and the volume bound rshared: a Kubernetes Bidirectional mount
    // (for which CRI makes the rootfs rshared too).
    let shared = rig::scratch_dir();
    let volume = shared.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let _volume = rig::SharedMount::make(shared.path());
    let bundle = Bundle::with(&daemon, "exec sleep 1000", |config, rootfs| {
        with_host_usr(config, rootfs);
        config["linux"]["rootfsPropagation"] = "rshared".into();
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/volume", "type": "bind", "source": volume,
                "options": ["rbind", "rshared"],
            }));
    });
    let _bundle_dir = rig::SharedMount::make(bundle.dir.path());
    bundle.start_detached();
    let (ok, out, err) = bundle.exec(&["head", "-1", "/proc/meminfo"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "MemTotal:         131072 kB");
    // The container's own mounts in the volume do reach the host (Bidirectional works)...
    let (ok, _, err) = bundle.exec(&["/usr/bin/mount", "-t", "tmpfs", "probe", "/volume"]);
    assert!(ok, "{err}");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        host_mounts.contains(&format!("{} ", volume.display())),
        "the Bidirectional volume did not propagate"
    );
    // ...and no nsview bind does.
    let dirs = [bundle.dir.path(), shared.path()];
    assert_eq!(
        nsview_mounts_on_the_host_beneath(&dirs),
        Vec::<String>::new()
    );
}
