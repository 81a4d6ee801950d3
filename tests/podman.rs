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

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::{
    assert_reattached, busybox_rootfs, field, host_uptime, outcome, registered, tar_of, uptime_in,
    wait_for_reattach,
};
use crate::rig::{Cgroup, Daemon, HostFiles, Limits};

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

#[test]
fn a_podman_container_sees_its_limits_and_its_own_sysctls() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo \"online $(cat /sys/devices/system/cpu/online)\"; \
                  echo \"nproc $(nproc)\"; \
                  echo \"up $(cat /proc/uptime)\"; \
                  echo \"free $(/usr/bin/free -m | grep Mem:)\"; \
                  echo \"uptime $(/usr/bin/uptime)\"; \
                  echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
                  echo 1 > /proc/sys/vm/overcommit_memory && echo \"oc $(cat /proc/sys/vm/overcommit_memory)\"; \
                  echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused";
    let before = host_uptime();
    let out = podman.run(
        &[
            "--rm",
            "--annotation",
            "io.nsview.enabled=true",
            "--memory",
            "128m",
            "--cpuset-cpus",
            "0",
            "--cap-add",
            "NET_ADMIN,SYS_ADMIN",
            "--security-opt",
            "unmask=/proc/sys",
            "-v",
            "/usr:/usr:ro",
        ],
        &["sh", "-c", script],
    );
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB");
    assert_eq!(field(&out, "online "), "0");
    assert_eq!(field(&out, "nproc "), "1");
    // Without a time namespace, the boot clock its processes' start times count on.
    let up = uptime_in(&out);
    assert!(
        (before - 0.02..=host_uptime() + 0.02).contains(&up),
        "uptime {up}"
    );
    let free: Vec<&str> = field(&out, "free ").split_whitespace().collect();
    assert_eq!(free[..2], ["Mem:", "128"], "procps free -m");
    assert!(field(&out, "uptime ").contains(" up "), "{out}");
    assert_eq!(field(&out, "fwd "), "1");
    assert_eq!(field(&out, "oc "), "1");
    assert_eq!(field(&out, "core "), "refused");
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
    // --rm: podman removed it, and the poststop hook unregistered it.
    wait_registered(&daemon, &[]);

    // Without the annotation the annotated pair leaves a container alone.
    let out = podman.run(
        &["--rm", "--memory", "128m"],
        &["head", "-1", "/proc/meminfo"],
    );
    assert_eq!(field(&out, "MemTotal:"), host_memtotal());
    let log = daemon.log();
    assert_eq!(log.matches(" registered (init ").count(), 1, "{log}");
}

#[test]
fn stop_start_restart_and_rm_register_and_unregister_the_container() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let id = podman.run(
        &[
            "-d",
            "--annotation",
            "io.nsview.enabled=true",
            "--memory",
            "96m",
        ],
        &["/bin/pause"],
    );
    let id = id.trim();
    let meminfo = || {
        let (ok, out, err) = podman.exec(id, "head -1 /proc/meminfo");
        assert!(ok, "{err}");
        field(&out, "MemTotal:").to_owned()
    };
    wait_registered(&daemon, &[id]);
    assert_eq!(meminfo(), "98304 kB");
    podman.lifecycle("stop", id);
    wait_registered(&daemon, &[]);
    podman.lifecycle("start", id);
    wait_registered(&daemon, &[id]);
    assert_eq!(meminfo(), "98304 kB");
    podman.lifecycle("restart", id);
    wait_registered(&daemon, &[id]);
    assert_eq!(meminfo(), "98304 kB");
    podman.lifecycle("rm", id);
    wait_registered(&daemon, &[]);
    let stores = daemon.runtime_dir().join("stores");
    assert!(
        std::fs::read_dir(&stores).unwrap().next().is_none(),
        "a store outlived it"
    );
}

