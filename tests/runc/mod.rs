//! A real runc container wired to nsview with `nsview oci-patch` and `nsview oci-hook`.
//!
//! The bundle: a busybox rootfs, memory limit 128 MiB, `cpus: "0"`, CAP_NET_ADMIN and
//! CAP_SYS_ADMIN added to runc's default capabilities, its own cgroup
//! (`/nsview-test-runc-<pid>-<n>`, removed by runc), and runc's state under a private root.
//!
//! By topic: [`views`] (what a patched container sees and may write, on the host's pid
//! namespace and in a time namespace too), [`binds`] (what the hook binds, skips and refuses,
//! with the daemon down and with shared propagation) and [`reattach`] (a container's files
//! back after the daemon is killed and restarted).

mod binds;
mod reattach;
mod views;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::rig;
use crate::rig::Daemon;
use crate::rig::oci::{busybox_rootfs, oci_patch, outcome};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The OCI runtime under test: `$NSVIEW_TEST_RUNTIME` (the VM suite runs these tests with
/// crun too, which refuses this host's hybrid cgroups), else runc.
fn runtime() -> String {
    std::env::var("NSVIEW_TEST_RUNTIME").unwrap_or_else(|_| "runc".into())
}

/// A bundle and runc's state directory; `runc delete --force` on drop.
struct Bundle {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    id: String,
}

impl Bundle {
    /// A busybox bundle whose init runs `script`, patched for `daemon`.
    fn new(daemon: &Daemon, script: &str) -> Bundle {
        Bundle::with(daemon, script, |_, _| {})
    }

    /// Like [`Bundle::new`]; `adjust` changes the config and the rootfs before the patch.
    fn with(
        daemon: &Daemon,
        script: &str,
        adjust: impl FnOnce(&mut serde_json::Value, &Path),
    ) -> Bundle {
        Bundle::build(daemon, script, Some(&[]), adjust)
    }

    /// Like [`Bundle::with`], with extra arguments for `nsview oci-patch`, or without the
    /// patch (no hooks) when `None`.
    fn build(
        daemon: &Daemon,
        script: &str,
        patch_args: Option<&[&str]>,
        adjust: impl FnOnce(&mut serde_json::Value, &Path),
    ) -> Bundle {
        let dir = rig::scratch_dir();
        let state = rig::scratch_dir();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("nsview-test-runc-{}-{n}", std::process::id());
        let rootfs = dir.path().join("rootfs");
        let applets = [
            "sh", "cat", "head", "grep", "nproc", "ls", "hostname", "sleep", "echo",
        ];
        busybox_rootfs(&rootfs, &applets, false);
        let status = Command::new(runtime())
            .arg("spec")
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "runc spec");
        let config_path = dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        for set in ["bounding", "effective", "permitted"] {
            let caps = config["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap();
            caps.push("CAP_NET_ADMIN".into());
            caps.push("CAP_SYS_ADMIN".into());
        }
        config["linux"]["cgroupsPath"] = format!("/{id}").into();
        config["hostname"] = format!("h{n}").into();
        config["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 128 << 20},
            "cpu": {"cpus": "0"},
        });
        adjust(&mut config, &rootfs);
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let bundle = Bundle { dir, state, id };
        let Some(patch_args) = patch_args else {
            return bundle;
        };
        oci_patch(&config_path, daemon, patch_args);
        bundle
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(runtime());
        cmd.arg("--root")
            .arg(self.state.path())
            .current_dir(self.dir.path());
        cmd
    }

    /// The hostname its config gives it.
    fn hostname(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        config["hostname"].as_str().unwrap().to_owned()
    }

    /// `runc run` to completion: (success, stdout, stderr).
    fn run(&self) -> (bool, String, String) {
        outcome(self.runc().args(["run", &self.id]))
    }

    /// `runc run -d`: the container keeps running (its stdio is /dev/null).
    fn start_detached(&self) {
        let status = self
            .runc()
            .args(["run", "-d", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "runc run -d");
    }

    /// `runc exec <id> <args>`: (success, stdout, stderr).
    fn exec(&self, args: &[&str]) -> (bool, String, String) {
        outcome(self.runc().args(["exec", &self.id]).args(args))
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.runc().args(["delete", "--force", &self.id]).output();
    }
}

/// Binds the host's /usr read-only into the bundle (for procps), with usrmerge's links.
fn with_host_usr(config: &mut serde_json::Value, rootfs: &Path) {
    std::fs::create_dir_all(rootfs.join("usr")).unwrap();
    std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", rootfs.join("lib64")).unwrap();
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"],
        }));
}
