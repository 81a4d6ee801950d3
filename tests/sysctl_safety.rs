//! The write rule of `proc/sys`, attacked: no caller in a container, nor any unprivileged
//! host user with `unshare -Ur`, changes a host value or another container's through nsview.
//!
//! Containers here: new pid, mount, uts, ipc, net and cgroup namespaces (a user namespace or
//! the host's network and UTS namespaces where stated), no user namespace and every
//! capability unless stated, with nsview's `proc/sys` bound over their `/proc/sys`. Every
//! host value an attack aims at is saved first and put back on drop if it changed (the test
//! then fails), so a wrongly allowed write never outlives its test.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::{Container, ContainerBuilder, Daemon, HostFiles};

/// Docker's default capabilities, as a `setpriv` prefix for root: after exec, a root
/// process's capabilities are its bounding set.
const DOCKER_CAPS: &str = "setpriv --bounding-set -all,+chown,+dac_override,+fowner,+fsetid,\
+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,\
+setfcap";

/// Knobs of the whole machine (no namespace holds them) that accept a write natively.
const MACHINE_WIDE: &[&str] = &[
    "kernel/core_pattern",
    "kernel/core_uses_pid",
    "vm/swappiness",
    "vm/dirty_ratio",
    "vm/zone_reclaim_mode",
    "debug/exception-trace",
    "kernel/threads-max",
    "kernel/keys/maxkeys",
    "fs/pipe-max-size",
    "fs/mount-max",
];

fn host_raw(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{key}")).ok()
}

fn host(key: &str) -> String {
    host_raw(key).unwrap_or_default().trim().to_owned()
}

/// A value other than `current` that the kernel would take: the first number moved by one,
/// or a plain name for a string.
fn other_value(current: &str) -> String {
    let mut fields: Vec<String> = current.split_whitespace().map(str::to_owned).collect();
    match fields.first().and_then(|f| f.parse::<i64>().ok()) {
        Some(n) => {
            fields[0] = if n > 0 { n - 1 } else { n + 1 }.to_string();
            fields.join(" ") + "\n"
        }
        None => "core.nsview-test\n".to_owned(),
    }
}

fn container(daemon: &Daemon) -> Container {
    ContainerBuilder::new()
        .bind_from(daemon, &["proc/sys"])
        .start()
}

/// A container with a user namespace of its own (its root is host root, one id mapped).
fn userns_container(daemon: &Daemon) -> Container {
    ContainerBuilder::new()
        .userns(true)
        .bind_from(daemon, &["proc/sys"])
        .start()
}

#[test]
fn container_root_cannot_write_machine_wide_knobs() {
    let daemon = Daemon::start();
    let plain = container(&daemon);
    let userns = userns_container(&daemon);
    let saved = HostFiles::sysctls(MACHINE_WIDE);
    for key in MACHINE_WIDE {
        let current = host(key);
        let path = format!("/proc/sys/{key}");
        // Its own value written back, and a change.
        for value in [format!("{current}\n"), other_value(&current)] {
            for (c, who, name) in [
                (&plain, "", "all capabilities"),
                (&plain, DOCKER_CAPS, "Docker's capabilities"),
                (&userns, "", "a user namespace's root"),
            ] {
                let outcome = c.try_write(&path, &value, who);
                assert_eq!(outcome, "EACCES", "{key} <- {value:?} with {name}");
            }
        }
        // Reads stay as they were: the host's value.
        assert_eq!(plain.run(&format!("cat {path}")), current, "{key}");
    }
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
}

#[test]
fn the_host_network_and_uts_namespaces_are_never_a_containers_to_write() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .share(&["net", "uts"])
        .bind_from(&daemon, &["proc/sys"])
        .start();
    let keys = [
        "net/core/somaxconn",
        "net/ipv4/ip_default_ttl",
        "net/ipv4/tcp_keepalive_time",
        "kernel/hostname",
        "kernel/domainname",
        "kernel/panic",
        "vm/overcommit_memory",
    ];
    let saved = HostFiles::sysctls(&keys);
    for key in keys {
        let current = host(key);
        let value = match key {
            "kernel/hostname" | "kernel/domainname" => "nsview-evil\n".to_owned(),
            _ => other_value(&current),
        };
        let path = format!("/proc/sys/{key}");
        assert_eq!(c.try_write(&path, &value, ""), "EACCES", "{key}");
        assert_eq!(
            c.run(&format!("cat {path}")),
            current,
            "{key} reads the host's"
        );
    }
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
}

