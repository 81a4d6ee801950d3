//! The namespace table of `proc/sys` (`views/sysctl/namespaces.rs`) checked on the running
//! kernel: a path it confines to a namespace kind is one whose value a fresh namespace of
//! that kind has for itself. In a new namespace of each kind (natively, through the host's
//! procfs, which answers for the opener's namespaces), every writable file under each of the
//! kind's lines takes a changed value; every host value of `/proc/sys` stays what it was
//! (not only the same files': a namespace's knob must not move a machine-wide one either). Whatever changed on the host is put back, and the test fails. The table's
//! `UNCONFINED` paths are left alone: they are known to change the machine (some for good).

use std::collections::BTreeMap;
use std::process::Command;

use nsview::views::sysctl::namespaces::{CONFINED, NsKind, UNCONFINED, running_release};

use crate::rig::MachineValues;

/// Values that move by themselves on a live host (prefixes).
const MOVING: &[&str] = &[
    "kernel/ns_last_pid",
    "kernel/random/entropy_avail",
    "kernel/random/uuid",
    "kernel/pty/nr",
    "kernel/sched_domain",
    "fs/dentry-state",
    "fs/file-nr",
    "fs/inode-nr",
    "fs/inode-state",
    "fs/aio-nr",
    "net/netfilter/nf_conntrack_count",
    "net/ipv4/tcp_fastopen_key",
];

/// Every readable file at or below `rel` (below `/proc/sys`) of the host, with its content.
fn host_values(rel: &str, out: &mut BTreeMap<String, String>) {
    let rel = rel.trim_end_matches('/');
    let path = std::path::Path::new("/proc/sys").join(rel);
    match std::fs::read_dir(&path) {
        Ok(dir) => {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                match rel {
                    "" => host_values(&name, out),
                    _ => host_values(&format!("{rel}/{name}"), out),
                }
            }
        }
        Err(_) => {
            let moving = MOVING.iter().any(|m| rel.starts_with(m));
            if let Ok(value) = std::fs::read_to_string(&path)
                && !moving
                && !UNCONFINED.contains(&rel)
            {
                out.insert(rel.to_owned(), value);
            }
        }
    }
}

/// Puts back every host value in `before` that differs now.
fn restore(before: &BTreeMap<String, String>) -> Vec<String> {
    let mut now = BTreeMap::new();
    host_values("", &mut now);
    let mut changed = Vec::new();
    for (rel, value) in before {
        if now.get(rel) != Some(value) {
            let _ = std::fs::write(format!("/proc/sys/{rel}"), value);
            changed.push(rel.clone());
        }
    }
    changed
}

/// Python: writes a changed value to every writable file at or below each argument (below
/// `/proc/sys`) but those in `$NSVIEW_SKIP` (space-separated), prints the files that took
/// one.
const WRITE_EVERYTHING: &str = r#"import os, sys
skip = os.environ["NSVIEW_SKIP"].split()
def files(rel):
    p = "/proc/sys/" + rel.rstrip("/")
    if rel in skip:
        return
    if os.path.isdir(p):
        for name in sorted(os.listdir(p)):
            yield from files(rel.rstrip("/") + "/" + name)
    else:
        yield rel
def changed(text):
    fields = text.split()
    if not fields:
        return None
    try:
        n = int(fields[0])
    except ValueError:
        return "nsview-claim\n"
    fields[0] = str(n - 1 if n > 0 else n + 1)
    return " ".join(fields) + "\n"
for rel in sys.argv[1:]:
    for f in files(rel):
        p = "/proc/sys/" + f
        try:
            new = changed(open(p).read())
            if new is None:
                continue
            with open(p, "w") as out:
                out.write(new)
            if open(p).read().split() == new.split():
                print(f)
        except OSError:
            pass
"#;

fn unshare_flags(kind: NsKind) -> &'static [&'static str] {
    match kind {
        NsKind::Net => &["--net"],
        NsKind::Uts => &["--uts"],
        NsKind::Ipc => &["--ipc"],
        NsKind::User => &["--user", "--map-root-user"],
        NsKind::Pid => &["--pid", "--fork"],
        NsKind::Cgroup => &["--cgroup"],
    }
}

#[test]
fn every_confined_path_is_its_namespaces_own_on_this_kernel() {
    // Every host value is compared: none may be changed on purpose by another test meanwhile.
    let _steady = MachineValues::steady();
    let release = running_release();
    for kind in NsKind::ALL {
        let lines: Vec<&str> = CONFINED
            .iter()
            .filter(|c| c.kind == kind && release >= c.since)
            .map(|c| c.path)
            .collect();
        if lines.is_empty() {
            continue; // no sysctl lives in a cgroup namespace
        }
        let mut before = BTreeMap::new();
        host_values("", &mut before);
        let out = Command::new("unshare")
            .args(unshare_flags(kind))
            .args(["/usr/bin/python3", "-c", WRITE_EVERYTHING])
            .env("NSVIEW_SKIP", UNCONFINED.join(" "))
            .args(&lines)
            .output()
            .unwrap();
        let changed = restore(&before);
        assert!(
            out.status.success(),
            "{kind:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            changed.is_empty(),
            "{kind:?}: a write in a new namespace changed the host's {changed:?}"
        );
        let took = String::from_utf8_lossy(&out.stdout).into_owned();
        for line in &lines {
            let prefix = line.trim_end_matches('/');
            assert!(
                took.lines()
                    .any(|f| f == prefix || f.starts_with(&format!("{prefix}/"))),
                "{kind:?}: nothing under {line} took a value in a new namespace:\n{took}"
            );
        }
    }
}
