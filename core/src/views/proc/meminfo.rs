//! `proc/meminfo` for a container.
//!
//! The host's file, line for line and in its format, with these values replaced:
//!
//! | line | value |
//! |---|---|
//! | MemTotal | min(limit, host MemTotal) |
//! | MemFree | MemTotal − usage (limited); the host's MemFree (unlimited) |
//! | MemAvailable | MemFree + active_file + inactive_file + slab_reclaimable, at most MemTotal (limited); the host's (unlimited) |
//! | Buffers, SwapCached | 0: not accounted per cgroup |
//! | Cached | `file` (page cache, shmem included, as the kernel counts it) |
//! | Active, Inactive, Active/Inactive(anon/file), Unevictable | the LRU sizes of `memory.stat` |
//! | AnonPages, Mapped, Shmem, Dirty, Writeback, AnonHugePages | `anon`, `file_mapped`, `shmem`, `file_dirty`, `file_writeback`, `anon_thp` |
//! | Slab, SReclaimable, SUnreclaim, KReclaimable | the slab split of `memory.stat` (0 on v1) |
//! | SwapTotal | min(swap limit, host SwapTotal); 0 when the host has no swap |
//! | SwapFree | SwapTotal − swap usage (the host's when neither memory nor swap is limited) |
//! | CommitLimit | MemTotal / 2 + SwapTotal (the kernel's formula at the default overcommit_ratio 50) |
//! | Committed_AS | usage (what the container has charged) |
//!
//! The rule for every other line: a line that measures a host-wide amount of memory
//! (Mlocked, PageTables, KernelStack, VmallocUsed, Percpu, HugePages_*, Hugetlb, DirectMap*,
//! Zswap, ...) cannot be scoped to a cgroup and is **zeroed**; only `Hugepagesize` and
//! `VmallocTotal` keep the host's value, since they are sizes of a page and of an address
//! range, not amounts of memory in use. Every replaced value is then capped at MemTotal (swap
//! lines at SwapTotal, CommitLimit excepted), so no line contradicts MemTotal. All arithmetic
//! saturates (LXCFS #695 printed a SwapFree near 2^64).

/// What the container's cgroup says about memory (see [`crate::cgroup::Memory`]).
pub type MemView = crate::cgroup::Memory;

/// Lines that keep the host's value.
const KEPT: [&str; 2] = ["Hugepagesize", "VmallocTotal"];

