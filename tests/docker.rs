//! Docker end to end, the way most LXCFS users run it today: nsview's files bound over the
//! container's with `-v` (no hook, no registration). A private dockerd of the test's own
//! (Debian's docker.io 20.10: its socket, data and exec roots in a scratch directory, vfs
//! storage, no iptables, no bridge, IP forwarding left alone) runs a busybox image imported
//! from a tarball, with the host's /usr for procps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::{busybox_rootfs, field, host_uptime, outcome, tar_of, uptime_in};
use crate::rig::{Daemon, HostFiles};

static NEXT: AtomicUsize = AtomicUsize::new(0);
const IMAGE: &str = "nsview-test-busybox";

/// A dockerd of this test's own: its containers removed and it stopped (with the containerd
/// it manages) on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    process: Option<Child>,
}

impl Dockerd {
    fn start() -> Dockerd {
        Dockerd::start_with(|_, _| {})
    }

    /// Like [`Dockerd::start`]; `adjust` changes daemon.json first (it gets the scratch
    /// directory too).
    fn start_with(adjust: impl FnOnce(&mut serde_json::Value, &Path)) -> Dockerd {
        let dir = rig::scratch_dir();
        let config = dir.path().join("daemon.json");
        let mut json = serde_json::json!({
            "storage-driver": "vfs", "iptables": false, "ip6tables": false,
            "bridge": "none", "ip-forward": false, "ip-masq": false,
        });
        adjust(&mut json, dir.path());
        std::fs::write(&config, json.to_string()).unwrap();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let namespace = format!("nsview-test-docker-{}-{n}", std::process::id());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let process = Command::new("/usr/sbin/dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!(
                "unix://{}",
                dir.path().join("docker.sock").display()
            ))
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-p")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian's docker.io package)");
        let dockerd = Dockerd {
            dir,
            process: Some(process),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd.docker(&["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                dockerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd.import_image();
        dockerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker -H <ours> ARGS`: (success, stdout, stderr).
    fn docker(&self, args: &[&str]) -> (bool, String, String) {
        let host = format!("unix://{}", self.dir.path().join("docker.sock").display());
        outcome(
            Command::new("/usr/bin/docker")
                .arg("-H")
                .arg(host)
                .args(args),
        )
    }

    fn import_image(&self) {
        let rootfs = self.dir.path().join("rootfs");
        busybox_rootfs(
            &rootfs,
            &["sh", "cat", "head", "grep", "sleep", "echo"],
            true,
        );
        let tar = tar_of(&rootfs, &self.dir.path().join("rootfs.tar"));
        let (ok, _, err) = self.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(ok, "docker import: {err}");
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let (_, ids, _) = self.docker(&["ps", "-aq"]);
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut process) = self.process.take() {
            // SIGTERM: dockerd stops the containerd it started, then exits.
            // SAFETY: kill(2) on the dockerd this test started, by its pid.
            unsafe { libc::kill(process.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while process.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = process.kill();
            let _ = process.wait();
        }
        // Network namespaces dockerd left mounted under its exec root.
        rig::detach_beneath(&self.dir.path().join("exec"));
    }
}

/// The `-v` options that bind nsview's `files` (below its mountpoint) over the container's.
fn binds(daemon: &Daemon, files: &[&str]) -> Vec<String> {
    let mut args = Vec::new();
    for file in files {
        let source: PathBuf = daemon.path(file);
        args.push("-v".to_owned());
        args.push(format!("{}:/{file}:rw", source.display()));
    }
    args
}

const FILES: [&str; 5] = [
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "sys/devices/system/cpu",
];

/// `docker run` with nsview's [`FILES`] bound, 128 MiB on CPU 1, the host's /usr read-only
/// and no network, then `rest`.
fn run(dockerd: &Dockerd, daemon: &Daemon, rest: &[&str]) -> (bool, String, String) {
    let mut args: Vec<String> = [
        "run",
        "--network",
        "none",
        "--memory",
        "128m",
        "--cpuset-cpus",
        "1",
        "-v",
        "/usr:/usr:ro",
        // The VM's kernel has AppArmor, without the tools to load docker's profile.
        "--security-opt",
        "apparmor=unconfined",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(binds(daemon, &FILES));
    args.extend(rest.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dockerd.docker(&args)
}

fn two_cpus() -> bool {
    Path::new("/sys/devices/system/cpu/cpu1").exists()
}

#[test]
fn a_docker_container_with_lxcfs_style_binds_sees_its_limits() {
    if !two_cpus() {
        eprintln!("one CPU: the cpuset test needs CPU 1");
        return;
    }
    let daemon = Daemon::start();
    let dockerd = Dockerd::start();
    let host = HostFiles::sysctls(&["net/ipv4/ip_forward"]);
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo \"free $(/usr/bin/free -m | grep Mem:)\"; \
                  echo \"online $(cat /sys/devices/system/cpu/online)\"; \
                  echo \"nproc $(/usr/bin/nproc)\"; \
                  echo \"cpuinfo $(grep -c ^processor /proc/cpuinfo)\"; \
                  echo \"up $(cat /proc/uptime)\"";
    let before = host_uptime();
    let (ok, out, err) = run(&dockerd, &daemon, &["--rm", IMAGE, "sh", "-c", script]);
    let after = host_uptime();
    assert!(ok, "docker run: {err}\n{}", dockerd.log());
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB", "{out}");
    let free: Vec<&str> = field(&out, "free ").split_whitespace().collect();
    assert_eq!(free[..2], ["Mem:", "128"], "procps free -m");
    // cpuset 1: CPU 1 by its host number, the one sched_setaffinity takes.
    assert_eq!(field(&out, "online "), "1", "{out}");
    assert_eq!(field(&out, "nproc "), "1", "{out}");
    assert_eq!(field(&out, "cpuinfo "), "1", "{out}");
    let up = uptime_in(&out);
    assert!((before - 0.02..=after + 0.02).contains(&up), "uptime {up}");
    assert!(host.changed().is_empty(), "{:?}", host.changed());
}

#[test]
fn lxcfs_style_binds_come_back_after_the_daemon_is_killed_and_restarted() {
    if !two_cpus() {
        eprintln!("one CPU: the cpuset test needs CPU 1");
        return;
    }
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let dockerd = Dockerd::start();
    let (ok, id, err) = run(&dockerd, &daemon, &["-d", IMAGE, "sleep", "1000"]);
    assert!(ok, "docker run -d: {err}");
    let id = id.trim().to_owned();
    let meminfo = || dockerd.docker(&["exec", &id, "head", "-1", "/proc/meminfo"]);
    let (ok, out, err) = meminfo();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "MemTotal:         131072 kB");
    let stale = daemon.kill_leaving_stale_mount();
    let (ok, _, err) = meminfo();
    assert!(
        !ok && err.contains("not connected"),
        "a dead daemon's bind: {err}"
    );
    // No hook and no registration: reattach finds the binds in the container's mount
    // namespace (any owned by the host's user namespace) and replaces them.
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let (ok, out, err) = meminfo();
        if ok {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no meminfo after the restart: {err}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.trim(), "MemTotal:         131072 kB");
    let (ok, out, err) = dockerd.docker(&["exec", &id, "cat", "/sys/devices/system/cpu/online"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
}

#[test]
fn with_the_nsview_runtime_a_docker_container_gets_hooks_and_its_own_sysctls() {
    let daemon = Daemon::start();
    // deploy/docker: daemon.json's runtime, here a wrapper pointing nsview-runc at this
    // test's daemon.
    let dockerd = Dockerd::start_with(|json, dir| {
        let wrapper = dir.join("nsview-runc");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec env NSVIEW={} NSVIEW_ARGS='--mountpoint {} --runtime-dir {}' {} \"$@\"\n",
                rig::nsview_bin().display(),
                daemon.mountpoint().display(),
                daemon.runtime_dir().display(),
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("deploy/docker/nsview-runc")
                    .display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let shipped: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/daemon.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let mut runtimes = shipped["runtimes"].clone();
        runtimes["nsview"]["path"] = wrapper.to_str().unwrap().into();
        json["runtimes"] = runtimes;
    });
    let host = HostFiles::sysctls(&["net/ipv4/ip_forward", "kernel/core_pattern"]);
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
                  echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused";
    let (ok, out, err) = dockerd.docker(&[
        "run",
        "--rm",
        "--runtime",
        "nsview",
        "--network",
        "none",
        "--memory",
        "128m",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "apparmor=unconfined",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert!(ok, "docker run --runtime nsview: {err}\n{}", dockerd.log());
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB", "{out}");
    assert_eq!(field(&out, "fwd "), "1", "{out}");
    assert_eq!(field(&out, "core "), "refused", "{out}");
    assert!(host.changed().is_empty(), "{:?}", host.changed());
    // The hook registered it (the daemon logs its binds) and poststop unregistered it.
    assert!(
        daemon.log().contains(": bound /proc/cpuinfo"),
        "{}",
        daemon.log()
    );
    let registered_as = |want: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig::oci::registered(&daemon) != want {
            assert!(
                Instant::now() < deadline,
                "registered {:?}, not {want:?}",
                rig::oci::registered(&daemon)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    registered_as(&[]);
    // Its life: run -d, stop, start, rm; registered while it runs.
    let (ok, id, err) = dockerd.docker(&[
        "run",
        "-d",
        "--runtime",
        "nsview",
        "--network",
        "none",
        "--security-opt",
        "apparmor=unconfined",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert!(ok, "{err}");
    let id = id.trim().to_owned();
    let running = [id.clone()];
    registered_as(&running);
    let (ok, _, err) = dockerd.docker(&["stop", "-t", "1", &id]);
    assert!(ok, "docker stop: {err}");
    registered_as(&[]);
    let (ok, _, err) = dockerd.docker(&["start", &id]);
    assert!(ok, "docker start: {err}");
    registered_as(&running);
    let (ok, _, err) = dockerd.docker(&["rm", "-f", &id]);
    assert!(ok, "docker rm: {err}");
    registered_as(&[]);
}
