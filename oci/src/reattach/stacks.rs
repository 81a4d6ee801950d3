//! Finding the stacks of nsview binds in a mount namespace's mountinfo: on each mount point
//! whose topmost mount binds a file the hook binds, from a device of this nsview's, the
//! binds of that file stacked there, topmost first, and what lies beneath or around them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::devices::Dev;
use crate::inject;
use nsview_core::mounts::MountEntry;
use nsview_core::mounts::is_nsview_mount;

/// A stack of nsview binds on one mount point of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The mount point, as the container sees it.
    pub target: PathBuf,
    /// The file of nsview's mount it binds (see [`inject::is_bound_file`]).
    pub rel: String,
    /// Mount ids of the nsview binds stacked there, topmost first.
    pub layers: Vec<u64>,
    /// Whether any of them is read-only.
    pub read_only: bool,
    /// Whether something is mounted beneath the mount point.
    pub covers_mounts: bool,
    /// A FUSE mount (not nsview's) the mount point lies in: reaching it would ask that
    /// filesystem's server, which may never answer.
    pub beneath_fuse: Option<PathBuf>,
    /// The device (`major:minor`) of the topmost bind: which nsview mount it came from.
    pub dev: Dev,
}

/// The stacks of binds on the devices `ours` among `mounts` whose topmost mount is such a
/// bind of a file the hook binds. O(n log n) in the mounts: a namespace may hold many.
pub fn stacks(mounts: &[MountEntry], ours: &HashSet<Dev>) -> Vec<Stack> {
    fn file_of<'m>(m: &'m MountEntry, ours: &HashSet<Dev>) -> Option<&'m str> {
        if !is_nsview_mount(m) || !ours.contains(&m.dev) {
            return None;
        }
        let rel = m.root.strip_prefix("/").ok()?.to_str()?;
        inject::is_bound_file(rel).then_some(rel)
    }
    let file_of = |m| file_of(m, ours);
    let points: BTreeSet<&Path> = mounts
        .iter()
        .filter(|m| file_of(m).is_some())
        .map(|m| m.mount_point.as_path())
        .collect();
    let mut at: BTreeMap<&Path, Vec<&MountEntry>> = BTreeMap::new();
    for m in mounts
        .iter()
        .filter(|m| points.contains(m.mount_point.as_path()))
    {
        at.entry(m.mount_point.as_path()).or_default().push(m);
    }
    let all_points: BTreeSet<&Path> = mounts.iter().map(|m| m.mount_point.as_path()).collect();
    let other_fuse: BTreeSet<&Path> = mounts
        .iter()
        .filter(|m| m.fstype.split('.').next() == Some("fuse") && !is_nsview_mount(m))
        .map(|m| m.mount_point.as_path())
        .collect();
    let mut out = Vec::new();
    for (target, here) in at {
        // The topmost: the one no other mount here sits on.
        let Some(top) = here
            .iter()
            .find(|m| !here.iter().any(|o| o.parent_id == m.mount_id))
        else {
            continue;
        };
        let Some(rel) = file_of(top) else { continue };
        let (mut layers, mut read_only, mut layer) = (Vec::new(), false, *top);
        // Down through the binds of the same file, at most one step per mount here.
        for _ in 0..here.len() {
            if file_of(layer) != Some(rel) {
                break;
            }
            layers.push(u64::from(layer.mount_id));
            read_only |= layer.read_only();
            match here.iter().find(|m| m.mount_id == layer.parent_id) {
                Some(below) => layer = below,
                None => break,
            }
        }
        let covers_mounts = all_points
            .range::<Path, _>((
                std::ops::Bound::Excluded(target),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|p| p.starts_with(target));
        let beneath_fuse = target
            .ancestors()
            .skip(1)
            .find(|a| other_fuse.contains(a))
            .map(Path::to_path_buf);
        out.push(Stack {
            target: target.to_path_buf(),
            rel: rel.to_owned(),
            layers,
            read_only,
            covers_mounts,
            beneath_fuse,
            dev: top.dev,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsview_core::mounts::parse_mountinfo;

    #[test]
    fn stacks_are_binds_of_our_devices_and_known_files_topmost_first() {
        let text = "\
            20 1 0:30 / / rw - overlay overlay rw\n\
            21 20 0:22 / /proc rw - proc proc rw\n\
            30 21 0:60 /proc/meminfo /proc/meminfo ro - fuse nsview rw\n\
            31 21 0:60 /proc/sys /proc/sys rw - fuse nsview rw\n\
            32 31 0:60 /proc/sys /proc/sys ro - fuse nsview rw\n\
            33 21 0:62 /x /proc/cpuinfo ro - fuse other rw\n\
            34 21 0:60 /../etc /proc/stat ro - fuse nsview rw\n\
            35 21 0:60 / /proc/uptime ro - fuse nsview rw\n\
            36 21 0:60 /proc/loadavg /proc/loadavg ro - fuse nsview rw\n\
            37 36 0:5 / /proc/loadavg rw - tmpfs tmpfs rw\n\
            38 21 0:61 /proc/diskstats /proc/diskstats ro - fuse nsview rw\n\
            40 20 0:23 / /sys rw - sysfs sysfs rw\n\
            41 40 0:60 /sys/devices/system/cpu /sys/devices/system/cpu ro - fuse nsview rw\n\
            42 41 0:24 / /sys/devices/system/cpu/cpu0 ro - tmpfs tmpfs rw\n\
            50 20 0:70 / /home rw - fuse.sshfs sshfs rw\n\
            51 50 0:60 /proc/swaps /home/u/swaps ro - fuse nsview rw\n";
        let ours = HashSet::from([(0, 60)]);
        let found = stacks(&parse_mountinfo(text), &ours);
        let by_target = |t: &str| found.iter().find(|s| s.target == Path::new(t)).cloned();
        assert_eq!(
            by_target("/proc/meminfo"),
            Some(Stack {
                target: "/proc/meminfo".into(),
                rel: "proc/meminfo".into(),
                layers: vec![30],
                read_only: true,
                covers_mounts: false,
                beneath_fuse: None,
                dev: (0, 60),
            })
        );
        // runc's read-only bind of /proc/sys onto the hook's: both go, and ro is kept.
        let sys = by_target("/proc/sys").unwrap();
        assert_eq!((sys.layers, sys.read_only), (vec![32, 31], true));
        // Not nsview's, outside its files, the whole mount, covered by another mount, or
        // another device (a second nsview's).
        for t in [
            "/proc/cpuinfo",
            "/proc/stat",
            "/proc/uptime",
            "/proc/loadavg",
            "/proc/diskstats",
        ] {
            assert_eq!(by_target(t), None, "{t}");
        }
        assert!(by_target("/sys/devices/system/cpu").unwrap().covers_mounts);
        assert_eq!(
            by_target("/home/u/swaps").unwrap().beneath_fuse,
            Some(PathBuf::from("/home"))
        );
        assert_eq!(found.len(), 4);
        assert!(stacks(&parse_mountinfo(text), &HashSet::new()).is_empty());
    }
}
