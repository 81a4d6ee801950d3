//! Container-local values for the sysctls Linux does not namespace, or keeps read-only or
//! hidden inside a container's namespaces: one table, one line per path.
//!
//! Checked on this kernel (6.18) before an entry went in: a path is emulated only when a
//! container cannot have its own value natively. `kernel/pid_max` is per pid namespace here
//! and `net/unix/max_dgram_qlen` and the conntrack timeouts are per network namespace and
//! writable there, so they are passed through, not emulated. A line applies only where the
//! host's kernel has the file (no `kernel/yama/ptrace_scope` without Yama): nothing is
//! invented.
//!
//! Whose values: the store of the caller's network namespace (see `stores`), written only by
//! a caller holding the line's capability over that namespace, never for the host's network
//! namespace. Writes parse as the kernel's handlers parse (see [`parse`]) and are checked
//! against the kernel's own range for the file.

/// What a write does, and where a read comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Kept per container, initially the host's value; the host is never written.
    Store,
    /// Kept per container; a registered container's larger value is written to the host too
    /// (read back after writing, retried on a race).
    MaxWins,
    /// Kept per container; a registered container's non-zero value also sets the host's to 1.
    LiberalWins,
    /// The host's value; EACCES on open for writing, even for container root.
    ReadOnly,
    /// A new random UUID on every read; not writable.
    RandomUuid,
    /// A UUID of the container's own, stable for its life; not writable.
    BootId,
    /// Per network namespace natively, but the kernel refuses ids outside the writer's map:
    /// it gets the written range clamped to the caller's gid map, the caller reads back what
    /// it wrote.
    ClampToIdmap,
}

impl Policy {
    /// Whether anyone may write the value.
    pub fn writable(self) -> bool {
        !matches!(self, Policy::ReadOnly | Policy::RandomUuid | Policy::BootId)
    }
}

/// How a written value is parsed and checked (anything else is EINVAL and leaves the value
/// as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Up to `n` integers separated by white space, each in `min..=max`; fewer replace the
    /// first ones only (the kernel's vectors).
    Ints(usize, i64, i64),
    /// Not writable.
    None,
}

/// One emulated path.
#[derive(Debug, Clone, Copy)]
pub struct Emulated {
    /// Below `proc/sys`.
    pub path: &'static str,
    /// What it does.
    pub policy: Policy,
    /// How writes are parsed and checked: the kernel handler's ranges.
    pub check: Check,
    /// The capability a writer needs over the user namespace owning its network namespace
    /// (whose store keeps the value).
    pub cap: u32,
    /// Why it is emulated on this kernel.
    pub why: &'static str,
}

const I32_MIN: i64 = i32::MIN as i64;
const I32: i64 = i32::MAX as i64;
use crate::nsfs::cap::{NET_ADMIN, SYS_ADMIN, SYS_RAWIO};

const fn e(
    path: &'static str,
    policy: Policy,
    check: Check,
    cap: u32,
    why: &'static str,
) -> Emulated {
    Emulated {
        path,
        policy,
        check,
        cap,
        why,
    }
}

/// One integer in `min..=max`.
const fn int(min: i64, max: i64) -> Check {
    Check::Ints(1, min, max)
}

use Policy::*;

const RO: Check = Check::None;

