//! The deployment files in `deploy/` parse, and their paths and flags match the daemon's
//! defaults (taken from the command line definition itself).

use clap::{CommandFactory, Parser};
use nsview::cli::Cli;
use serde_json::Value;

/// The default of `serve`'s argument `id`.
fn serve_default(id: &str) -> String {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
    arg.get_default_values()[0].to_string_lossy().into_owned()
}

fn deploy(rel: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&deploy(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_systemd_unit_runs_serve_with_the_defaults_and_survives_restarts() {
    let unit = deploy("nsview.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}"))
            .to_owned()
    };
    let exec = value("ExecStart");
    if let Err(e) = Cli::try_parse_from(exec.split_whitespace()) {
        panic!("ExecStart does not parse: {e}");
    }
    assert!(
        exec.contains(&format!("serve {}", serve_default("mountpoint"))),
        "{exec}"
    );
    assert!(
        exec.contains(&format!("--runtime-dir {}", serve_default("runtime_dir"))),
        "{exec}"
    );
    assert!(
        exec.contains(&format!("--cgroup-root {}", serve_default("cgroup_root"))),
        "{exec}"
    );
    assert_eq!(value("Restart"), "on-failure");
    // Only the daemon is killed: the keeper it started holds the connection across a crash.
    assert_eq!(value("KillMode"), "process");
    // A reload upgrades in place, through the daemon's own runtime directory.
    let reload = value("ExecReload");
    let words: Vec<&str> = reload.split_whitespace().collect();
    assert_eq!(words[1], "upgrade", "{reload}");
    match Cli::try_parse_from(&words).map(|c| c.command) {
        Ok(nsview::cli::Command::Upgrade(args)) => assert_eq!(
            args.runtime_dir.to_str(),
            Some(serve_default("runtime_dir").as_str())
        ),
        other => panic!("ExecReload is not an upgrade: {other:?}"),
    }
    assert_eq!(value("OOMScoreAdjust"), "-1000");
    // Half of it is the budget of kept cgroup files: room for 10000 containers' 48 each.
    let nofile: usize = value("LimitNOFILE").parse().unwrap();
    assert!(nofile / 2 >= 10_000 * nsview::cgroup::MAX_OPEN, "{nofile}");
}

#[test]
fn the_hooks_call_oci_hook_with_the_defaults() {
    for (file, stage, gated) in [
        ("hooks.d/nsview-annotated.json", "createRuntime", true),
        ("hooks.d/nsview-annotated-poststop.json", "poststop", true),
        ("hooks.d/nsview-always.json", "createRuntime", false),
        ("hooks.d/nsview-always-poststop.json", "poststop", false),
    ] {
        let hook = json(file);
        assert_eq!(hook["version"], "1.0.0", "{file}");
        assert_eq!(hook["stages"], serde_json::json!([stage]), "{file}");
        let args: Vec<&str> = hook["hook"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[1], "oci-hook", "{file}");
        if let Err(e) = Cli::try_parse_from(&args) {
            panic!("{file}: the hook's arguments do not parse: {e}");
        }
        let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
        assert_eq!(
            after("--mountpoint"),
            Some(serve_default("mountpoint").as_str()),
            "{file}"
        );
        assert_eq!(
            after("--runtime-dir"),
            Some(serve_default("runtime_dir").as_str()),
            "{file}"
        );
        let stage_arg = if stage == "poststop" {
            "poststop"
        } else {
            "create-runtime"
        };
        assert_eq!(after("--stage"), Some(stage_arg), "{file}");
        if gated {
            assert_eq!(
                hook["when"]["annotations"]["^io\\.nsview\\.enabled$"], "^true$",
                "{file}"
            );
        } else {
            assert_eq!(hook["when"]["always"], true, "{file}");
            assert!(
                args.contains(&"--optional"),
                "{file}: containers must start without nsview"
            );
        }
    }
}