#[test]
fn podman_exec_reads_the_files_again_after_the_daemon_is_killed_and_restarted() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let podman = Podman::new(
        mountpoint.path(),
        runtime.path(),
        &["nsview-annotated", "nsview-annotated-poststop"],
    );
    let id = podman.run(
        &[
            "-d",
            "--annotation",
            "io.nsview.enabled=true",
            "--memory",
            "128m",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "unmask=/proc/sys",
        ],
        &["/bin/pause"],
    );
    let id = id.trim();
    let (ok, out, err) = podman.exec(
        id,
        "echo 1 > /proc/sys/vm/overcommit_memory && head -1 /proc/meminfo",
    );
    assert!(ok, "{err}");
    assert_eq!(field(&out, "MemTotal:"), "131072 kB");

    let stale = daemon.kill_leaving_stale_mount();
    let (ok, _, err) = podman.exec(id, "cat /proc/meminfo");
    assert!(
        !ok && err.contains("not connected"),
        "a dead daemon's bind: {err}"
    );
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    wait_for_reattach(&daemon);
    let (ok, out, err) = podman.exec(
        id,
        "head -1 /proc/meminfo; cat /proc/sys/vm/overcommit_memory /sys/devices/system/cpu/online",
    );
    assert!(ok, "{err}\n{}", daemon.log());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "MemTotal:         131072 kB");
    // The stored value survived the restart with the container's network namespace.
    assert_eq!(lines[1], "1");
    assert_reattached(&daemon, id);
    podman.lifecycle("rm", id);
    wait_registered(&daemon, &[]);
    drop(podman);
    drop(daemon);
}

#[test]
fn the_containers_of_a_pod_share_their_values_and_no_one_else_sees_them() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let parent = format!("/{}", podman.cgroup.name());
    let (ok, _, err) = podman.podman(&[
        "pod",
        "create",
        "--name",
        "p",
        "--network",
        "none",
        "--cgroup-parent",
        &parent,
        "--infra-image",
        IMAGE,
        "--infra-command",
        "/bin/pause",
    ]);
    assert!(ok, "pod create: {err}");
    let member = [
        "--annotation",
        "io.nsview.enabled=true",
        "--security-opt",
        "unmask=/proc/sys",
    ];
    let writer: Vec<&str> = ["-d", "--pod", "p", "--cap-add", "SYS_ADMIN"]
        .into_iter()
        .chain(member)
        .collect();
    let a = podman.run(&writer, &["/bin/pause"]);
    let (ok, out, err) = podman.exec(
        a.trim(),
        "echo 3 > /proc/sys/kernel/panic && cat /proc/sys/kernel/panic",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "3");
    let reader: Vec<&str> = ["--rm", "--pod", "p"].into_iter().chain(member).collect();
    let out = podman.run(&reader, &["cat", "/proc/sys/kernel/panic"]);
    assert_eq!(out.trim(), "3", "a container of the same pod");
    let outsider: Vec<&str> = ["--rm"].into_iter().chain(member).collect();
    let out = podman.run(&outsider, &["cat", "/proc/sys/kernel/panic"]);
    assert_eq!(
        out.trim(),
        host.saved("/proc/sys/kernel/panic").unwrap().trim(),
        "outside the pod"
    );
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}

#[test]
fn a_container_with_its_own_user_namespace_sees_its_limits_and_keeps_its_values() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let script = "cat /proc/self/uid_map; head -1 /proc/meminfo; \
                  echo 1 > /proc/sys/vm/overcommit_memory && cat /proc/sys/vm/overcommit_memory; \
                  echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused";
    let out = podman.run(
        &[
            "--rm",
            "--annotation",
            "io.nsview.enabled=true",
            "--uidmap",
            "0:200000:65536",
            "--gidmap",
            "0:200000:65536",
            "--memory",
            "64m",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "unmask=/proc/sys",
        ],
        &["sh", "-c", script],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    assert_eq!(lines[1], "MemTotal:          65536 kB");
    assert_eq!(lines[2], "1");
    assert_eq!(lines[3], "core refused");
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}

#[test]
fn the_always_pair_starts_containers_with_and_without_a_daemon() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let podman = Podman::new(
        mountpoint.path(),
        runtime.path(),
        &["nsview-always", "nsview-always-poststop"],
    );
    let read = ["--rm", "--memory", "128m"];
    // No daemon: the container starts, without nsview.
    let out = podman.run(&read, &["head", "-1", "/proc/meminfo"]);
    assert_eq!(field(&out, "MemTotal:"), host_memtotal());
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let out = podman.run(&read, &["head", "-1", "/proc/meminfo"]);
    assert_eq!(
        field(&out, "MemTotal:"),
        "131072 kB",
        "no annotation needed"
    );
    wait_registered(&daemon, &[]);
    drop(podman);
    drop(daemon);
}

