//! `proc/vmstat` for a container.
//!
//! Every line of the host's file, in its order. Event counters (all but the `nr_` gauges;
//! `nr_dirtied` and `nr_written` count) are the container's own where its cgroup counts
//! them: `pgpgin`/`pgpgout` (kilobytes of block IO) from its per-device IO accounting,
//! faults, reclaim, swap and working-set events from `memory.stat` under the same names. The
//! rest are host-wide and scaled ([`super::counters`]) so that a rate over the container's
//! uptime is the host's, never host uptime / uptime times it (vmstat's first line: `bi`,
//! `bo`, `si`, `so`; `sar -B`). The gauges that `proc/meminfo` shows too (free pages, the
//! LRU lists, anon, mapped, file, dirty, writeback, shmem, slab, ...) are the container's
//! `proc/meminfo` values in the gauge's unit (`FROM_MEMINFO`), so the two files agree; the
//! rest (dirty thresholds, NUMA and isolation counts ...) stay the host's.

use super::counters::Scaled;

/// Whether line `name` of `/proc/vmstat` is a gauge rather than an event counter.
pub fn is_gauge(name: &str) -> bool {
    name.starts_with("nr_") && !matches!(name, "nr_dirtied" | "nr_written")
}

/// The event counters of the host's text `host`: name and value.
pub fn counters(host: &str) -> impl Iterator<Item = (&str, u64)> {
    host.lines().filter_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (!is_gauge(name)).then(|| Some((name, value.trim().parse().ok()?)))?
    })
}

/// The unit of a gauge, in kB.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// Pages.
    Page,
    /// Huge pages (`Hugepagesize`).
    Huge,
    /// Kilobytes (`nr_kernel_stack`).
    Kb,
}

/// The gauges of `proc/vmstat` that are a sum of `proc/meminfo` lines, and their unit.
const FROM_MEMINFO: [(&str, &[&str], Unit); 26] = {
    use Unit::{Huge, Kb, Page};
    [
        ("nr_free_pages", &["MemFree"], Page),
        ("nr_zone_inactive_anon", &["Inactive(anon)"], Page),
        ("nr_zone_active_anon", &["Active(anon)"], Page),
        ("nr_zone_inactive_file", &["Inactive(file)"], Page),
        ("nr_zone_active_file", &["Active(file)"], Page),
        ("nr_zone_unevictable", &["Unevictable"], Page),
        ("nr_zone_write_pending", &["Dirty", "Writeback"], Page),
        ("nr_mlock", &["Mlocked"], Page),
        ("nr_inactive_anon", &["Inactive(anon)"], Page),
        ("nr_active_anon", &["Active(anon)"], Page),
        ("nr_inactive_file", &["Inactive(file)"], Page),
        ("nr_active_file", &["Active(file)"], Page),
        ("nr_unevictable", &["Unevictable"], Page),
        ("nr_slab_reclaimable", &["SReclaimable"], Page),
        ("nr_slab_unreclaimable", &["SUnreclaim"], Page),
        ("nr_anon_pages", &["AnonPages"], Page),
        ("nr_mapped", &["Mapped"], Page),
        ("nr_file_pages", &["Cached", "Buffers", "SwapCached"], Page),
        ("nr_dirty", &["Dirty"], Page),
        ("nr_writeback", &["Writeback"], Page),
        ("nr_shmem", &["Shmem"], Page),
        ("nr_anon_transparent_hugepages", &["AnonHugePages"], Huge),
        ("nr_shmem_hugepages", &["ShmemHugePages"], Huge),
        ("nr_file_hugepages", &["FileHugePages"], Huge),
        ("nr_kernel_stack", &["KernelStack"], Kb),
        ("nr_page_table_pages", &["PageTables"], Page),
    ]
};

