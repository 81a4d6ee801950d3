//! CPU views: every program's CPU count, `/proc/stat`'s per-CPU counters under a hog, and
//! per-CPU interrupt rates of the container's CPUs.

use std::time::{Duration, Instant};

use crate::rig::Daemon;
use crate::rig::oci::host_uptime;

use super::{Hog, MIB, PYTHON, container, limited, run};

/// The `cpu`/`cpuN` lines of a stat text, as (name, counters).
fn stat_cpus(text: &str) -> Vec<(String, Vec<u64>)> {
    text.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_owned();
            (name, f.map(|v| v.parse().unwrap()).collect())
        })
        .collect()
}

#[test]
fn every_program_counts_the_limited_cpus_the_same() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    assert_eq!(run(&c, "nproc"), "1");
    assert_eq!(run(&c, "nproc --all"), "1");
    assert_eq!(run(&c, "getconf _NPROCESSORS_ONLN"), "1");
    assert_eq!(run(&c, "getconf _NPROCESSORS_CONF"), "1");
    let lscpu = run(&c, "lscpu | grep '^CPU(s):'");
    assert_eq!(lscpu.split_whitespace().last(), Some("1"), "{lscpu}");
    let py = run(
        &c,
        &format!(
            "{PYTHON} -c 'import os, psutil; print(os.cpu_count(), psutil.cpu_count(), \
             psutil.virtual_memory().total)'"
        ),
    );
    assert_eq!(py, format!("1 1 {}", 256 * MIB));
    assert_eq!(run(&c, "grep -c ^processor /proc/cpuinfo"), "1");
    assert_eq!(run(&c, "grep ^processor /proc/cpuinfo"), "processor\t: 0");
    let stat = run(&c, "cat /proc/stat");
    let names: Vec<String> = stat_cpus(&stat).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["cpu", "cpu0"], "{stat}");
}

#[test]
fn idle_never_decreases_while_a_cpu_hog_runs_inside() {
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    let _hog = Hog::start(&c);
    let mut last: Option<Vec<(String, Vec<u64>)>> = None;
    for _ in 0..10 {
        let now = stat_cpus(&run(&c, "cat /proc/stat"));
        if let Some(prev) = &last {
            for ((name, before), (_, after)) in prev.iter().zip(&now) {
                for (i, (b, a)) in before.iter().zip(after).enumerate() {
                    assert!(a >= b, "{name} field {i} went from {b} to {a}");
                }
            }
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(200));
    }
    let busy: Vec<u64> = last.unwrap()[0].1.clone();
    assert!(
        busy[0] + busy[2] > 0,
        "the hog's user+system time shows: {busy:?}"
    );
    // uptime's idle column is stat's idle, summed over the CPUs, in seconds: read between
    // two reads of stat, it lies between their idle times (up to rounding to 1/100 s).
    let text = run(&c, "cat /proc/stat; cat /proc/uptime; cat /proc/stat");
    let idles: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("cpu "))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse::<f64>().unwrap() / 100.0)
        .collect();
    let uptime_line = text
        .lines()
        .find(|l| !l.contains(char::is_alphabetic))
        .unwrap();
    let uptime_idle: f64 = uptime_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        idles[0] - 0.02 <= uptime_idle && uptime_idle <= idles[1] + 0.02,
        "uptime idle {uptime_idle} not between stat's {idles:?}"
    );
}

#[test]
fn per_cpu_interrupt_rates_are_the_hosts_on_the_containers_cpu_only() {
    // CPU 0's counts in the host's tables, and when.
    let cpu0 = || -> ([f64; 2], Instant) {
        let total = |file: &str| -> f64 {
            let text = std::fs::read_to_string(format!("/proc/{file}")).unwrap();
            let columns = text.lines().next().unwrap().split_whitespace().count();
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let values: Vec<f64> = words
                        .iter()
                        .skip(1)
                        .take(columns)
                        .map_while(|w| w.parse().ok())
                        .collect();
                    (values.len() == columns).then(|| values[0])
                })
                .sum()
        };
        ([total("interrupts"), total("softirqs")], Instant::now())
    };
    let (before, started) = cpu0();
    let daemon = Daemon::start();
    let c = container(&daemon, limited());
    // mpstat's per-CPU interrupt and softirq rates since boot, a second in (counts over a
    // tiny age are all rounding).
    let out = run(&c, "sleep 1; LC_ALL=C mpstat -I ALL");
    eprintln!("{out}");
    let (after, ended) = cpu0();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 2 && w[1].parse::<u32>().is_ok())
        .collect();
    assert_eq!(rows.len(), 2, "a row per table, for CPU 0 alone: {out}");
    // Its one CPU, by its host number, in both tables.
    for file in ["interrupts", "softirqs"] {
        let header = run(&c, &format!("head -1 /proc/{file}"));
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["CPU0"],
            "{file}"
        );
    }
    // What the host's CPU 0 did: on average since boot, and over the container's life. The
    // container's rate is the first scaled to its age plus the second (not host uptime / age
    // times the first).
    let up = host_uptime();
    let window = ended.duration_since(started).as_secs_f64();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[1], "0", "{out}");
        let (average, lately) = (after[i] / up, (after[i] - before[i]) / window);
        let sum: f64 = row[2..].iter().filter_map(|w| w.parse::<f64>().ok()).sum();
        assert!(
            sum <= 2.0 * (average + lately) + 100.0,
            "{sum} per s on CPU 0; the host's {average:.0} on average, {lately:.0} lately: {out}"
        );
    }
}
