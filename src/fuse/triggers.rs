//! PSI triggers through `proc/pressure/*`, as on the kernel's own files: a write to an open
//! pressure file (`some 150000 1000000`) makes a trigger, kept while the file stays open, and
//! `poll()` on the file then reports POLLPRI each time it fires.
//!
//! The trigger is the kernel's: the daemon opens the caller's kernel pressure file (its
//! cgroup's `<kind>.pressure` on cgroup v2, else the host's `/proc/pressure/<kind>`) and
//! writes the caller's text there, so the kernel checks it. The kernel judges a trigger by
//! its file's opener: without CAP_SYS_RESOURCE, only windows of whole 2 s (Linux 6.5+). So
//! for a caller without it, the daemon opens the file with that capability dropped from the
//! worker thread's effective set.
//!
//! One thread waits on every trigger (epoll, EPOLLPRI). When one fires it marks it pending
//! and wakes the kernel's poller for that FUSE file, which then polls again and gets POLLPRI
//! (each event once, as the kernel's trigger hands out each event once).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{PollEvents, PollNotifier};
use log::warn;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Most triggers alive at once (each is a kernel trigger the daemon holds open); beyond,
/// EAGAIN.
pub const MAX_TRIGGERS: usize = 1024;

/// CAP_SYS_RESOURCE (`linux/capability.h`).
const CAP_SYS_RESOURCE: u32 = 24;

/// One trigger: the kernel file it was written to, and its poll state.
#[derive(Debug)]
struct Trigger {
    /// The kernel's file: the trigger lives while it is open.
    _kernel: File,
    /// Fired since the last POLLPRI answered.
    pending: AtomicBool,
    /// The kernel's poller to wake, if one waits. Held with `pending` checked or set under
    /// it, so no wake-up is lost between the two.
    waiter: Mutex<Option<PollNotifier>>,
}

/// The triggers of open files, by file handle.
#[derive(Debug)]
pub struct Triggers {
    map: Arc<Mutex<HashMap<u64, Arc<Trigger>>>>,
    epoll: Arc<OwnedFd>,
    watching: Mutex<bool>,
}

impl Default for Triggers {
    fn default() -> Self {
        // SAFETY: epoll_create1 takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(
            fd >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        Triggers {
            map: Arc::default(),
            // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
            epoll: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            watching: Mutex::new(false),
        }
    }
}

/// What `poll()` answers for a pressure file: DEFAULT_POLLMASK, with POLLPRI when its trigger
/// fired, and POLLERR|POLLPRI at once when it has none (the kernel's `psi_trigger_poll`).
fn default_mask() -> PollEvents {
    PollEvents::POLLIN | PollEvents::POLLOUT | PollEvents::POLLRDNORM | PollEvents::POLLWRNORM
}

