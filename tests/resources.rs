//! Resource views end to end: what real programs print inside a limited container.
//!
//! The limited container: memory 256 MiB, cpuset `0`, CPU quota 50 ms per 100 ms (half a CPU),
//! in fresh `nsview-test-*` cgroups (v1 on this host), new pid, mount, uts, ipc, net and cgroup
//! namespaces, with nsview's `proc/{meminfo,cpuinfo,stat,uptime,loadavg,diskstats,vmstat,interrupts,softirqs,swaps}` and
//! `sys/devices/system/cpu` bound over the container's own.

use std::time::{Duration, Instant};

use crate::rig;
use crate::rig::oci::host_uptime;
use crate::rig::{Container, ContainerBuilder, Daemon, Limits};

const MIB: u64 = 1024 * 1024;

/// What the tests bind from the daemon into each container.
const BINDS: &[&str] = &[
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/diskstats",
    "proc/vmstat",
    "proc/interrupts",
    "proc/softirqs",
    "proc/swaps",
    "sys/devices/system/cpu",
];

/// Debian's python, which has psutil (a pyenv python may come first on PATH).
const PYTHON: &str = "/usr/bin/python3";

fn limited() -> Limits {
    Limits {
        memory_bytes: Some(256 * MIB),
        cpuset_cpus: Some("0".into()),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(100_000),
        swap_bytes: None,
    }
}

fn container(daemon: &Daemon, limits: Limits) -> Container {
    ContainerBuilder::new()
        .limits(limits)
        .bind_from(daemon, BINDS)
        .start()
}

/// A CPU hog inside a container; the nsenter that started it is killed and reaped on drop
/// (the hog itself dies with the container's pid namespace).
struct Hog(std::process::Child);

impl Hog {
    fn start(c: &Container) -> Hog {
        Hog(c.spawn(&["/bin/sh", "-c", "while :; do :; done"]))
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// stdout of `script` inside `c`, which must succeed.
fn run(c: &Container, script: &str) -> String {
    let out = c.sh(script);
    assert!(out.status.success(), "{script}: {}", out.stderr);
    out.stdout.trim().to_owned()
}

/// The value of `key` (e.g. `MemTotal`) in meminfo text, in bytes.
fn meminfo_bytes(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The `cpu`/`cpuN` lines of a stat text, as (name, counters).
fn stat_cpus(text: &str) -> Vec<(String, Vec<u64>)> {
    text.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_owned();
            (name, f.map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

#[test]
fn free_and_top_show_the_memory_limit() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let free = run(&c, "free -b");
    let mem: Vec<&str> = free.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(mem[0], "Mem:");
    assert_eq!(mem[1], (256 * MIB).to_string(), "{free}");
    let top = run(&c, "top -bn1 | grep 'Mem :'");
    assert!(top.contains("256.0 total"), "{top}");
    run(&c, "vmstat 1 1");
    // In its own cgroup namespace the container's cgroup is its root (`0::/` on v2): the
    // limit came from where the host sees that cgroup.
    let own = run(&c, "cat /proc/self/cgroup");
    assert!(own.lines().all(|l| l.ends_with(":/")), "{own}");
}

#[test]
fn every_program_counts_the_limited_cpus_the_same() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    assert_eq!(run(&c, "nproc"), "1");
    assert_eq!(run(&c, "nproc --all"), "1");
    assert_eq!(run(&c, "getconf _NPROCESSORS_ONLN"), "1");
    assert_eq!(run(&c, "getconf _NPROCESSORS_CONF"), "1");
    let lscpu = run(&c, "lscpu | grep '^CPU(s):'");
    assert_eq!(lscpu.split_whitespace().last(), Some("1"), "{lscpu}");
    let py = run(
        &c,
        &format!(
            "{PYTHON} -c 'import os, psutil; print(os.cpu_count(), psutil.cpu_count(), \
             psutil.virtual_memory().total)'"
        ),
    );
    assert_eq!(py, format!("1 1 {}", 256 * MIB));
    assert_eq!(run(&c, "grep -c ^processor /proc/cpuinfo"), "1");
    assert_eq!(run(&c, "grep ^processor /proc/cpuinfo"), "processor\t: 0");
    let stat = run(&c, "cat /proc/stat");
    let names: Vec<String> = stat_cpus(&stat).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["cpu", "cpu0"], "{stat}");
}

#[test]
fn idle_never_decreases_while_a_cpu_hog_runs_inside() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let _hog = Hog::start(&c);
    let mut last: Option<Vec<(String, Vec<u64>)>> = None;
    for _ in 0..10 {
        let now = stat_cpus(&run(&c, "cat /proc/stat"));
        if let Some(prev) = &last {
            for ((name, before), (_, after)) in prev.iter().zip(&now) {
                for (i, (b, a)) in before.iter().zip(after).enumerate() {
                    assert!(a >= b, "{name} field {i} went from {b} to {a}");
                }
            }
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(200));
    }
    let busy: Vec<u64> = last.unwrap()[0].1.clone();
    assert!(
        busy[0] + busy[2] > 0,
        "the hog's user+system time shows: {busy:?}"
    );
    // uptime's idle column is stat's idle, summed over the CPUs, in seconds: read between
    // two reads of stat, it lies between their idle times (up to rounding to 1/100 s).
    let text = run(&c, "cat /proc/stat; cat /proc/uptime; cat /proc/stat");
    let idles: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("cpu "))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse::<f64>().unwrap() / 100.0)
        .collect();
    let uptime_line = text
        .lines()
        .find(|l| !l.contains(char::is_alphabetic))
        .unwrap();
    let uptime_idle: f64 = uptime_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        idles[0] - 0.02 <= uptime_idle && uptime_idle <= idles[1] + 0.02,
        "uptime idle {uptime_idle} not between stat's {idles:?}"
    );
}

