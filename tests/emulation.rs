//! Container-local values of the sysctls Linux does not namespace (the emulation table).
//!
//! Containers here: new pid, mount, uts, ipc, net and cgroup namespaces in fresh
//! `nsview-test-*` cgroups, with nsview's `proc/sys` bound over their `/proc/sys`.

use crate::rig;
use crate::rig::{Container, ContainerBuilder, Daemon, host_sysctl};

fn container(daemon: &Daemon) -> Container {
    ContainerBuilder::new()
        .bind_from(daemon, &["proc/sys"])
        .start()
}

#[test]
fn a_stored_value_is_the_containers_own_and_checked() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    let key = "/proc/sys/vm/overcommit_memory";
    let host_value = host_sysctl("vm/overcommit_memory");
    let new = if host_value == "1" { "2" } else { "1" };
    assert_eq!(
        a.run(&format!("cat {key}")),
        host_value,
        "initially the host's"
    );
    a.run(&format!("echo {new} > {key}"));
    assert_eq!(a.run(&format!("cat {key}")), new);
    assert_eq!(b.run(&format!("cat {key}")), host_value);
    assert_eq!(host_sysctl("vm/overcommit_memory"), host_value);
    // bash, not dash: dash reports every failed write as "I/O error".
    let out = a.exec(&["bash", "-c", &format!("echo 3 > {key}")]);
    assert!(
        !out.status.success() && out.stderr.contains("Invalid argument"),
        "{}",
        out.stderr
    );
    assert_eq!(
        a.run(&format!("cat {key}")),
        new,
        "an invalid write leaves the value"
    );
    // A nested pid namespace (same network namespace) shares its container's store.
    assert_eq!(a.run(&format!("unshare --pid --fork cat {key}")), new);
    // The host's own callers read the real file through the mount.
    let through_mount =
        std::fs::read_to_string(daemon.path("proc/sys/vm/overcommit_memory")).unwrap();
    assert_eq!(through_mount.trim(), host_value);
}

#[test]
fn panic_file_max_and_printk_are_the_containers_own() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    for (key, value, read_back) in [
        ("kernel/panic", "17", "17"),
        ("fs/file-max", "123456", "123456"),
        // Fewer numbers than the vector holds replace the first ones, as the kernel does.
        ("kernel/printk", "3", "3"),
    ] {
        let before = host_sysctl(key);
        a.run(&format!("echo {value} > /proc/sys/{key}"));
        let inside = a.run(&format!("cat /proc/sys/{key}"));
        assert_eq!(inside.split_whitespace().next(), Some(read_back), "{key}");
        assert_eq!(
            inside.split_whitespace().skip(1).collect::<Vec<_>>(),
            before.split_whitespace().skip(1).collect::<Vec<_>>(),
            "{key}: the other fields stay"
        );
        assert_eq!(
            b.run(&format!("cat /proc/sys/{key}")),
            before,
            "{key} elsewhere"
        );
        assert_eq!(host_sysctl(key), before, "{key} on the host");
    }
}

#[test]
fn pid_max_is_the_pid_namespaces_where_the_kernel_confines_it_and_refused_elsewhere() {
    use nsview::views::sysctl::namespaces::{kind_of, running_release};
    let daemon = Daemon::start();
    let a = container(&daemon);
    let confined = kind_of("kernel/pid_max", running_release()).is_some();
    let out = a.exec(&["bash", "-c", "echo 4194305 > /proc/sys/kernel/pid_max"]);
    // Above the kernel's limit where the write reaches it (6.14+); before 6.14 pid_max is
    // the machine's, which no container writes.
    let expected = if confined {
        "Invalid argument"
    } else {
        "Permission denied"
    };
    assert!(out.stderr.contains(expected), "{}", out.stderr);
}

#[test]
fn read_only_entries_refuse_even_container_root() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    let out = a.sh("echo 10 > /proc/sys/kernel/cap_last_cap");
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    assert_eq!(
        a.run("cat /proc/sys/kernel/cap_last_cap"),
        host_sysctl("kernel/cap_last_cap")
    );
    assert_eq!(a.run("stat -c %a /proc/sys/kernel/cap_last_cap"), "444");
}

#[test]
fn an_unprivileged_user_cannot_write_emulated_values() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    let out = a.sh("setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo 1 > /proc/sys/vm/overcommit_memory'");
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
}

#[test]
fn uuids_are_new_on_every_read_and_boot_ids_are_per_container() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    let uuid = "cat /proc/sys/kernel/random/uuid";
    assert_ne!(a.run(uuid), a.run(uuid));
    let out = a.sh("echo x > /proc/sys/kernel/random/uuid");
    assert!(!out.status.success());
    let boot = "cat /proc/sys/kernel/random/boot_id";
    let (a1, a2, b1) = (a.run(boot), a.run(boot), b.run(boot));
    assert_eq!(a1, a2);
    assert_ne!(a1, b1);
    assert_ne!(a1, host_sysctl("kernel/random/boot_id"));
    assert_eq!(a1.len(), 36, "{a1}");
}

