//! Files that look like the kernel's: attributes as `stat` prints them, the errors of a chmod
//! or chown, and listings in which every name opens.

use std::process::Command;

use crate::rig;
use crate::rig::{ContainerBuilder, Daemon, HostFiles, Limits};

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
        "sys/devices/system/node",
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
    // sendfile(2) reads through the page cache, which the two containers' meminfo share on
    // Linux 6.5+. Both read at once, 300 times each, as busybox cat does: sendfile, and
    // read(2) where sendfile refuses. A count, not a time: the emulated VM is slow to exec.
    let script = r#"
import errno, os
out = os.memfd_create("copy")
for _ in range(300):
    fd = os.open("/proc/meminfo", os.O_RDONLY)
    try:
        os.ftruncate(out, 0)
        os.lseek(out, 0, os.SEEK_SET)
        n = os.sendfile(out, fd, 0, 65536)
        data = os.pread(out, n, 0)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        data = os.read(fd, 65536)
    os.close(fd)
    print(data.decode().splitlines()[0])
"#;
    let readers = [&a, &b].map(|c| c.spawn(&["/usr/bin/python3", "-c", script]));
    for (reader, own) in readers.into_iter().zip(["102400 kB", "204800 kB"]) {
        let out = reader.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 300, "{}", String::from_utf8_lossy(&out.stderr));
        let others: Vec<&&str> = lines.iter().filter(|l| !l.ends_with(own)).collect();
        assert!(
            others.is_empty(),
            "{} of {} reads were not {own}: {:?}",
            others.len(),
            lines.len(),
            others
                .first()
                .map(|l| l.chars().take(80).collect::<String>())
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

/// What `script` prints in `c`, which must succeed.
fn inside(c: &rig::Container, script: &str) -> String {
    let out = c.sh(script);
    assert!(out.status.success(), "{script}: {}", out.stderr);
    out.stdout
}

#[test]
fn tail_wc_seek_end_and_fionread_see_the_callers_true_length() {
    const MIB: u64 = 1 << 20;
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(Limits {
            memory_bytes: Some(300 * MIB),
            ..Limits::default()
        })
        .bind_from(&daemon, &["proc/meminfo", "proc/uptime", "proc/sys"])
        .start();
    // The tail of one read and `tail`'s own, which reads at the end the size says (meminfo
    // is longer than procfs's 1024-byte blocks, so `tail -c` seeks). Values move between
    // two reads now and then: one of five tries must agree.
    let agree = |script: &str| {
        (0..5).any(|_| {
            let out = inside(&c, script);
            let (whole, tail) = out.split_once("--\n").unwrap();
            !tail.is_empty() && whole.ends_with(tail)
        })
    };
    assert!(agree("cat /proc/meminfo; echo --; tail -n2 /proc/meminfo"));
    assert!(agree(
        "cat /proc/meminfo; echo --; tail -c 30 /proc/meminfo"
    ));
    // uptime moves every 10 ms: its last 9 bytes are the end of an idle time, whole.
    let end = inside(&c, "tail -c 9 /proc/uptime");
    let (digits, cents) = end.trim_end().rsplit_once('.').unwrap_or_default();
    assert!(
        end.len() == 9 && end.ends_with('\n') && cents.len() == 2 && !digits.is_empty(),
        "{end:?}"
    );
    let lines = inside(&c, "tail -n2 /proc/meminfo");
    assert_eq!(lines.lines().count(), 2, "{lines}");
    // less, on a terminal (script's pty), jumps to the end (+G) by the size: the screen
    // shows the file's last line (before, with a 1 MiB size, an empty screen).
    let screen = inside(
        &c,
        "tail -n1 /proc/meminfo; echo --; (sleep 1; printf q) | \
         script -qec 'env TERM=vt100 LINES=10 COLUMNS=80 less +G /proc/meminfo' /dev/null",
    );
    let (last, shown) = screen.split_once("--\n").unwrap();
    assert!(
        !last.trim().is_empty() && shown.contains(last.trim()),
        "less +G did not show {last:?}: {shown:?}"
    );
    // wc -c skips what the size covers, then reads to the end: whole and exact.
    let counts = inside(
        &c,
        "cat /proc/meminfo | wc -c; wc -c < /proc/meminfo; stat -c %s /proc/meminfo; \
         wc -c < /proc/sys/kernel/ostype; stat -c %s /proc/sys/kernel/ostype; \
         stat -c %s /proc/sys/kernel/panic; cat /proc/sys/kernel/panic | wc -c",
    );
    let n: Vec<u64> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(n[0] > 1024, "{counts}");
    assert!(
        n[0].abs_diff(n[1]) <= 8 && n[0].abs_diff(n[2]) <= 8,
        "{counts}"
    );
    assert_eq!((n[3], n[4]), (6, 6), "Linux\\n: {counts}");
    assert_eq!(n[5], n[6], "emulated kernel/panic: {counts}");
    // Through one descriptor the size is exactly what it reads: fstat, SEEK_END and
    // FIONREAD (what Python's read() and less go by) agree with the bytes.
    let script = r#"
import fcntl, os, struct, termios
for path in ["/proc/meminfo", "/proc/uptime", "/proc/sys/kernel/ostype", "/proc/sys/kernel/panic"]:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    end = os.lseek(fd, 0, os.SEEK_END)
    os.lseek(fd, 0, os.SEEK_SET)
    ready = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    data = b""
    while True:
        piece = os.read(fd, 100)
        if not piece:
            break
        data += piece
    print(path, size, end, ready, len(data))
    with open(path) as f:
        assert f.read() != "", path
"#;
    let out = inside(&c, &format!("/usr/bin/python3 -c '{script}'"));
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert!(f[1] == f[2] && f[2] == f[3] && f[3] == f[4], "{out}");
        assert_ne!(f[1], "0", "{out}");
    }
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn no_mapping_of_a_view_ever_shows_a_byte() {
    const MIB: u64 = 1 << 20;
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(Limits {
            memory_bytes: Some(100 * MIB),
            ..Limits::default()
        })
        .bind_from(&daemon, &["proc/meminfo", "proc/sys"])
        .start();
    // The kernel refuses to map these files at all (procfs EIO, sysctl ENODEV). Through FUSE
    // a shared mapping is refused (ENODEV); a private one cannot be, but its pages would
    // come from the page cache every container shares, which nsview never fills for a view:
    // the first access is a SIGBUS, never another container's bytes.
    let script = r#"
import ctypes, mmap, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
failed = ctypes.c_void_p(-1).value
for path in ["/proc/meminfo", "/proc/sys/kernel/ostype"]:
    fd = os.open(path, os.O_RDONLY)
    shared = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert shared == failed, path
    print(path, "shared", os.strerror(ctypes.get_errno()))
    touch = "import mmap, os; m = mmap.mmap(os.open(%r, os.O_RDONLY), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ); print(m[:8])" % path
    run = subprocess.run([sys.executable, "-c", touch], capture_output=True)
    print(path, "private", run.returncode, run.stdout)
"#;
    let out = inside(&c, &format!("/usr/bin/python3 -c '{script}'"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for path in ["/proc/meminfo", "/proc/sys/kernel/ostype"] {
        assert!(
            lines.contains(&format!("{path} shared No such device").as_str()),
            "{out}"
        );
        // Killed by SIGBUS, having printed nothing.
        assert!(
            lines.contains(&format!("{path} private -7 b''").as_str()),
            "{out}"
        );
    }
}

/// A host sysfs file below `/sys/kernel` that its owner may read and others may not.
fn owner_only_sysfs_file() -> Option<String> {
    let out = Command::new("find")
        .args([
            "/sys/kernel",
            "-xdev",
            "-type",
            "f",
            "-perm",
            "-u=r",
            "!",
            "-perm",
            "-o=r",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|p| {
            !["debug", "tracing", "security", "config"]
                .iter()
                .any(|h| p.starts_with(&format!("/sys/kernel/{h}/")))
        })
        .map(str::to_owned)
}

#[test]
fn a_sysfs_file_others_may_not_read_is_its_owners_only_through_nsview_too() {
    let Some(host) = owner_only_sysfs_file() else {
        eprintln!("no owner-only file below /sys/kernel here; nothing to compare");
        return;
    };
    let daemon = Daemon::start();
    let ours = daemon.path(&format!("sys/{}", host.trim_start_matches("/sys/")));
    let cat = |path: &str| {
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "cat",
                path,
            ])
            .output()
            .unwrap()
    };
    for path in [host.as_str(), ours.to_str().unwrap()] {
        let out = cat(path);
        assert!(!out.status.success(), "{path} read by nobody");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Its owner, root, reads the host's bytes.
    assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&host).unwrap());
}

/// What `script` prints in a pid and mount namespace of its own with a procfs of its own
/// (and the namespaces `extra` unshare options make), which must succeed.
fn in_a_pid_namespace(extra: &[&str], script: &str) -> String {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc"])
        .args(["--propagation", "private"])
        .args(extra)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{err}");
    text
}

/// Whether this test process's CPU accounting is a hierarchy's root (v1 `cpuacct`, else the
/// unified hierarchy), as it is on a machine whose cgroups nobody set up for tests.
fn accounted_at_root() -> bool {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let line = |pick: &dyn Fn(&str) -> bool| {
        text.lines()
            .find(|l| pick(l.split(':').nth(1).unwrap_or("")))
            .map(|l| l.rsplit(':').next() == Some("/"))
    };
    line(&|ctrls| ctrls.split(',').any(|c| c == "cpuacct"))
        .unwrap_or_else(|| line(&|c| c.is_empty()) == Some(true))
}

#[test]
fn a_container_in_the_root_cgroups_counts_its_own_tasks_and_idle() {
    if !accounted_at_root() {
        eprintln!("this test's CPU accounting is not a root cgroup; nothing to show");
        return;
    }
    let daemon = Daemon::start();
    let mnt = daemon.mountpoint().display().to_string();
    // A pid namespace of its own and nothing else (as LXCFS's own tests run): its cgroups are
    // the roots, which hold the whole host.
    let script = format!(
        "for f in loadavg stat uptime; do mount --bind {mnt}/proc/$f /proc/$f; done; \
         sleep 1; cat /proc/loadavg; grep ^processes /proc/stat; cat /proc/uptime"
    );
    let text = in_a_pid_namespace(&[], &script);
    let lines: Vec<&str> = text.lines().collect();
    // The thread count of a loadavg line: "0.00 0.00 0.00 running/threads last".
    let threads = |line: &str| -> u32 {
        let field = line.split(' ').nth(3).unwrap();
        field.split('/').nth(1).unwrap().parse().unwrap()
    };
    let tasks = threads(lines[0]);
    let host_tasks = threads(&std::fs::read_to_string("/proc/loadavg").unwrap());
    // sh and cat, not the host's tasks.
    assert!((1..=5).contains(&tasks) && tasks < host_tasks, "{text}");
    let processes: u32 = lines[1].split(' ').nth(1).unwrap().parse().unwrap();
    assert!((1..=10).contains(&processes), "{text}");
    // A second old on this machine's CPUs, nearly all of it idle.
    let idle: f64 = lines[2].split(' ').nth(1).unwrap().trim().parse().unwrap();
    assert!(idle > 0.5, "{text}");
}

#[test]
fn in_a_time_namespace_uptime_btime_and_ps_tell_one_story() {
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let daemon = Daemon::start();
    let mnt = daemon.mountpoint().display().to_string();
    // A container whose boot clock started 5 s ago (a runtime's timeOffsets do the same):
    // the kernel's uptime, btime and start times there, then nsview's, then ps with them.
    let back = (host_up as i64 - 5).max(0);
    let script = format!(
        "cut -d' ' -f1 /proc/uptime; grep ^btime /proc/stat; \
         for f in uptime stat; do mount --bind {mnt}/proc/$f /proc/$f; done; \
         cut -d' ' -f1 /proc/uptime; grep ^btime /proc/stat; ps -o etime= -p 1"
    );
    let boottime = format!("-{back}");
    let text = in_a_pid_namespace(&["--time", "--boottime", &boottime], &script);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 5, "{text}");
    let secs = |s: &str| s.parse::<f64>().unwrap();
    // nsview's is read after the kernel's, the binds between (a second or more in the
    // emulated VM); the container's age alone (the shift ignored) would be seconds less.
    let later = secs(lines[2]) - secs(lines[0]);
    assert!((-0.5..5.0).contains(&later), "uptime: {text}");
    assert!(secs(lines[2]) < 60.0, "{text}");
    let btime = |s: &str| s.split(' ').nth(1).unwrap().parse::<i64>().unwrap();
    assert!(
        (btime(lines[1]) - btime(lines[3])).abs() <= 1,
        "btime: {text}"
    );
    // Elapsed time of the container's init: seconds, never a wrapped count of days.
    assert!(
        !lines[4].contains('-') && lines[4].starts_with("00:"),
        "ps: {text}"
    );
}
