//! A container: new pid, mount, uts, ipc, net and cgroup namespaces (optionally a user
//! namespace), a fresh `/proc`, inside a fresh test [`Cgroup`], with chosen files bind-mounted
//! over their places in its mount namespace only.
//!
//! Built from util-linux `unshare`, whose pid-namespace init ends as `sleep`; commands run in
//! it through `nsenter --all`. Both are moved into the cgroup between fork and exec, so
//! `unshare` creates the cgroup namespace rooted at the test cgroup and every command shares
//! the container's cgroups (`nsenter` itself does not change cgroups).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;

use super::{Cgroup, Daemon, Limits, Output, PidFd, require_root, wait_child_for};

/// How long a container may take to be ready (generous: the CI's emulated VM, on a host
/// busy with other work, once took over 10 s for three at once).
const START_LIMIT: Duration = Duration::from_secs(30);
/// What the container's init finally runs: long enough for any test.
const INIT_ARGV: &str = "exec sleep 1000000";

/// How to build a [`Container`].
#[derive(Debug, Default)]
pub struct ContainerBuilder {
    limits: Limits,
    outer: Option<Limits>,
    userns: bool,
    shared: Vec<&'static str>,
    binds: Vec<(PathBuf, String)>,
}

impl ContainerBuilder {
    /// A container with no limits, no user namespace and no bind mounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits of the container's cgroup.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Puts the container's cgroup inside one of its own with `outer` limits (a pod's or a
    /// slice's cgroup): its limits are then the tighter of both.
    pub fn inside(mut self, outer: Limits) -> Self {
        self.outer = Some(outer);
        self
    }

    /// Whether to add a user namespace (container root maps to host root, one id).
    pub fn userns(mut self, on: bool) -> Self {
        self.userns = on;
        self
    }

