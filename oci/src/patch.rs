//! `nsview oci-patch CONFIG.json`: adds nsview's `createRuntime` and `poststop` hooks to an
//! OCI runtime config, idempotently (earlier nsview hooks are replaced, every other field is
//! kept), and removes `/proc/sys` from `linux.readonlyPaths` unless asked to keep it: through
//! nsview a write there reaches only the container's own namespaces or its container-local
//! values, never a machine-wide knob (see `views::sysctl`). The file is rewritten only when everything succeeded (a temporary
//! file renamed over it), so a bad config is left untouched.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::cli::OciPatchArgs;

/// Why patching failed; each one line.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The config cannot be read.
    #[error("{}", path.display())]
    Read {
        /// The config.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("{} is not valid JSON", path.display())]
    Json {
        /// The config.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but not an OCI config's shape.
    #[error("{}", path.display())]
    Shape {
        /// The config.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ShapeError,
    },
    /// The path of this `nsview`, for the hooks, is unknown (no `--hook` given).
    #[error("the path of this nsview, for the hooks (give --hook)")]
    CurrentExe(#[source] std::io::Error),
    /// The patched config cannot be written.
    #[error("{}", path.display())]
    Write {
        /// The config.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What in a config is not the shape of an OCI runtime config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The whole config is not an object.
    #[error("the config is not a JSON object")]
    NotAnObject,
    /// A field that must be an object (`hooks`, `linux`, `linux.timeOffsets`).
    #[error("\"{0}\" is not an object")]
    FieldNotAnObject(&'static str),
    /// A field that must be an array (`hooks.createRuntime`, `hooks.poststop`,
    /// `linux.namespaces`).
    #[error("\"{0}\" is not an array")]
    FieldNotAnArray(&'static str),
}

/// What to put in the config.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hook binary (this `nsview`).
    pub hook: PathBuf,
    /// The daemon's mountpoint.
    pub mountpoint: PathBuf,
    /// The daemon's runtime directory.
    pub runtime_dir: PathBuf,
    /// Keep `/proc/sys` in `linux.readonlyPaths`.
    pub keep_readonly: bool,
    /// Seconds to set the container's boot clock back by, in a time namespace of its own (the
    /// host's uptime now: the container's then starts at 0); `None` adds none.
    pub time_namespace: Option<u64>,
    /// The hooks let the container start without nsview when the daemon is not there.
    pub optional: bool,
}

/// The hook entry for `stage` (`create-runtime` or `poststop`).
pub fn hook_entry(opts: &Options, stage: &str) -> Value {
    let mut args = json!([
        "nsview",
        "oci-hook",
        "--stage",
        stage,
        "--mountpoint",
        opts.mountpoint,
        "--runtime-dir",
        opts.runtime_dir,
    ]);
    if opts.optional
        && let Some(list) = args.as_array_mut()
    {
        list.push("--optional".into());
    }
    json!({ "path": opts.hook, "args": args })
}

/// Whether a hook entry is one of nsview's (any earlier version, any path).
fn is_ours(hook: &Value) -> bool {
    hook["args"]
        .as_array()
        .is_some_and(|args| args.get(1).and_then(Value::as_str) == Some("oci-hook"))
}

/// Patches `config` in place; returns what it did, one line each.
pub fn patch(config: &mut Value, opts: &Options) -> Result<Vec<String>, ShapeError> {
    let root = config.as_object_mut().ok_or(ShapeError::NotAnObject)?;
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    let hooks = hooks
        .as_object_mut()
        .ok_or(ShapeError::FieldNotAnObject("hooks"))?;
    let mut said = Vec::new();
    for (stage_key, field, stage) in [
        ("createRuntime", "hooks.createRuntime", "create-runtime"),
        ("poststop", "hooks.poststop", "poststop"),
    ] {
        let list = hooks.entry(stage_key).or_insert_with(|| json!([]));
        let list = list
            .as_array_mut()
            .ok_or(ShapeError::FieldNotAnArray(field))?;
        let before = list.len();
        list.retain(|h| !is_ours(h));
        list.push(hook_entry(opts, stage));
        said.push(if list.len() == before {
            format!("{field}: nsview hook replaced")
        } else {
            format!("{field}: nsview hook added")
        });
    }
    if !opts.keep_readonly
        && let Some(paths) = root
            .get_mut("linux")
            .and_then(|l| l.get_mut("readonlyPaths"))
            .and_then(Value::as_array_mut)
    {
        let before = paths.len();
        paths.retain(|p| p.as_str() != Some("/proc/sys"));
        if paths.len() != before {
            // For the hook: should nsview's /proc/sys not be bound (the daemon down under
            // --optional, or left out), the container's own goes back to read-only, not the
            // kernel's writable one.
            let annotations = root.entry("annotations").or_insert_with(|| json!({}));
            if let Some(map) = annotations.as_object_mut() {
                map.insert(
                    super::hook::READONLY_PROC_SYS_ANNOTATION.into(),
                    "true".into(),
                );
            }
            said.push(
                "linux.readonlyPaths: /proc/sys removed (through nsview, writes there reach \
                 only the container's own namespaces and container-local values; \
                 --keep-readonly keeps it read-only)"
                    .to_owned(),
            );
        }
    }
    if let Some(back) = opts.time_namespace {
        said.push(add_time_namespace(root, back)?);
    }
    Ok(said)
}

/// Adds a `time` namespace (unless the config has one) with a boottime offset of `-back`
/// seconds, unless it has offsets of its own.
fn add_time_namespace(
    root: &mut serde_json::Map<String, Value>,
    back: u64,
) -> Result<String, ShapeError> {
    let linux = root.entry("linux").or_insert_with(|| json!({}));
    let linux = linux
        .as_object_mut()
        .ok_or(ShapeError::FieldNotAnObject("linux"))?;
    let namespaces = linux.entry("namespaces").or_insert_with(|| json!([]));
    let namespaces = namespaces
        .as_array_mut()
        .ok_or(ShapeError::FieldNotAnArray("linux.namespaces"))?;
    if namespaces.iter().any(|n| n["type"] == "time") {
        return Ok("linux.namespaces: a time namespace is there already; left as it is".into());
    }
    namespaces.push(json!({ "type": "time" }));
    let offsets = linux.entry("timeOffsets").or_insert_with(|| json!({}));
    let offsets = offsets
        .as_object_mut()
        .ok_or(ShapeError::FieldNotAnObject("linux.timeOffsets"))?;
    let secs = -i64::try_from(back).unwrap_or(i64::MAX);
    offsets
        .entry("boottime")
        .or_insert_with(|| json!({ "secs": secs, "nanosecs": 0 }));
    Ok(format!(
        "linux.namespaces: time namespace added, its boot clock {secs} s from the host's \
         (uptime, ps and btime inside start at the container's start)"
    ))
}

/// Runs `nsview oci-patch`.
pub fn run(args: &OciPatchArgs) -> Result<(), PatchError> {
    let path = &args.config;
    let text = std::fs::read_to_string(path).map_err(|source| PatchError::Read {
        path: path.clone(),
        source,
    })?;
    let mut config: Value = serde_json::from_str(&text).map_err(|source| PatchError::Json {
        path: path.clone(),
        source,
    })?;
    let hook = match &args.hook {
        Some(hook) => hook.clone(),
        None => std::env::current_exe().map_err(PatchError::CurrentExe)?,
    };
    let opts = Options {
        hook,
        mountpoint: args.mountpoint.clone(),
        runtime_dir: args.runtime_dir.clone(),
        keep_readonly: args.keep_readonly,
        time_namespace: args
            .time_namespace
            .then(|| nsview_core::procfs::boottime_secs() as u64),
        optional: args.optional,
    };
    let said = patch(&mut config, &opts).map_err(|source| PatchError::Shape {
        path: path.clone(),
        source,
    })?;
    write_atomically(path, &config).map_err(|source| PatchError::Write {
        path: path.clone(),
        source,
    })?;
    for line in said {
        // The config is written; a closed stdout loses only the report.
        let _ = nsview_proto::print_stdout(&format!("{}: {line}\n", path.display()));
    }
    Ok(())
}

/// Writes `config` beside `path` and renames it over `path`, keeping its permissions.
fn write_atomically(path: &Path, config: &Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(config).unwrap_or_default();
    text.push('\n');
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.nsview-tmp"));
    std::fs::write(&tmp, text)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            hook: "/usr/bin/nsview".into(),
            mountpoint: "/var/lib/nsview".into(),
            runtime_dir: "/run/nsview".into(),
            keep_readonly: false,
            time_namespace: None,
            optional: false,
        }
    }

    fn config() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"]},
            "hooks": {"poststop": [{"path": "/bin/true"}]},
            "linux": {"readonlyPaths": ["/proc/bus", "/proc/sys"], "namespaces": [{"type": "pid"}]},
        })
    }

    #[test]
    fn hooks_are_added_once_and_other_fields_kept() {
        let mut c = config();
        patch(&mut c, &opts()).unwrap();
        let once = c.clone();
        let said = patch(&mut c, &opts()).unwrap();
        assert_eq!(c, once, "idempotent");
        assert!(said[0].contains("replaced"));
        assert_eq!(c["hooks"]["createRuntime"].as_array().unwrap().len(), 1);
        let poststop = c["hooks"]["poststop"].as_array().unwrap();
        assert_eq!(poststop.len(), 2, "the runtime's own hook stays");
        assert_eq!(poststop[0]["path"], "/bin/true");
        assert_eq!(c["hooks"]["createRuntime"][0]["args"][3], "create-runtime");
        assert_eq!(c["process"]["args"][0], "sh");
        assert_eq!(c["linux"]["namespaces"][0]["type"], "pid");
    }

    #[test]
    fn optional_hooks_take_the_flag_and_a_repatch_can_drop_it() {
        let mut c = config();
        patch(
            &mut c,
            &Options {
                optional: true,
                ..opts()
            },
        )
        .unwrap();
        for stage in ["createRuntime", "poststop"] {
            let hooks = c["hooks"][stage].as_array().unwrap();
            let args = hooks.last().unwrap()["args"].as_array().unwrap();
            assert_eq!(args.last().unwrap(), "--optional", "{stage}");
        }
        patch(&mut c, &opts()).unwrap();
        let args = c["hooks"]["createRuntime"][0]["args"].as_array().unwrap();
        assert!(!args.iter().any(|a| a == "--optional"));
    }

    #[test]
    fn proc_sys_leaves_readonly_paths_unless_kept() {
        let mut c = config();
        let said = patch(&mut c, &opts()).unwrap();
        assert_eq!(c["linux"]["readonlyPaths"], json!(["/proc/bus"]));
        assert!(said.iter().any(|l| l.contains("/proc/sys removed")));
        let mut kept = config();
        patch(
            &mut kept,
            &Options {
                keep_readonly: true,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(
            kept["linux"]["readonlyPaths"],
            json!(["/proc/bus", "/proc/sys"])
        );
    }

    fn with_time_namespace() -> Options {
        Options {
            time_namespace: Some(5000),
            ..opts()
        }
    }

    #[test]
    fn a_time_namespace_is_added_once_with_the_boot_clock_set_back() {
        let with = with_time_namespace();
        let mut c = config();
        patch(&mut c, &with).unwrap();
        assert_eq!(c["linux"]["namespaces"][1], json!({"type": "time"}));
        assert_eq!(
            c["linux"]["timeOffsets"],
            json!({"boottime": {"secs": -5000, "nanosecs": 0}})
        );
        let once = c.clone();
        let said = patch(&mut c, &with).unwrap();
        assert_eq!(c, once, "idempotent");
        assert!(said.iter().any(|l| l.contains("there already")));
        assert!(config()["linux"].get("timeOffsets").is_none());
    }

    #[test]
    fn odd_shapes_are_errors() {
        assert_eq!(
            patch(&mut json!([1, 2]), &opts()),
            Err(ShapeError::NotAnObject)
        );
        assert_eq!(
            patch(&mut json!({"hooks": 3}), &opts()),
            Err(ShapeError::FieldNotAnObject("hooks"))
        );
        assert_eq!(
            patch(&mut json!({"hooks": {"poststop": {}}}), &opts()),
            Err(ShapeError::FieldNotAnArray("hooks.poststop"))
        );
        assert_eq!(
            patch(&mut json!({"linux": []}), &with_time_namespace()),
            Err(ShapeError::FieldNotAnObject("linux"))
        );
        let mut bare = json!({});
        patch(&mut bare, &opts()).unwrap();
        assert_eq!(bare["hooks"]["poststop"].as_array().unwrap().len(), 1);
    }
}