#[test]
fn the_daemonsets_keeper_is_a_sidecar_beside_the_daemon_on_its_runtime_dir() {
    let ds = json("kubernetes/daemonset.json");
    let pod = &ds["spec"]["template"]["spec"];
    // A native sidecar (an init container that keeps running): started before the daemon,
    // and not restarted with it, so it holds the connection across the daemon's crashes.
    let keeper = &pod["initContainers"][0];
    assert_eq!(keeper["restartPolicy"], "Always");
    let daemon = &pod["containers"][0];
    assert_eq!(keeper["image"], daemon["image"]);
    let command: Vec<&str> = keeper["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command[1], "keeper");
    assert!(command.contains(&"--stay"), "{command:?}");
    let parsed = Cli::try_parse_from(&command).unwrap_or_else(|e| panic!("{e}"));
    let nsview::cli::Command::Keeper(args) = parsed.command else {
        panic!("not the keeper: {command:?}");
    };
    assert_eq!(
        args.runtime_dir.to_str(),
        Some(serve_default("runtime_dir").as_str())
    );
    let runtime_mount = |c: &serde_json::Value| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == serve_default("runtime_dir").as_str())
            .map(|m| m["name"].clone())
    };
    assert_eq!(runtime_mount(keeper), runtime_mount(daemon));
    assert!(runtime_mount(keeper).is_some());
}

#[test]
fn the_daemonset_is_privileged_with_host_pid_and_the_shared_mount() {
    let ds = json("kubernetes/daemonset.json");
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command[1..3],
        ["serve", serve_default("mountpoint").as_str()]
    );
    if let Err(e) = Cli::try_parse_from(&command) {
        panic!("the DaemonSet's command does not parse: {e}");
    }
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("no {path}"))
    };
    // The mountpoint's parent, not the mountpoint: after a crash the mountpoint is a dead
    // mount, on which a hostPath volume fails ("statfs ...: transport endpoint is not
    // connected") and the pod could never start again to recover it.
    let mountpoint = serve_default("mountpoint");
    let parent = std::path::Path::new(&mountpoint).parent().unwrap();
    assert_eq!(
        mount(parent.to_str().unwrap())["mountPropagation"],
        "Bidirectional"
    );
    assert!(
        mounts.iter().all(|m| m["mountPath"] != mountpoint.as_str()),
        "the mountpoint is a volume"
    );
    // A version the crate has, fully qualified (a short name resolves to a registry's:
    // containerd's docker.io/library, CRI-O's search list), pulled only when missing: the
    // image scripts/image builds offline.
    assert_eq!(
        container["image"],
        format!("localhost/nsview:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    mount(&serve_default("runtime_dir"));
    mount(&serve_default("cgroup_root"));
    for m in mounts {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert_eq!(
            volume["hostPath"]["path"], m["mountPath"],
            "host path of {}",
            m["name"]
        );
    }
}

#[test]
fn the_lxc_config_sets_both_hooks_to_lxc_hook_with_what_lxc_appends() {
    let conf = deploy("lxc/nsview.conf");
    let mut kinds = Vec::new();
    for line in conf.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        kinds.push(key.to_owned());
        let kind = key
            .strip_prefix("lxc.hook.")
            .unwrap_or_else(|| panic!("{line}"));
        // LXC (hook version 0) appends the container's name, the section and the type.
        let mut args: Vec<&str> = value.split_whitespace().collect();
        args.extend(["c1", "lxc", kind]);
        assert_eq!(args[0], "/usr/local/bin/nsview", "{line}");
        assert_eq!(args[1], "lxc-hook", "{line}");
        if let Err(e) = Cli::try_parse_from(&args) {
            panic!("{line}: does not parse: {e}");
        }
        assert!(args.contains(&"--optional"), "{line}");
    }
    assert_eq!(kinds, ["lxc.hook.mount", "lxc.hook.post-stop"]);
}

#[test]
fn dockers_runtime_is_the_shipped_wrapper_and_the_wrapper_patches_before_runc() {
    let json = json("docker/daemon.json");
    assert_eq!(
        json["runtimes"]["nsview"]["path"],
        "/usr/local/bin/nsview-runc"
    );
    let wrapper = deploy("docker/nsview-runc");
    let patch = wrapper
        .find("oci-patch --optional")
        .expect("no oci-patch --optional");
    let exec = wrapper
        .find("exec \"$runc\" \"$@\"")
        .expect("no exec of runc");
    assert!(patch < exec, "runc before the patch");
}
