//! `proc/cpuinfo` for a container: the host's blocks (one per CPU, separated by blank lines)
//! of the CPUs the container sees, in order, each with its own `processor` number, the host's,
//! as in `sys/devices/system/cpu` and `proc/stat`. `siblings` and `cpu cores` are capped at the
//! container's CPU count, so no block claims more CPUs than the container has; every other
//! line (model, flags, `core id`, `apicid`) is the host CPU's own.
//!
//! A host file without per-CPU `processor` blocks (some architectures print one header for
//! all CPUs) is served unchanged.

/// The `processor` number of a block, if it has one.
fn processor_of(block: &str) -> Option<u32> {
    block.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "processor").then(|| value.trim().parse().ok())?
    })
}

/// `proc/cpuinfo` showing the host CPUs `visible`.
pub fn render_cpuinfo(host: &str, visible: &[u32]) -> String {
    let blocks: Vec<&str> = host
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    let n = visible.len();
    let mut out = String::with_capacity(host.len());
    for cpu in visible {
        let Some(block) = blocks.iter().find(|b| processor_of(b) == Some(*cpu)) else {
            continue;
        };
        for line in block.lines() {
            out.push_str(&rewrite(line, n));
            out.push('\n');
        }
        out.push('\n');
    }
    if out.is_empty() {
        return host.to_owned();
    }
    out
}

/// A line of a block for a container with `n` CPUs.
fn rewrite(line: &str, n: usize) -> String {
    let Some((key, value)) = line.split_once(':') else {
        return line.to_owned();
    };
    match key.trim() {
        "siblings" | "cpu cores" => match value.trim().parse::<usize>() {
            Ok(count) => format!("{key}: {}", count.min(n)),
            Err(_) => line.to_owned(),
        },
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cpu: u32) -> String {
        format!(
            "processor\t: {cpu}\nvendor_id\t: Vendor\nmodel name\t: Model {cpu}\nsiblings\t: 4\n\
             core id\t\t: {cpu}\ncpu cores\t: 4\nflags\t\t: fpu sse\n\n"
        )
    }

    fn host() -> String {
        (0..4).map(block).collect()
    }

    #[test]
    fn visible_cpus_keep_their_numbers_and_models() {
        let text = render_cpuinfo(&host(), &[2, 3]);
        let procs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("processor"))
            .collect();
        assert_eq!(procs, ["processor\t: 2", "processor\t: 3"]);
        let models: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("model name"))
            .collect();
        assert_eq!(models, ["model name\t: Model 2", "model name\t: Model 3"]);
        assert!(text.contains("core id\t\t: 2\n"));
        assert!(text.contains("siblings\t: 2\n") && text.contains("cpu cores\t: 2\n"));
        assert!(text.ends_with("\n\n"));
    }

    #[test]
    fn all_cpus_give_the_host_text() {
        assert_eq!(render_cpuinfo(&host(), &[0, 1, 2, 3]), host());
    }

    #[test]
    fn a_layout_without_processor_blocks_passes_through() {
        let s390 = "vendor_id       : IBM/S390\n# processors    : 4\n";
        assert_eq!(render_cpuinfo(s390, &[0]), s390);
    }
}
