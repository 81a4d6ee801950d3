//! What nsview ships, run for real: the DaemonSet's image built and its pod run as the
//! kubelet would, and the systemd unit under systemd as pid 1 of a container.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::{field, tar_of};

use super::Podman;

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

/// Removes podman container `.1` on drop.
struct Removed<'a>(&'a Podman, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = self.0.podman(&["rm", "--force", "--time", "5", &self.1]);
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
    // `podman run` options of container `c` of the pod, named `name`.
    let run_args = |c: &serde_json::Value, name: &str| -> Vec<String> {
        let mut args: Vec<String> = ["run", "-d", "--restart", "always", "--name", name]
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
        args
    };
    // The keeper sidecar first (the kubelet starts init containers first), then the daemon.
    let keeper = format!("nsview-test-keeper-{}", std::process::id());
    let keeper_args = run_args(&spec["initContainers"][0], &keeper);
    let keeper_args: Vec<&str> = keeper_args.iter().map(String::as_str).collect();
    let (ok, _, err) = podman.podman(&keeper_args);
    assert!(ok, "podman run of the DaemonSet's keeper: {err}");
    let _keeper = Removed(&podman, keeper.clone());
    let name = format!("nsview-test-{}", std::process::id());
    let args = run_args(&spec["containers"][0], &name);
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
    // The daemon is SIGKILLed: the keeper sidecar holds its connection, so its mount at the
    // node's /var/lib/nsview waits for the next daemon. The container starts again (restart
    // policy always, as the kubelet's): its volume is /var/lib, which a mount below does not
    // fail even when it is dead (a hostPath of the mountpoint itself did: "statfs ...:
    // transport endpoint is not connected").
    let pid_of = || -> i32 {
        let (_, pid, _) = podman.podman(&["inspect", "--format", "{{.State.Pid}}", &name]);
        pid.trim().parse().unwrap_or(0)
    };
    let pid = pid_of();
    assert!(pid > 0);
    let held = std::fs::File::open(mountpoint.join("proc/uptime")).unwrap();
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
    // The new daemon took the connection back from the keeper, and a descriptor opened
    // before the kill reads on.
    let status = std::process::Command::new(rig::nsview_bin())
        .args(["ctl", "--json", "--runtime-dir"])
        .arg(&run)
        .arg("status")
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["connection"]["generation"], 1, "{status}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
    assert_eq!(text.split_whitespace().count(), 2, "held uptime: {text:?}");
    // SIGTERM: the daemon unmounts; then the container goes.
    let (ok, _, err) = podman.podman(&["stop", "-t", "10", &name]);
    assert!(ok, "{err}");
    let _ = podman.podman(&["rm", "--force", &name]);
}

#[test]
fn the_systemd_unit_runs_for_real_survives_a_crash_and_upgrades_on_reload() {
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
    let journal = || inside(&["journalctl", "-u", "nsview", "--no-pager"]).1;
    let restarts = |n: u32| {
        let (_, restarts, _) = inside(&["systemctl", "show", "nsview", "-p", "NRestarts"]);
        restarts.trim() == format!("NRestarts={n}")
    };
    // A crash of the daemon: the keeper it started holds the connection (KillMode=process
    // leaves it be), Restart=on-failure brings the daemon back, and it takes the connection
    // over.
    let (ok, _, err) = inside(&[
        "systemctl",
        "kill",
        "--kill-whom=main",
        "-s",
        "KILL",
        "nsview",
    ]);
    assert!(ok, "{err}");
    until("nsview.service did not restart", &|| {
        restarts(1) && serving()
    });
    until(
        "the restarted daemon did not take the connection over",
        &|| journal().contains("took over the FUSE connection of /var/lib/nsview (generation 1"),
    );
    // `systemctl reload`: an upgrade in place, still serving.
    let (ok, _, err) = inside(&["systemctl", "reload", "nsview"]);
    assert!(ok, "systemctl reload nsview: {err}");
    until("no upgrade in the journal", &|| {
        journal().contains("(generation 2")
    });
    assert!(serving());
    assert!(restarts(1), "a reload is no restart");
    // A crash of the whole unit, the keeper with it: the next daemon recovers the dead mount
    // (before, ExecStartPre's `mkdir -p` failed on it and the unit stayed down).
    let (ok, _, err) = inside(&["systemctl", "kill", "-s", "KILL", "nsview"]);
    assert!(ok, "{err}");
    until("nsview.service did not restart again", &|| {
        restarts(2) && serving()
    });
    let journal = journal();
    assert!(
        journal.contains("stale fuse mount at /var/lib/nsview"),
        "{journal}"
    );
    let _ = podman.podman(&["rm", "--force", "-t", "5", &name]);
}