#[test]
fn allocating_100_mib_inside_raises_used_memory_by_about_100_mib() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let before = run(&c, "cat /proc/meminfo");
    let used_before = meminfo_bytes(&before, "MemTotal") - meminfo_bytes(&before, "MemFree");
    let script = format!(
        "{PYTHON} -c 'import time; b = b\"x\" * (100 << 20); print(open(\"/proc/meminfo\").read(), flush=True)'"
    );
    let during = run(&c, &script);
    let used_during = meminfo_bytes(&during, "MemTotal") - meminfo_bytes(&during, "MemFree");
    let grown = used_during.saturating_sub(used_before);
    assert!(
        (90 * MIB..140 * MIB).contains(&grown),
        "used grew by {} MiB",
        grown / MIB
    );
    assert!(meminfo_bytes(&during, "MemAvailable") <= meminfo_bytes(&during, "MemTotal"));
}

#[test]
fn vmstats_memory_gauges_agree_with_meminfo_and_show_the_containers_100_mib() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    // While 100 MiB of anonymous memory is held: meminfo, then vmstat, by one reader.
    let script = format!(
        "{PYTHON} -c 'b = b\"x\" * (100 << 20); print(open(\"/proc/meminfo\").read()); \
         print(open(\"/proc/vmstat\").read(), flush=True)'"
    );
    let out = run(&c, &script);
    let gauge = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    let page = 4096;
    let free = gauge("nr_free_pages") * page;
    let anon = gauge("nr_anon_pages") * page;
    assert!(
        free < 256 * MIB,
        "nr_free_pages: {} MiB free of 256",
        free / MIB
    );
    let meminfo_free = meminfo_bytes(&out, "MemFree");
    assert!(
        free.abs_diff(meminfo_free) < 16 * MIB,
        "nr_free_pages {} MiB, MemFree {} MiB",
        free / MIB,
        meminfo_free / MIB
    );
    assert!(
        (95 * MIB..160 * MIB).contains(&anon),
        "nr_anon_pages: {} MiB anonymous with 100 MiB held",
        anon / MIB
    );
    let file = gauge("nr_file_pages") * page;
    assert!(file < 256 * MIB, "nr_file_pages: {} MiB", file / MIB);
}

#[test]
fn an_unlimited_container_sees_the_hosts_memory() {
    let daemon = Daemon::start();
    let c = container(&daemon, Limits::default());
    let inside = run(&c, "cat /proc/meminfo");
    let host = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert_eq!(
        meminfo_bytes(&inside, "MemTotal"),
        meminfo_bytes(&host, "MemTotal")
    );
    let host_free = meminfo_bytes(
        &std::fs::read_to_string("/proc/meminfo").unwrap(),
        "MemFree",
    );
    // The host's real MemFree, not host total minus the cgroup's usage (LXCFS): allow for
    // what the host allocates between the two reads.
    assert!(
        meminfo_bytes(&inside, "MemFree") <= host_free + 64 * MIB,
        "inside {} MiB free, host {} MiB",
        meminfo_bytes(&inside, "MemFree") / MIB,
        host_free / MIB
    );
}

