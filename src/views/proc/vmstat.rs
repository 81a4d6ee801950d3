//! `proc/vmstat` for a container.
//!
//! Every line of the host's file, in its order. Event counters (all but the `nr_` gauges;
//! `nr_dirtied` and `nr_written` count) are the container's own where its cgroup counts
//! them: `pgpgin`/`pgpgout` (kilobytes of block IO) from its per-device IO accounting,
//! faults, reclaim, swap and working-set events from `memory.stat` under the same names. The
//! rest are host-wide and scaled ([`super::counters`]) so that a rate over the container's
//! age is the host's, never host uptime / age times it (vmstat's first line: `bi`, `bo`,
//! `si`, `so`; `sar -B`). The gauges (`nr_free_pages`, thresholds ...) stay the host's: no
//! tool divides them by the uptime.

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

/// `proc/vmstat` from the host's text, the container's own counters `own` and the scaled
/// baseline of the rest.
pub fn render_vmstat(host: &str, own: &[(String, u64)], scaled: &Scaled) -> String {
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let value = match value.trim().parse::<u64>() {
            Ok(v) if !is_gauge(name) => own
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| scaled.value(name, v), |&(_, mine)| mine),
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
    fn lines_that_are_no_counter_pass_through() {
        let scaled = Scaled::default();
        assert_eq!(
            render_vmstat("odd line\nnoval\n", &[], &scaled),
            "odd line\n"
        );
    }
}