#[test]
fn emulated_entries_exist_only_where_the_host_kernel_has_them() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    let kernel = a.run("ls /proc/sys/kernel");
    for (name, host_path) in [
        ("sysrq", "/proc/sys/kernel/sysrq"),
        ("yama", "/proc/sys/kernel/yama/ptrace_scope"),
        ("panic", "/proc/sys/kernel/panic"),
    ] {
        let on_host = std::path::Path::new(host_path).exists();
        assert_eq!(
            kernel.lines().any(|l| l == name),
            on_host,
            "{name} listed inside exactly when the host has it"
        );
        let read = a.sh(&format!("cat {host_path}"));
        assert_eq!(read.status.success(), on_host, "{name}: {}", read.stderr);
        if !on_host {
            assert!(read.stderr.contains("No such file"), "{}", read.stderr);
        }
    }
    assert!(
        kernel.lines().any(|l| l == "hostname"),
        "passthrough entries stay"
    );
    // And each name once.
    let mut names: Vec<&str> = kernel.lines().collect();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before);
}

#[test]
fn nf_conntrack_max_is_max_wins_for_registered_containers_only() {
    if !rig::has_conntrack() {
        return;
    }
    let daemon = Daemon::start();
    let (a, b, c) = (container(&daemon), container(&daemon), container(&daemon));
    daemon.register("a", a.init_pid(), &[]);
    daemon.register("c", c.init_pid(), &["--host-writes", "false"]);
    let key = "/proc/sys/net/netfilter/nf_conntrack_max";
    // Before the host's value is read: no other test may change it meanwhile.
    let _restore = rig::HostFiles::sysctls_to_change(&["net/netfilter/nf_conntrack_max"]);
    let host_value: i64 = host_sysctl("net/netfilter/nf_conntrack_max")
        .parse()
        .unwrap();
    a.run(&format!("echo {} > {key}", host_value - 100));
    assert_eq!(a.run(&format!("cat {key}")), (host_value - 100).to_string());
    assert_eq!(
        host_sysctl("net/netfilter/nf_conntrack_max"),
        host_value.to_string()
    );
    assert_eq!(b.run(&format!("cat {key}")), host_value.to_string());
    // Unregistered, or registered with host writes off: the value is the container's own,
    // the host's stays.
    for (who, name) in [(&b, "unregistered"), (&c, "host writes off")] {
        who.run(&format!("echo {} > {key}", host_value + 50));
        assert_eq!(
            who.run(&format!("cat {key}")),
            (host_value + 50).to_string()
        );
        assert_eq!(
            host_sysctl("net/netfilter/nf_conntrack_max"),
            host_value.to_string(),
            "{name}"
        );
    }
    a.run(&format!("echo {} > {key}", host_value + 100));
    assert_eq!(a.run(&format!("cat {key}")), (host_value + 100).to_string());
    assert_eq!(
        host_sysctl("net/netfilter/nf_conntrack_max"),
        (host_value + 100).to_string()
    );
}

#[test]
fn sys_kernel_is_the_hosts_read_only_with_private_parts_empty() {
    let daemon = Daemon::start();
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["sys/kernel"])
        .start();
    for hidden in ["security", "debug", "tracing"] {
        assert_eq!(
            a.run(&format!("ls -A /sys/kernel/{hidden}")),
            "",
            "{hidden}"
        );
    }
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    if std::path::Path::new(thp).exists() {
        assert_eq!(
            a.run(&format!("cat {thp}")),
            std::fs::read_to_string(thp).unwrap().trim()
        );
        let out = a.exec(&["bash", "-c", &format!("echo never > {thp}")]);
        assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    }
    assert!(a.run("ls /sys/kernel").lines().any(|l| l == "mm"));
}

#[test]
fn product_uuid_is_stable_per_container_and_unique() {
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    let path = daemon.path("sys/devices/virtual/dmi/id/product_uuid");
    let read = |c: &Container| c.run(&format!("cat {}", path.display()));
    let (a1, a2, b1) = (read(&a), read(&a), read(&b));
    assert_eq!(a1, a2);
    assert_ne!(a1, b1);
    assert_eq!(a1.len(), 36, "{a1}");
}

#[test]
fn stored_values_survive_a_daemon_restart() {
    let (mount, runtime) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let daemon = Daemon::start_on(mount.path(), runtime.path(), &[]);
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/sys"])
        .start();
    let host_value = host_sysctl("vm/overcommit_memory");
    let new = if host_value == "1" { "2" } else { "1" };
    a.run(&format!("echo {new} > /proc/sys/vm/overcommit_memory"));
    let (status, _, _) = daemon.terminate();
    assert!(status.success());
    let daemon = Daemon::start_on(mount.path(), runtime.path(), &[]);
    // The container's own bind mount went stale with the old daemon (re-injecting it is
    // `nsview reattach`'s job); ask from a fresh pid namespace in its network namespace,
    // which reaches the new mount in the host's mount namespace.
    let path = daemon.path("proc/sys/vm/overcommit_memory");
    let out = std::process::Command::new("nsenter")
        .args([
            "--target",
            &a.init_pid().to_string(),
            "--net",
            "--",
            "unshare",
            "--pid",
            "--fork",
            "cat",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), new);
}