/// The 1-minute load of `c` as it reads its `/proc/loadavg`.
fn load1(c: &Container) -> f64 {
    let text = run(c, "cat /proc/loadavg");
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_busy_loop_lifts_its_containers_load_and_not_its_siblings() {
    let daemon = Daemon::start();
    let busy = container(&daemon, Limits::default());
    let idle = container(&daemon, Limits::default());
    // Both are read once first, so the daemon samples both from now on.
    let (busy0, idle0) = (load1(&busy), load1(&idle));
    assert!(busy0 < 0.5 && idle0 < 0.5, "{busy0} {idle0}");
    let _hog = Hog::start(&busy);
    let started = Instant::now();
    // A live check only: `loadavg/tests.rs` proves the averages (0.39 after 30 s of one busy
    // task, as the kernel's) with an injected clock. Here the busy container's 1-minute load
    // must rise within a few of the daemon's 5-second samples (0.08 after one, 0.15 after
    // two) with the hog counted running in the last one (it may take a sample or two to
    // start in a slow VM), and its idle sibling's load must not rise.
    let sample = || -> (f64, Vec<String>) {
        let fields: Vec<String> = run(&busy, "cat /proc/loadavg")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (fields[0].parse().unwrap(), fields)
    };
    let running =
        |fields: &[String]| -> u32 { fields[3].split_once('/').unwrap().0.parse().unwrap() };
    let (mut seen, mut fields) = sample();
    while (seen <= 0.05 || running(&fields) < 1) && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        (seen, fields) = sample();
    }
    assert!(
        seen > 0.05 && running(&fields) >= 1,
        "busy container's load after {:?}: {fields:?}",
        started.elapsed()
    );
    eprintln!("load {seen} after {:?}", started.elapsed());
    let sibling = load1(&idle);
    assert!(
        sibling < seen / 2.0,
        "idle sibling's load {sibling}, the busy one's {seen}"
    );
    let total: u32 = fields[3].split_once('/').unwrap().1.parse().unwrap();
    // init (sleep), the hog's shell, this cat: a handful of tasks, not the host's hundreds.
    assert!(total < 20, "{}", fields[3]);
    // The last pid as the container numbers its tasks, not a host pid.
    assert!(fields[4].parse::<u32>().unwrap() < 100, "{}", fields[4]);
}

/// The swap tests one at a time: one of them adds swap to the machine, which the other must
/// not see.
static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A swap file on the scratch block device, swapped off and removed on drop. Only where the
/// machine is a throwaway one that says tests may add swap (the VM: `NSVIEW_TEST_MAY_SWAPON`);
/// on any other host, `None` and a line saying why.
struct SwapFile {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SwapFile {
    fn add(bytes: u64) -> Option<SwapFile> {
        if std::env::var_os("NSVIEW_TEST_MAY_SWAPON").is_none_or(|v| v != "1") {
            eprintln!(
                "NSVIEW_TEST_MAY_SWAPON is not 1: no swap is added to this host (the VM suite does)"
            );
            return None;
        }
        let dir = rig::block_scratch_dir();
        let path = dir.path().join("swap");
        // Written, not fallocated: swapon refuses files with holes or unwritten extents.
        std::fs::write(&path, vec![0u8; bytes as usize]).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mkswap = std::process::Command::new("mkswap")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            mkswap.status.success(),
            "mkswap: {}",
            String::from_utf8_lossy(&mkswap.stderr)
        );
        let swap = SwapFile { path, _dir: dir };
        let on = std::process::Command::new("swapon")
            .arg(&swap.path)
            .output()
            .unwrap();
        assert!(
            on.status.success(),
            "swapon: {}",
            String::from_utf8_lossy(&on.stderr)
        );
        Some(swap)
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let _ = std::process::Command::new("swapoff")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn swaps_and_meminfo_show_the_containers_swap_limit_and_what_it_swapped() {
    let _one = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_swap) = SwapFile::add(128 * MIB) else {
        return;
    };
    let daemon = Daemon::start();
    let c = container(
        &daemon,
        Limits {
            memory_bytes: Some(32 * MIB),
            swap_bytes: Some(64 * MIB),
            ..Limits::default()
        },
    );
    // 48 MiB written under a 32 MiB limit: the rest goes to swap. Read while it is held.
    let script = format!(
        "{PYTHON} -c 'b = bytearray(b\"x\") * (48 << 20); \
         print(open(\"/proc/swaps\").read() + open(\"/proc/meminfo\").read())'"
    );
    let out = run(&c, &script);
    let swaps: Vec<&str> = out
        .lines()
        .take_while(|l| !l.starts_with("MemTotal"))
        .collect();
    assert_eq!(swaps.len(), 2, "{out}");
    let fields: Vec<&str> = swaps[1].split_whitespace().collect();
    assert_eq!(fields[..3], ["none", "virtual", "65536"], "{}", swaps[1]);
    let used_kb: u64 = fields[3].parse().unwrap();
    assert!(
        (8 * 1024..=64 * 1024).contains(&used_kb),
        "swapped {used_kb} kB"
    );
    assert_eq!(meminfo_bytes(&out, "SwapTotal"), 64 * MIB);
    let free = meminfo_bytes(&out, "SwapFree");
    assert!(free < 64 * MIB - 8 * MIB, "SwapFree {free}");
}

#[test]
fn swaps_show_the_header_only_without_swap() {
    let _one = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let swaps = run(&c, "cat /proc/swaps");
    assert_eq!(swaps.lines().count(), 1, "{swaps}");
    assert!(swaps.starts_with("Filename"));
    let meminfo = run(&c, "cat /proc/meminfo");
    assert_eq!(meminfo_bytes(&meminfo, "SwapTotal"), 0);
}

/// A scratch directory on a block device whose IO `c`'s cgroup accounts, and the device's
/// (major, minor).
fn accounted_block_dir(c: &Container) -> (tempfile::TempDir, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let dir = rig::block_scratch_dir();
    let dev = std::fs::metadata(dir.path()).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    assert_ne!(
        major,
        0,
        "{} is on no block device: set NSVIEW_TEST_BLOCK_DIR to a directory on one",
        dir.path().display()
    );
    // v1 blk-throttle accounts a cgroup's IO only on devices it has a limit for: set a limit
    // far above what the test does, on the disk under the test's scratch directory. (v2's
    // io.stat accounts every device.)
    if !c.cgroup().is_v2() {
        let blkio = c.cgroup().path("blkio");
        for file in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
        ] {
            std::fs::write(blkio.join(file), format!("{major}:{minor} 10000000000")).unwrap();
        }
    }
    (dir, major, minor)
}

