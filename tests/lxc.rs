//! LXC end to end with Debian's LXC 5 and `deploy/lxc/nsview.conf` (its paths pointed at
//! this test's daemon): a privileged container of a busybox rootfs with the host's /usr,
//! `lxc.mount.auto = proc:mixed sys:mixed`, no network, its cgroups under a name of the
//! test's own (`lxc.cgroup.dir`), a memory limit, and no AppArmor profile (the VM's kernel
//! has AppArmor, without LXC's profiles loaded).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::{busybox_rootfs, field, outcome, registered};
use crate::rig::{Daemon, HostFiles};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One LXC container of this test's own: stopped, its cgroups removed on drop.
struct Lxc {
    dir: tempfile::TempDir,
    name: String,
    cgroup: String,
}

/// Whether cgroup v2 is the only hierarchy (the VM) rather than v1 controllers (this host).
fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

impl Lxc {
    /// A container whose init runs `/bin/init.sh` (`script`), with nsview's hooks.
    fn new(daemon: &Daemon, script: &str) -> Lxc {
        let dir = rig::scratch_dir();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("c{n}");
        let cgroup = format!("nsview-test-lxc-{}-{n}", std::process::id());
        let rootfs = dir.path().join(&name).join("rootfs");
        busybox_rootfs(
            &rootfs,
            &["sh", "cat", "head", "grep", "sleep", "echo", "mount"],
            true,
        );
        let init = rootfs.join("bin/init.sh");
        std::fs::write(&init, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let hooks = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lxc/nsview.conf"),
        )
        .unwrap()
        .replace("/usr/local/bin/nsview", rig::nsview_bin().to_str().unwrap())
        .replace(
            "lxc-hook",
            &format!(
                "lxc-hook --mountpoint {} --runtime-dir {}",
                daemon.mountpoint().display(),
                daemon.runtime_dir().display()
            ),
        );
        let limit = if pure_v2() {
            "lxc.cgroup2.memory.max = 134217728\nlxc.cgroup2.cpuset.cpus = 0"
        } else {
            "lxc.cgroup.memory.limit_in_bytes = 134217728\nlxc.cgroup.cpuset.cpus = 0"
        };
        let config = format!(
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = dir:{rootfs}\n\
             lxc.mount.auto = proc:mixed sys:mixed\n\
             lxc.mount.entry = /usr usr none bind,ro 0 0\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.cgroup.dir = {cgroup}\n\
             {limit}\n\
             lxc.init.cmd = /bin/init.sh\n\
             lxc.log.file = {log}\n\
             lxc.log.level = DEBUG\n\
             {hooks}",
            rootfs = rootfs.display(),
            log = dir.path().join("lxc.log").display(),
        );
        std::fs::write(dir.path().join(&name).join("config"), config).unwrap();
        Lxc { dir, name, cgroup }
    }

    fn lxc(&self, tool: &str, args: &[&str]) -> (bool, String, String) {
        outcome(
            Command::new(tool)
                .args(["-n", &self.name, "-P"])
                .arg(self.dir.path())
                .args(args),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lxc.log")).unwrap_or_default()
    }

    /// A file of the container's rootfs, seen from the host.
    fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(&self.name).join("rootfs").join(rel)
    }

