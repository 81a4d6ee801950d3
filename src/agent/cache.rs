//! The attributes a namespace set's agent told, kept for [`STAT_TTL`]: a lookup's answer
//! (an entry's kind, mode and owner, which no caller's credentials change) and what a
//! listing returns, so a path walk through `proc/sys/net/ipv4/` costs the agent one round
//! trip for the file's content rather than one per component. Only entries that exist are
//! kept (a new entry is visible at once; a removed one may stat for up to the TTL, and its
//! read then fails as natively). Contents are never cached.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nsview_proto::agent::{Kind, Op, Payload, Stat};
use parking_lot::Mutex;

use crate::error::Result;

/// How long a lookup's answer is reused for the same namespace set.
pub const STAT_TTL: Duration = Duration::from_secs(1);
/// Most attributes cached per set; beyond, expired ones go, then all.
const STAT_CACHE_MAX: usize = 4096;

/// Attributes by agent path, with when they were learnt.
#[derive(Debug, Default)]
pub struct AttrCache(Mutex<HashMap<String, (Stat, Instant)>>);

impl AttrCache {
    /// What a lookup of `path` answered within [`STAT_TTL`], or a listing did, except for a
    /// file: a listing does not tell its length.
    pub fn cached(&self, path: &str) -> Option<Stat> {
        let stats = self.0.lock();
        let (stat, at) = stats.get(path)?;
        let whole = stat.kind != Kind::File || stat.len.is_some();
        (whole && at.elapsed() < STAT_TTL).then_some(*stat)
    }

    fn remember(&self, entries: impl IntoIterator<Item = (String, Stat)>) {
        let now = Instant::now();
        let mut stats = self.0.lock();
        for (path, stat) in entries {
            if stats.len() >= STAT_CACHE_MAX {
                // Less than half left after dropping the expired ones, or nothing: either
                // way the next STAT_CACHE_MAX / 2 inserts need no scan.
                stats.retain(|_, (_, at)| at.elapsed() < STAT_TTL);
                if stats.len() >= STAT_CACHE_MAX / 2 {
                    stats.clear();
                }
            }
            stats.insert(path, (stat, now));
        }
    }

    /// Keeps the attributes `result` of `op` tells.
    pub fn learn(&self, op: &Op, result: &Result<Payload>) {
        match (op, result) {
            (Op::Lookup { path }, Ok(Payload::Entry(stat))) => {
                self.remember([(path.clone(), *stat)]);
            }
            (Op::Readdir { path }, Ok(Payload::Entries(items))) => {
                let dir = path.trim_end_matches('/');
                self.remember(
                    items
                        .iter()
                        .map(|item| (format!("{dir}/{}", item.name), item.stat)),
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use nsview_proto::agent::DirItem;

    const DIR: Stat = Stat {
        kind: Kind::Dir,
        mode: 0o555,
        uid: 0,
        gid: 0,
        len: None,
    };
    const FILE: Stat = Stat {
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        len: None,
    };

    #[test]
    fn lookups_and_listings_teach_attributes_and_failures_teach_nothing() {
        let s = AttrCache::default();
        let lookup = |path: &str| Op::Lookup { path: path.into() };
        s.learn(&lookup("proc/sys/net"), &Ok(Payload::Entry(DIR)));
        s.learn(&lookup("proc/sys/nope"), &Err(Error::Os(libc::ENOENT)));
        s.learn(
            &Op::Readdir {
                path: "proc/sys/net/ipv4".into(),
            },
            &Ok(Payload::Entries(vec![DirItem {
                name: "ip_forward".into(),
                stat: FILE,
            }])),
        );
        assert_eq!(s.cached("proc/sys/net"), Some(DIR));
        // A listing tells a file's kind and mode, not its length: a lookup still asks.
        assert_eq!(s.cached("proc/sys/net/ipv4/ip_forward"), None);
        assert_eq!(s.cached("proc/sys/nope"), None);
        assert_eq!(s.cached("proc/sys/net/ipv4"), None);
        let sized = Stat {
            len: Some(2),
            ..FILE
        };
        s.learn(
            &lookup("proc/sys/net/ipv4/ip_forward"),
            &Ok(Payload::Entry(sized)),
        );
        assert_eq!(s.cached("proc/sys/net/ipv4/ip_forward"), Some(sized));
    }

    #[test]
    fn attributes_expire_and_the_cache_stays_bounded() {
        let s = AttrCache::default();
        let old = Instant::now().checked_sub(STAT_TTL).unwrap();
        s.0.lock().insert("proc/sys/kernel".into(), (DIR, old));
        assert_eq!(s.cached("proc/sys/kernel"), None, "expired");
        s.remember((0..STAT_CACHE_MAX + 10).map(|i| (format!("p/{i}"), DIR)));
        assert!(s.0.lock().len() <= STAT_CACHE_MAX);
        assert_eq!(s.cached(&format!("p/{}", STAT_CACHE_MAX + 9)), Some(DIR));
    }
}
