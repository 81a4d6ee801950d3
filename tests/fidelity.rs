//! Files that look like the kernel's: attributes as `stat` prints them, the errors of a chmod
//! or chown, and listings in which every name opens.

mod rig;

use std::process::Command;

use rig::{ContainerBuilder, Daemon, HostFiles, Limits};

/// `stat -c FORMAT PATH` (coreutils), which must succeed.
fn stat(format: &str, path: &str) -> String {
    let out = Command::new("stat")
        .args(["-c", format, path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn stat_prints_the_kernels_links_block_size_mode_and_type() {
    let daemon = Daemon::start();
    // Links, block size, type and mode (`%f`, raw): procfs files and sysctl directories have one link
    // and 1024-byte blocks, procfs's other directories 2 links, sysfs 4096-byte blocks.
    let mut compared = 0;
    for path in [
        "proc/meminfo",
        "proc/uptime",
        "proc/stat",
        "proc/swaps",
        "proc/pressure",
        "proc/pressure/cpu",
        "proc/sys",
        "proc/sys/kernel",
        "proc/sys/kernel/hostname",
        "proc/sys/net/ipv4/ip_forward",
        "proc/sys/net/ipv4/conf",
        "sys/devices/system/cpu/online",
    ] {
        let kernel = format!("/{path}");
        if !std::path::Path::new(&kernel).exists() {
            continue;
        }
        let ours = daemon.path(path);
        assert_eq!(
            stat("%h %o %f", ours.to_str().unwrap()),
            stat("%h %o %f", &kernel),
            "{path}"
        );
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} files to compare");
    // sysfs says a page for every attribute.
    let online = daemon.path("sys/devices/system/cpu/online");
    assert_eq!(
        stat("%s", online.to_str().unwrap()),
        stat("%s", "/sys/devices/system/cpu/online")
    );
}

#[test]
fn chmod_and_chown_are_not_permitted_as_on_the_kernels_sysctls_and_change_nothing() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .bind_from(&daemon, &["proc/sys", "proc/meminfo"])
        .start();
    let host = HostFiles::save(&["/proc/sys/kernel/panic"]);
    let before = stat("%a %u %g", "/proc/sys/kernel/panic");
    let script = "for f in /proc/sys/kernel/panic /proc/sys/kernel /proc/meminfo; do \
                    chown 1 $f 2>&1; chmod 600 $f 2>&1; chgrp 1 $f 2>&1; \
                  done; stat -c '%a %u %g' /proc/sys/kernel/panic /proc/meminfo";
    let out = c.sh(script);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 11, "{}\n{}", out.stdout, out.stderr);
    for line in &lines[..9] {
        assert!(line.ends_with("Operation not permitted"), "{line}");
    }
    assert_eq!(lines[9..], ["644 0 0", "444 0 0"]);
    // The kernel answers its sysctl files the same, and nothing moved on the host.
    let native = Command::new("chown")
        .args(["1", "/proc/sys/kernel/panic"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&native.stderr).ends_with("Operation not permitted\n"),
        "{}",
        String::from_utf8_lossy(&native.stderr)
    );
    assert_eq!(stat("%a %u %g", "/proc/sys/kernel/panic"), before);
    assert!(host.changed().is_empty());
}

/// Every file nsview's own table lists, outside the subtrees it passes through.
fn listed_files(dir: &std::path::Path, skip: &[&std::path::Path], out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if skip.contains(&path.as_path()) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            listed_files(&path, skip, out);
        } else {
            out.push(path.to_str().unwrap().to_owned());
        }
    }
}

