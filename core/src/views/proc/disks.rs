//! `proc/diskstats` and `proc/swaps` for a container.
//!
//! diskstats: one line per device the container did IO on (from its cgroup's IO accounting),
//! in the host file's order and column count (14, 18 or 20 fields): reads and writes
//! completed, merged, sectors (bytes / 512) and milliseconds where the accounting has them,
//! discards from v2; in-flight, time busy and the flush columns are 0 (not accounted per
//! cgroup). Devices the container did no IO on are left out (LXCFS #653 falls back to the
//! host file on v2 and on hybrid hosts).
//!
//! A block device's sysfs `stat` (what iostat reads): the same counters for that device, 0
//! when the container did no IO on it. The cgroup accounts IO by disk, so a partition's
//! file shows 0 and its disk's all of it.
//!
//! swaps: the host's header, plus one line for the container's swap when it has any.

use crate::cgroup::IoStat;

/// `proc/diskstats` from the host's text and the container's per-device IO.
pub fn render_diskstats(host: &str, io: &[IoStat]) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(major), Some(minor), Some(name)) = (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let Some(s) = io.iter().find(|s| s.major == major && s.minor == minor) else {
            continue;
        };
        out.push_str(&format!("{major:4} {minor:7} {name}"));
        for v in stat_values(s)
            .into_iter()
            .take(fields.len().saturating_sub(3))
        {
            out.push_str(&format!(" {v}"));
        }
        out.push('\n');
    }
    out
}

/// The 17 counters of a device's line (`Documentation/admin-guide/iostats.rst`) from the
/// cgroup's IO on it.
fn stat_values(s: &IoStat) -> [u64; 17] {
    let busy = s.read_ms.saturating_add(s.write_ms);
    [
        s.read_ios,
        s.read_merged,
        s.read_bytes / 512,
        s.read_ms,
        s.write_ios,
        s.write_merged,
        s.write_bytes / 512,
        s.write_ms,
        0,
        busy,
        busy,
        s.discard_ios,
        0,
        s.discard_bytes / 512,
        0,
        0,
        0,
    ]
}

/// A block device's sysfs `stat` for a container that did `io` on it (`None`: none), in the
/// shape of the host's file `host` (its number of columns, each 8 wide as the kernel prints
/// them).
pub fn render_block_stat(host: &str, io: Option<&IoStat>) -> String {
    let columns = host.split_whitespace().count().clamp(11, 17);
    let values = io.map(stat_values).unwrap_or_default();
    let out: Vec<String> = values[..columns].iter().map(|v| format!("{v:8}")).collect();
    let mut text = out.join(" ");
    text.push('\n');
    text
}

/// `proc/swaps`: the host's header line, and a line for `total` bytes of swap (`used` in
/// use) when `total` is not 0.
pub fn render_swaps(host: &str, total: u64, used: u64) -> String {
    let header = host
        .lines()
        .next()
        .unwrap_or("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority");
    let mut out = format!("{header}\n");
    if total > 0 {
        let (size_kb, used_kb) = (total / 1024, used.min(total) / 1024);
        out.push_str(&format!(
            "{:<40}{:<8}\t{size_kb}\t\t{used_kb}\t\t0\n",
            "none", "virtual"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
 254       0 vda 5000 10 400000 900 6000 20 800000 1200 0 2000 2100 0 0 0 0 100 50\n\
 254       1 vda1 4000 10 300000 800 5000 20 700000 1100 0 1900 1900 0 0 0 0 0 0\n";

    #[test]
    fn only_devices_with_io_are_listed_in_the_hosts_shape() {
        let io = [IoStat {
            major: 254,
            minor: 0,
            read_bytes: 4096,
            read_ios: 1,
            write_bytes: 1024,
            write_ios: 2,
            ..IoStat::default()
        }];
        let text = render_diskstats(HOST, &io);
        assert_eq!(text, " 254       0 vda 1 0 8 0 2 0 2 0 0 0 0 0 0 0 0 0 0\n");
        let short = render_diskstats(" 254       0 vda 1 2 3 4 5 6 7 8 9 10 11\n", &io);
        assert_eq!(short.split_whitespace().count(), 14);
    }

    #[test]
    fn a_block_stat_has_the_hosts_columns_each_eight_wide() {
        let io = IoStat {
            major: 254,
            minor: 0,
            read_bytes: 8 << 20,
            read_ios: 64,
            ..IoStat::default()
        };
        let host = "    5000       10   400000      900     6000       20   800000     1200        0     2000     2100        0        0        0        0      100       50\n";
        let text = render_block_stat(host, Some(&io));
        assert_eq!(text.len(), host.len());
        assert!(
            text.starts_with("      64        0    16384        0        0"),
            "{text:?}"
        );
        let idle = render_block_stat("1 2 3 4 5 6 7 8 9 10 11\n", None);
        assert_eq!(idle, format!("{}\n", ["       0"; 11].join(" ")));
    }

    #[test]
    fn no_io_means_an_empty_file() {
        assert_eq!(render_diskstats(HOST, &[]), "");
    }

    #[test]
    fn swaps_show_a_line_only_with_swap() {
        let host = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(render_swaps(host, 0, 0), host);
        let text = render_swaps(host, 1 << 30, 1 << 20);
        let line = text.lines().nth(1).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields, ["none", "virtual", "1048576", "1024", "0"]);
    }
}
