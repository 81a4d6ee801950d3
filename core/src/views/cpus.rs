//! Which CPUs a container sees. One list drives every CPU-shaped view (`proc/cpuinfo`,
//! `proc/stat`, `proc/uptime`'s idle, `proc/loadavg`, `sys/devices/system/cpu`), so `nproc
//! --all`, `getconf _NPROCESSORS_CONF`, `lscpu` and `os.cpu_count()` never disagree (LXCFS
//! #406, #522, #731: there they show the host's CPUs in some of these places).

use crate::cgroup::CpuSet;
use crate::container::Container;
use crate::error::Result;
use crate::views::Env;

pub use crate::registry::CpuView;

/// The host CPUs a container sees, ascending: the CPUs it may run on (`placed`, its cpuset or
/// every online CPU), cut to the first `ceil(quota)` of them under [`CpuView::Quota`]. Never
/// empty while `placed` is not. Every view names them by the host's numbers (cpuset `1` is
/// `cpu1`, `online` says `1`), as `sched_getaffinity` does.
pub fn visible_cpus(placed: &[u32], quota: Option<f64>, view: CpuView) -> Vec<u32> {
    let keep = match (view, quota) {
        (CpuView::Quota, Some(q)) if q > 0.0 => (q.ceil() as usize).max(1),
        _ => placed.len(),
    };
    placed.iter().copied().take(keep).collect()
}

/// The CPUs container `c` sees, from its cpuset and quota (re-read at most once a second),
/// under the CPU view registered for it or the daemon's default.
pub fn container_cpus(env: &Env, c: &Container) -> Result<std::sync::Arc<[u32]>> {
    c.cached_cpus(|| {
        let placed = c.cgroups.cpuset()?.filter(|s| !s.is_empty());
        let placed = placed.as_ref().unwrap_or(&env.host_online);
        let view = env.registered.cpu_view_for(c.pidns);
        Ok(visible_cpus(
            placed.cpus(),
            c.cgroups.cpu_quota()?,
            view.unwrap_or(env.cpu_view),
        ))
    })
}

/// The kernel's list of `cpus` (`1`, `0,2-3`): what a container sees in `online`, `possible`
/// and `present`, by the host's numbers, which are the ones `sched_setaffinity` and `taskset`
/// take.
pub fn cpu_list(cpus: &[u32]) -> String {
    CpuSet::of(cpus.iter().copied()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_cuts_the_cpuset_to_its_ceiling() {
        assert_eq!(visible_cpus(&[0, 2, 3], Some(1.5), CpuView::Quota), [0, 2]);
        assert_eq!(visible_cpus(&[0, 2, 3], Some(0.5), CpuView::Quota), [0]);
        assert_eq!(
            visible_cpus(&[0, 2, 3], Some(8.0), CpuView::Quota),
            [0, 2, 3]
        );
        assert_eq!(visible_cpus(&[0, 2, 3], None, CpuView::Quota), [0, 2, 3]);
    }

    #[test]
    fn cpuset_view_ignores_the_quota() {
        assert_eq!(visible_cpus(&[1, 2], Some(0.5), CpuView::Cpuset), [1, 2]);
    }

    #[test]
    fn lists_keep_the_hosts_numbers() {
        assert_eq!(cpu_list(&[1]), "1");
        assert_eq!(cpu_list(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(cpu_list(&[]), "");
    }

    #[test]
    fn cpu_view_parses_its_two_names_only() {
        assert_eq!("quota".parse::<CpuView>(), Ok(CpuView::Quota));
        assert_eq!("cpuset".parse::<CpuView>(), Ok(CpuView::Cpuset));
        assert!("all".parse::<CpuView>().is_err());
    }
}