#[test]
fn with_the_daemon_down_the_annotated_pair_fails_the_start_saying_why() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let podman = Podman::new(
        mountpoint.path(),
        runtime.path(),
        &["nsview-annotated", "nsview-annotated-poststop"],
    );
    let parent = format!("/{}", podman.cgroup.name());
    // crun drops a hook's stderr unless run.oci.hooks.stderr names a file for it.
    let hook_stderr = podman.dir.path().join("hook-stderr");
    let keep = format!("run.oci.hooks.stderr={}", hook_stderr.display());
    let (ok, out, err) = podman.podman(&[
        "run",
        "--rm",
        "--cgroup-parent",
        &parent,
        "--annotation",
        "io.nsview.enabled=true",
        "--annotation",
        &keep,
        IMAGE,
        "true",
    ]);
    assert!(!ok, "started without nsview: {out}");
    // Before: "... (No such file or directory (os error 2)) ...: OCI runtime attempted to
    // invoke a command that was not found" and exit status 127, podman's reading of that
    // strerror text.
    assert!(!err.contains("command that was not found"), "{err}");
    let said = format!(
        "{err}{}",
        std::fs::read_to_string(&hook_stderr).unwrap_or_default()
    );
    assert!(said.contains("is nsview serve running?"), "{said}");
}

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

#[test]
fn cpus_read_only_privileged_and_pid_host_containers_get_their_views() {
    let daemon = Daemon::start();
    let podman = annotated(&daemon);
    let host = HostFiles::sysctls(&HOST_KEYS);
    let on = [
        "--rm",
        "--annotation",
        "io.nsview.enabled=true",
        "-v",
        "/usr:/usr:ro",
    ];
    let with = |extra: &[&str], script: &str| {
        let args = [&on[..], extra].concat();
        podman.run(&args, &["sh", "-c", script])
    };
    // --cpus 1 (a quota on this 2-CPU host): one CPU in every file and program.
    let out = with(
        &["--cpus", "1"],
        "echo \"online $(cat /sys/devices/system/cpu/online)\"; \
         echo \"getconf $(/usr/bin/getconf _NPROCESSORS_ONLN)\"; \
         echo \"cpuinfo $(grep -c ^processor /proc/cpuinfo)\"",
    );
    assert_eq!(field(&out, "getconf "), "1", "{out}");
    assert_eq!(field(&out, "cpuinfo "), "1", "{out}");
    assert!(!field(&out, "online ").contains(['-', ',']), "{out}");
    // --read-only: the binds are made before the rootfs turns read-only.
    let out = with(
        &["--read-only", "--memory", "96m"],
        "echo \"mem $(head -1 /proc/meminfo)\"; touch /x 2>/dev/null && echo rw || echo ro",
    );
    assert_eq!(field(&out, "mem "), "MemTotal:          98304 kB", "{out}");
    assert_eq!(field(&out, "ro"), "", "{out}");
    // --privileged: /proc/sys is writable without an unmask, still only the container's.
    let out = with(
        &["--privileged", "--memory", "128m"],
        "echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
         echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused",
    );
    assert_eq!(field(&out, "fwd "), "1", "{out}");
    assert_eq!(field(&out, "core "), "refused", "{out}");
    // --pid host: its tasks are host processes; its files follow its cgroup, and it is not
    // registered (the host's pid namespace is nobody's container).
    let out = with(
        &["--pid", "host", "--memory", "128m"],
        "echo \"mem $(head -1 /proc/meminfo)\"; echo \"pid1 $(cat /proc/1/comm)\"",
    );
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB", "{out}");
    assert_ne!(field(&out, "pid1 "), "sh", "{out}");
    assert!(registered(&daemon).is_empty(), "{:?}", registered(&daemon));
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
}

