//! The FUSE layer on a real mount: directory listings, offsets and snapshots, read-only
//! enforcement, and a panicking view (served only with the hidden `--test-nodes` switch).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::Command;
use std::time::Duration;

use crate::rig;
use crate::rig::Daemon;

fn read_in_chunks(path: &std::path::Path, chunk: usize) -> Vec<u8> {
    let mut file = File::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn reads_of_1_byte_or_1025_bytes_give_what_one_large_read_gives() {
    let daemon = Daemon::start_with(&["--test-nodes"]);
    let path = daemon.path("test/pattern");
    let whole = read_in_chunks(&path, 1 << 20);
    assert!(whole.len() > 10_000, "pattern is {} bytes", whole.len());
    assert_eq!(read_in_chunks(&path, 1), whole);
    assert_eq!(read_in_chunks(&path, 1025), whole);
    // The real view too: a one-byte reader gets one well-formed line.
    let text = String::from_utf8(read_in_chunks(&daemon.path("proc/uptime"), 1)).unwrap();
    assert!(
        text.ends_with('\n') && text.split_whitespace().count() == 2,
        "{text:?}"
    );
}

#[test]
fn offset_zero_renders_afresh_and_other_offsets_read_the_snapshot() {
    let daemon = Daemon::start();
    let file = File::open(daemon.path("proc/uptime")).unwrap();
    let mut first = [0u8; 64];
    let n = file.read_at(&mut first, 0).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    // Offset 3 comes from the snapshot taken at offset 0, not from a new render.
    let mut tail = [0u8; 64];
    let m = file.read_at(&mut tail, 3).unwrap();
    assert_eq!(&tail[..m], &first[3..n]);
    // Offset 0 again (what procps does after lseek(0)) shows the later time.
    let mut again = [0u8; 64];
    let k = file.read_at(&mut again, 0).unwrap();
    let up = |b: &[u8]| -> f64 {
        let s = std::str::from_utf8(b).unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(up(&again[..k]) >= up(&first[..n]) + 1.0);
    // Past the end: nothing.
    assert_eq!(file.read_at(&mut tail, 1 << 20).unwrap(), 0);
}

#[test]
fn directory_listings_show_dot_and_dotdot_exactly_once() {
    let daemon = Daemon::start();
    for dir in ["", "proc"] {
        let out = Command::new("ls")
            .args(["-a1"])
            .arg(daemon.path(dir))
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        let names: Vec<_> = listing.lines().collect();
        assert_eq!(names.iter().filter(|n| **n == ".").count(), 1, "{names:?}");
        assert_eq!(names.iter().filter(|n| **n == "..").count(), 1, "{names:?}");
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(sorted, names, "no duplicates");
    }
    let root: Vec<_> = std::fs::read_dir(daemon.mountpoint())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(root, ["proc", "sys"]);
}

#[test]
fn read_only_views_refuse_writes_with_eacces_even_for_root() {
    let daemon = Daemon::start();
    let path = daemon.path("proc/uptime");
    let meta = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o444, 0, 0)
    );
    let err = OpenOptions::new().write(true).open(&path).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let err = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(&path)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("echo 1 > {}", path.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = std::fs::create_dir(daemon.path("proc/new")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    // Nothing changed.
    assert_eq!(
        std::fs::read_to_string(&path)
            .unwrap()
            .split_whitespace()
            .count(),
        2
    );
}

#[test]
fn a_panicking_view_is_eio_for_that_request_and_the_daemon_serves_on() {
    let daemon = Daemon::start_with(&["--test-nodes", "--threads", "2"]);
    // More panics than worker threads: a panic that killed its thread would stall the mount.
    for _ in 0..10 {
        let err = std::fs::read(daemon.path("test/panic")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        let text = std::fs::read_to_string(daemon.path("proc/uptime")).unwrap();
        assert_eq!(text.split_whitespace().count(), 2);
    }
    assert!(daemon.log().contains("view panicked"), "{}", daemon.log());
}

/// busybox `cat` copies with sendfile(2), which goes through the page cache and stops at the
/// file's size: views report an upper bound, reset on every lookup, so it sees everything.
#[test]
fn sendfile_readers_get_the_whole_file_whoever_read_before() {
    let daemon = rig::Daemon::start();
    let uptime = daemon.path("proc/uptime");
    let out = std::process::Command::new("busybox")
        .arg("cat")
        .arg(&uptime)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.split_whitespace().count(), 2, "{text:?}");
    // A longer file after a shorter one (the kernel shrinks its idea of the size to the
    // content a page-cache read found).
    let meminfo = daemon.path("proc/meminfo");
    let plain = std::fs::read_to_string(&meminfo).unwrap();
    let _ = std::process::Command::new("busybox")
        .arg("cat")
        .arg(&uptime)
        .output();
    let out = std::process::Command::new("busybox")
        .arg("cat")
        .arg(&meminfo)
        .output()
        .unwrap();
    let copied = String::from_utf8_lossy(&out.stdout);
    assert_eq!(copied.lines().count(), plain.lines().count());
}

/// `isatty()` (Python's `open()`, mawk) and the hole probes of coreutils get the kernel's
/// answers for a file that is no terminal and has no holes, and leave no log line behind.
#[test]
fn ioctls_and_hole_probes_are_answered_quietly() {
    let daemon = rig::Daemon::start();
    let meminfo = daemon.path("proc/meminfo");
    let probe = format!(
        "import os\nfd = os.open({path:?}, os.O_RDONLY)\nprint(os.isatty(fd))\n\
         print(os.lseek(fd, 0, os.SEEK_DATA))\nprint(os.lseek(fd, 0, os.SEEK_HOLE) > 0)\n",
        path = meminfo.display().to_string()
    );
    for _ in 0..3 {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", &probe])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "False\n0\nTrue\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = daemon.log();
    assert!(!log.contains("Not Implemented"), "{log}");
}
