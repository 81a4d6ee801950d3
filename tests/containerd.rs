//! containerd end to end, through `ctr` and Debian's containerd 1.6 with its runc shim: the
//! README's recipe (`ctr oci spec`, PATH added, `nsview oci-patch --optional`) run by a
//! private containerd of the test's own (its socket, root and state in a scratch directory,
//! the CRI plugin off). `ctr run --config` takes the spec whole, so the container's rootfs
//! is a directory of the test's (busybox, with the host's /usr for procps), not an image.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::{
    assert_reattached, busybox_rootfs, field, host_uptime, oci_patch, outcome, registered,
    wait_for_reattach,
};
use crate::rig::{Daemon, HostFiles};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A containerd of this test's own: killed on drop, after its containers.
struct Containerd {
    dir: tempfile::TempDir,
    process: Child,
    containers: std::cell::RefCell<Vec<String>>,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = rig::scratch_dir();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let process = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(dir.path().join("containerd.sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian's containerd package)");
        let containerd = Containerd {
            dir,
            process,
            containers: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !containerd.ctr(&["version"]).0 {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address <ours> ARGS`: (success, stdout, stderr).
    fn ctr(&self, args: &[&str]) -> (bool, String, String) {
        outcome(
            Command::new("ctr")
                .arg("--address")
                .arg(self.dir.path().join("containerd.sock"))
                .args(args),
        )
    }

    /// The README's spec for a container running `script`: `ctr oci spec` with PATH (which
    /// it lacks), a 128 MiB limit on CPU 0, CAP_NET_ADMIN/CAP_SYS_ADMIN, the host's /usr,
    /// this test's busybox rootfs, patched by `nsview oci-patch --optional` for `daemon`.
    fn spec(&self, daemon: &Daemon, script: &str) -> (String, PathBuf) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("nsview-test-ctr-{}-{n}", std::process::id());
        let bundle = self.dir.path().join(&id);
        let rootfs = bundle.join("rootfs");
        busybox_rootfs(
            &rootfs,
            &["sh", "cat", "head", "grep", "sleep", "echo"],
            true,
        );
        let (ok, text, err) = self.ctr(&["oci", "spec"]);
        assert!(ok, "ctr oci spec: {err}");
        let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
        spec["process"]["env"] = serde_json::json!(["PATH=/bin:/usr/bin"]);
        spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
        spec["hostname"] = format!("ctr{n}").into();
        spec["linux"]["cgroupsPath"] = format!("/{id}").into();
        spec["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 128 << 20},
            "cpu": {"cpus": "0"},
        });
        for set in ["bounding", "effective", "permitted"] {
            let caps = spec["process"]["capabilities"][set].as_array_mut().unwrap();
            caps.push("CAP_NET_ADMIN".into());
            caps.push("CAP_SYS_ADMIN".into());
        }
        spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"],
            }));
        let path = bundle.join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
        oci_patch(&path, daemon, &["--optional"]);
        (id, path)
    }

    /// `ctr run [-d] --config SPEC ID`; the container is deleted on drop.
    fn run(&self, id: &str, spec: &Path, detached: bool) -> (bool, String, String) {
        self.containers.borrow_mut().push(id.to_owned());
        let spec = spec.to_str().unwrap();
        let mut args = vec!["run", "--config", spec];
        if detached {
            args.push("-d");
        } else {
            args.push("--rm");
        }
        args.push(id);
        self.ctr(&args)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.containers.borrow().iter() {
            let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.ctr(&["task", "delete", id]).0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.ctr(&["container", "delete", id]);
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn a_containerd_container_sees_its_limits_and_its_own_sysctls_and_registers_for_its_life() {
    let daemon = Daemon::start();
    let containerd = Containerd::start();
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo \"online $(cat /sys/devices/system/cpu/online)\"; \
                  echo \"nproc $(/usr/bin/nproc)\"; \
                  echo \"up $(cat /proc/uptime)\"; \
                  echo \"free $(/usr/bin/free -m | grep Mem:)\"; \
                  echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
                  echo x > /proc/sys/kernel/core_pattern && echo core taken || echo core refused";
    let (id, spec) = containerd.spec(&daemon, script);
    let host = HostFiles::sysctls(&["net/ipv4/ip_forward", "kernel/core_pattern"]);
    let before = host_uptime();
    let (ok, out, err) = containerd.run(&id, &spec, false);
    let after = host_uptime();
    assert!(ok, "ctr run: {err}\n{out}\n{}", containerd.log());
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB", "{out}");
    assert_eq!(field(&out, "online "), "0");
    assert_eq!(field(&out, "nproc "), "1");
    let free: Vec<&str> = field(&out, "free ").split_whitespace().collect();
    assert_eq!(free[..2], ["Mem:", "128"], "procps free -m");
    let up: f64 = field(&out, "up ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((before - 0.02..=after + 0.02).contains(&up), "uptime {up}");
    assert_eq!(field(&out, "fwd "), "1");
    assert_eq!(field(&out, "core "), "refused");
    assert!(
        host.changed().is_empty(),
        "changed on the host: {:?}",
        host.changed()
    );
    // Registered while it ran (the log says what the hook bound), gone after its poststop.
    assert!(
        daemon.log().contains(&format!("container {id}: bound ")),
        "{}",
        daemon.log()
    );
    assert!(registered(&daemon).is_empty(), "{:?}", registered(&daemon));
}

#[test]
fn ctr_exec_reads_the_files_again_after_the_daemon_is_killed_and_restarted() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let containerd = Containerd::start();
    let (id, spec) = containerd.spec(&daemon, "exec sleep 1000");
    let (ok, _, err) = containerd.run(&id, &spec, true);
    assert!(ok, "ctr run -d: {err}");
    let exec = |n: usize| {
        containerd.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &format!("e{n}"),
            &id,
            "cat",
            "/proc/meminfo",
        ])
    };
    let (ok, out, err) = exec(0);
    assert!(ok, "{err}");
    assert_eq!(field(&out, "MemTotal:"), "131072 kB");
    assert_eq!(registered(&daemon), std::slice::from_ref(&id));
    let stale = daemon.kill_leaving_stale_mount();
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    wait_for_reattach(&daemon);
    let (ok, out, err) = exec(1);
    assert!(ok, "after the restart: {err}\n{}", daemon.log());
    assert_eq!(field(&out, "MemTotal:"), "131072 kB");
    assert_reattached(&daemon, &id);
}

#[test]
fn with_the_daemon_down_a_containerd_container_starts_without_nsview() {
    let daemon = Daemon::start();
    let containerd = Containerd::start();
    let (id, spec) = containerd.spec(&daemon, "echo \"mem $(head -1 /proc/meminfo)\"");
    let (status, _, _) = daemon.terminate();
    assert!(status.success());
    let (ok, out, err) = containerd.run(&id, &spec, false);
    assert!(ok, "ctr run: {err}\n{out}");
    let host = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(field(&out, "mem "), host.lines().next().unwrap());
}