#[test]
fn every_file_that_is_listed_opens() {
    let daemon = Daemon::start();
    let subtrees = [
        "proc/sys",
        "sys/kernel",
        "sys/devices/system/cpu",
        "sys/devices/virtual/net",
    ]
    .map(|s| daemon.path(s));
    let skip: Vec<&std::path::Path> = subtrees.iter().map(|p| p.as_path()).collect();
    let mut files = Vec::new();
    listed_files(daemon.mountpoint(), &skip, &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        if let Err(e) = std::fs::read(file) {
            panic!("{file} is listed but reads {e}");
        }
    }
    // Host files nsview cannot stand in for without them are there exactly when the host's are.
    for (ours, host) in [
        (
            "sys/devices/virtual/dmi/id/product_uuid",
            "/sys/devices/virtual/dmi/id/product_uuid",
        ),
        (
            "sys/module/nf_conntrack/parameters/hashsize",
            "/sys/module/nf_conntrack/parameters/hashsize",
        ),
    ] {
        let listed = files.contains(&daemon.path(ours).to_str().unwrap().to_owned());
        let exists = std::path::Path::new(host).exists();
        assert_eq!(
            listed, exists,
            "{ours} listed {listed}, host's exists {exists}"
        );
        assert_eq!(daemon.path(ours).exists(), exists, "{ours}");
    }
    // A container's product UUID is its own, derived: listed and read with or without DMI.
    let c = ContainerBuilder::new().start();
    let dmi = daemon.path("sys/devices/virtual/dmi/id");
    let out = c.sh(&format!("ls {0}; cat {0}/product_uuid", dmi.display()));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!((lines[0], lines[1].len()), ("product_uuid", 36));
}

#[test]
fn a_large_sysfs_file_reads_whole_and_at_any_offset_and_bpftool_dumps_it() {
    let host = "/sys/kernel/btf/vmlinux";
    if !std::path::Path::new(host).exists() {
        eprintln!("{host}: not on this kernel; nothing to compare");
        return;
    }
    let daemon = Daemon::start();
    let ours = daemon.path("sys/kernel/btf/vmlinux");
    let whole = std::fs::read(host).unwrap();
    assert!(whole.len() > 1 << 20, "{} bytes", whole.len());
    assert!(
        std::fs::read(&ours).unwrap() == whole,
        "not the host's bytes"
    );
    let file = std::fs::File::open(&ours).unwrap();
    let mut piece = [0u8; 4096];
    let at = 409_600;
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut piece, at as u64).unwrap();
    assert_eq!(piece[..n], whole[at..at + n]);
    assert_eq!(n, 4096);
    let dump = "bpftool btf dump file /sys/kernel/btf/vmlinux format c | wc -l";
    let c = ContainerBuilder::new()
        .bind_from(&daemon, &["sys/kernel"])
        .start();
    let inside = c.sh(dump);
    assert!(inside.status.success(), "{}", inside.stderr);
    let native = Command::new("sh").args(["-c", dump]).output().unwrap();
    let native = String::from_utf8_lossy(&native.stdout);
    assert!(native.trim().parse::<u64>().unwrap() > 1000, "{native}");
    assert_eq!(inside.stdout.trim(), native.trim());
}

#[test]
fn sendfile_readers_read_their_own_containers_file_never_anothers() {
    const MIB: u64 = 1 << 20;
    let daemon = Daemon::start();
    let start = |mib: u64| {
        ContainerBuilder::new()
            .limits(Limits {
                memory_bytes: Some(mib * MIB),
                ..Limits::default()
            })
            .bind_from(&daemon, &["proc/meminfo"])
            .start()
    };
    let (a, b) = (start(100), start(200));
    // busybox cat sends the file with sendfile(2), which reads through the page cache the
    // two containers' meminfo share on Linux 6.5+; here both read at once, for 3 s.
    let script = "end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do \
                  busybox cat /proc/meminfo | head -1; done";
    let readers = [&a, &b].map(|c| c.spawn(&["sh", "-c", script]));
    for (reader, own) in readers.into_iter().zip(["102400 kB", "204800 kB"]) {
        let out = reader.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 5, "{} reads", lines.len());
        let others: Vec<&&str> = lines.iter().filter(|l| !l.ends_with(own)).collect();
        assert!(
            others.is_empty(),
            "{} of {} reads were not {own}: {:?}",
            others.len(),
            lines.len(),
            others.first()
        );
    }
    // Whole, through sendfile's fallbacks: busybox's to read(2), Python's shutil's likewise.
    let script = format!(
        "busybox cat /proc/meminfo | wc -c; cat /proc/meminfo | wc -c; \
         {} -c 'import shutil, os; shutil.copyfile(\"/proc/meminfo\", \"/dev/null\"); print(\"copied\")'",
        "/usr/bin/python3"
    );
    let out = a.sh(&script);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lines[0], lines[1], "busybox cat and coreutils cat");
    assert_eq!(lines[2], "copied");
}
