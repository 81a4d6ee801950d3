//! `nsview oci-patch` on config files: what it writes, what it refuses, what it leaves alone.

use std::process::Command;

fn patch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nsview"))
        .arg("oci-patch")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CONFIG: &str = r#"{
  "ociVersion": "1.0.2",
  "process": {"args": ["sh"], "cwd": "/"},
  "root": {"path": "rootfs"},
  "linux": {"readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/sys"]}
}"#;

#[test]
fn a_config_gets_both_hooks_once_and_loses_proc_sys_from_readonly_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, CONFIG).unwrap();
    let p = path.to_str().unwrap();
    let (ok, out, err) = patch(&[p, "--mountpoint", "/srv/nsview", "--hook", "/opt/nsview"]);
    assert!(ok, "{err}");
    assert!(out.contains("/proc/sys removed"), "{out}");
    let first = std::fs::read_to_string(&path).unwrap();
    assert!(patch(&[p, "--mountpoint", "/srv/nsview", "--hook", "/opt/nsview"]).0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first, "idempotent");
    let config: serde_json::Value = serde_json::from_str(&first).unwrap();
    let hook = &config["hooks"]["createRuntime"][0];
    assert_eq!(hook["path"], "/opt/nsview");
    let args: Vec<&str> = hook["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[1..4], ["oci-hook", "--stage", "create-runtime"]);
    assert!(
        args.windows(2)
            .any(|w| w == ["--mountpoint", "/srv/nsview"])
    );
    assert_eq!(config["hooks"]["poststop"][0]["args"][3], "poststop");
    assert_eq!(
        config["linux"]["readonlyPaths"],
        serde_json::json!(["/proc/bus", "/proc/fs"])
    );
    assert_eq!(config["root"]["path"], "rootfs");
}

#[test]
fn invalid_json_and_missing_files_are_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "{\"ociVersion\": ").unwrap();
    let (ok, _, err) = patch(&[path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("is not valid JSON") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"ociVersion\": ");
    let (ok, _, err) = patch(&[dir.path().join("nope.json").to_str().unwrap()]);
    assert!(!ok && err.contains("No such file"), "{err}");
    // Unreadable (root reads any mode, so: a directory in its place).
    let unreadable = dir.path().join("config.d");
    std::fs::create_dir(&unreadable).unwrap();
    let (ok, _, err) = patch(&[unreadable.to_str().unwrap()]);
    assert!(
        !ok && err.contains("Is a directory") && err.lines().count() == 1,
        "{err}"
    );
    std::fs::remove_dir(&unreadable).unwrap();
    for not_a_config in ["[]", "42", "{\"hooks\": 7}"] {
        std::fs::write(&path, not_a_config).unwrap();
        let (ok, _, err) = patch(&[path.to_str().unwrap()]);
        assert!(!ok && err.lines().count() == 1, "{not_a_config}: {err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), not_a_config);
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left behind");
}
