//! Rootful podman wired to nsview through the OCI hook pairs of `deploy/hooks.d`, as a user
//! installs them (only the binary's, mountpoint's and runtime directory's paths replaced).
//!
//! Every [`Podman`] is a podman of its own: storage (`vfs`), run and temporary directories in
//! a scratch directory, a `containers.conf` of its own (`CONTAINERS_CONF`) with file locks
//! (no shared memory segment), no network (`netns = "none"`, so podman never sets up a
//! bridge, which would turn on the host's `ip_forward`), the cgroupfs manager and a fresh
//! `nsview-test-<pid>-<n>` cgroup as the parent of every container's cgroup. Its image is a
//! busybox rootfs imported from a tarball made here, offline. The OCI runtime is
//! `$NSVIEW_TEST_RUNTIME` (the VM suite runs these tests with crun, which refuses this
//! host's hybrid cgroups), else runc.
//!
//! By topic: [`hooks`] (the annotated and always pairs: views, lifecycle, a daemon killed or
//! down), [`flags`] (pods, user namespaces, `--cpus`, `--read-only`, `--privileged`,
//! `--pid host`), [`rootless`] (rootless podman as `nobody`) and [`shipped`] (the
//! DaemonSet's image and pod, the systemd unit).

mod flags;
mod hooks;
mod rootless;
mod shipped;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::{busybox_rootfs, field, outcome, registered, tar_of};
use crate::rig::{Cgroup, Daemon, Limits};

const IMAGE: &str = "localhost/nsview-test-busybox";
/// The host values a container here might try to change.
const HOST_KEYS: [&str; 4] = [
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/core_pattern",
];

fn runtime() -> String {
    std::env::var("NSVIEW_TEST_RUNTIME").unwrap_or_else(|_| "runc".into())
}

/// A podman of its own; drop removes its pods and containers, then its files and cgroups.
struct Podman {
    dir: tempfile::TempDir,
    cgroup: Cgroup,
}

/// `deploy/hooks.d`'s files named in `hooks`, in `dir/hooks.d`, pointed at this build's
/// nsview, nsview's mount at `mountpoint` and its runtime directory `runtime_dir`.
fn install_hooks(dir: &Path, mountpoint: &Path, runtime_dir: &Path, hooks: &[&str]) -> PathBuf {
    let hooks_dir = dir.join("hooks.d");
    std::fs::create_dir(&hooks_dir).unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/hooks.d");
    for name in hooks {
        let text = std::fs::read_to_string(deploy.join(format!("{name}.json"))).unwrap();
        let text = text
            .replace("/usr/local/bin/nsview", rig::nsview_bin().to_str().unwrap())
            .replace("/var/lib/nsview", mountpoint.to_str().unwrap())
            .replace("/run/nsview", runtime_dir.to_str().unwrap());
        std::fs::write(hooks_dir.join(format!("{name}.json")), text).unwrap();
    }
    hooks_dir
}

/// A podman with the annotated pair, for `daemon`.
fn annotated(daemon: &Daemon) -> Podman {
    Podman::new(
        daemon.mountpoint(),
        daemon.runtime_dir(),
        &["nsview-annotated", "nsview-annotated-poststop"],
    )
}

impl Podman {
    /// A podman whose hooks are the `deploy/hooks.d` files named in `hooks`, pointed at
    /// nsview's mount at `mountpoint` and its runtime directory `runtime_dir`.
    fn new(mountpoint: &Path, runtime_dir: &Path, hooks: &[&str]) -> Podman {
        let dir = rig::scratch_dir();
        let hooks_dir = install_hooks(dir.path(), mountpoint, runtime_dir, hooks);
        // Limits no higher than the hard ones here: raising one needs CAP_SYS_RESOURCE, which
        // a session's root may lack (podman's defaults for root raise both).
        let conf = format!(
            "[containers]\nnetns = \"none\"\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\nlock_type = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\nruntime = \"{}\"\nhooks_dir = [\"{}\"]\n",
            runtime(),
            hooks_dir.display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        let podman = Podman {
            cgroup: Cgroup::create(&Limits::default()),
            dir,
        };
        podman.import_image();
        podman
    }

    /// `busybox` with its applets, `/bin/pause` (an init that ends on SIGTERM) and the
    /// directories procps from the host's `/usr` needs.
    fn import_image(&self) {
        let rootfs = self.dir.path().join("rootfs");
        let applets = [
            "sh", "cat", "head", "grep", "nproc", "sleep", "echo", "hostname",
        ];
        busybox_rootfs(&rootfs, &applets, true);
        let pause = rootfs.join("bin/pause");
        std::fs::write(
            &pause,
            "#!/bin/sh\ntrap 'exit 0' TERM INT\nsleep 100000 &\nwait\n",
        )
        .unwrap();
        std::fs::set_permissions(&pause, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tar = tar_of(&rootfs, &self.dir.path().join("rootfs.tar"));
        let (ok, _, err) = outcome(self.cmd().arg("import").arg(&tar).arg(IMAGE));
        assert!(ok, "podman import: {err}");
    }

    fn cmd(&self) -> Command {
        let dir = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", dir.join("containers.conf"))
            .arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    /// `podman <args>` to completion: (success, stdout, stderr).
    fn podman(&self, args: &[&str]) -> (bool, String, String) {
        outcome(self.cmd().args(args))
    }

    /// `podman run --cgroup-parent <ours> <args> IMAGE <command>`, which must succeed: its
    /// stdout (with `-d`, the container's id).
    fn run(&self, args: &[&str], command: &[&str]) -> String {
        let parent = format!("/{}", self.cgroup.name());
        let mut all = vec!["run", "--cgroup-parent", &parent];
        all.extend_from_slice(args);
        all.push(IMAGE);
        all.extend_from_slice(command);
        let (ok, out, err) = self.podman(&all);
        assert!(ok, "podman {all:?}: {err}\n{out}");
        out
    }

    /// `podman exec <id> sh -c <script>`: (success, stdout, stderr).
    fn exec(&self, id: &str, script: &str) -> (bool, String, String) {
        self.podman(&["exec", id, "sh", "-c", script])
    }

    /// `podman <verb> [-t 0] <id>`, which must succeed.
    fn lifecycle(&self, verb: &str, id: &str) {
        let mut args = vec![verb];
        match verb {
            "start" => {}
            "rm" => args.extend(["--force", "-t", "0"]),
            _ => args.extend(["-t", "0"]),
        }
        args.push(id);
        let (ok, out, err) = self.podman(&args);
        assert!(ok, "podman {verb}: {err}\n{out}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["pod", "rm", "--all", "--force", "-t", "0"]);
        let _ = self.podman(&["rm", "--all", "--force", "-t", "0"]);
        // Whatever podman left mounted in its directories (a container's /dev/shm).
        rig::detach_beneath(self.dir.path());
    }
}

/// The host's `MemTotal` line value.
fn host_memtotal() -> String {
    field(
        &std::fs::read_to_string("/proc/meminfo").unwrap(),
        "MemTotal:",
    )
    .to_owned()
}

/// Polls `nsview ctl list` (at most 5 s) until it is `want`: a poststop hook runs after
/// podman's command returns.
fn wait_registered(daemon: &Daemon, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = registered(daemon);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "registered {now:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
