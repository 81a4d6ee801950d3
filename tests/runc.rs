//! A real runc container wired to nsview with `nsview oci-patch` and `nsview oci-hook`.
//!
//! The bundle: a busybox rootfs, memory limit 128 MiB, `cpus: "0"`, CAP_NET_ADMIN and
//! CAP_SYS_ADMIN added to runc's default capabilities, its own cgroup
//! (`/nsview-test-runc-<pid>-<n>`, removed by runc), and runc's state under a private root.

mod rig;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rig::Daemon;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bundle and runc's state directory; `runc delete --force` on drop.
struct Bundle {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    id: String,
}

impl Bundle {
    /// A busybox bundle whose init runs `script`, patched for `daemon`.
    fn new(daemon: &Daemon, script: &str) -> Bundle {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let state = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("nsview-test-runc-{}-{n}", std::process::id());
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "cat", "head", "grep", "nproc", "ls", "hostname"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let status = Command::new("runc")
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
        config["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 128 << 20},
            "cpu": {"cpus": "0"},
        });
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let patched = Command::new(env!("CARGO_BIN_EXE_nsview"))
            .arg("oci-patch")
            .arg(&config_path)
            .arg("--mountpoint")
            .arg(daemon.mountpoint())
            .arg("--runtime-dir")
            .arg(daemon.runtime_dir())
            .output()
            .unwrap();
        assert!(
            patched.status.success(),
            "{}",
            String::from_utf8_lossy(&patched.stderr)
        );
        Bundle { dir, state, id }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(self.state.path())
            .current_dir(self.dir.path());
        cmd
    }

    /// `runc run` to completion: (success, stdout, stderr).
    fn run(&self) -> (bool, String, String) {
        let out = self.runc().args(["run", &self.id]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.runc().args(["delete", "--force", &self.id]).output();
    }
}

/// The value after `key` on the line starting with it.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
        .trim()
}

#[test]
fn a_runc_container_sees_its_limits_and_its_own_sysctls() {
    let daemon = Daemon::start();
    let script = "echo \"mem $(head -1 /proc/meminfo)\"; \
                  echo \"online $(cat /sys/devices/system/cpu/online)\"; \
                  echo \"nproc $(nproc)\"; \
                  echo \"up $(cat /proc/uptime)\"; \
                  echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\"; \
                  echo \"host $(cat /proc/sys/kernel/hostname) $(hostname)\"; \
                  echo 1 > /proc/sys/vm/overcommit_memory; echo \"oc $(cat /proc/sys/vm/overcommit_memory)\"; \
                  echo \"psi $(head -c 4 /proc/pressure/memory)\"";
    let bundle = Bundle::new(&daemon, script);
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap();
    let (ok, out, err) = bundle.run();
    assert!(ok, "runc run: {err}\n{out}");
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB");
    assert_eq!(field(&out, "online "), "0");
    assert_eq!(field(&out, "nproc "), "1");
    let up: f64 = field(&out, "up ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(up < 10.0, "uptime {up}");
    assert_eq!(field(&out, "fwd "), "1");
    let names: Vec<&str> = field(&out, "host ").split_whitespace().collect();
    assert_eq!(names[0], names[1], "kernel/hostname is the container's");
    assert_eq!(field(&out, "oc "), "1");
    assert_eq!(
        field(&out, "psi "),
        "some",
        "runc's allow-list excludes pressure; the hook binds it"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap(),
        host_overcommit
    );
    // poststop unregistered it.
    let list = Command::new(env!("CARGO_BIN_EXE_nsview"))
        .args(["ctl", "--json", "list", "--runtime-dir"])
        .arg(daemon.runtime_dir())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");
}