/// The gauges of `FROM_MEMINFO` from a container's `proc/meminfo` text, with pages of
/// `page_kb` kB; a gauge whose lines are all missing is left out.
pub fn gauges(meminfo: &str, page_kb: u64) -> Vec<(String, u64)> {
    let kb = |key: &str| {
        meminfo.lines().find_map(|line| {
            let (k, rest) = line.split_once(':')?;
            (k == key).then(|| rest.split_whitespace().next()?.parse::<u64>().ok())?
        })
    };
    let huge_kb = kb("Hugepagesize").unwrap_or(2048).max(1);
    FROM_MEMINFO
        .iter()
        .filter_map(|&(gauge, lines, unit)| {
            let values: Vec<u64> = lines.iter().filter_map(|l| kb(l)).collect();
            if values.is_empty() {
                return None;
            }
            let total: u64 = values.iter().fold(0, |a, &v| a.saturating_add(v));
            let per = match unit {
                Unit::Page => page_kb.max(1),
                Unit::Huge => huge_kb,
                Unit::Kb => 1,
            };
            Some((gauge.to_string(), total / per))
        })
        .collect()
}

/// `proc/vmstat` from the host's text, the container's own counters and gauges `own` and
/// the scaled baseline of the other counters.
pub fn render_vmstat(host: &str, own: &[(String, u64)], scaled: &Scaled) -> String {
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let mine = own.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
        let value = match (value.trim().parse::<u64>(), mine) {
            (Ok(_), Some(mine)) => mine,
            (Ok(v), None) if !is_gauge(name) => scaled.value(name, v),
            _ => {
                out.push_str(line);
                out.push('\n');
                continue;
            }
        };
        out.push_str(name);
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "nr_free_pages 5000\nnr_dirtied 900\npgpgin 80000\npgpgout 160000\n\
                        pswpin 0\npgfault 123456\npgmajfault 70\nallocstall_normal 10\n";

    #[test]
    fn own_counters_replace_the_hosts_and_the_rest_are_scaled_and_gauges_kept() {
        let scaled = Scaled::new(100.0, 1000.0, counters(HOST));
        let own = vec![
            ("pgpgin".to_string(), 8),
            ("pgpgout".to_string(), 8192),
            ("pgfault".to_string(), 333),
        ];
        let text = render_vmstat(HOST, &own, &scaled);
        assert_eq!(
            text,
            "nr_free_pages 5000\nnr_dirtied 90\npgpgin 8\npgpgout 8192\npswpin 0\n\
             pgfault 333\npgmajfault 7\nallocstall_normal 1\n"
        );
        // The host's later rise is seen whole.
        let later = HOST.replace("allocstall_normal 10", "allocstall_normal 15");
        assert!(render_vmstat(&later, &own, &scaled).contains("allocstall_normal 6\n"));
    }

    #[test]
    fn gauges_are_the_meminfo_values_in_their_units() {
        let meminfo = "MemFree:          40960 kB\nCached:           8192 kB\nBuffers:  0 kB\n\
                       Dirty:  400 kB\nWriteback: 40 kB\nAnonHugePages:    4096 kB\n\
                       KernelStack:  0 kB\nHugepagesize:       2048 kB\n";
        let g = gauges(meminfo, 4);
        let of = |name: &str| g.iter().find(|(n, _)| n == name).map(|&(_, v)| v);
        assert_eq!(of("nr_free_pages"), Some(10240));
        assert_eq!(of("nr_file_pages"), Some(2048));
        assert_eq!(of("nr_zone_write_pending"), Some(110));
        assert_eq!(of("nr_anon_transparent_hugepages"), Some(2));
        assert_eq!(of("nr_kernel_stack"), Some(0));
        assert_eq!(of("nr_mapped"), None, "no Mapped line: the host's stays");
        // They replace the host's gauges; the others stay.
        let host = "nr_free_pages 5000\nnr_dirty_threshold 77\nnr_file_pages 9\n";
        assert_eq!(
            render_vmstat(host, &g, &Scaled::default()),
            "nr_free_pages 10240\nnr_dirty_threshold 77\nnr_file_pages 2048\n"
        );
    }

    #[test]
    fn lines_that_are_no_counter_pass_through() {
        let scaled = Scaled::default();
        assert_eq!(
            render_vmstat("odd line\nnoval\n", &[], &scaled),
            "odd line\n"
        );
    }
}
