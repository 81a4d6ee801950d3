//! Memory views: `free`, `top`, meminfo and vmstat's gauges under the limit, an unlimited
//! container's host memory, and swap (`/proc/swaps`, meminfo's swap lines).

use crate::rig;
use crate::rig::{Daemon, Limits};

use super::{MIB, PYTHON, container, limited, meminfo_bytes, run};

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
