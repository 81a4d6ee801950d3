//! What the runtime tests (runc, crun, podman) share: running a runtime's command, asking
//! the daemon which containers are registered, and reading `key value` lines.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{Daemon, nsview_bin};

/// Runs `cmd` to completion: (success, stdout, stderr).
pub fn outcome(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nsview ctl --json list` of `daemon`: the registered ids.
pub fn registered(daemon: &Daemon) -> Vec<String> {
    let list = Command::new(nsview_bin())
        .args(["ctl", "--json", "list", "--runtime-dir"])
        .arg(daemon.runtime_dir())
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (at most 5 s) until `daemon` logs that its start-up reattach is done.
pub fn wait_for_reattach(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.log().contains("reattach done in") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value after `key` on the line starting with it.
pub fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
        .trim()
}

/// `nsview oci-patch CONFIG --mountpoint <daemon's> --runtime-dir <daemon's> ARGS`, which
/// must succeed.
pub fn oci_patch(config: &std::path::Path, daemon: &Daemon, args: &[&str]) {
    let patched = Command::new(nsview_bin())
        .arg("oci-patch")
        .arg(config)
        .arg("--mountpoint")
        .arg(daemon.mountpoint())
        .arg("--runtime-dir")
        .arg(daemon.runtime_dir())
        .args(args)
        .output()
        .unwrap();
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stderr)
    );
}

/// Asserts that `daemon`'s log reports container `id` reattached.
pub fn assert_reattached(daemon: &Daemon, id: &str) {
    let log = daemon.log();
    assert!(
        log.contains(&format!("reattach: {id}: reattached")),
        "{log}"
    );
}

/// The host's uptime now, in seconds.
pub fn host_uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// The first field of the `up ` line of `out` (see [`field`]): the uptime a container
/// printed.
pub fn uptime_in(out: &str) -> f64 {
    let up = field(out, "up ").split_whitespace().next().unwrap_or("");
    up.parse().unwrap_or_else(|_| panic!("no uptime in {out}"))
}

/// A busybox root filesystem at `rootfs`: the usual top directories, `/bin/busybox` and a
/// link per applet in `applets`; with `host_usr`, an empty `/usr` (for a bind of the host's,
/// which holds procps) and usrmerge's `/lib` and `/lib64` links into it.
pub fn busybox_rootfs(rootfs: &std::path::Path, applets: &[&str], host_usr: bool) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    if host_usr {
        std::fs::create_dir_all(rootfs.join("usr")).unwrap();
        std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", rootfs.join("lib64")).unwrap();
    }
}

/// A tarball `tar` of the directory `rootfs` (for `podman import`, `docker import`).
pub fn tar_of(rootfs: &std::path::Path, tar: &std::path::Path) -> std::path::PathBuf {
    let status = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the rootfs");
    tar.to_path_buf()
}
