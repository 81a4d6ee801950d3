//! Rootless podman (user `nobody`): a clear refusal from the annotated pair, a start with
//! the always pair, and nsview's files bound with `-v` as LXCFS users bind them.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::rig;
use crate::rig::Daemon;
use crate::rig::oci::{busybox_rootfs, field, outcome, registered, tar_of};

use super::{IMAGE, host_memtotal, install_hooks, runtime};

/// A rootless podman of user `nobody` (one uid mapped: this machine has no subuid ranges),
/// with the given `deploy/hooks.d` pairs, vfs storage and no network; its files are removed
/// on drop.
struct Rootless {
    dir: tempfile::TempDir,
}

impl Rootless {
    fn new(daemon: &Daemon, hooks: &[&str]) -> Rootless {
        let dir = rig::scratch_dir();
        let hooks_dir = install_hooks(dir.path(), daemon.mountpoint(), daemon.runtime_dir(), hooks);
        let conf = format!(
            "[containers]\nnetns = \"none\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\nruntime = \"{}\"\nhooks_dir = [\"{}\"]\n",
            runtime(),
            hooks_dir.display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs, &["sh", "cat", "head"], false);
        let tar = tar_of(&rootfs, &dir.path().join("rootfs.tar"));
        // An XDG_RUNTIME_DIR podman accepts (the user's own, 0700), so that its pause
        // process is this test's alone (else it shares /tmp/podman-run-65534).
        let xdg = dir.path().join("xdg");
        std::fs::create_dir(&xdg).unwrap();
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
        let owned = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(owned.success());
        let rootless = Rootless { dir };
        let (ok, _, err) = rootless.podman(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(ok, "rootless podman import: {err}");
        rootless
    }

    /// `podman ARGS` as nobody: (success, stdout, stderr).
    fn podman(&self, args: &[&str]) -> (bool, String, String) {
        let dir = self.dir.path();
        outcome(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg("env")
                .arg(format!("HOME={}", dir.display()))
                .arg(format!("XDG_RUNTIME_DIR={}", dir.join("xdg").display()))
                .arg(format!(
                    "CONTAINERS_CONF={}",
                    dir.join("containers.conf").display()
                ))
                .arg("podman")
                .arg("--root")
                .arg(dir.join("storage"))
                .arg("--runroot")
                .arg(dir.join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args),
        )
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force"]);
        // Rootless podman keeps a pause process holding its user and mount namespaces.
        let pidfile = self.dir.path().join("xdg/libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the pause process of this test's podman, by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn rootless_podman_gets_a_clear_refusal_the_always_pair_and_lxcfs_style_binds() {
    if runtime() != "runc" {
        // crun here is the VM's, where the test's single-uid rootless setup was not tried.
        return;
    }
    let daemon = Daemon::start();
    // The annotated pair: the start fails with the hook's one line. Before: "control
    // socket .../nsview.sock: Permission denied".
    let annotated = Rootless::new(&daemon, &["nsview-annotated", "nsview-annotated-poststop"]);
    let (ok, _, err) = annotated.podman(&[
        "run",
        "--rm",
        "--annotation",
        "io.nsview.enabled=true",
        IMAGE,
        "true",
    ]);
    assert!(!ok, "a rootless start through the annotated pair passed");
    assert!(
        err.contains("nsview's hook needs root on the host"),
        "{err}"
    );
    drop(annotated);
    // The always pair (installed for every container, rootless ones too): it starts.
    let always = Rootless::new(&daemon, &["nsview-always", "nsview-always-poststop"]);
    let (ok, out, err) = always.podman(&["run", "--rm", IMAGE, "head", "-1", "/proc/meminfo"]);
    assert!(ok, "the always pair failed a rootless start: {err}");
    assert_eq!(field(&out, "MemTotal:"), host_memtotal());
    // What rootless users get: nsview's files bound with -v, as LXCFS users do. The load
    // average's task count is the container's own (a shell and cat), not the host's.
    let loadavg = daemon.path("proc/loadavg");
    let bind = format!("{}:/proc/loadavg:ro", loadavg.display());
    let (ok, out, err) =
        always.podman(&["run", "--rm", "-v", &bind, IMAGE, "cat", "/proc/loadavg"]);
    assert!(ok, "{err}");
    let tasks: u32 = out
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("loadavg {out:?}"));
    let host_tasks: u32 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        tasks <= 8 && tasks < host_tasks / 2,
        "{out}: the host has {host_tasks}"
    );
    assert!(registered(&daemon).is_empty());
}
