//! CPU lists as the kernel writes them (`0-3,5,7-8`).

use std::fmt;

/// A set of CPU numbers, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSet(Vec<u32>);

/// Above any CPU number a kernel supports (`NR_CPUS` tops out at 8192); bounds what a
/// malformed list can make us allocate.
const MAX_CPU: u32 = 1 << 16;

impl CpuSet {
    /// Parses a kernel CPU list; surrounding whitespace and an empty list are fine, anything
    /// else malformed (or a CPU number above 65535) is `None`.
    pub fn parse(text: &str) -> Option<CpuSet> {
        let mut cpus = Vec::new();
        for part in text.trim().split(',').filter(|p| !p.is_empty()) {
            let (lo, hi): (u32, u32) = match part.split_once('-') {
                Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                None => {
                    let cpu = part.parse().ok()?;
                    (cpu, cpu)
                }
            };
            if lo > hi || hi > MAX_CPU {
                return None;
            }
            cpus.extend(lo..=hi);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Some(CpuSet(cpus))
    }

    /// The set of `cpus`.
    pub fn of(cpus: impl IntoIterator<Item = u32>) -> CpuSet {
        let mut cpus: Vec<u32> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        CpuSet(cpus)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CPU numbers, ascending.
    pub fn cpus(&self) -> &[u32] {
        &self.0
    }
}

impl fmt::Display for CpuSet {
    /// Writes the set in the kernel's list format, ranges collapsed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ranges_singles_and_newline() {
        let set = CpuSet::parse("0-2,5,7-8\n").unwrap();
        assert_eq!(set.cpus(), &[0, 1, 2, 5, 7, 8]);
        assert_eq!(set.len(), 6);
        assert_eq!(set.to_string(), "0-2,5,7-8");
        assert!(CpuSet::parse("\n").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in ["a", "3-1", "1-", "-1", "0-99999999", "1,,x"] {
            assert_eq!(CpuSet::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(cpus in proptest::collection::btree_set(0u32..512, 0..64)) {
            let set = CpuSet(cpus.into_iter().collect());
            prop_assert_eq!(CpuSet::parse(&set.to_string()), Some(set));
        }
    }
}
