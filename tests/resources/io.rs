//! IO views: diskstats and each block device's `stat` with the container's own IO, as
//! iostat, vmstat and sar report it.

use crate::rig;
use crate::rig::oci::host_uptime;
use crate::rig::{Container, ContainerBuilder, Daemon};

use super::{BINDS, container, limited, run};

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