/// A shell command that writes 8 MiB to `file` and reads them back, bypassing the page cache.
fn direct_io(file: &std::path::Path) -> String {
    format!(
        "dd if=/dev/zero of={f} bs=1M count=8 oflag=direct 2>/dev/null && \
         dd if={f} of=/dev/null bs=1M iflag=direct 2>/dev/null",
        f = file.display()
    )
}

#[test]
fn diskstats_shows_the_io_the_container_did_and_nothing_else() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let (dir, major, minor) = accounted_block_dir(&c);
    let file = dir.path().join("io");
    let before = sectors(&run(&c, "cat /proc/diskstats"), major, minor);
    run(&c, &direct_io(&file));
    let stats = run(&c, "cat /proc/diskstats");
    let after = sectors(&stats, major, minor);
    assert!(
        after.0 >= before.0 + 16384 && after.1 >= before.1 + 16384,
        "8 MiB each way should show: {before:?} -> {after:?}\n{stats}"
    );
    // Only devices the container's cgroup did IO on: far fewer than the host's lines.
    let host_lines = std::fs::read_to_string("/proc/diskstats")
        .unwrap()
        .lines()
        .count();
    assert!(stats.lines().count() < host_lines, "{stats}");
}

/// The output of `script` inside `c`, where `{io}` in it stands for writing and reading 8 MiB
/// directly on a block device `c`'s cgroup accounts; and that device's name.
fn with_8_mib_each_way(c: &Container, script: &str) -> (String, String) {
    let (dir, major, minor) = accounted_block_dir(c);
    let out = run(
        c,
        &script.replace("{io}", &direct_io(&dir.path().join("io"))),
    );
    eprintln!("{out}");
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).unwrap();
    (out, link.file_name().unwrap().to_str().unwrap().to_owned())
}

/// Where a rate since boot of the container's 8 MiB (and the little else it did) lies, over
/// its age `age` read just before the tool read its counters.
fn rate_of_8_mib_at(age: f64) -> std::ops::RangeInclusive<f64> {
    8192.0 / (age + 2.0) * 0.5..=12288.0 / age * 1.5 + 1.0
}

/// A limited container with [`BINDS`] and nsview's `stat` of every block device bound over
/// the device's own, as the hook binds them.
fn container_with_block_stats(daemon: &Daemon) -> Container {
    let mut builder = ContainerBuilder::new()
        .limits(limited())
        .bind_from(daemon, BINDS);
    let sys = std::path::Path::new("/sys");
    for bind in nsview::oci::binds(&[(nsview::oci::BLOCK, false)], sys) {
        builder = builder.bind(daemon.path(&bind.source), &format!("/{}", bind.target));
    }
    builder.start()
}

#[test]
fn iostat_shows_the_containers_own_io_on_each_device_and_none_on_the_others() {
    let daemon = Daemon::start();
    let c = container_with_block_stats(&daemon);
    // One report: the counters since boot over the uptime, the container's age.
    let (out, disk) = with_8_mib_each_way(
        &c,
        "{io}; cut -d' ' -f1 /proc/uptime; LC_ALL=C iostat -x -d -k",
    );
    let age: f64 = out.lines().next().unwrap().parse().unwrap();
    let header: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("Device"))
        .unwrap_or_else(|| panic!("no iostat header: {out}"))
        .split_whitespace()
        .collect();
    let column = |line: &[&str], name: &str| -> f64 {
        let i = header.iter().position(|w| *w == name).unwrap();
        line[i].parse().unwrap()
    };
    let devices: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("Device"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect();
    let ours = devices
        .iter()
        .find(|w| w[0] == disk)
        .unwrap_or_else(|| panic!("no {disk} line: {out}"));
    for col in ["rkB/s", "wkB/s"] {
        let rate = column(ours, col);
        assert!(
            rate_of_8_mib_at(age).contains(&rate),
            "{disk} {col} {rate}, not 8 MiB over {age} s: {out}"
        );
    }
    for other in devices.iter().filter(|w| w[0] != disk) {
        assert_eq!(
            column(other, "rkB/s") + column(other, "wkB/s"),
            0.0,
            "the container did no IO on {}: {out}",
            other[0]
        );
    }
    // Its partitions' files and the rest of the device's directory stay in place.
    let listing = run(&c, &format!("ls /sys/block/{disk}/"));
    assert!(
        listing.split_whitespace().any(|n| n == "queue"),
        "{listing}"
    );
}