/// Runs `script` as `nobody` in a user namespace of its own (root there) and the
/// namespaces `unshare_flags` add (`-Urpf` and friends), from the host; its stdout lines.
fn as_nobody_in_userns(unshare_flags: &str, script: &str) -> Vec<String> {
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["unshare", unshare_flags, "--mount-proc", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_unprivileged_users_user_namespace_changes_nothing_outside_itself() {
    if !rig::has_conntrack() {
        return;
    }
    let daemon = Daemon::start();
    let other = container(&daemon);
    let keys = ["kernel/panic", "net/netfilter/nf_conntrack_max"];
    let saved = HostFiles::sysctls(&keys);
    let panic = daemon.path("proc/sys/kernel/panic").display().to_string();
    let max = daemon
        .path("proc/sys/net/netfilter/nf_conntrack_max")
        .display()
        .to_string();
    let (host_panic, host_max) = (host("kernel/panic"), host("net/netfilter/nf_conntrack_max"));
    let raised = (host_max.parse::<i64>().unwrap() + 100).to_string();
    let write = |path: &str, value: &str| rig::write_probe(path, &format!("{value}\n"), "");

    // In the host's network namespace: nothing to keep a value for, nothing written.
    let script = format!("{}; {}", write(&panic, "7"), write(&max, &raised));
    assert_eq!(as_nobody_in_userns("-Urpf", &script), ["EACCES", "EACCES"]);

    // In a network namespace of its own: its own values, seen by nobody else.
    let script = format!(
        "{}; cat {panic}; {}; cat {max}",
        write(&panic, "7"),
        write(&max, &raised)
    );
    assert_eq!(
        as_nobody_in_userns("-Urnpf", &script),
        ["ok", "7", "ok", raised.as_str()]
    );
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
    assert_eq!(other.run("cat /proc/sys/kernel/panic"), host_panic);
    assert_eq!(
        other.run("cat /proc/sys/net/netfilter/nf_conntrack_max"),
        host_max
    );
    let through_mount = std::fs::read_to_string(&panic).unwrap();
    assert_eq!(through_mount.trim(), host_panic, "the host's callers");
}

#[test]
fn callers_in_the_host_pid_namespace_write_only_their_own_namespaces() {
    let daemon = Daemon::start();
    let saved = HostFiles::sysctls(&["kernel/core_pattern", "net/ipv4/ip_forward"]);
    let core = daemon
        .path("proc/sys/kernel/core_pattern")
        .display()
        .to_string();
    let forward = daemon
        .path("proc/sys/net/ipv4/ip_forward")
        .display()
        .to_string();
    let panic = daemon.path("proc/sys/kernel/panic").display().to_string();
    let run = |flags: &[&str], script: &str| {
        let out = Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // A mount namespace of its own (a `--pid host` container): not the host.
    let probe = rig::write_probe(&core, "core.nsview-test\n", "");
    assert_eq!(run(&["--mount"], &probe), "EACCES");
    // A network namespace of its own: its knobs are its own, the machine's are not.
    let script = format!(
        "{}; cat {forward}; {}",
        rig::write_probe(&forward, "1\n", ""),
        rig::write_probe(&panic, "7\n", "")
    );
    assert_eq!(run(&["--net"], &script), "ok\n1\nEACCES");
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
}

/// Runs, from the host, `count` short-lived containers (new pid and network namespaces) that
/// each print their network namespace's inode and the `kernel/panic` they read through
/// `daemon`, then set it to 7: (inode, value read) per container.
fn panic_setters(daemon: &Daemon, count: usize) -> Vec<(String, String)> {
    let panic = daemon.path("proc/sys/kernel/panic").display().to_string();
    let script = format!(
        "for i in $(seq {count}); do unshare --net --pid --fork sh -c \
         'echo $(readlink /proc/self/ns/net) $(cat {panic}); echo 7 > {panic}' || exit 1; done"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

/// The containers of [`panic_setters`] whose network namespace inode an earlier one had:
/// each must have read the host's value, never the dead namespace's 7.
fn reused(rows: &[(String, String)]) -> usize {
    let host_panic = host("kernel/panic");
    let mut seen = std::collections::HashSet::new();
    let mut reused = 0;
    for (inode, value) in rows {
        let again = !seen.insert(inode.clone());
        reused += usize::from(again);
        assert_eq!(
            value, &host_panic,
            "{inode} (an inode used before: {again}) read a store's value"
        );
    }
    reused
}

#[test]
fn a_new_namespace_with_a_dead_ones_inode_reads_the_hosts_values() {
    // Without the janitor, only the store's identity (the namespace cookie) keeps the dead
    // namespaces' stores from the new ones.
    let daemon = Daemon::start_with(&["--test-keep-stores"]);
    let rows = panic_setters(&daemon, 300);
    assert!(
        reused(&rows) > 0,
        "no inode came back in {} namespaces",
        rows.len()
    );
}

/// The store files of `daemon`.
fn store_files(daemon: &Daemon) -> Vec<String> {
    std::fs::read_dir(daemon.runtime_dir().join("stores"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for_no_stores(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store_files(daemon).is_empty() {
        assert!(
            Instant::now() < deadline,
            "stores left: {:?}",
            store_files(daemon)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_stores_of_ended_containers_are_deleted() {
    let daemon = Daemon::start();
    let rows = panic_setters(&daemon, 40);
    reused(&rows);
    wait_for_no_stores(&daemon);
    // A container that is still running keeps its store until it ends.
    let c = container(&daemon);
    c.run("echo 7 > /proc/sys/kernel/panic");
    assert_eq!(store_files(&daemon).len(), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(store_files(&daemon).len(), 1, "kept while it runs");
    drop(c);
    wait_for_no_stores(&daemon);
}

/// A Python script that writes to `path` as the tests below compare: one write, `"1 2"`,
/// two chunks on one descriptor, `pwrite` at offsets 1 and 200, 1 MiB, each followed by a
/// read; prints one line per step (bytes taken or the errno's name, then the value).
fn write_semantics(path: &str, start: &str, values: [&str; 3]) -> String {
    let [one, chunk_a, chunk_b] = values;
    format!(
        r#"import errno, os
p = {path:?}
def step(name, f):
    try:
        r = f()
    except OSError as e:
        r = errno.errorcode[e.errno]
    print(name, r, repr(open(p).read()))
def reset():
    fd = os.open(p, os.O_WRONLY); os.write(fd, {start:?}.encode()); os.close(fd)
def single(data, at=None):
    reset()
    fd = os.open(p, os.O_WRONLY)
    try:
        return os.write(fd, data) if at is None else os.pwrite(fd, data, at)
    finally:
        os.close(fd)
def chunks():
    reset()
    fd = os.open(p, os.O_WRONLY)
    try:
        return (os.write(fd, {chunk_a:?}.encode()), os.write(fd, {chunk_b:?}.encode()))
    finally:
        os.close(fd)
step("one", lambda: single({one:?}.encode()))
step("first-of-two", lambda: single(b"1 2\n"))
step("chunks", chunks)
step("pwrite-1", lambda: single(b"9\n", 1))
step("pwrite-200", lambda: single(b"9\n", 200))
step("mib", lambda: single(b"5" + b" " * (1 << 20) + b"\n"))
step("mib-name", lambda: single(b"x" * (1 << 20)))
step("empty-ish", lambda: single(b"\n"))
"#
    )
}

/// The output of `script` (Python) run inside `c` through nsview, and natively in `c`'s
/// network, UTS and IPC namespaces through the host's procfs.
fn ours_and_native(c: &Container, script: &str) -> (String, String) {
    let ours = c.exec(&["/usr/bin/python3", "-c", script]);
    assert!(ours.status.success(), "{}", ours.stderr);
    let native = Command::new("nsenter")
        .args(["--target", &c.init_pid().to_string()])
        .args([
            "--net",
            "--uts",
            "--ipc",
            "--",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(
        native.status.success(),
        "{}",
        String::from_utf8_lossy(&native.stderr)
    );
    (
        ours.stdout,
        String::from_utf8_lossy(&native.stdout).into_owned(),
    )
}

#[test]
fn writes_to_namespaced_knobs_behave_as_the_kernels_do() {
    let daemon = Daemon::start();
    let c = container(&daemon);
    for (key, start, values) in [
        (
            "kernel/hostname",
            "nsview-a\n",
            ["nsview-b\n", "ab", "cd\n"],
        ),
        ("net/core/somaxconn", "100\n", ["77\n", "1", "00\n"]),
        ("net/ipv4/ip_default_ttl", "64\n", ["77\n", "1", "00\n"]),
        ("kernel/shmmni", "4096\n", ["77\n", "2", "0\n"]),
    ] {
        let script = write_semantics(&format!("/proc/sys/{key}"), start, values);
        let (ours, native) = ours_and_native(&c, &script);
        assert_eq!(ours, native, "{key}");
    }
}

#[test]
fn emulated_integers_take_writes_as_the_kernels_integers_do() {
    // kernel/panic (emulated) and net/unix/max_dgram_qlen (the network namespace's) have
    // the same handler, proc_dointvec, over any int.
    let daemon = Daemon::start();
    let c = container(&daemon);
    let saved = HostFiles::sysctls(&["kernel/panic"]);
    let emulated = write_semantics("/proc/sys/kernel/panic", "100\n", ["77\n", "1", "00\n"]);
    let native = write_semantics(
        "/proc/sys/net/unix/max_dgram_qlen",
        "100\n",
        ["77\n", "1", "00\n"],
    );
    let ours = c.exec(&["/usr/bin/python3", "-c", &emulated]);
    assert!(ours.status.success(), "{}", ours.stderr);
    let (_, kernel) = ours_and_native(&c, &native);
    assert_eq!(ours.stdout, kernel);
    assert!(saved.changed().is_empty(), "the host's panic changed");
}

#[test]
fn container_local_values_need_the_capability_over_the_containers_network_namespace() {
    let daemon = Daemon::start();
    let c = container(&daemon);
    let userns = userns_container(&daemon);
    let saved = HostFiles::sysctls(&["kernel/panic"]);
    let panic = "/proc/sys/kernel/panic";
    let capless = "setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-all";
    assert_eq!(
        c.try_write(panic, "7\n", DOCKER_CAPS),
        "EACCES",
        "no CAP_SYS_ADMIN"
    );
    assert_eq!(c.try_write(panic, "7\n", capless), "EACCES");
    // Root of a user namespace made inside holds nothing over the container's namespaces.
    assert_eq!(c.try_write(panic, "7\n", "unshare -Ur"), "EACCES");
    assert_eq!(userns.try_write(panic, "7\n", "unshare -Ur"), "EACCES");
    // The container's root may; so may root of a user namespace inside with a network
    // namespace of its own, for that namespace only.
    assert_eq!(c.try_write(panic, "6\n", ""), "ok");
    assert_eq!(userns.try_write(panic, "5\n", ""), "ok");
    let nested = format!("{}; cat {panic}", rig::write_probe(panic, "4\n", ""));
    let out = c.exec(&["unshare", "-Urn", "sh", "-c", &nested]);
    assert_eq!(out.stdout.trim(), "ok\n4", "{}", out.stderr);
    assert_eq!(c.run(&format!("cat {panic}")), "6");
    assert_eq!(userns.run(&format!("cat {panic}")), "5");
    assert!(saved.changed().is_empty(), "the host's panic changed");
}

#[test]
fn host_values_change_only_from_a_registered_containers_own_network_namespace() {
    if !rig::has_conntrack() {
        return;
    }
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/sys", "sys/module"])
        .start();
    daemon.register("c", c.init_pid(), &[]);
    let keys = [
        "net/netfilter/nf_conntrack_max",
        "net/netfilter/nf_conntrack_tcp_be_liberal",
    ];
    let saved = HostFiles::sysctls(&keys);
    let hashsize = "/sys/module/nf_conntrack/parameters/hashsize";
    let saved_hashsize = HostFiles::save(&[hashsize]);
    let host_hashsize = saved_hashsize.saved(hashsize).map(str::to_owned);
    let max = host("net/netfilter/nf_conntrack_max")
        .parse::<i64>()
        .unwrap();
    let raise = format!("{}\n", max + 100);
    // A network namespace of its own inside the registered container, where unshare -Urn
    // gives anyone every capability: its values are its own, the host's stay.
    let nested = format!(
        "{}; {}; cat /proc/sys/net/netfilter/nf_conntrack_max",
        rig::write_probe("/proc/sys/net/netfilter/nf_conntrack_max", &raise, ""),
        rig::write_probe(
            "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
            "1\n",
            ""
        ),
    );
    let out = c.exec(&[
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "unshare",
        "-Urn",
        "sh",
        "-c",
        &nested,
    ]);
    assert_eq!(
        out.stdout.trim(),
        format!("ok\nok\n{}", max + 100),
        "{}",
        out.stderr
    );
    assert!(saved.changed().is_empty(), "changed: {:?}", saved.changed());
    if let Some(before) = &host_hashsize {
        let probe = rig::write_probe(hashsize, "524288\n", "");
        let out = c.exec(&["unshare", "-Urn", "sh", "-c", &probe]);
        assert_eq!(out.stdout.trim(), "EACCES", "{}", out.stderr);
        // The container's own root: only up (max-wins), and not without bound.
        assert_eq!(c.try_write(hashsize, "1\n", ""), "ok");
        assert_eq!(std::fs::read_to_string(hashsize).unwrap(), *before);
        assert_eq!(c.try_write(hashsize, "1073741824\n", ""), "EINVAL");
        assert!(
            saved_hashsize.changed().is_empty(),
            "the host's hashsize changed"
        );
        assert_eq!(std::fs::read_to_string(hashsize).unwrap(), *before);
    }
}

#[test]
fn a_container_making_namespaces_by_the_dozen_fills_only_its_own_share_of_stores() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    let dir = rig::scratch_dir();
    let out = dir.path().display();
    let probe = rig::write_probe("/proc/sys/vm/overcommit_memory", "1\n", "");
    let count = 70;
    // 70 live network namespaces of A's, each setting a value of its own, all kept alive.
    let script = format!(
        "for i in $(seq {count}); do unshare -n sh -c \"{probe} > {out}/t.$i && mv {out}/t.$i {out}/o.$i; \
         exec sleep 60\" </dev/null >/dev/null 2>&1 & done; \
         while [ $(ls {out} | grep -c '^o') -lt {count} ]; do sleep 0.05; done; cat {out}/o.*",
        probe = probe.replace('"', "\\\""),
    );
    let results = a.run(&script);
    let ok = results.lines().filter(|l| *l == "ok").count();
    let full = results.lines().filter(|l| *l == "ENOSPC").count();
    assert_eq!(
        (ok, full),
        (nsview::views::sysctl::stores::PER_CONTAINER, count - ok),
        "{results}"
    );
    // Another container still gets its own.
    assert_eq!(
        b.try_write("/proc/sys/vm/overcommit_memory", "2\n", ""),
        "ok"
    );
    assert_eq!(b.run("cat /proc/sys/vm/overcommit_memory"), "2");
}

#[test]
fn a_descriptor_written_from_other_namespaces_than_its_openers_is_refused() {
    // Natively the file is the opener's network namespace's for good; a writer elsewhere (a
    // host task handed a container's descriptor, here a new namespace inside) is refused
    // rather than writing its own namespace's knob.
    let daemon = Daemon::start();
    let c = container(&daemon);
    let before = c.run("cat /proc/sys/net/ipv4/ip_default_ttl");
    let out = c.sh(
        "exec 3>/proc/sys/net/ipv4/ip_default_ttl; \
         unshare -n sh -c 'echo 99 >&3 && echo taken || echo refused; cat /proc/sys/net/ipv4/ip_default_ttl'",
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["refused", "64"], "{}", out.stderr);
    assert_eq!(c.run("cat /proc/sys/net/ipv4/ip_default_ttl"), before);
    // The opener's own namespaces write through it as before.
    assert_eq!(
        c.run("exec 3>/proc/sys/net/ipv4/ip_default_ttl; echo 77 >&3; cat /proc/sys/net/ipv4/ip_default_ttl"),
        "77"
    );
}
