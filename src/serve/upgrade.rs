//! Live upgrade: the daemon execs the new binary in its own process, with its own arguments.
//!
//! Nothing is stopped first, so nothing fails: until the exec, every request is served; the
//! exec ends every thread at once, and the requests they had read stay in the kernel's queue
//! of the connection, which the keeper holds. The new image takes the connection back from
//! the keeper as after a crash, has the kernel resend those requests, and serves on. The pid
//! stays the same (a supervisor sees no restart). The old image's children (its agents,
//! which end once their sockets close at the exec, and the keeper if it started it) are the
//! new image's to reap: their pids travel in [`REAP_ENV`].

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{info, warn};

/// The environment variable that hands the new image its predecessor's children.
pub const REAP_ENV: &str = "NSVIEW_REAP";

/// Checks that `exe` is an nsview binary that runs here: `exe --version` answers `nsview …`
/// within 10 s. Returns its version line.
pub fn check(exe: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", exe.display()));
    }
    let mut child = std::process::Command::new(exe)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let since = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if since.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not answer in 10 s",
                    exe.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{}: {e}", exe.display())),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    }
    let line = out.lines().next().unwrap_or_default().to_owned();
    if !status.success() || !line.starts_with("nsview ") {
        return Err(format!(
            "{} is not an nsview binary (--version: {status}, {line:?})",
            exe.display()
        ));
    }
    Ok(line)
}

/// Execs `exe` with this process's own arguments; returns only if the exec failed. The
/// calling thread's signal mask (the daemon's handled signals, blocked) goes through the exec
/// as it is, and so do signals pending: the new image blocks the same set before it has a
/// thread, and its waiting thread takes them (a SIGTERM sent during the upgrade still stops
/// the daemon cleanly, never kills it half-way).
pub fn exec(exe: &Path, args: &[OsString]) -> nix::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let children = children();
    info!(
        "upgrading: exec {} ({} children handed over)",
        exe.display(),
        children.len()
    );
    let list = children
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let cstring = |bytes: &[u8]| CString::new(bytes).map_err(|_| nix::Error::EINVAL);
    let built = (|| {
        let path = cstring(exe.as_os_str().as_bytes())?;
        let mut argv = vec![path.clone()];
        for arg in args.iter().skip(1) {
            argv.push(cstring(arg.as_bytes())?);
        }
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os().filter(|(k, _)| k != REAP_ENV) {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            env.push(cstring(&pair)?);
        }
        env.push(cstring(format!("{REAP_ENV}={list}").as_bytes())?);
        Ok::<_, nix::Error>((path, argv, env))
    })();
    match built {
        Ok((path, argv, env)) => match nix::unistd::execve(&path, &argv, &env) {
            Err(e) => e,
            Ok(never) => match never {},
        },
        Err(e) => e,
    }
}

/// This process's children, from every thread's `children` list.
fn children() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Takes the children a predecessor image handed over ([`REAP_ENV`]) and reaps each as it
/// ends, on a thread of its own. Call before any other thread exists: it removes the
/// variable from the environment, so that no child of this image inherits it.
pub fn reap_inherited() {
    let Some(list) = std::env::var_os(REAP_ENV) else {
        return;
    };
    // SAFETY: called first thing in `serve`, while this process has one thread: nothing
    // reads the environment concurrently.
    unsafe { std::env::remove_var(REAP_ENV) };
    let pidfds: Vec<OwnedFd> = list
        .to_string_lossy()
        .split(',')
        .filter_map(|p| p.parse::<i32>().ok())
        .filter_map(rustix::process::Pid::from_raw)
        .filter_map(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        })
        .collect();
    if pidfds.is_empty() {
        return;
    }
    info!("reaping {} children of the previous image", pidfds.len());
    let spawned = std::thread::Builder::new()
        .name("reap".into())
        .spawn(move || reap(pidfds));
    if let Err(e) = spawned {
        warn!("cannot reap the previous image's children: {e}");
    }
}

fn reap(mut pidfds: Vec<OwnedFd>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    while !pidfds.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = pidfds
                .iter()
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
                if e == nix::Error::EINTR {
                    continue;
                }
                return;
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut i = 0;
        pidfds.retain(|fd| {
            let done = ready[i];
            i += 1;
            if done {
                // A pid that is not a child (ECHILD) is dropped as well.
                let _ = waitid(WaitId::PidFd(fd.as_fd()), WaitIdOptions::EXITED);
            }
            !done
        });
    }
}

/// The binary this daemon was started from (for `upgrade` without `--exe`: where a package
/// upgrade puts the new one), as read at start, before any upgrade replaced it.
pub fn own_exe() -> Option<PathBuf> {
    std::env::current_exe().ok()
}
