//! Pure parsers of the cgroup file formats nsview reads.

/// v1 writes this (or anything near `i64::MAX` rounded down to a page) for "no limit".
const V1_UNLIMITED: u64 = 1 << 62;

/// A limit file's value: v2 `max` and v1's near-`i64::MAX` sentinel are `None` (unlimited);
/// anything unparsable is `Err(())`.
pub fn limit(text: &str) -> Result<Option<u64>, ()> {
    let text = text.trim();
    if text == "max" {
        return Ok(None);
    }
    let value: u64 = text.parse().map_err(|_| ())?;
    Ok(limit_value(value))
}

/// A limit already read as a number: v1's sentinel is `None` (unlimited).
pub fn limit_value(value: u64) -> Option<u64> {
    (value < V1_UNLIMITED).then_some(value)
}

/// The pairs of a flat-keyed file (`key value` per line, as `memory.stat`, `cpu.stat`);
/// lines that do not parse are skipped.
pub fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (key, value) = line.split_once(' ')?;
        Some((key, value.trim().parse().ok()?))
    })
}

/// `MAJ:MIN` → (major, minor).
pub fn device(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The pairs of a nested-keyed line's fields (`rbytes=1 wbytes=2`, as v2 `io.stat`).
pub fn nested_keyed<'a>(
    fields: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = (&'a str, u64)> {
    fields.filter_map(|field| {
        let (key, value) = field.split_once('=')?;
        Some((key, value.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_know_both_ways_of_saying_unlimited() {
        assert_eq!(limit("max\n"), Ok(None));
        assert_eq!(limit("9223372036854771712\n"), Ok(None));
        assert_eq!(limit("268435456\n"), Ok(Some(268_435_456)));
        assert_eq!(limit("lots"), Err(()));
    }

    #[test]
    fn keyed_formats_skip_what_they_cannot_read() {
        let pairs: Vec<_> = flat_keyed("anon 5\nfile x\nshmem 7\n").collect();
        assert_eq!(pairs, [("anon", 5), ("shmem", 7)]);
        assert_eq!(device("8:16"), Some((8, 16)));
        assert_eq!(device("8-16"), None);
        let nested: Vec<_> = nested_keyed("rbytes=1 wbytes=x rios=3".split(' ')).collect();
        assert_eq!(nested, [("rbytes", 1), ("rios", 3)]);
    }
}
