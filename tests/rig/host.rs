//! Host values a test might change (sysctls, module parameters): saved first, put back on
//! drop wherever they changed, also while the test panics.

/// Host files and their saved contents.
#[derive(Debug)]
pub struct HostFiles(Vec<(String, String)>);

impl HostFiles {
    /// Saves the files at `paths` (absolute; missing ones are left out).
    pub fn save(paths: &[&str]) -> HostFiles {
        HostFiles(
            paths
                .iter()
                .filter_map(|p| Some(((*p).to_owned(), std::fs::read_to_string(p).ok()?)))
                .collect(),
        )
    }

    /// Saves `/proc/sys/<key>` for each of `keys`.
    pub fn sysctls(keys: &[&str]) -> HostFiles {
        let paths: Vec<String> = keys.iter().map(|k| format!("/proc/sys/{k}")).collect();
        HostFiles::save(&paths.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The saved content of `path`, if it was saved.
    pub fn saved(&self, path: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
    }

    /// The saved files whose content is no longer the saved one.
    pub fn changed(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(p, v)| std::fs::read_to_string(p).ok().as_ref() != Some(v))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

impl Drop for HostFiles {
    fn drop(&mut self) {
        for (path, value) in &self.0 {
            if std::fs::read_to_string(path).ok().as_ref() != Some(value) {
                let _ = std::fs::write(path, value);
            }
        }
    }
}

/// Whether the host's kernel has conntrack loaded (its sysctls and `hashsize` exist); tests
/// of them say so and pass without it.
pub fn has_conntrack() -> bool {
    let there = std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists();
    if !there {
        eprintln!("no nf_conntrack on this kernel: its checks are skipped");
    }
    there
}