#[test]
fn a_containers_block_stats_show_nothing_of_its_neighbours_io_and_take_no_writes() {
    let daemon = Daemon::start();
    let (a, b) = (
        container_with_block_stats(&daemon),
        container_with_block_stats(&daemon),
    );
    let (_, disk) = with_8_mib_each_way(&a, "{io}");
    let sectors = |c: &Container| -> (u64, u64) {
        let text = run(c, &format!("cat /sys/block/{disk}/stat"));
        let f: Vec<u64> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        (f[2], f[6])
    };
    let (read, written) = sectors(&a);
    assert!(
        read >= 16384 && written >= 16384,
        "a's own: {read} {written}"
    );
    let (read, written) = sectors(&b);
    assert!(
        read < 16384 && written < 16384,
        "b sees a's IO: {read} {written}"
    );
    let host = std::fs::read_to_string(format!("/sys/block/{disk}/stat")).unwrap();
    let out = b.sh(&format!("echo 0 0 0 0 > /sys/block/{disk}/stat"));
    assert!(!out.status.success(), "a write to a block stat was taken");
    let after = std::fs::read_to_string(format!("/sys/block/{disk}/stat")).unwrap();
    let reads = |t: &str| t.split_whitespace().next().unwrap().parse::<u64>().unwrap();
    assert!(
        reads(&after) >= reads(&host),
        "the host's counters went back"
    );
}

#[test]
fn per_cpu_interrupt_rates_are_the_hosts_on_the_containers_cpu_only() {
    // CPU 0's counts in the host's tables, and when.
    let cpu0 = || -> ([f64; 2], Instant) {
        let total = |file: &str| -> f64 {
            let text = std::fs::read_to_string(format!("/proc/{file}")).unwrap();
            let columns = text.lines().next().unwrap().split_whitespace().count();
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let values: Vec<f64> = words
                        .iter()
                        .skip(1)
                        .take(columns)
                        .map_while(|w| w.parse().ok())
                        .collect();
                    (values.len() == columns).then(|| values[0])
                })
                .sum()
        };
        ([total("interrupts"), total("softirqs")], Instant::now())
    };
    let (before, started) = cpu0();
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    // mpstat's per-CPU interrupt and softirq rates since boot, a second in (counts over a
    // tiny age are all rounding).
    let out = run(&c, "sleep 1; LC_ALL=C mpstat -I ALL");
    eprintln!("{out}");
    let (after, ended) = cpu0();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 2 && w[1].parse::<u32>().is_ok())
        .collect();
    assert_eq!(rows.len(), 2, "a row per table, for CPU 0 alone: {out}");
    // Its one CPU, by its host number, in both tables.
    for file in ["interrupts", "softirqs"] {
        let header = run(&c, &format!("head -1 /proc/{file}"));
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["CPU0"],
            "{file}"
        );
    }
    // What the host's CPU 0 did: on average since boot, and over the container's life. The
    // container's rate is the first scaled to its age plus the second (not host uptime / age
    // times the first).
    let up = host_uptime();
    let window = ended.duration_since(started).as_secs_f64();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[1], "0", "{out}");
        let (average, lately) = (after[i] / up, (after[i] - before[i]) / window);
        let sum: f64 = row[2..].iter().filter_map(|w| w.parse::<f64>().ok()).sum();
        assert!(
            sum <= 2.0 * (average + lately) + 100.0,
            "{sum} per s on CPU 0; the host's {average:.0} on average, {lately:.0} lately: {out}"
        );
    }
}

/// The data lines of `vmstat` output, as maps from the header's column names.
fn vmstat_lines(text: &str) -> Vec<std::collections::HashMap<String, u64>> {
    let mut lines = text.lines().skip_while(|l| !l.contains(" bo "));
    let header: Vec<String> = lines
        .next()
        .unwrap_or_else(|| panic!("no vmstat header in {text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    lines
        .take_while(|l| l.split_whitespace().all(|w| w.parse::<u64>().is_ok()))
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split_whitespace().map(|w| w.parse().unwrap()))
                .collect()
        })
        .collect()
}

/// The host's interrupts and context switches per second since its boot.
fn host_average_rates() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let count = |key: &str| -> f64 {
        let line = stat.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let up = host_uptime();
    (count("intr ") / up, count("ctxt ") / up)
}

