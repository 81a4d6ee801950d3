//! Block IO accounting per device: v2 `io.stat`; v1 the throttle files (counted whatever the
//! IO scheduler) or, when the throttle files have nothing, BFQ's.

use std::collections::BTreeMap;

use super::{CgroupSet, parse};
use crate::cgroup::IoStat;
use crate::error::Result;

impl CgroupSet {
    /// Whether the cgroup's block IO is accounted at all (a v1 `blkio` or v2 `io`
    /// controller; v1 counts only devices with a throttle limit, or scheduled by BFQ).
    pub fn has_io_accounting(&self) -> bool {
        self.blkio.is_some()
    }

    /// IO of the cgroup and its descendants per device, sorted by device; devices with no IO
    /// are left out.
    pub fn io_stats(&self) -> Result<Vec<IoStat>> {
        let Some(dir) = &self.blkio else {
            return Ok(Vec::new());
        };
        let path = dir.path();
        let read = |name: &str| self.files.read(&path.join(name));
        let stats = if dir.v2 {
            read("io.stat")?.map(|t| v2_io_stat(&t)).unwrap_or_default()
        } else {
            let mut stats = v1_pair(
                read("blkio.throttle.io_service_bytes_recursive")?,
                read("blkio.throttle.io_serviced_recursive")?,
            );
            if stats.is_empty() {
                stats = v1_pair(
                    read("blkio.bfq.io_service_bytes_recursive")?,
                    read("blkio.bfq.io_serviced_recursive")?,
                );
            }
            stats
        };
        Ok(stats.into_iter().filter(has_io).collect())
    }
}

fn has_io(s: &IoStat) -> bool {
    s.read_bytes | s.write_bytes | s.read_ios | s.write_ios | s.discard_ios | s.discard_bytes != 0
}

/// v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` per line.
pub fn v2_io_stat(text: &str) -> Vec<IoStat> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(parse::device) else {
            continue;
        };
        let mut s = IoStat {
            major,
            minor,
            ..IoStat::default()
        };
        for (key, value) in parse::nested_keyed(fields) {
            match key {
                "rbytes" => s.read_bytes = value,
                "wbytes" => s.write_bytes = value,
                "rios" => s.read_ios = value,
                "wios" => s.write_ios = value,
                "dbytes" => s.discard_bytes = value,
                "dios" => s.discard_ios = value,
                _ => {}
            }
        }
        out.push(s);
    }
    out.sort_by_key(|s| (s.major, s.minor));
    out
}

/// v1 `…io_service_bytes…` and `…io_serviced…` (`MAJ:MIN Read N`, `Write`, `Discard`, ...,
/// and a final `Total N`) combined per device.
pub fn v1_pair(bytes: Option<String>, ios: Option<String>) -> Vec<IoStat> {
    let mut devices: BTreeMap<(u32, u32), IoStat> = BTreeMap::new();
    for (text, is_bytes) in [(bytes, true), (ios, false)] {
        for line in text.as_deref().unwrap_or("").lines() {
            let mut f = line.split_whitespace();
            let (Some(dev), Some(op), Some(value)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Some((major, minor)), Ok(value)) = (parse::device(dev), value.parse::<u64>())
            else {
                continue;
            };
            let s = devices.entry((major, minor)).or_insert(IoStat {
                major,
                minor,
                ..IoStat::default()
            });
            let field = match (op, is_bytes) {
                ("Read", true) => &mut s.read_bytes,
                ("Write", true) => &mut s.write_bytes,
                ("Discard", true) => &mut s.discard_bytes,
                ("Read", false) => &mut s.read_ios,
                ("Write", false) => &mut s.write_ios,
                ("Discard", false) => &mut s.discard_ios,
                _ => continue,
            };
            *field = value;
        }
    }
    devices.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_bytes_and_ops_combine_per_device() {
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n";
        let ios = "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n";
        let stats = v1_pair(Some(bytes.into()), Some(ios.into()));
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (
                stats[0].read_bytes,
                stats[0].write_bytes,
                stats[0].read_ios,
                stats[0].write_ios
            ),
            (4096, 8192, 1, 2)
        );
    }

    #[test]
    fn v2_io_stat_is_read_per_device_and_sorted() {
        let text = "259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n";
        let stats = v2_io_stat(text);
        assert_eq!((stats[0].major, stats[1].major), (8, 259));
        assert!(!has_io(&stats[0]));
        assert_eq!(stats[1].write_bytes, 20);
    }
}