    /// Keeps the host's namespaces of `kinds` (`"net"`, `"uts"`, `"ipc"`) instead of new ones,
    /// as `--net host` and friends do.
    pub fn share(mut self, kinds: &[&'static str]) -> Self {
        self.shared.extend_from_slice(kinds);
        self
    }

    /// Bind-mounts `<daemon mountpoint>/<f>` over `/<f>` for each of `files` (files or
    /// directories, e.g. `"proc/uptime"`, `"sys/devices/system/cpu"`), after the container's
    /// `/proc` is mounted, in the container's mount namespace only.
    pub fn bind_from(mut self, daemon: &Daemon, files: &[&str]) -> Self {
        for f in files {
            let rel = f.trim_start_matches('/');
            self.binds.push((daemon.path(rel), format!("/{rel}")));
        }
        self
    }

    /// Bind-mounts an arbitrary host path over `target` inside the container.
    pub fn bind(mut self, source: impl Into<PathBuf>, target: &str) -> Self {
        self.binds.push((source.into(), target.to_owned()));
        self
    }

    /// Creates the cgroup and the namespaces and waits until the init runs `sleep`. Panics
    /// with `unshare`'s stderr if that fails; whatever was made by then is cleaned up.
    pub fn start(self) -> Container {
        require_root();
        let cgroup = Cgroup::create_nested(self.outer.as_ref(), &self.limits);
        let stderr = NamedTempFile::new().expect("create a file for unshare's stderr");
        let mut cmd = Command::new("unshare");
        cmd.args(["--fork", "--kill-child", "--pid", "--mount"]);
        for kind in ["uts", "ipc", "net"] {
            if !self.shared.contains(&kind) {
                cmd.arg(format!("--{kind}"));
            }
        }
        cmd.args(["--cgroup", "--mount-proc", "--propagation", "private"]);
        if self.userns {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(["--", "/bin/sh", "-c", &self.script()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen the stderr file"));
        join_cgroups_before_exec(&mut cmd, &cgroup);
        let mut unshare = cmd.spawn().expect("spawn unshare");
        let stdout = unshare.stdout.take().expect("unshare's stdout is piped");
        let mut container = Container {
            cgroup,
            unshare,
            init_pid: 0,
            init: None,
            stderr,
        };
        container.wait_until_ready(stdout);
        container
    }

    /// The init's script: the bind mounts, then `ready` on stdout, then `sleep`.
    fn script(&self) -> String {
        let mut steps: Vec<String> = self
            .binds
            .iter()
            .map(|(src, dst)| {
                format!(
                    "mount --bind {} {}",
                    quote(&src.to_string_lossy()),
                    quote(dst)
                )
            })
            .collect();
        steps.push("echo ready".to_owned());
        format!("{} && {INIT_ARGV}", steps.join(" && "))
    }
}

/// A running container; drop kills its init (and with it the whole pid namespace), reaps
/// `unshare` and then removes the cgroup.
pub struct Container {
    // Field order matters: the Drop impl kills the processes first, then `cgroup` drops.
    cgroup: Cgroup,
    unshare: Child,
    init_pid: u32,
    init: Option<PidFd>,
    stderr: NamedTempFile,
}

impl Container {
    /// Reads `ready` from the init (10 s at most), then finds the init's host pid and waits
    /// until it has exec'ed `sleep`.
    fn wait_until_ready(&mut self, stdout: std::process::ChildStdout) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let deadline = Instant::now() + START_LIMIT;
        match rx.recv_timeout(START_LIMIT) {
            Ok(line) if line.trim() == "ready" => {}
            other => self.fail(&format!(
                "no \"ready\" from the container's init ({other:?})"
            )),
        }
        let Some(pid) = self.find_init() else {
            self.fail("unshare has no child that is a pid namespace's init");
        };
        self.init_pid = pid;
        self.init = PidFd::open(pid).ok();
        while comm(pid).as_deref() != Some("sleep") {
            if Instant::now() >= deadline {
                self.fail("the init did not exec sleep");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The child of `unshare` whose innermost pid is 1 (unshare may fork helpers too).
    fn find_init(&self) -> Option<u32> {
        let pid = self.unshare.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .find(|c| {
                let status =
                    std::fs::read_to_string(format!("/proc/{c}/status")).unwrap_or_default();
                status.lines().any(|l| {
                    let ids: Vec<&str> = l
                        .strip_prefix("NSpid:")
                        .unwrap_or("")
                        .split_whitespace()
                        .collect();
                    ids.len() >= 2 && ids.last() == Some(&"1")
                })
            })
    }

    fn fail(&self, what: &str) -> ! {
        let stderr = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
        panic!("container start failed: {what}; unshare's stderr:\n{stderr}");
    }

    /// The host pid of the container's pid-namespace init.
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Its cgroup, to change under it.
    pub fn cgroup_mut(&mut self) -> &mut Cgroup {
        &mut self.cgroup
    }

    /// Runs `argv` inside all the container's namespaces and cgroups and waits for it.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let out = self
            .command(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run nsenter {argv:?}: {e}"));
        out.into()
    }

    /// The trimmed stdout of `script` run by `/bin/sh` inside, which must succeed (the panic
    /// shows the script and its stderr).
    pub fn run(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// `exec(["/bin/sh", "-c", script])`.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Starts `argv` like [`Container::exec`] without waiting: stdout piped, stderr
    /// inherited. The child is `nsenter`, whose own child (the command) lives in the
    /// container's pid namespace and dies with the container at the latest.
    pub fn spawn(&self, argv: &[&str]) -> Child {
        self.command(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter {argv:?}: {e}"))
    }

    /// `nsenter --target <init> --all -- argv`, joining the cgroups before exec. util-linux
    /// 2.38's `--all` skips the user namespace when it is the caller's own (setns would fail)
    /// and forks after joining the pid namespace, so the command is in it.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.init_pid.to_string())
            .arg("--all")
            .arg("--")
            .args(argv);
        join_cgroups_before_exec(&mut cmd, &self.cgroup);
        cmd
    }

    /// What writing `data` to `path` in one `open`, `write`, `close` does, run inside as
    /// `as_who` (a command prefix such as a `setpriv` line, or ""): `ok` or the errno's name.
    pub fn try_write(&self, path: &str, data: &str, as_who: &str) -> String {
        self.run(&write_probe(path, data, as_who))
    }

    /// Field 22 of `/proc/<init>/stat`: when the init started, in clock ticks since boot.
    pub fn start_time_ticks(&self) -> u64 {
        let path = format!("/proc/{}/stat", self.init_pid);
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        // The command name (field 2) may contain spaces and parentheses: count after the
        // last ')'; field 3 is then the first.
        let after = &stat[stat.rfind(')').expect("stat has a comm") + 1..];
        let field = after
            .split_whitespace()
            .nth(22 - 3)
            .expect("stat has field 22");
        field.parse().expect("field 22 is a number")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGKILL of a pid namespace's init kills every process in the namespace. Without a
        // pidfd (start failed early), killing unshare does it: --kill-child SIGKILLs the init.
        match &self.init {
            Some(init) => {
                let _ = init.signal(libc::SIGKILL);
                // unshare exits once its child (the init) has; it should take milliseconds.
                if wait_child_for(&mut self.unshare, Duration::from_secs(5)).is_none() {
                    let _ = self.unshare.kill();
                    let _ = self.unshare.wait();
                }
            }
            None => {
                let _ = self.unshare.kill();
                let _ = self.unshare.wait();
            }
        }
    }
}

/// Makes the child of `cmd` write `0` (itself) into every `cgroup.procs` of `cgroup` between
/// fork and exec, so it runs inside the cgroup from its first instruction. The files are
/// opened here, before the fork: after a fork in a multi-threaded process only
/// async-signal-safe calls are allowed, so the child only calls write(2).
fn join_cgroups_before_exec(cmd: &mut Command, cgroup: &Cgroup) {
    let files: Vec<File> = cgroup
        .procs_files()
        .iter()
        .map(|p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        })
        .collect();
    let hook = move || {
        for file in &files {
            // SAFETY: the fd is open (owned by `files`, which the hook owns) and the buffer
            // is a static one-byte string; write(2) is async-signal-safe.
            let n = unsafe { libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and neither allocates nor takes
    // locks: it iterates an existing Vec, calls write(2), and builds an io::Error from errno
    // (an inline value).
    unsafe { cmd.pre_exec(hook) };
}

/// A shell line that writes `data` to `path` (one `open`, `write`, `close`, by Python) as
/// `as_who` and prints `ok` or the errno's name.
pub fn write_probe(path: &str, data: &str, as_who: &str) -> String {
    let probe = format!(
        "import errno\ntry:\n    f = open({path:?}, 'w')\n    f.write({data:?})\n    f.close()\n    print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
    );
    format!("{as_who} /usr/bin/python3 -c {}", quote(&probe))
}

/// `s` single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `/proc/<pid>/comm` without the newline.
fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_owned())
}
