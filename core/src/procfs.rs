//! Reading the few procfs facts nsview needs about a task: `status` (Tgid, NSpid, ids),
//! `stat` (start time), `ns/*` (namespace inodes) and the boot-time clock.
//!
//! Every reader takes a [`ProcRoot`], so the parsers run on fixture trees in unit tests and
//! the daemon passes the real `/proc`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The procfs to read from: `/proc` in the daemon, a fixture directory in tests.
#[derive(Debug, Clone)]
pub struct ProcRoot(PathBuf);

impl Default for ProcRoot {
    fn default() -> Self {
        ProcRoot(PathBuf::from("/proc"))
    }
}

impl ProcRoot {
    /// A procfs rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcRoot(root.into())
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<root>/<pid>/<rel>`.
    pub fn pid_path(&self, pid: u32, rel: &str) -> PathBuf {
        self.0.join(pid.to_string()).join(rel)
    }

    /// Reads `<root>/<rel>` (a host-wide file such as `uptime`).
    pub fn read_host(&self, rel: &str) -> Result<String> {
        read_to_string(&self.0.join(rel))
    }

    /// Reads and parses `/proc/<pid>/status`.
    pub fn status(&self, pid: u32) -> Result<Status> {
        let path = self.pid_path(pid, "status");
        parse_status(&read_to_string(&path)?).ok_or_else(|| Error::parse(path, "Tgid/NSpid/Uid"))
    }

    /// Field 22 of `/proc/<pid>/stat`: the task's start time in clock ticks since boot.
    pub fn start_ticks(&self, pid: u32) -> Result<u64> {
        let path = self.pid_path(pid, "stat");
        parse_start_ticks(&read_to_string(&path)?).ok_or_else(|| Error::parse(path, "field 22"))
    }

    /// The inode of namespace `kind` (`pid`, `net`, ...) of task `pid`, from the
    /// `kind:[inode]` text of the `/proc/<pid>/ns/<kind>` link.
    pub fn ns_inode(&self, pid: u32, kind: &str) -> Result<u64> {
        let path = self.pid_path(pid, &format!("ns/{kind}"));
        let target = fs::read_link(&path).map_err(|e| Error::read(&path, e))?;
        parse_ns_link(&target.to_string_lossy()).ok_or_else(|| Error::parse(path, "ns link"))
    }

    /// The ids of the processes it lists (its numeric entries), in no particular order.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let dir = fs::read_dir(&self.0).map_err(|e| Error::read(&self.0, e))?;
        Ok(dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// The text of `/proc/<pid>/cgroup`.
    pub fn cgroup(&self, pid: u32) -> Result<String> {
        read_to_string(&self.pid_path(pid, "cgroup"))
    }
}

/// Reads a whole file, keeping the path in the error.
pub fn read_to_string(path: &Path) -> Result<String> {
    use std::io::Read;
    // procfs files report size 0: `fs::read_to_string` then starts with 32-byte probes and
    // doubles (8 reads for a task's `status`). A page-sized buffer takes most in one read.
    let mut text = String::with_capacity(4096);
    fs::File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .map_err(|e| Error::read(path, e))?;
    Ok(text)
}

/// The fields of `/proc/<pid>/status` nsview uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Thread-group id (the process id) in the reader's pid namespace.
    pub tgid: u32,
    /// The task's pid in each pid namespace it belongs to, outermost (the reader's) first.
    pub nspid: Vec<u32>,
    /// Effective uid.
    pub euid: u32,
    /// Effective gid.
    pub egid: u32,
}

/// Parses the `Tgid`, `NSpid`, `Uid` and `Gid` lines of a status file.
pub fn parse_status(text: &str) -> Option<Status> {
    let (mut tgid, mut nspid, mut euid, mut egid) = (None, None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let mut fields = value.split_whitespace();
        match key {
            "Tgid" => tgid = fields.next().and_then(|v| v.parse().ok()),
            "NSpid" => nspid = fields.map(|v| v.parse().ok()).collect::<Option<Vec<u32>>>(),
            "Uid" => euid = fields.nth(1).and_then(|v| v.parse().ok()),
            "Gid" => egid = fields.nth(1).and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    let nspid = nspid.filter(|v| !v.is_empty())?;
    Some(Status {
        tgid: tgid?,
        nspid,
        euid: euid?,
        egid: egid?,
    })
}

/// Field 22 (`starttime`) of a stat line. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the `)` come fields 3, 4, ...: field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Field 9 (`flags`, the kernel's `PF_*` bits) of a stat line.
pub fn parse_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the `)` come fields 3, 4, ...: field 9 is the 7th of them.
    rest.split_whitespace().nth(6)?.parse().ok()
}

/// The inode in a namespace link target such as `pid:[4026531836]`.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    let inner = target.split_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// Seconds since boot on the clock `/proc/uptime` and task start times use (`CLOCK_BOOTTIME`,
/// which keeps counting through suspend).
pub fn boottime_secs() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is available on every Linux since 2.6.39");
    ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9
}

/// Clock ticks per second (`USER_HZ`), the unit of task start times.
pub fn clock_ticks_per_sec() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_IN_CONTAINER: &str = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\n\
        Tgid:\t4242\nNgid:\t0\nPid:\t4243\nPPid:\t4200\nTracerPid:\t0\n\
        Uid:\t1000\t0\t0\t0\nGid:\t1001\t5\t5\t5\nFDSize:\t64\n\
        NSpid:\t4243\t7\t1\nNSpgid:\t4200\t1\t1\n";

    #[test]
    fn status_gives_tgid_nspid_and_effective_ids() {
        let s = parse_status(STATUS_IN_CONTAINER).unwrap();
        assert_eq!(s.tgid, 4242);
        assert_eq!(s.nspid, vec![4243, 7, 1]);
        assert_eq!((s.euid, s.egid), (0, 5));
    }

    #[test]
    fn status_without_nspid_is_rejected() {
        let text = STATUS_IN_CONTAINER.replace("NSpid:\t4243\t7\t1\n", "");
        assert_eq!(parse_status(&text), None);
        assert_eq!(parse_status("garbage"), None);
    }

    #[test]
    fn start_ticks_survive_parentheses_and_spaces_in_comm() {
        let stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(parse_start_ticks("77 (x) S 1"), None);
        assert_eq!(parse_flags(stat), Some(4194560));
        assert_eq!(parse_flags("77 (x) S 1"), None);
    }

    #[test]
    fn ns_link_inode() {
        assert_eq!(parse_ns_link("pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link("pid:4026531836"), None);
        assert_eq!(parse_ns_link("net:[]"), None);
    }

    #[test]
    fn fixture_tree_reads_through_the_injected_root() {
        let dir = tempfile::tempdir().unwrap();
        let pid_dir = dir.path().join("42");
        std::fs::create_dir_all(pid_dir.join("ns")).unwrap();
        std::fs::write(pid_dir.join("status"), STATUS_IN_CONTAINER).unwrap();
        std::os::unix::fs::symlink("pid:[4026532001]", pid_dir.join("ns/pid")).unwrap();
        let proc = ProcRoot::new(dir.path());
        assert_eq!(proc.status(42).unwrap().tgid, 4242);
        assert_eq!(proc.ns_inode(42, "pid").unwrap(), 4026532001);
        assert!(matches!(proc.status(43), Err(Error::Read { .. })));
    }
}