#[test]
fn vmstats_first_line_shows_the_containers_own_io_rate_and_the_hosts_interrupt_rate() {
    // On the age clock (as in a time namespace of its own): the container is seconds old,
    // so its 8 MiB since "boot" is a rate vmstat's whole kB/s can show (over a host's boot
    // clock of hours it rounds to 0), and the host's counters go through the scaling.
    let daemon = Daemon::start_with(&["--uptime", "age"]);
    let c = container(&daemon, limited());
    // 8 MiB each way, then vmstat: its first line divides the counters since boot by the
    // CPU time of the container's one CPU, its age (procps: count * HZ / all ticks). A
    // second's wait first: what the host's counters gain between vmstat's own first reads is
    // the container's too (as natively), and over an age of 0.1 s those few milliseconds of
    // a busy host's context switches looked like 3 times its rate.
    let (out, _) = with_8_mib_each_way(&c, "{io}; sleep 1; cut -d' ' -f1 /proc/uptime; vmstat 1 2");
    let age: f64 = out.lines().next().unwrap().parse().unwrap();
    let lines = vmstat_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    let (first, second) = (&lines[0], &lines[1]);
    for col in ["bi", "bo"] {
        let rate = first[col] as f64;
        assert!(
            rate_of_8_mib_at(age).contains(&rate),
            "{col} {rate} kB/s, not 8 MiB over {age} s: {out}"
        );
    }
    // Interrupts and context switches are host-wide. vmstat is the first to read the
    // container's proc/stat, so its first line is the host's average rate since boot (not
    // host uptime / age times it); the second is the host's over that second.
    let (intr_avg, ctxt_avg) = host_average_rates();
    for (col, avg) in [("in", intr_avg), ("cs", ctxt_avg)] {
        let bound = 2.0 * avg.max(second[col] as f64) + 1000.0;
        assert!(
            (first[col] as f64) <= bound,
            "{col} {} per s, the host's {avg:.0} on average and {} now: {out}",
            first[col],
            second[col]
        );
    }
}

#[test]
fn sar_and_mpstat_show_the_containers_io_and_the_hosts_interrupt_rate() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    // mpstat first: the first reader of the container's proc/stat. Then the 8 MiB each way
    // inside sar's 3-second interval: the IO waits for sar's collector (sadc) to be running
    // and then a little, for its first sample (a fixed delay lost the race in a slow VM,
    // where the write came before that sample and pgpgout/s read 0).
    let (out, _) = with_8_mib_each_way(
        &c,
        "LC_ALL=C mpstat -I SUM; \
         (i=0; until grep -qx sadc /proc/[0-9]*/comm 2>/dev/null || [ $i -ge 500 ]; \
          do i=$((i + 1)); sleep 0.02; done; \
          sleep 0.5; {io}) & \
         LC_ALL=C sar -B 3 1; wait",
    );
    let average = out
        .lines()
        .find(|l| l.starts_with("Average:"))
        .unwrap_or_else(|| panic!("no sar average: {out}"));
    let header = out
        .lines()
        .find(|l| l.contains("pgpgout/s"))
        .unwrap_or_else(|| panic!("no sar header: {out}"));
    let column = |name: &str| -> f64 {
        let i = header.split_whitespace().position(|w| w == name).unwrap();
        average.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    for col in ["pgpgin/s", "pgpgout/s"] {
        let rate = column(col);
        assert!(
            (8192.0 / 3.0 * 0.5..=10240.0 / 3.0 * 1.3).contains(&rate),
            "{col} {rate}: the container's 8 MiB in 3 s: {out}"
        );
    }
    // mpstat without an interval: interrupts per second since boot, which for the first
    // reader is the host's average (the container's age times it would be 1/age host
    // uptimes' worth of interrupts).
    let intr = out
        .lines()
        .skip_while(|l| !l.contains("intr/s"))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "all")?;
            words.get(at + 1)?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no mpstat line: {out}"));
    let (intr_avg, _) = host_average_rates();
    assert!(
        intr <= 2.0 * intr_avg + 1000.0,
        "intr/s {intr}, the host's {intr_avg:.0}: {out}"
    );
}

/// (sectors read, sectors written) of device `major:minor` in a diskstats text; 0 when absent.
fn sectors(text: &str, major: u32, minor: u32) -> (u64, u64) {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[0] == major.to_string() && f[1] == minor.to_string())
        .map_or((0, 0), |f| (f[5].parse().unwrap(), f[9].parse().unwrap()))
}

/// How many of `daemon`'s descriptors lead into cgroup `name` (or a cgroup below it).
fn descriptors_into(daemon: &Daemon, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().contains(&format!("/{name}")))
        .count()
}

#[test]
fn an_ended_containers_cgroup_descriptors_are_closed() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let name = c.cgroup().name().to_owned();
    run(
        &c,
        "cat /proc/meminfo /proc/stat /proc/cpuinfo /proc/loadavg >/dev/null",
    );
    let held = descriptors_into(&daemon, &name);
    assert!(
        held > 0,
        "the daemon reads the container's cgroup through descriptors"
    );
    drop(c);
    // Within a round of the daemon's 5-second housekeeping (a descriptor held into a removed
    // cgroup keeps it in the kernel as a dying cgroup).
    let started = Instant::now();
    while descriptors_into(&daemon, &name) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{} of {held} descriptors into {name} still open",
            descriptors_into(&daemon, &name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{held} descriptors closed {:?} after the container ended",
        started.elapsed()
    );
}