#[test]
fn ping_group_range_is_clamped_to_the_gid_map_and_read_back_as_written() {
    let daemon = Daemon::start();
    // A user namespace mapping only its root (gid 0): the kernel would refuse the full range.
    let c = ContainerBuilder::new()
        .userns(true)
        .bind_from(&daemon, &["proc/sys"])
        .start();
    let key = "/proc/sys/net/ipv4/ping_group_range";
    let host_before = host_sysctl("net/ipv4/ping_group_range");
    c.run(&format!("echo '0 2147483647' > {key}"));
    assert_eq!(c.run(&format!("cat {key}")), "0\t2147483647");
    let kernel = std::process::Command::new("nsenter")
        .args([
            "--target",
            &c.init_pid().to_string(),
            "--net",
            "--",
            "cat",
            key,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&kernel.stdout).trim(), "0\t0");
    assert_eq!(
        host_sysctl("net/ipv4/ping_group_range"),
        host_before,
        "the host's is untouched"
    );
    let out = c.exec(&["bash", "-c", &format!("echo '5 x' > {key}")]);
    assert!(out.stderr.contains("Invalid argument"), "{}", out.stderr);
}

#[test]
fn sys_devices_virtual_net_lists_the_containers_own_devices() {
    let daemon = Daemon::start();
    let a = ContainerBuilder::new()
        .bind_from(&daemon, &["sys/devices/virtual/net"])
        .start();
    a.run("ip link add nsv1 type bridge");
    let inside = a.run("ls /sys/devices/virtual/net");
    let names: Vec<&str> = inside.lines().collect();
    assert_eq!(names, ["lo", "nsv1"], "{inside}");
    assert_eq!(a.run("cat /sys/devices/virtual/net/lo/mtu"), "65536");
    let out = a.exec(&[
        "bash",
        "-c",
        "echo 1000 > /sys/devices/virtual/net/nsv1/mtu",
    ]);
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    // The host sees its own devices through the mount, not the container's.
    let host: Vec<String> = std::fs::read_dir(daemon.path("sys/devices/virtual/net"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        host.contains(&"lo".to_owned()) && !host.contains(&"nsv1".to_owned()),
        "{host:?}"
    );
}

#[test]
fn conntrack_hashsize_is_host_global_for_registered_container_root_only() {
    let host_path = "/sys/module/nf_conntrack/parameters/hashsize";
    let restore = rig::HostFiles::save_to_change(&[host_path]);
    let Some(before) = restore.saved(host_path).map(str::to_owned) else {
        return; // no conntrack on this kernel
    };
    let daemon = Daemon::start();
    let (a, b) = (container(&daemon), container(&daemon));
    daemon.register("a", a.init_pid(), &[]);
    let path = daemon.path("sys/module/nf_conntrack/parameters/hashsize");
    let path = path.display();
    assert_eq!(a.run(&format!("cat {path}")), before.trim());
    let wanted = before.trim().parse::<u64>().unwrap() + 1024;
    // An unregistered container's root is refused.
    assert_eq!(b.try_write(&path.to_string(), "4096\n", ""), "EACCES");
    assert_eq!(std::fs::read_to_string(host_path).unwrap(), before);
    a.run(&format!("echo {wanted} > {path}"));
    assert_eq!(
        std::fs::read_to_string(host_path).unwrap().trim(),
        wanted.to_string()
    );
    let out = a.exec(&["bash", "-c", &format!("echo lots > {path}")]);
    assert!(out.stderr.contains("Invalid argument"), "{}", out.stderr);
    let user =
        format!("setpriv --reuid 1000 --regid 1000 --clear-groups bash -c 'echo 1 > {path}'");
    let out = a.sh(&user);
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
}

#[test]
fn unregistering_a_container_drops_its_values() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    let key = "/proc/sys/vm/overcommit_memory";
    let host_value = host_sysctl("vm/overcommit_memory");
    let new = if host_value == "1" { "2" } else { "1" };
    daemon.register("a", a.init_pid(), &[]);
    a.run(&format!("echo {new} > {key}"));
    assert_eq!(a.run(&format!("cat {key}")), new);
    daemon.ctl(&["unregister", "--id", "a"]);
    assert_eq!(a.run(&format!("cat {key}")), host_value);
}

#[test]
fn containers_sharing_a_network_namespace_share_a_store() {
    let daemon = Daemon::start();
    let a = container(&daemon);
    let host_value = host_sysctl("vm/overcommit_memory");
    let new = if host_value == "1" { "2" } else { "1" };
    a.run(&format!("echo {new} > /proc/sys/vm/overcommit_memory"));
    // A second container in A's network namespace (its own pid namespace, as a pod's
    // containers are), reading through the mount.
    let path = daemon.path("proc/sys/vm/overcommit_memory");
    let out = std::process::Command::new("nsenter")
        .args(["--target", &a.init_pid().to_string(), "--net", "--"])
        .args(["unshare", "--pid", "--fork", "--mount-proc", "cat"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), new);
    // One in a network namespace of its own keeps the host's value.
    let out = std::process::Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--mount-proc", "cat"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host_value);
}