    /// `lxc-start -d`, then waits until the init wrote `/tmp/ready`.
    fn start(&self) {
        let (ok, _, err) = self.lxc("lxc-start", &["-d"]);
        assert!(ok, "lxc-start: {err}\n{}", self.log());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.file("tmp/ready").exists() {
            assert!(Instant::now() < deadline, "no /tmp/ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `lxc-attach -- sh -c script`: (success, stdout, stderr).
    fn attach(&self, script: &str) -> (bool, String, String) {
        self.lxc("lxc-attach", &["--", "/bin/sh", "-c", script])
    }
}

impl Drop for Lxc {
    fn drop(&mut self) {
        let _ = self.lxc("lxc-stop", &["-k"]);
        // The cgroups LXC made under this test's own name, deepest first.
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = hierarchies
            .flatten()
            .map(|h| h.path().join(&self.cgroup))
            .collect();
        roots.push(Path::new("/sys/fs/cgroup").join(&self.cgroup));
        // LXC's monitor may still be leaving its cgroup when lxc-stop returns: a few tries.
        for _ in 0..50 {
            let left: Vec<&PathBuf> = roots.iter().filter(|r| r.is_dir()).collect();
            if left.is_empty() {
                break;
            }
            for root in left {
                let _ = Command::new("find")
                    .arg(root)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const PROBE: &str = "echo \"mem $(head -1 /proc/meminfo)\" > /tmp/out; \
    echo \"free $(/usr/bin/free -m | grep Mem:)\" >> /tmp/out; \
    echo \"nproc $(/usr/bin/nproc)\" >> /tmp/out; \
    echo \"online $(cat /sys/devices/system/cpu/online)\" >> /tmp/out; \
    echo \"up $(cut -d' ' -f1 /proc/uptime)\" >> /tmp/out; \
    echo 1 > /proc/sys/net/ipv4/ip_forward && echo \"fwd $(cat /proc/sys/net/ipv4/ip_forward)\" >> /tmp/out; \
    echo 1 > /proc/sys/vm/overcommit_memory 2>/dev/null && echo 'oc taken' >> /tmp/out || echo 'oc refused' >> /tmp/out; \
    echo \"sys $(grep -c ' /proc/sys .* - fuse nsview ' /proc/self/mountinfo)\" >> /tmp/out";

#[test]
fn an_lxc_container_gets_its_limits_a_read_only_proc_sys_and_registers_for_its_life() {
    let daemon = Daemon::start();
    let host = HostFiles::sysctls(&["net/ipv4/ip_forward", "vm/overcommit_memory"]);
    let c = Lxc::new(
        &daemon,
        &format!("{PROBE}; touch /tmp/ready; exec sleep 1000"),
    );
    let before = rig::oci::host_uptime();
    c.start();
    let out = std::fs::read_to_string(c.file("tmp/out")).unwrap();
    // cpuset 0: one CPU, by its host number; the uptime is the boot clock's (no time
    // namespace).
    assert_eq!(field(&out, "nproc "), "1", "{out}");
    assert_eq!(field(&out, "online "), "0", "{out}");
    let up: f64 = field(&out, "up ").parse().unwrap();
    assert!(
        (before - 0.02..=rig::oci::host_uptime() + 0.02).contains(&up),
        "uptime {up}"
    );
    assert_eq!(field(&out, "mem "), "MemTotal:         131072 kB", "{out}");
    let free: Vec<&str> = field(&out, "free ").split_whitespace().collect();
    assert_eq!(free[..2], ["Mem:", "128"], "procps free -m: {out}");
    // proc:mixed: /proc/sys stays read-only (nsview's, bound read-only), its net writable
    // and the container's own.
    assert_eq!(field(&out, "fwd "), "1", "{out}");
    assert_eq!(field(&out, "oc "), "refused", "{out}");
    assert_eq!(field(&out, "sys "), "1", "{out}");
    assert!(host.changed().is_empty(), "{:?}", host.changed());
    assert_eq!(registered(&daemon), std::slice::from_ref(&c.name));
    let (ok, _, err) = c.lxc("lxc-stop", &["-k"]);
    assert!(ok, "{err}");
    // post-stop unregistered it; started again, it registers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !registered(&daemon).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", registered(&daemon));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(c.file("tmp/ready")).unwrap();
    c.start();
    assert_eq!(registered(&daemon), std::slice::from_ref(&c.name));
}

#[test]
fn an_lxc_container_reads_its_files_again_after_the_daemon_is_killed_and_restarted() {
    let mountpoint = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_on(mountpoint.path(), runtime.path(), &[]);
    let c = Lxc::new(&daemon, "touch /tmp/ready; exec sleep 1000");
    c.start();
    let check = "head -1 /proc/meminfo; cat /proc/sys/kernel/ostype; \
                 cat /proc/sys/kernel/random/boot_id; \
                 echo 1 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward";
    let (ok, before, err) = c.attach(check);
    assert!(ok, "{err}");
    let lines: Vec<&str> = before.lines().collect();
    assert_eq!(lines[0], "MemTotal:         131072 kB", "{before}");
    assert_eq!(lines[1], "Linux");
    assert_eq!(lines[3], "1");
    let stale = daemon.kill_leaving_stale_mount();
    let daemon = Daemon::start_on(stale.path(), runtime.path(), &[]);
    rig::oci::wait_for_reattach(&daemon);
    // LXC mounts its boot_id onto nsview's /proc/sys after the hook: reattach keeps it.
    let (ok, after, err) = c.attach(check);
    assert!(ok, "after the restart: {err}\n{}", daemon.log());
    assert_eq!(after, before, "{}", daemon.log());
    rig::oci::assert_reattached(&daemon, &c.name);
}
