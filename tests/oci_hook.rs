//! `nsview oci-hook` given bad input, and without a daemon: one clear line on stderr, a
//! non-zero exit (which fails the container's start), nothing registered; `--optional` lets a
//! container start when the daemon is not running.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::rig::Daemon;

/// Runs `nsview oci-hook --stage <stage> <args>` with `stdin`: (success, stderr).
fn hook(stage: &str, runtime_dir: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    hook_as(&[], stage, runtime_dir, args, stdin)
}

/// [`hook`] run through `prefix` (`setpriv ...`).
fn hook_as(
    prefix: &[&str],
    stage: &str,
    runtime_dir: &Path,
    args: &[&str],
    stdin: &str,
) -> (bool, String) {
    let (program, before) = match prefix.split_first() {
        Some((program, rest)) => (*program, rest.to_vec()),
        None => (env!("CARGO_BIN_EXE_nsview"), Vec::new()),
    };
    let nsview = (!prefix.is_empty()).then_some(env!("CARGO_BIN_EXE_nsview"));
    let mut child = Command::new(program)
        .args(before)
        .args(nsview)
        .args(["oci-hook", "--stage", stage, "--runtime-dir"])
        .arg(runtime_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nsview ctl --json list`, as text.
fn list(daemon: &Daemon) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nsview"))
        .args(["ctl", "--json", "list", "--runtime-dir"])
        .arg(daemon.runtime_dir())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A process to name as the container's init; killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("100").spawn().unwrap())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bundle directory whose config.json holds `config` (none when `None`).
fn bundle(config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    if let Some(text) = config {
        std::fs::write(dir.path().join("config.json"), text).unwrap();
    }
    dir
}

/// A valid container state `id`: a live init and a bundle with a valid config (both kept
/// alive by the caller), and the state's JSON.
fn live_state(id: &str) -> (Sleeper, tempfile::TempDir, String) {
    let init = Sleeper::new();
    let good = bundle(Some(r#"{"root": {"path": "rootfs"}}"#));
    let state = format!(
        r#"{{"id":"{id}","pid":{},"bundle":"{}"}}"#,
        init.0.id(),
        good.path().display()
    );
    (init, good, state)
}

#[test]
fn bad_container_states_fail_with_one_line_and_register_nothing() {
    let daemon = Daemon::start();
    let init = Sleeper::new();
    let good = bundle(Some(r#"{"root": {"path": "rootfs"}}"#));
    let no_config = bundle(None);
    let bad_config = bundle(Some("{\"root\": "));
    let dir_config = bundle(None);
    std::fs::create_dir(dir_config.path().join("config.json")).unwrap();
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let state = |pid: u32, bundle: &Path| {
        format!(
            r#"{{"ociVersion":"1.0.2","id":"bad-{pid}","status":"creating","pid":{pid},"bundle":"{}"}}"#,
            bundle.display()
        )
    };
    let cases = [
        ("", "no container state on stdin"),
        ("   \n", "no container state on stdin"),
        ("{\"id\": ", "container state: "),
        ("[1, 2]", "container state: "),
        (r#"{"pid": 1}"#, "container state: missing field `id`"),
        (
            &format!(r#"{{"id":"x","bundle":"{}"}}"#, good.path().display()),
            "the container state has no pid",
        ),
        (
            &state(dead, good.path()),
            &format!("the container's init (pid {dead}) does not exist"),
        ),
        (&state(0, good.path()), "pid 0 is not a process id"),
        (&state(init.0.id(), no_config.path()), "No such file"),
        (&state(init.0.id(), bad_config.path()), "config.json: "),
        (&state(init.0.id(), dir_config.path()), "config.json: "),
        (
            &format!(r#"{{"id":"x","pid":{}}}"#, init.0.id()),
            "the container state has no bundle",
        ),
    ];
    for (input, expected) in cases {
        for optional in [&[][..], &["--optional"][..]] {
            let (ok, err) = hook("create-runtime", daemon.runtime_dir(), optional, input);
            assert!(!ok, "{input:?} {optional:?} was accepted");
            assert!(
                err.starts_with("nsview: ") && err.contains(expected) && err.lines().count() == 1,
                "{input:?}: {err:?}, expected {expected:?}"
            );
        }
    }
    let (ok, err) = hook("poststop", daemon.runtime_dir(), &[], "");
    assert!(!ok && err.contains("no container state on stdin"), "{err}");
    assert_eq!(list(&daemon), "[]", "nothing was registered");
}

#[test]
fn without_a_daemon_the_hook_fails_unless_optional() {
    let runtime = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let (_init, good, state) = live_state("c1");
    let mountpoint_arg = ["--mountpoint", mountpoint.path().to_str().unwrap()];
    for (stage, says) in [
        ("create-runtime", "is nsview serve running?"),
        ("prestart", "is nsview serve running?"),
        ("poststop", "nsview is not running"),
    ] {
        let (ok, err) = hook(stage, runtime.path(), &mountpoint_arg, &state);
        assert!(!ok, "{stage}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{stage}: {err}"
        );
        let args = [&mountpoint_arg[..], &["--optional"]].concat();
        let (ok, err) = hook(stage, runtime.path(), &args, &state);
        assert!(ok, "{stage} --optional: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{stage}: {err}"
        );
    }
    // Nothing was bound anywhere: the rootfs is as it was.
    assert_eq!(
        std::fs::read_dir(good.path().join("rootfs"))
            .unwrap()
            .count(),
        0
    );
}

/// `chmod -R a+rX dir`: a bundle any user may read.
fn readable_by_all(dir: &Path) {
    let opened = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(dir)
        .status()
        .unwrap();
    assert!(opened.success());
}

#[test]
fn optional_forgives_an_absent_nsview_never_a_refused_step() {
    let daemon = Daemon::start();
    let (_init, bundle, state) = live_state("c3");
    // A bundle anyone may read: what fails is only the privileged work.
    readable_by_all(bundle.path());
    let at = ["--mountpoint", daemon.mountpoint().to_str().unwrap()];
    // Root without CAP_SYS_ADMIN: cloning the mount's files is refused. That is no absent
    // nsview: the start fails, --optional or not.
    let root_without_admin = [
        "setpriv",
        "--inh-caps=-sys_admin",
        "--bounding-set=-sys_admin",
        "--",
    ];
    for optional in [&[][..], &["--optional"][..]] {
        let args = [&at[..], optional].concat();
        let (ok, err) = hook_as(
            &root_without_admin,
            "create-runtime",
            daemon.runtime_dir(),
            &args,
            &state,
        );
        assert!(!ok, "{optional:?}: a refused step was forgiven: {err}");
        assert!(
            err.contains("Operation not permitted") && err.lines().count() == 1,
            "{optional:?}: {err}"
        );
    }
    assert_eq!(list(&daemon), "[]", "nothing was registered");
}

#[test]
fn an_unprivileged_hook_says_it_needs_root_and_optional_starts_the_container() {
    let daemon = Daemon::start();
    let (_init, bundle, state) = live_state("c4");
    readable_by_all(bundle.path());
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ];
    // As a rootless runtime runs it: root of a user namespace of nobody's.
    let rootless = [&nobody[..], &["unshare", "--user", "--map-root-user", "--"]].concat();
    let at = ["--mountpoint", daemon.mountpoint().to_str().unwrap()];
    for (who, prefix) in [("nobody", &nobody[..]), ("rootless", &rootless[..])] {
        // Before: "control socket ...: Permission denied", or "Operation not permitted".
        let (ok, err) = hook_as(prefix, "create-runtime", daemon.runtime_dir(), &at, &state);
        assert!(!ok, "{who}");
        assert!(
            err.contains("nsview's hook needs root on the host") && err.lines().count() == 1,
            "{who}: {err}"
        );
        for stage in ["create-runtime", "poststop"] {
            let args = [&at[..], &["--optional"]].concat();
            let (ok, err) = hook_as(prefix, stage, daemon.runtime_dir(), &args, &state);
            assert!(ok, "{who} {stage} --optional: {err}");
            assert!(
                err.contains("needs root") && err.lines().count() == 1,
                "{err}"
            );
        }
    }
    assert_eq!(list(&daemon), "[]", "nothing was registered");
}

#[test]
fn a_daemon_without_its_mount_fails_the_hook_unless_optional() {
    let daemon = Daemon::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let (_init, _bundle, state) = live_state("c2");
    let wrong = ["--mountpoint", elsewhere.path().to_str().unwrap()];
    let (ok, err) = hook("create-runtime", daemon.runtime_dir(), &wrong, &state);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "nsview's mount at {} is not there",
            elsewhere.path().display()
        )) && err.lines().count() == 1,
        "{err}"
    );
    let optional = [&wrong[..], &["--optional"]].concat();
    let (ok, err) = hook("create-runtime", daemon.runtime_dir(), &optional, &state);
    assert!(ok, "{err}");
    assert_eq!(list(&daemon), "[]", "nothing was registered");
}
