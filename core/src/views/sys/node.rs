//! `sys/devices/system/node`: the host's NUMA nodes as a container with the host CPUs `cpus`
//! sees them. Each node's `cpulist` and `cpumap` name only the container's CPUs on it (by
//! their host numbers, as `sys/devices/system/cpu` does), and its `cpuN` links only those:
//! `lscpu`'s "NUMA node0 CPU(s)" and libnuma read these. Everything else (memory, distances,
//! hugepages) is the host's, read-only. Callers that see the host get the host's directory.

use std::fs;
use std::path::Path;

use super::cpu::{CpuDir, Target, cpu_number, join, list_host, numbered};
use crate::cgroup::CpuSet;
use crate::error::{Error, Result};
use crate::vfs::DirEntry;
use crate::views::cpus::cpu_list;

/// `sys/devices/system/node`: the host's NUMA nodes, their CPUs the caller's only.
pub static SYS_NODE: CpuDir = CpuDir {
    dir: "devices/system/node",
    map,
    list,
};

/// `nodeN` → N.
fn node_number(name: &str) -> Option<u32> {
    numbered(name, "node")
}

/// Maps `rel` below the directory (`root`, the host's `devices/system/node`) for a caller
/// seeing the host CPUs `cpus`, or the host's view when `cpus` is `None`.
pub fn map(root: &Path, cpus: Option<&[u32]>, rel: &str) -> Result<Target> {
    let host = join(root, rel);
    let Some(cpus) = cpus else {
        return Ok(Target::Host(host));
    };
    let mut parts = rel.splitn(3, '/');
    let (Some(node), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(Target::Host(host));
    };
    if node_number(node).is_none() {
        return Ok(Target::Host(host));
    }
    if let Some(k) = cpu_number(name) {
        return if cpus.contains(&k) {
            Ok(Target::Host(host))
        } else {
            Err(Error::NotFound)
        };
    }
    if name != "cpulist" && name != "cpumap" {
        return Ok(Target::Host(host));
    }
    let os = |e: std::io::Error| Error::Os(e.raw_os_error().unwrap_or(libc::EIO));
    let dir = root.join(node);
    let on_node = fs::read_to_string(dir.join("cpulist")).map_err(os)?;
    let on_node = CpuSet::parse(&on_node).ok_or(Error::Os(libc::EIO))?;
    let mine: Vec<u32> = on_node
        .cpus()
        .iter()
        .copied()
        .filter(|c| cpus.contains(c))
        .collect();
    let text = if name == "cpulist" {
        cpu_list(&mine)
    } else {
        mask_like(&fs::read_to_string(&host).map_err(os)?, &mine)
    };
    Ok(Target::Synth(format!("{text}\n")))
}

/// The listing of directory `rel`: the host's, a node's `cpuN` links only the container's.
pub fn list(root: &Path, cpus: Option<&[u32]>, rel: &str) -> Result<Vec<DirEntry>> {
    let Target::Host(dir) = map(root, cpus, rel)? else {
        return Err(Error::Os(libc::ENOTDIR));
    };
    let in_node = node_number(rel).is_some();
    list_host(&dir, |name| match (in_node, cpus, cpu_number(name)) {
        (true, Some(cpus), Some(k)) => !cpus.contains(&k),
        _ => false,
    })
}

/// The CPU mask of `cpus` laid out as the kernel's `template` is: comma-separated groups of
/// 32 CPUs, the highest first, each as many hex digits wide as the template's group.
fn mask_like(template: &str, cpus: &[u32]) -> String {
    let groups: Vec<&str> = template.trim().split(',').collect();
    let n = groups.len();
    groups
        .iter()
        .enumerate()
        .map(|(i, group)| {
            let chunk = (n - 1 - i) as u32;
            let bits = cpus
                .iter()
                .filter(|&&c| c / 32 == chunk)
                .fold(0u32, |m, &c| m | 1 << (c % 32));
            format!("{bits:0width$x}", width = group.len())
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::sys::cpu::read;

    #[test]
    fn masks_keep_the_kernels_layout() {
        assert_eq!(mask_like("3\n", &[1]), "2");
        assert_eq!(mask_like("ff", &[0, 2]), "05");
        assert_eq!(
            mask_like("00000000,ffffffff", &[1, 33]),
            "00000002,00000002"
        );
        assert_eq!(mask_like("f", &[]), "0");
    }

    fn host_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (node, list, map) in [("node0", "0-1", "03"), ("node1", "2-3", "0c")] {
            fs::create_dir(root.join(node)).unwrap();
            fs::write(root.join(node).join("cpulist"), format!("{list}\n")).unwrap();
            fs::write(root.join(node).join("cpumap"), format!("{map}\n")).unwrap();
            fs::write(root.join(node).join("meminfo"), "Node 0 MemTotal: 1 kB\n").unwrap();
        }
        for cpu in 0..4 {
            let node = if cpu < 2 { "node0" } else { "node1" };
            std::os::unix::fs::symlink(
                format!("../../cpu/cpu{cpu}"),
                root.join(node).join(format!("cpu{cpu}")),
            )
            .unwrap();
        }
        fs::write(root.join("online"), "0-1\n").unwrap();
        dir
    }

    #[test]
    fn a_node_lists_and_maps_only_the_containers_cpus() {
        let dir = host_tree();
        let cpus = Some(&[1u32, 2][..]);
        let text = |rel: &str| read(&map(dir.path(), cpus, rel).unwrap()).unwrap();
        assert_eq!(text("node0/cpulist"), b"1\n");
        assert_eq!(text("node0/cpumap"), b"02\n");
        assert_eq!(text("node1/cpulist"), b"2\n");
        assert_eq!(text("node1/cpumap"), b"04\n");
        assert_eq!(text("online"), b"0-1\n");
        assert!(matches!(
            map(dir.path(), cpus, "node0/cpu0"),
            Err(Error::NotFound)
        ));
        let names: Vec<String> = list(dir.path(), cpus, "node0")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["cpu1", "cpulist", "cpumap", "meminfo"]);
        // The host's own view is the host's.
        assert_eq!(
            read(&map(dir.path(), None, "node0/cpulist").unwrap()).unwrap(),
            b"0-1\n"
        );
    }
}