/// The host meminfo value of `key`, in kB.
fn host_kb(host: &str, key: &str) -> Option<u64> {
    host.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        (k == key).then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

/// The container's value (kB) for each line it replaces; `None` for lines it zeroes or keeps.
fn values(host: &str, mem: &MemView) -> impl Fn(&str) -> Option<u64> {
    let kb = |bytes: u64| bytes / 1024;
    let h = |key| host_kb(host, key).unwrap_or(0);
    let s = mem.stat;
    let total = mem
        .limit
        .map_or(h("MemTotal"), |l| kb(l).min(h("MemTotal")));
    let (free, available) = match mem.limit {
        Some(_) => {
            let free = total.saturating_sub(kb(mem.usage));
            let reclaimable = kb(s
                .active_file
                .saturating_add(s.inactive_file)
                .saturating_add(s.slab_reclaimable));
            (free, free.saturating_add(reclaimable).min(total))
        }
        None => (h("MemFree").min(total), h("MemAvailable").min(total)),
    };
    let host_swap = h("SwapTotal");
    let swap_total = mem.swap_limit.map_or(host_swap, |l| kb(l).min(host_swap));
    let swap_free = match (mem.limit, mem.swap_limit) {
        (None, None) => h("SwapFree").min(swap_total),
        _ => swap_total.saturating_sub(kb(mem.swap_usage)),
    };
    let slab = s.slab_reclaimable.saturating_add(s.slab_unreclaimable);
    let table: Vec<(&'static str, u64)> = vec![
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", available),
        ("Buffers", 0),
        ("Cached", kb(s.file)),
        ("SwapCached", 0),
        ("Active", kb(s.active_anon.saturating_add(s.active_file))),
        (
            "Inactive",
            kb(s.inactive_anon.saturating_add(s.inactive_file)),
        ),
        ("Active(anon)", kb(s.active_anon)),
        ("Inactive(anon)", kb(s.inactive_anon)),
        ("Active(file)", kb(s.active_file)),
        ("Inactive(file)", kb(s.inactive_file)),
        ("Unevictable", kb(s.unevictable)),
        ("SwapTotal", swap_total),
        ("SwapFree", swap_free),
        ("Dirty", kb(s.file_dirty)),
        ("Writeback", kb(s.file_writeback)),
        ("AnonPages", kb(s.anon)),
        ("Mapped", kb(s.file_mapped)),
        ("Shmem", kb(s.shmem)),
        ("KReclaimable", kb(s.slab_reclaimable)),
        ("Slab", kb(slab)),
        ("SReclaimable", kb(s.slab_reclaimable)),
        ("SUnreclaim", kb(s.slab_unreclaimable)),
        ("AnonHugePages", kb(s.anon_thp)),
        ("CommitLimit", (total / 2).saturating_add(swap_total)),
        ("Committed_AS", kb(mem.usage)),
    ];
    move |key: &str| {
        let (_, value) = *table.iter().find(|(k, _)| *k == key)?;
        let cap = match key {
            "CommitLimit" => u64::MAX,
            "SwapTotal" | "SwapFree" => swap_total,
            _ => total,
        };
        Some(value.min(cap))
    }
}

/// `proc/meminfo` for a container whose cgroup shows `mem`, from the host's text `host`.
pub fn render_meminfo(host: &str, mem: &MemView) -> String {
    let value_of = values(host, mem);
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let value = if KEPT.contains(&key) {
            None
        } else {
            Some(value_of(key).unwrap_or(0))
        };
        match value {
            Some(v) => push_line(&mut out, key, rest, v),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Writes `key:` and `value` right-aligned where the host's value ended, keeping its unit.
fn push_line(out: &mut String, key: &str, rest: &str, value: u64) {
    let (number, unit) = match rest.strip_suffix(" kB") {
        Some(number) => (number, " kB"),
        None => (rest, ""),
    };
    let width = number.len();
    out.push_str(&format!("{key}:{value:>width$}{unit}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::MemoryStat;

    const HOST: &str = "MemTotal:       24681740 kB\n\
MemFree:        20000000 kB\n\
MemAvailable:   22000000 kB\n\
Buffers:          100000 kB\n\
Cached:          2000000 kB\n\
SwapCached:            0 kB\n\
Active:          1000000 kB\n\
Inactive:        1500000 kB\n\
Active(anon):     300000 kB\n\
Inactive(anon):   200000 kB\n\
Active(file):     700000 kB\n\
Inactive(file):  1300000 kB\n\
Unevictable:       14008 kB\n\
Mlocked:           14008 kB\n\
SwapTotal:             0 kB\n\
SwapFree:              0 kB\n\
Dirty:             40000 kB\n\
Writeback:             0 kB\n\
AnonPages:        500000 kB\n\
Mapped:           200000 kB\n\
Shmem:              9000 kB\n\
KReclaimable:     150000 kB\n\
Slab:             300000 kB\n\
SReclaimable:     150000 kB\n\
SUnreclaim:       150000 kB\n\
KernelStack:       10000 kB\n\
PageTables:        20000 kB\n\
CommitLimit:    12340870 kB\n\
Committed_AS:    3000000 kB\n\
VmallocTotal:   34359738367 kB\n\
VmallocUsed:       50000 kB\n\
AnonHugePages:         0 kB\n\
HugePages_Total:       0\n\
HugePages_Free:        0\n\
Hugepagesize:       2048 kB\n\
DirectMap4k:      300000 kB\n\
DirectMap2M:    25000000 kB\n";

    fn kb(text: &str, key: &str) -> u64 {
        host_kb(text, key).unwrap_or_else(|| panic!("no {key}"))
    }

    fn limited(usage: u64) -> MemView {
        MemView {
            limit: Some(256 << 20),
            usage,
            stat: MemoryStat {
                file: 50 << 20,
                active_file: 20 << 20,
                inactive_file: 10 << 20,
                anon: 40 << 20,
                ..MemoryStat::default()
            },
            swap_limit: Some(1 << 30),
            swap_usage: 0,
        }
    }

    #[test]
    fn a_limited_container_sees_its_limit_and_its_usage() {
        let text = render_meminfo(HOST, &limited(100 << 20));
        assert_eq!(kb(&text, "MemTotal"), 262_144);
        assert_eq!(kb(&text, "MemFree"), 262_144 - 102_400);
        assert_eq!(kb(&text, "MemAvailable"), 262_144 - 102_400 + 30_720);
        assert_eq!(kb(&text, "Cached"), 51_200);
        assert_eq!(kb(&text, "AnonPages"), 40_960);
        assert_eq!(kb(&text, "Mlocked"), 0);
        assert_eq!(kb(&text, "DirectMap2M"), 0);
        assert_eq!(kb(&text, "Hugepagesize"), 2048);
        assert!(text.contains("MemTotal:         262144 kB\n"), "{text}");
        assert!(text.contains("HugePages_Total:       0\n"));
    }

    #[test]
    fn the_hosts_line_order_is_kept() {
        let text = render_meminfo(HOST, &limited(1 << 20));
        let keys = |t: &str| {
            t.lines()
                .map(|l| l.split(':').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&text), keys(HOST));
    }

    #[test]
    fn no_swap_on_the_host_means_no_swap_in_the_container() {
        let text = render_meminfo(HOST, &limited(1 << 20));
        assert_eq!(kb(&text, "SwapTotal"), 0);
        assert_eq!(kb(&text, "SwapFree"), 0);
    }

    #[test]
    fn swap_is_capped_by_the_hosts() {
        let host = HOST
            .replace("SwapTotal:             0", "SwapTotal:       524288")
            .replace("SwapFree:              0", "SwapFree:        524288");
        let text = render_meminfo(&host, &limited(1 << 20));
        assert_eq!(kb(&text, "SwapTotal"), 524_288);
        let mut over = limited(1 << 20);
        over.swap_usage = 1 << 40;
        assert_eq!(kb(&render_meminfo(&host, &over), "SwapFree"), 0);
    }

    #[test]
    fn usage_above_the_limit_saturates_at_zero_free() {
        let text = render_meminfo(HOST, &limited(1 << 40));
        assert_eq!(kb(&text, "MemFree"), 0);
        assert!(kb(&text, "MemAvailable") <= kb(&text, "MemTotal"));
    }

    #[test]
    fn an_unlimited_container_sees_the_hosts_total_and_free() {
        let mem = MemView {
            limit: None,
            usage: 5 << 30,
            ..MemView::default()
        };
        let text = render_meminfo(HOST, &mem);
        assert_eq!(kb(&text, "MemTotal"), 24_681_740);
        assert_eq!(kb(&text, "MemFree"), 20_000_000);
        assert_eq!(kb(&text, "MemAvailable"), 22_000_000);
    }

    proptest::proptest! {
        #[test]
        fn no_line_exceeds_mem_total(
            limit in proptest::option::of(0u64..u64::MAX),
            usage: u64,
            file: u64,
            active_file: u64,
            slab: u64,
            swap_limit in proptest::option::of(0u64..u64::MAX),
            swap_usage: u64,
        ) {
            let mem = MemView {
                limit,
                usage,
                stat: MemoryStat { file, active_file, slab_reclaimable: slab, anon: usage, ..MemoryStat::default() },
                swap_limit,
                swap_usage,
            };
            let text = render_meminfo(HOST, &mem);
            let total = kb(&text, "MemTotal");
            for line in text.lines() {
                let key = line.split(':').next().unwrap();
                if KEPT.contains(&key) || key == "CommitLimit" {
                    continue;
                }
                let value: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                proptest::prop_assert!(value <= total.max(kb(&text, "SwapTotal")), "{}", line);
            }
        }
    }
}