/// Every emulated path; the ranges are the kernel handlers' (`proc_dointvec` takes any int).
pub const EMULATED: &[Emulated] = &[
    e(
        "kernel/panic",
        Store,
        int(I32_MIN, I32),
        SYS_ADMIN,
        "global",
    ),
    e(
        "kernel/panic_on_oops",
        Store,
        int(I32_MIN, I32),
        SYS_ADMIN,
        "global",
    ),
    e(
        "kernel/printk",
        Store,
        Check::Ints(4, I32_MIN, I32),
        SYS_ADMIN,
        "global console levels",
    ),
    e(
        "kernel/kptr_restrict",
        Store,
        int(0, 2),
        SYS_ADMIN,
        "global",
    ),
    e(
        "kernel/dmesg_restrict",
        Store,
        int(0, 1),
        SYS_ADMIN,
        "global",
    ),
    e(
        "kernel/sysrq",
        Store,
        int(I32_MIN, I32),
        SYS_ADMIN,
        "global",
    ),
    e(
        "kernel/yama/ptrace_scope",
        Store,
        int(0, 3),
        SYS_ADMIN,
        "global (Yama)",
    ),
    e(
        "kernel/cap_last_cap",
        ReadOnly,
        RO,
        0,
        "a fact of the kernel",
    ),
    e(
        "kernel/ngroups_max",
        ReadOnly,
        RO,
        0,
        "a fact of the kernel",
    ),
    e("kernel/random/uuid", RandomUuid, RO, 0, "new on every read"),
    e(
        "kernel/random/boot_id",
        BootId,
        RO,
        0,
        "one per container boot",
    ),
    e("fs/file-max", Store, int(0, i64::MAX), SYS_ADMIN, "global"),
    // BITS_PER_LONG up to INT_MAX rounded down to a multiple of it.
    e(
        "fs/nr_open",
        Store,
        int(64, 2_147_483_584),
        SYS_ADMIN,
        "global",
    ),
    e(
        "fs/protected_hardlinks",
        Store,
        int(0, 1),
        SYS_ADMIN,
        "global",
    ),
    e(
        "fs/protected_symlinks",
        Store,
        int(0, 1),
        SYS_ADMIN,
        "global",
    ),
    e(
        "net/netfilter/nf_conntrack_max",
        MaxWins,
        int(0, I32),
        NET_ADMIN,
        "global; read-only in a child netns",
    ),
    e(
        "net/netfilter/nf_conntrack_tcp_be_liberal",
        LiberalWins,
        int(0, 1),
        NET_ADMIN,
        "global",
    ),
    e(
        "net/ipv4/ping_group_range",
        ClampToIdmap,
        Check::Ints(2, 0, I32),
        NET_ADMIN,
        "ids checked against the writer's map",
    ),
    e(
        "vm/overcommit_memory",
        Store,
        int(0, 2),
        SYS_ADMIN,
        "global",
    ),
    // The kernel asks CAP_SYS_RAWIO for this one.
    e(
        "vm/mmap_min_addr",
        Store,
        int(0, i64::MAX),
        SYS_RAWIO,
        "global",
    ),
];

/// The table line of `path` (below `proc/sys`).
pub fn find(path: &str) -> Option<&'static Emulated> {
    EMULATED.iter().find(|e| e.path == path)
}

/// Names directly under directory `dir` ("" is `proc/sys`) that the emulated paths for which
/// `present` holds need there: their files and the directories leading to them, with
/// whether each is a directory.
pub fn names_under(dir: &str, present: impl Fn(&Emulated) -> bool) -> Vec<(&'static str, bool)> {
    let mut out: Vec<(&'static str, bool)> = Vec::new();
    for e in EMULATED.iter().filter(|e| present(e)) {
        let rest = if dir.is_empty() {
            Some(e.path)
        } else {
            e.path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
        };
        let Some(rest) = rest else { continue };
        let (name, is_dir) = match rest.split_once('/') {
            Some((name, _)) => (name, true),
            None => (rest, false),
        };
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, is_dir));
        }
    }
    out
}

/// Whether `dir` leads to an emulated path for which `present` holds.
pub fn is_emulated_dir(dir: &str, present: impl Fn(&Emulated) -> bool) -> bool {
    EMULATED
        .iter()
        .any(|e| e.path.starts_with(dir) && e.path[dir.len()..].starts_with('/') && present(e))
}

/// A written value as the kernel's integer handlers (`proc_dointvec` and friends) take it:
/// the value to keep (fields separated by tabs, as procfs prints vectors) and the bytes the
/// write consumed, or `None` for EINVAL.
///
/// The kernel's rules, checked against native writes on this kernel: white space before
/// each number; a `-` sign but no `+`; base by prefix (`0x` hex, a leading `0` octal); after
/// a number white space or the end, nothing else (`5abc`, `3,4` are EINVAL); at most `n`
/// numbers, text after the last one left unconsumed (`"1 2"` to one integer sets 1 and
/// consumes `"1 "`); fewer than `n` replace the first ones of `current`; no number at all is
/// EINVAL; each number in range.
pub fn parse(check: Check, data: &[u8], current: &str) -> Option<(String, usize)> {
    let Check::Ints(n, min, max) = check else {
        return None;
    };
    let mut values: Vec<i64> = current
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    values.resize(n, 0);
    let mut at = 0;
    let mut taken = 0;
    while taken < n {
        at += spaces(&data[at..]);
        if at == data.len() {
            break;
        }
        let (value, len) = parse_number(&data[at..])?;
        if !(min..=max).contains(&value) {
            return None;
        }
        values[taken] = value;
        taken += 1;
        at += len;
        match data.get(at) {
            None => break,
            Some(b) if b.is_ascii_whitespace() => {}
            Some(_) => return None,
        }
    }
    if taken == 0 {
        return None;
    }
    at += spaces(&data[at..]);
    let text = values
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("\t");
    Some((text, at))
}