impl Triggers {
    /// Makes the trigger `text` for file handle `fh` on the kernel pressure file `path`,
    /// as a caller that holds CAP_SYS_RESOURCE or not (`privileged`); the bytes the kernel
    /// took. A handle takes one trigger (EBUSY after, as the kernel's file).
    pub fn create(&self, fh: u64, path: &Path, text: &[u8], privileged: bool) -> Result<usize> {
        let mut map = self.map.lock();
        if map.contains_key(&fh) {
            return Err(Error::Os(libc::EBUSY));
        }
        if map.len() >= MAX_TRIGGERS {
            return Err(Error::Os(libc::EAGAIN));
        }
        let mut file = open_as(path, privileged)?;
        let n = file
            .write(text)
            .map_err(|e| Error::Os(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut event = libc::epoll_event {
            events: (libc::EPOLLPRI | libc::EPOLLERR) as u32,
            u64: fh,
        };
        // SAFETY: epoll_ctl reads one epoll_event from a live local; both descriptors are
        // open (the epoll one owned by self, the trigger's by `file`).
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                file.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(Error::Os(libc::EIO));
        }
        map.insert(
            fh,
            Arc::new(Trigger {
                _kernel: file,
                pending: AtomicBool::new(false),
                waiter: Mutex::new(None),
            }),
        );
        drop(map);
        self.watch();
        Ok(n)
    }

    /// What `poll()` on pressure file `fh` answers now; `notifier` is kept to wake the
    /// kernel's poller later when `schedule` (it waits) and nothing is pending.
    pub fn poll(&self, fh: u64, notifier: PollNotifier, schedule: bool) -> PollEvents {
        let Some(trigger) = self.map.lock().get(&fh).cloned() else {
            return default_mask() | PollEvents::POLLERR | PollEvents::POLLPRI;
        };
        let mut waiter = trigger.waiter.lock();
        if trigger.pending.swap(false, Ordering::AcqRel) {
            return default_mask() | PollEvents::POLLPRI;
        }
        if schedule {
            *waiter = Some(notifier);
        }
        default_mask()
    }

    /// Ends the trigger of `fh` (its file was closed).
    pub fn remove(&self, fh: u64) {
        // Closing the kernel file takes it out of the epoll set and ends the trigger.
        self.map.lock().remove(&fh);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Starts the thread that waits on every trigger, once.
    fn watch(&self) {
        let mut watching = self.watching.lock();
        if *watching {
            return;
        }
        let (map, epoll) = (self.map.clone(), self.epoll.clone());
        let spawned = std::thread::Builder::new()
            .name("nsview-psi".into())
            .spawn(move || wait_for_events(&map, &epoll));
        match spawned {
            Ok(_) => *watching = true,
            Err(e) => warn!("cannot start the PSI trigger thread: {e}; triggers never fire"),
        }
    }
}

/// The trigger thread: marks fired triggers pending and wakes their pollers, for the life
/// of the process (it holds only the epoll descriptor and the map).
fn wait_for_events(map: &Mutex<HashMap<u64, Arc<Trigger>>>, epoll: &OwnedFd) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        // SAFETY: epoll_wait writes at most events.len() entries into the live array.
        let n = unsafe { libc::epoll_wait(epoll.as_fd().as_raw_fd(), events.as_mut_ptr(), 64, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for event in &events[..n as usize] {
            let fh = event.u64;
            let Some(trigger) = map.lock().get(&fh).cloned() else {
                continue;
            };
            let notifier = {
                let mut waiter = trigger.waiter.lock();
                trigger.pending.store(true, Ordering::Release);
                waiter.take()
            };
            if let Some(notifier) = notifier {
                let _ = notifier.notify();
            }
        }
    }
}

/// `path` opened for reading and writing, with CAP_SYS_RESOURCE in the thread's effective
/// set only when `privileged` (the kernel judges a trigger by its file's opener).
fn open_as(path: &Path, privileged: bool) -> Result<File> {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::read(path, e))
    };
    if privileged {
        return open();
    }
    let saved = capabilities(None).map_err(|e| Error::Os(e.raw_os_error()))?;
    let lesser = rustix::thread::CapabilitySets {
        effective: saved.effective - CapabilitySet::from_bits_retain(1 << CAP_SYS_RESOURCE),
        ..saved
    };
    set_capabilities(None, lesser).map_err(|e| Error::Os(e.raw_os_error()))?;
    let opened = open();
    // Back to what this worker had: raising within the permitted set cannot fail.
    let _ = set_capabilities(None, saved);
    opened
}

/// Whether task `pid` holds CAP_SYS_RESOURCE in its effective set.
pub fn holds_sys_resource(proc: &crate::procfs::ProcRoot, pid: u32) -> bool {
    proc.read_host(&format!("{pid}/status"))
        .ok()
        .and_then(|s| crate::views::sysctl::parse_cap_eff(&s))
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_takes_one_trigger_and_bad_ones_are_the_kernels_einval() {
        let path = Path::new("/proc/pressure/cpu");
        if !path.exists() {
            return; // no PSI on this kernel
        }
        let triggers = Triggers::default();
        assert_eq!(
            triggers
                .create(1, path, b"some 500000 2000000\n", true)
                .unwrap(),
            20
        );
        assert!(matches!(
            triggers.create(1, path, b"some 500000 2000000\n", true),
            Err(Error::Os(libc::EBUSY))
        ));
        assert!(matches!(
            triggers.create(2, path, b"sometimes 1 2", true),
            Err(Error::Os(libc::EINVAL))
        ));
        assert_eq!(triggers.len(), 1);
        triggers.remove(1);
        assert_eq!(triggers.len(), 0);
    }
}
