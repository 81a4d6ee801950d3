//! User-namespace id maps (`/proc/<pid>/uid_map`, `gid_map`) and capability masks.

use crate::error::Result;
use crate::procfs::ProcRoot;

/// The id the kernel shows for an id that has no mapping.
pub const OVERFLOW_ID: u32 = 65534;

/// An id map as the daemon reads it: `inside outside count` ranges, `outside` in the
/// daemon's user namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap(Vec<(u32, u32, u32)>);

impl IdMap {
    /// Parses the text of a map file; malformed lines are skipped.
    pub fn parse(text: &str) -> IdMap {
        IdMap(
            text.lines()
                .filter_map(|line| {
                    let mut f = line.split_whitespace().map(str::parse::<u32>);
                    Some((f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?))
                })
                .collect(),
        )
    }

    /// The map `file` (`uid_map` or `gid_map`) of task `pid`.
    pub fn read(proc: &ProcRoot, pid: u32, file: &str) -> Result<IdMap> {
        Ok(IdMap::parse(&proc.read_host(&format!("{pid}/{file}"))?))
    }

    /// The lowest and highest id the namespace maps (inside numbers).
    pub fn inside_bounds(&self) -> Option<(u32, u32)> {
        let first = self.0.iter().map(|(inside, _, _)| *inside).min()?;
        let last = self
            .0
            .iter()
            .map(|(inside, _, count)| inside.saturating_add(count.saturating_sub(1)))
            .max()?;
        Some((first, last))
    }

    /// `outside` as the namespace numbers it; `OVERFLOW_ID` when unmapped.
    pub fn inside(&self, outside: u32) -> u32 {
        self.0
            .iter()
            .find(|(_, out, count)| {
                outside >= *out && u64::from(outside) < u64::from(*out) + u64::from(*count)
            })
            .map_or(OVERFLOW_ID, |(inside, out, _)| inside + (outside - out))
    }

    /// `inside` as the daemon's namespace numbers it; `OVERFLOW_ID` when unmapped.
    pub fn outside(&self, inside: u32) -> u32 {
        self.0
            .iter()
            .find(|(inn, _, count)| {
                inside >= *inn && u64::from(inside) < u64::from(*inn) + u64::from(*count)
            })
            .map_or(OVERFLOW_ID, |(inn, out, _)| out + (inside - inn))
    }
}

/// The `CapEff:` mask of a status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_both_ways_and_unmapped_ones_overflow() {
        let map = IdMap::parse("         0     100000      65536\n");
        assert_eq!(map.inside(100_000), 0);
        assert_eq!(map.inside(101_000), 1000);
        assert_eq!(map.inside(0), OVERFLOW_ID);
        assert_eq!(map.outside(0), 100_000);
        assert_eq!(map.outside(70_000), OVERFLOW_ID);
        let identity = IdMap::parse("0 0 4294967295\n");
        assert_eq!((identity.inside(1000), identity.outside(0)), (1000, 0));
    }

    #[test]
    fn cap_eff_is_hex() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        // capget(2), which the write rules use on the hot path, says what status says, for
        // a thread with every capability and one with none.
        let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let sets = rustix::thread::capabilities(None).unwrap();
        assert_eq!(Some(sets.effective.bits()), parse_cap_eff(&own));
        let mut bare = std::process::Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-all", "--reuid=65534"])
            .args(["sleep", "10"])
            .spawn()
            .unwrap();
        // Once it runs `sleep`, setpriv has dropped everything.
        let comm = format!("/proc/{}/comm", bare.id());
        for _ in 0..2000 {
            if std::fs::read_to_string(&comm).unwrap_or_default().trim() == "sleep" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let pid = rustix::process::Pid::from_raw(bare.id() as i32).unwrap();
        let theirs = rustix::thread::capabilities(Some(pid)).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", bare.id())).unwrap();
        let _ = bare.kill();
        let _ = bare.wait();
        assert_eq!(Some(theirs.effective.bits()), parse_cap_eff(&status));
        assert_eq!(theirs.effective.bits(), 0, "{status}");
    }
}
