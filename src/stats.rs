//! Process-wide counters for `nsview ctl status`: requests served, and errors by errno.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static ERRORS: Mutex<BTreeMap<i32, u64>> = Mutex::new(BTreeMap::new());

/// Counts one FUSE request.
pub fn request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// Counts one request answered with `errno`.
pub fn error(errno: i32) {
    *ERRORS.lock().entry(errno).or_default() += 1;
}

/// Requests served so far.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Errors so far by errno name (`ENOENT`, ...).
pub fn errors() -> BTreeMap<String, u64> {
    ERRORS
        .lock()
        .iter()
        .map(|(errno, n)| (errno_name(*errno), *n))
        .collect()
}

fn errno_name(errno: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    if name.starts_with('E') {
        name
    } else {
        format!("errno {errno}")
    }
}