/// Leading ASCII white space in `data`.
fn spaces(data: &[u8]) -> usize {
    data.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

/// One number at the start of `data` (optional `-`, then base 0 as `strtoul` reads it) and
/// its length; `None` when there is no number or it overflows.
fn parse_number(data: &[u8]) -> Option<(i64, usize)> {
    let negative = data.first() == Some(&b'-');
    let start = usize::from(negative);
    let rest = &data[start..];
    let (radix, skip) = match rest {
        [b'0', b'x' | b'X', ..] => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let digits = rest[skip..]
        .iter()
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    if digits == 0 {
        return None;
    }
    let text = std::str::from_utf8(&rest[skip..skip + digits]).ok()?;
    let magnitude = i128::from(u64::from_str_radix(text, radix).ok()?);
    let value = if negative { -magnitude } else { magnitude };
    Some((i64::try_from(value).ok()?, start + skip + digits))
}

/// A random version-4 UUID from the kernel's generator.
pub fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(min: i64, max: i64, data: &[u8]) -> Option<(String, usize)> {
        parse(int(min, max), data, "0")
    }

    #[test]
    fn integers_parse_as_the_kernels_handlers_parse_them() {
        // Each case was written natively to net/core/somaxconn (proc_dointvec_minmax).
        type Case<'a> = (&'a [u8], Option<(&'a str, usize)>);
        let cases: &[Case] = &[
            (b"77\n", Some(("77", 3))),
            (b"1 2\n", Some(("1", 2))),
            (b"1 x\n", Some(("1", 2))),
            (b"1\n2\n", Some(("1", 2))),
            (b"1\t\t3", Some(("1", 3))),
            (b"  7  \n", Some(("7", 6))),
            (b"7\n\n\n", Some(("7", 4))),
            (b"\t9", Some(("9", 2))),
            (b"0x10\n", Some(("16", 5))),
            (b"0X1f", Some(("31", 4))),
            (b"010\n", Some(("8", 4))),
            (b"-0\n", Some(("0", 3))),
            (b"+3\n", None),
            (b"5abc\n", None),
            (b"3,4\n", None),
            (b"08\n", None),
            (b"0x\n", None),
            (b"\n", None),
            (b"  \n", None),
            (b"18446744073709551617", None),
            (b"4\x005\n", None),
            (&[0xff], None),
        ];
        for (data, want) in cases {
            let got = one(0, I32, data);
            let want = want.map(|(v, n)| (v.to_owned(), n));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn ranges_are_checked_and_vectors_replace_their_first_fields() {
        assert_eq!(one(0, 2, b"3\n"), None);
        assert_eq!(one(0, 2, b"-1\n"), None);
        assert_eq!(
            one(I32_MIN, I32, b"-1\n").map(|v| v.0).as_deref(),
            Some("-1")
        );
        assert_eq!(one(I32_MIN, I32, b"2147483648\n"), None);
        let printk = Check::Ints(4, I32_MIN, I32);
        assert_eq!(
            parse(printk, b"4 4 1 7", "7\t4\t1\t7")
                .map(|v| v.0)
                .as_deref(),
            Some("4\t4\t1\t7")
        );
        assert_eq!(
            parse(printk, b"3\n", "7\t4\t1\t7").map(|v| v.0).as_deref(),
            Some("3\t4\t1\t7")
        );
        assert_eq!(parse(Check::None, b"1", "0"), None);
    }

    #[test]
    fn listings_get_the_emulated_names_and_directories() {
        let all = |_: &Emulated| true;
        let top = names_under("", all);
        assert!(top.contains(&("kernel", true)) && top.contains(&("vm", true)));
        let kernel = names_under("kernel", all);
        assert!(kernel.contains(&("panic", false)) && kernel.contains(&("yama", true)));
        assert_eq!(names_under("kernel/yama", all), [("ptrace_scope", false)]);
        assert!(is_emulated_dir("net/netfilter", all) && !is_emulated_dir("net/core", all));
        // Without Yama on the host, no yama directory.
        let no_yama = |e: &Emulated| !e.path.starts_with("kernel/yama/");
        assert!(!names_under("kernel", no_yama).contains(&("yama", true)));
        assert!(!is_emulated_dir("kernel/yama", no_yama));
        assert!(find("vm/overcommit_memory").is_some() && find("kernel/pid_max").is_none());
    }

    #[test]
    fn every_path_is_unique_and_every_writable_one_checks_and_asks_a_capability() {
        for (i, a) in EMULATED.iter().enumerate() {
            assert!(
                EMULATED[i + 1..].iter().all(|b| b.path != a.path),
                "{}",
                a.path
            );
            assert_eq!(a.policy.writable(), a.check != Check::None, "{}", a.path);
            if a.policy.writable() {
                assert!(a.cap > 0, "{}", a.path);
            }
        }
    }
}