/// `path` readable within `limit`, or a panic saying `what`.
fn wait_readable(path: &Path, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while std::fs::read_to_string(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what}: {} unreadable",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemonsets_pod_runs_from_its_image_and_serves_again_after_its_daemon_is_killed() {
    let context = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image");
    assert!(
        context.join("nsview").exists(),
        "no {}: run scripts/image first (scripts/test does)",
        context.display()
    );
    // The node's /var/lib (shared, as on a node whose / is shared) and /run/nsview.
    let node = rig::scratch_dir();
    let (var_lib, run) = (node.path().join("var-lib"), node.path().join("run-nsview"));
    std::fs::create_dir_all(&var_lib).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let _shared = rig::SharedMount::make(&var_lib);
    let mountpoint = var_lib.join("nsview");
    let podman = Podman::new(
        &mountpoint,
        &run,
        &["nsview-annotated", "nsview-annotated-poststop"],
    );
    // The image, twice: the same binaries give the same image.
    let tag = format!("localhost/nsview:{}", env!("CARGO_PKG_VERSION"));
    let build = || {
        let context = context.to_str().unwrap();
        let (ok, id, err) =
            podman.podman(&["build", "-q", "--timestamp", "0", "-t", &tag, context]);
        assert!(ok, "podman build: {err}");
        id.trim().to_owned()
    };
    assert_eq!(build(), build(), "the image is reproducible");
    // The DaemonSet's pod template, run as the kubelet would run it: Debian's podman 4.3
    // has `kube play`, but it ignores hostPID (the container got a pid namespace of its own
    // and could not read its callers), so its fields become `podman run` options. The
    // host paths are the test's.
    let ds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/daemonset.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let name = format!("nsview-test-{}", std::process::id());
    let mut args: Vec<String> = ["run", "-d", "--restart", "always", "--name", &name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if spec["hostPID"] == true {
        args.extend(["--pid".into(), "host".into()]);
    }
    if c["securityContext"]["privileged"] == true {
        args.push("--privileged".into());
    }
    for m in c["volumeMounts"].as_array().unwrap() {
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        let host = match volume["hostPath"]["path"].as_str().unwrap() {
            "/var/lib" => var_lib.to_str().unwrap().to_owned(),
            "/run/nsview" => run.to_str().unwrap().to_owned(),
            other => other.to_owned(),
        };
        let propagation = match m["mountPropagation"].as_str() {
            Some("Bidirectional") => ":rshared",
            Some("HostToContainer") => ":rslave",
            _ => "",
        };
        args.push("-v".into());
        args.push(format!(
            "{host}:{}{propagation}",
            m["mountPath"].as_str().unwrap()
        ));
    }
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    args.extend(["--entrypoint".into(), command[0].into()]);
    args.push(c["image"].as_str().unwrap().into());
    args.extend(command[1..].iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = podman.podman(&args);
    assert!(ok, "podman run of the DaemonSet's container: {err}");
    // Its mount reaches the node (Bidirectional), and a container gets its files.
    wait_readable(
        &mountpoint.join("proc/meminfo"),
        Duration::from_secs(30),
        "the pod's daemon",
    );
    let read = || {
        let out = podman.run(
            &[
                "--rm",
                "--annotation",
                "io.nsview.enabled=true",
                "--memory",
                "128m",
            ],
            &["head", "-1", "/proc/meminfo"],
        );
        field(&out, "MemTotal:").to_owned()
    };
    assert_eq!(read(), "131072 kB");
    // The daemon is SIGKILLed: its mount at the node's /var/lib/nsview is dead. The
    // container starts again (restart policy always, as the kubelet's): its volume is
    // /var/lib, which a dead mount below does not fail (a hostPath of the mountpoint itself
    // did: "statfs ...: transport endpoint is not connected").
    let pid_of = || -> i32 {
        let (_, pid, _) = podman.podman(&["inspect", "--format", "{{.State.Pid}}", &name]);
        pid.trim().parse().unwrap_or(0)
    };
    let pid = pid_of();
    assert!(pid > 0);
    // SAFETY: kill(2) on the daemon of the container this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = pid_of();
        if now != 0 && now != pid && std::fs::read_to_string(mountpoint.join("proc/uptime")).is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not serve again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A container started afterwards gets nsview's files again.
    assert_eq!(read(), "131072 kB");
    // SIGTERM: the daemon unmounts; then the container goes.
    let (ok, _, err) = podman.podman(&["stop", "-t", "10", &name]);
    assert!(ok, "{err}");
    let _ = podman.podman(&["rm", "--force", &name]);
}

#[test]
fn the_systemd_unit_runs_for_real_restarts_after_a_kill_and_reloads_with_a_status_line() {
    // systemd as pid 1 of a podman container (`--systemd always`, the host's /usr), with
    // deploy/nsview.service as shipped but for the binary's path.
    let podman = Podman::new(Path::new("/nonexistent"), Path::new("/nonexistent"), &[]);
    let rootfs = podman.dir.path().join("systemd-rootfs");
    for d in [
        "etc/systemd/system",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var/lib",
        "usr",
        "root",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for (link, to) in [
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(to, rootfs.join(link)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(rootfs.join("etc/machine-id"), "").unwrap();
    let tar = tar_of(&rootfs, &podman.dir.path().join("systemd.tar"));
    let image = "localhost/nsview-test-systemd";
    let (ok, _, err) = podman.podman(&["import", tar.to_str().unwrap(), image]);
    assert!(ok, "{err}");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nsview.service"),
    )
    .unwrap()
    .replace("/usr/local/bin/nsview", "/opt/nsview/nsview");
    let unit_file = podman.dir.path().join("nsview.service");
    std::fs::write(&unit_file, unit).unwrap();
    let bin_dir = rig::nsview_bin().parent().unwrap().to_owned();
    let name = format!("nsview-test-systemd-{}", std::process::id());
    let (ok, _, err) = podman.podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--privileged",
        "--systemd",
        "always",
        "--device",
        "/dev/fuse",
        "-v",
        "/usr:/usr:ro",
        "-v",
        &format!("{}:/opt/nsview:ro", bin_dir.display()),
        "-v",
        &format!(
            "{}:/etc/systemd/system/nsview.service:ro",
            unit_file.display()
        ),
        image,
        "/lib/systemd/systemd",
    ]);
    assert!(ok, "podman run of systemd: {err}");
    let inside = |args: &[&str]| {
        let all = [&["exec", name.as_str()][..], args].concat();
        podman.podman(&all)
    };
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    until("systemd did not come up", &|| {
        let (_, state, _) = inside(&["systemctl", "is-system-running"]);
        matches!(state.trim(), "running" | "degraded")
    });
    let (ok, _, err) = inside(&["systemctl", "start", "nsview"]);
    assert!(ok, "systemctl start nsview: {err}");
    let serving = || inside(&["head", "-1", "/var/lib/nsview/proc/meminfo"]).0;
    until("nsview.service serves nothing", &serving);
    // A crash: Restart=on-failure brings it back, and the new daemon recovers the dead mount
    // (before, ExecStartPre's `mkdir -p` failed on it and the unit stayed down).
    let (ok, _, err) = inside(&["systemctl", "kill", "-s", "KILL", "nsview"]);
    assert!(ok, "{err}");
    until("nsview.service did not restart", &|| {
        let (_, restarts, _) = inside(&["systemctl", "show", "nsview", "-p", "NRestarts"]);
        restarts.trim() == "NRestarts=1" && serving()
    });
    // `systemctl reload`: SIGUSR1, a status line in the journal, still serving.
    let (ok, _, err) = inside(&["systemctl", "reload", "nsview"]);
    assert!(ok, "systemctl reload nsview: {err}");
    until("no status line in the journal", &|| {
        let (_, journal, _) = inside(&["journalctl", "-u", "nsview", "--no-pager"]);
        journal.contains("SIGUSR1: status {")
    });
    assert!(serving());
    let (_, journal, _) = inside(&["journalctl", "-u", "nsview", "--no-pager"]);
    assert!(
        journal.contains("stale fuse mount at /var/lib/nsview"),
        "{journal}"
    );
    let _ = podman.podman(&["rm", "--force", "-t", "5", &name]);
}