#[test]
fn a_daemon_short_of_descriptors_keeps_fewer_cgroup_files_open_and_reads_on() {
    let daemon = Daemon::start();
    // An open-file limit of 200: at most 100 cgroup files are kept open (half the limit),
    // where 16 containers reading five files each would keep about 14 apiece.
    let limited_fds = std::process::Command::new("prlimit")
        .args(["--pid", &daemon.pid().to_string(), "--nofile=200:200"])
        .status()
        .unwrap();
    assert!(limited_fds.success());
    let containers: Vec<Container> = (0..16).map(|_| container(&daemon, limited())).collect();
    for c in &containers {
        let text = run(
            c,
            "cat /proc/stat /proc/cpuinfo /proc/loadavg /proc/uptime >/dev/null && cat /proc/meminfo",
        );
        assert_eq!(meminfo_bytes(&text, "MemTotal"), 256 * MIB, "{text}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&daemon.ctl(&["--json", "status"])).unwrap();
    let kept = status["cgroup_files_kept"].as_u64().unwrap();
    assert_eq!(
        status["cgroup_files_budget"].as_u64(),
        Some(100),
        "{status}"
    );
    assert!(
        (50..=100).contains(&kept),
        "{kept} cgroup files kept: {status}"
    );
    let open = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .count();
    assert!(open < 200, "{open} descriptors open");
    assert_eq!(status["host_fallbacks"].as_u64(), Some(0), "{status}");
}

#[test]
fn writes_are_refused_and_reads_past_the_end_are_empty() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    for file in ["meminfo", "stat", "cpuinfo", "loadavg", "vmstat"] {
        let out = c.sh(&format!("echo 1 > /proc/{file}"));
        assert!(!out.status.success(), "{file}");
        assert!(
            out.stderr.contains("Permission denied"),
            "{file}: {}",
            out.stderr
        );
    }
    let tail = run(
        &c,
        "dd if=/proc/meminfo bs=1 skip=1000000 2>/dev/null | wc -c",
    );
    assert_eq!(tail, "0");
}

#[test]
fn a_container_whose_cgroup_vanishes_gets_an_answer_not_a_hang() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    run(&c, "cat /proc/meminfo /proc/stat");
    // A reader that holds meminfo open across the removal of the container's cgroups (its
    // tasks are moved to the parent cgroups and its own removed, as a runtime tearing it
    // down would), then reads it and opens more.
    let mut reader = c.spawn(&[
        "/bin/sh",
        "-c",
        "exec 3</proc/meminfo; sleep 2; cat <&3 /proc/stat /proc/cpuinfo /proc/loadavg \
         /sys/devices/system/cpu/online >/dev/null; echo rc=$?",
    ]);
    c.cgroup().evacuate_and_remove();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = reader.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "reader hangs");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(reader.stdout.as_mut().unwrap(), &mut out).unwrap();
    // The host view (rc=0) or EIO (rc=1), never a hang; and the daemon serves on.
    assert!(out.trim() == "rc=0" || out.trim() == "rc=1", "{out:?}");
    let host = std::fs::read_to_string(daemon.path("proc/uptime")).unwrap();
    assert!(!host.is_empty());
}

#[test]
fn a_container_moved_out_of_a_removed_cgroup_sees_the_limits_of_the_one_it_is_in() {
    let daemon = Daemon::start();
    let outer = Limits {
        memory_bytes: Some(192 * MIB),
        ..Limits::default()
    };
    let inner = Limits {
        memory_bytes: Some(128 * MIB),
        ..Limits::default()
    };
    let mut c = ContainerBuilder::new()
        .limits(inner)
        .inside(outer)
        .bind_from(&daemon, BINDS)
        .start();
    let memtotal = |c: &Container| meminfo_bytes(&run(c, "cat /proc/meminfo"), "MemTotal");
    assert_eq!(memtotal(&c), 128 * MIB);
    // The runtime moves it up and removes its cgroup: the next read follows it.
    c.cgroup_mut().evacuate_inner();
    assert_eq!(memtotal(&c), 192 * MIB, "{}", daemon.log());
    assert!(daemon.log().contains("is gone; now"), "{}", daemon.log());
}

#[test]
fn reading_sys_cpu_online_in_a_loop_leaves_the_daemons_memory_flat() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let script = "for t in $(seq 100); do \
                  (end=$(( $(date +%s) + SECS )); while [ $(date +%s) -lt $end ]; do \
                  cat /sys/devices/system/cpu/online >/dev/null; done) & done; wait";
    // A warm-up until the RSS stops growing, then the long run: the daemon's RSS may grow
    // while it warms up (each FUSE worker's stack and allocator arena fills as the workers
    // take turns; on a slow machine that takes longer), not with the number of requests.
    let mut warm = rss();
    for _ in 0..8 {
        run(&c, &script.replace("SECS", "4"));
        let now = rss();
        let settled = now <= warm + 256;
        warm = now;
        if settled {
            break;
        }
    }
    run(&c, &script.replace("SECS", "30"));
    let after = rss();
    assert!(
        after <= warm + 2048,
        "RSS grew from {warm} kB to {after} kB over 30 s of reads"
    );
}

