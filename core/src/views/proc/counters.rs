//! Host-wide event counters in a container's files, scaled so that a rate over the
//! container's uptime comes out right: `proc/stat`'s `intr`, `ctxt` and `softirq`, and the
//! events of `proc/vmstat` that no cgroup counts.
//!
//! Tools divide a counter since boot by the uptime (vmstat's first line, mpstat and sar
//! without an interval). Where a container's uptime is shorter than the host's (a time
//! namespace of its own, or `serve --uptime age`), the host's count since the host's boot
//! would make a rate host uptime / uptime times the host's (`vmstat 1 2` in a container a
//! minute old on a host up a day: 1440x). A container instead sees, per counter, the host's
//! value when it first read the file scaled by its uptime / host uptime (the host's average
//! rate over the container's life so far), plus all the host's counter has risen since: the
//! first line's rate is the host's average rate, every later interval's is the host's own
//! rate over it (what the container natively sees), and a value never goes back. On the
//! host's boot clock the share is 1: the host's counters as they are.

pub use crate::container::state::{Baselines, Scaled};

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

/// One row of a per-CPU table (`proc/interrupts`, `proc/softirqs`): its label (through the
/// `:`), its numbers with the byte span each takes in the line, and where the rest begins.
struct Row<'a> {
    label: &'a str,
    numbers: Vec<(usize, usize, u64)>,
    rest: usize,
}

/// `line` as a [`Row`] with at most `columns` numbers; `None` for a line without a label.
fn row(line: &str, columns: usize) -> Option<Row<'_>> {
    let colon = line.find(':')?;
    let (mut at, mut numbers) = (colon + 1, Vec::new());
    while numbers.len() < columns {
        let start = at + line[at..].len() - line[at..].trim_start().len();
        let end = line[start..]
            .find(char::is_whitespace)
            .map_or(line.len(), |n| start + n);
        let Ok(v) = line[start..end].parse::<u64>() else {
            break;
        };
        numbers.push((start, end, v));
        at = end;
    }
    Some(Row {
        label: &line[..=colon],
        numbers,
        rest: at,
    })
}

/// The counters of a per-CPU table `host` (its header names the columns `CPU<n>`): per row
/// and host CPU, `<label>cpu<n>`; a row with one number (`ERR:`) is `<label>`.
pub fn table_counters(host: &str) -> Vec<(String, u64)> {
    let mut lines = host.lines();
    let ids = header_cpus(lines.next().unwrap_or(""));
    let mut out = Vec::new();
    for line in lines {
        let Some(row) = row(line, ids.len()) else {
            continue;
        };
        for (i, &(_, _, v)) in row.numbers.iter().enumerate() {
            out.push((table_key(row.label, &ids, row.numbers.len(), i), v));
        }
    }
    out
}

fn header_cpus(header: &str) -> Vec<u32> {
    header
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("CPU")?.parse().ok())
        .collect()
}

fn table_key(label: &str, ids: &[u32], numbers: usize, i: usize) -> String {
    let label = label.trim_start();
    if numbers == ids.len() {
        format!("{label}cpu{}", ids[i])
    } else {
        format!("{label}{i}")
    }
}

/// A per-CPU table for a container seeing the host CPUs `visible`: only their columns, by
/// their host numbers as everywhere else, every count scaled by `scaled`, the kernel's
/// layout kept (each number right-aligned in the width it had, labels and descriptions as
/// they were).
pub fn render_table(host: &str, visible: &[u32], scaled: &Scaled) -> String {
    let mut lines = host.lines();
    let header = lines.next().unwrap_or("");
    let ids = header_cpus(header);
    let keep: Vec<bool> = ids.iter().map(|id| visible.contains(id)).collect();
    let mut out = String::with_capacity(host.len());
    // The header: its indent, then `CPU<n>` cells as wide as the host's.
    let indent = header.len() - header.trim_start().len();
    out.push_str(&header[..indent]);
    let starts: Vec<usize> = header.match_indices("CPU").map(|(at, _)| at).collect();
    for (column, &start) in starts.iter().enumerate() {
        let end = starts.get(column + 1).copied().unwrap_or(header.len());
        if keep.get(column).copied().unwrap_or(true) {
            out.push_str(&header[start..end]);
        }
    }
    out.push('\n');
    for line in lines {
        let Some(row) = row(line, ids.len()) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        out.push_str(row.label);
        let mut from = row.label.len();
        let per_cpu = row.numbers.len() == ids.len();
        for (i, &(start, end, v)) in row.numbers.iter().enumerate() {
            if !per_cpu || keep[i] {
                let value = if v == 0 {
                    0
                } else {
                    scaled.value(&table_key(row.label, &ids, row.numbers.len(), i), v)
                };
                out.push_str(&line[from..start]);
                out.push_str(&format!("{value:>width$}", width = end - start));
            }
            from = end;
        }
        out.push_str(&line[row.rest.max(from)..]);
        out.push('\n');
    }
    out
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
    fn per_cpu_tables_keep_the_visible_cpus_columns_scaled_in_the_kernels_layout() {
        let host = "           CPU0       CPU1       \n 24:        300          0  IO-APIC   5-edge      ACPI:Ged\n NMI:          0         10   Non-maskable interrupts\n ERR:          7\n";
        let counters = table_counters(host);
        assert_eq!(
            counters,
            [
                ("24:cpu0".to_string(), 300),
                ("24:cpu1".to_string(), 0),
                ("NMI:cpu0".to_string(), 0),
                ("NMI:cpu1".to_string(), 10),
                ("ERR:0".to_string(), 7),
            ]
        );
        let scaled = Scaled::new(1.0, 10.0, counters.iter().map(|(k, v)| (k.as_str(), *v)));
        let later = host.replace("        300", "        310");
        let text = render_table(&later, &[1], &scaled);
        assert_eq!(
            text,
            "           CPU1       \n 24:          0  IO-APIC   5-edge      ACPI:Ged\n NMI:          1   Non-maskable interrupts\n ERR:          1\n"
        );
        let both = render_table(&later, &[0, 1], &scaled);
        assert!(
            both.starts_with("           CPU0       CPU1       \n 24:         40          0  IO"),
            "{both}"
        );
        let softirqs = "                    CPU0       CPU1       \n          HI:          0          0\n       TIMER:     514072     636288\n";
        let s = Scaled::new(1.0, 1.0, []);
        assert_eq!(
            render_table(softirqs, &[0], &s),
            "                    CPU0       \n          HI:          0\n       TIMER:     514072\n"
        );
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
