//! Host-wide event counters in a container's files, scaled so that a rate over the
//! container's age comes out right: `proc/stat`'s `intr`, `ctxt` and `softirq`, and the
//! events of `proc/vmstat` that no cgroup counts.
//!
//! Tools divide a counter since boot by the uptime (vmstat's first line, mpstat and sar
//! without an interval). A container's uptime is its age, so the host's count since the
//! host's boot would make a rate host uptime / age times the host's (`vmstat 1 2` in a
//! container a minute old on a host up a day: 1440x). A container instead sees, per counter,
//! the host's value when it first read the file scaled by age / host uptime (the host's
//! average rate over the container's life so far), plus all the host's counter has risen
//! since: the first line's rate is the host's average rate, every later interval's is the
//! host's own rate over it (what the container natively sees), and a value never goes back.

use std::collections::HashMap;

/// One file's counters at a container's first read of it, and the share to scale them by.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scaled {
    /// The container's age over the host's uptime at that read, in `[0, 1]`.
    share: f64,
    /// The host's nonzero values then, by name (a counter that was 0 is left out).
    first: HashMap<Box<str>, u64>,
}

impl Scaled {
    /// The baseline of a container `age_secs` old on a host up `host_uptime_secs`, whose
    /// file holds `counters` (name and host value) now.
    pub fn new<'a>(
        age_secs: f64,
        host_uptime_secs: f64,
        counters: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Scaled {
        let share = if host_uptime_secs > 0.0 {
            (age_secs / host_uptime_secs).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let first = counters
            .into_iter()
            .filter(|&(_, v)| v != 0)
            .map(|(name, v)| (Box::from(name), v))
            .collect();
        Scaled { share, first }
    }

    /// What the container sees of counter `name` when the host's reads `host_now`.
    pub fn value(&self, name: &str, host_now: u64) -> u64 {
        let first = self.first.get(name).copied().unwrap_or(0);
        let base = (first as f64 * self.share).round() as u64;
        host_now.saturating_sub(first).saturating_add(base)
    }
}

/// A container's baselines, one per file, made at its first read of the file.
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    /// `proc/stat`'s.
    pub stat: Option<Scaled>,
    /// `proc/vmstat`'s.
    pub vmstat: Option<Scaled>,
}

/// The counters of a line `key v0 v1 ...` of `proc/stat` (`intr`, `softirq`, `ctxt`), named
/// `key` for the first value and `key.N` for the N-th after it.
pub fn stat_line_counters(line: &str) -> Vec<(String, u64)> {
    let mut words = line.split_whitespace();
    let Some(key) = words.next() else {
        return Vec::new();
    };
    words
        .enumerate()
        .filter_map(|(i, w)| {
            let v = w.parse::<u64>().ok()?;
            Some((column_name(key, i), v))
        })
        .collect()
}

fn column_name(key: &str, i: usize) -> String {
    if i == 0 {
        key.to_string()
    } else {
        format!("{key}.{i}")
    }
}

/// The lines of `proc/stat` whose counters are host-wide and scaled.
pub const SCALED_STAT_LINES: [&str; 3] = ["intr", "ctxt", "softirq"];

/// Line `line` of `proc/stat` (one of [`SCALED_STAT_LINES`]) with every counter scaled by
/// `scaled`, appended to `out` with its newline.
pub fn push_scaled_stat_line(out: &mut String, line: &str, scaled: &Scaled) {
    let mut words = line.split_whitespace();
    let Some(key) = words.next() else {
        return;
    };
    out.push_str(key);
    for (i, word) in words.enumerate() {
        out.push(' ');
        match word.parse::<u64>() {
            // Most interrupt columns are 0 on the host, then and now: nothing to scale.
            Ok(0) => out.push('0'),
            Ok(v) => out.push_str(&scaled.value(&column_name(key, i), v).to_string()),
            Err(_) => out.push_str(word),
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_read_is_the_hosts_average_over_the_age_and_later_ones_add_the_hosts_rise() {
        // A container 10 s old on a host up 1000 s that has counted 100000 switches.
        let s = Scaled::new(10.0, 1000.0, [("ctxt", 100_000)]);
        assert_eq!(s.value("ctxt", 100_000), 1000);
        // 5000 more on the host: all of them are seen, as a native container would.
        assert_eq!(s.value("ctxt", 105_000), 6000);
        // A counter that was 0 then is seen whole; a host value below the first never
        // makes the container's go below its base.
        assert_eq!(s.value("intr.3", 7), 7);
        assert_eq!(s.value("ctxt", 50), 1000);
    }

    #[test]
    fn the_share_stays_between_none_and_all() {
        let old = Scaled::new(2000.0, 1000.0, [("ctxt", 100)]);
        assert_eq!(old.value("ctxt", 100), 100);
        let unknown_uptime = Scaled::new(5.0, 0.0, [("ctxt", 100)]);
        assert_eq!(unknown_uptime.value("ctxt", 100), 100);
        let newborn = Scaled::new(-1.0, 1000.0, [("ctxt", 100)]);
        assert_eq!(newborn.value("ctxt", 130), 30);
    }

    #[test]
    fn stat_lines_scale_every_column_and_keep_their_shape() {
        let host = "intr 1000 0 600 400 0\nctxt 5000\nsoftirq 200 100 0 100\n";
        let counters: Vec<(String, u64)> = host.lines().flat_map(stat_line_counters).collect();
        assert_eq!(counters[0], ("intr".to_string(), 1000));
        assert_eq!(counters[2], ("intr.2".to_string(), 600));
        let s = Scaled::new(1.0, 10.0, counters.iter().map(|(k, v)| (k.as_str(), *v)));
        let mut out = String::new();
        for line in "intr 1010 0 610 400 0\nctxt 5000\nsoftirq 200 100 0 100\n".lines() {
            push_scaled_stat_line(&mut out, line, &s);
        }
        assert_eq!(out, "intr 110 0 70 40 0\nctxt 500\nsoftirq 20 10 0 10\n");
    }
}