#[test]
fn a_host_process_in_a_limited_cgroup_sees_its_limit() {
    let daemon = Daemon::start();
    let cgroup = rig::Cgroup::create(&Limits {
        memory_bytes: Some(128 * MIB),
        ..Limits::default()
    });
    let joins: Vec<String> = cgroup
        .procs_files()
        .iter()
        .map(|f| format!("echo $$ > {}", f.display()))
        .collect();
    let script = format!(
        "{}; cat {}",
        joins.join("; "),
        daemon.path("proc/meminfo").display()
    );
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(meminfo_bytes(&text, "MemTotal"), 128 * MIB);
}

#[test]
fn pressure_and_slabinfo_answer_and_slabinfo_is_root_only() {
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(limited())
        .bind_from(&daemon, &["proc/pressure", "proc/slabinfo"])
        .start();
    for kind in ["cpu", "memory", "io"] {
        let text = run(&c, &format!("cat /proc/pressure/{kind}"));
        // This host is cgroup v1: the host's pressure, in the kernel's format.
        assert!(text.starts_with("some avg10="), "{kind}: {text}");
    }
    let slab = run(&c, "head -2 /proc/slabinfo");
    assert!(slab.starts_with("slabinfo - version"), "{slab}");
    let out = c.sh("setpriv --reuid 1000 --regid 1000 --clear-groups cat /proc/slabinfo");
    assert!(!out.status.success());
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
}

/// A PSI trigger written to `proc/pressure/cpu` fires through the FUSE file as through the
/// kernel's: the container's cgroup's pressure on cgroup v2, the host's on v1 placements.
#[test]
fn a_psi_trigger_on_proc_pressure_fires_when_the_container_stalls() {
    if !std::path::Path::new("/proc/pressure/cpu").exists() {
        return; // no PSI on this kernel
    }
    let daemon = Daemon::start();
    let c = ContainerBuilder::new()
        .limits(limited())
        .bind_from(&daemon, &["proc/pressure"])
        .start();
    let script = r#"import errno, os, select, subprocess
p = "/proc/pressure/cpu"
def attempt(text):
    fd = os.open(p, os.O_RDWR)
    try:
        return os.write(fd, text), fd
    except OSError as e:
        os.close(fd)
        return errno.errorcode[e.errno], None
print(attempt(b"sometimes 1 2\n")[0])
print(attempt(b"some 100000 1000000\n")[0])
n, fd = attempt(b"some 100000 2000000\n")
print(n)
try:
    os.write(fd, b"some 100000 2000000\n")
    print("again")
except OSError as e:
    print(errno.errorcode[e.errno])
hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(3)]
poller = select.poll()
poller.register(fd, select.POLLPRI)
events = poller.poll(20000)
print("fired" if events and events[0][1] & select.POLLPRI else "timeout")
print("error" if events and events[0][1] & select.POLLERR else "no error")
for h in hogs:
    h.kill()
# A pressure file without a trigger polls as the kernel's: at once, POLLERR and POLLPRI.
bare = os.open(p, os.O_RDONLY)
poller = select.poll()
poller.register(bare, select.POLLPRI)
events = poller.poll(0)
print("bare", bool(events and events[0][1] & select.POLLERR))
"#;
    let out = c.exec(&[PYTHON, "-c", script]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lines[0], "EINVAL", "a malformed trigger");
    // A 1 s window: refused without CAP_SYS_RESOURCE on Linux 6.5+, as natively.
    let native = std::process::Command::new(PYTHON)
        .args(["-c", "import errno, os\nfd = os.open('/proc/pressure/cpu', os.O_RDWR)\ntry:\n    print(os.write(fd, b'some 100000 1000000\\n'))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"])
        .output()
        .unwrap();
    assert_eq!(lines[1], String::from_utf8_lossy(&native.stdout).trim());
    assert_eq!(
        &lines[2..],
        ["20", "EBUSY", "fired", "no error", "bare True"],
        "{}",
        out.stderr
    );
}

/// A container in a cgroup inside a limited one (a pod's, a slice's) sees the tighter limit
/// up its hierarchy: the outer memory limit and CPU quota, the outer cpuset.
#[test]
fn a_container_in_a_limited_parent_cgroup_sees_the_parents_limits() {
    let daemon = Daemon::start();
    let outer = Limits {
        memory_bytes: Some(192 * MIB),
        cpu_quota_us: Some(100_000),
        cpu_period_us: Some(100_000),
        cpuset_cpus: Some("0".into()),
        swap_bytes: None,
    };
    let inner = Limits {
        memory_bytes: Some(512 * MIB),
        ..Limits::default()
    };
    let c = ContainerBuilder::new()
        .limits(inner)
        .inside(outer)
        .bind_from(&daemon, BINDS)
        .start();
    let meminfo = run(&c, "cat /proc/meminfo");
    assert_eq!(meminfo_bytes(&meminfo, "MemTotal"), 192 * MIB, "{meminfo}");
    assert_eq!(run(&c, "nproc"), "1");
    assert_eq!(run(&c, "cat /sys/devices/system/cpu/online"), "0");
}
