//! Running the tools the harness drives: one-shot commands whose stderr ends up in the error,
//! long-running daemons that are stopped when their guard is dropped, and waiting for a condition
//! with a deadline (never a bare sleep).

use super::{check_interrupt, Error, IoContext, Result};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a wait loop re-checks its condition.
const POLL: Duration = Duration::from_millis(10);

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Print every command before it runs (`--verbose`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// The command line, for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn trace(cmd: &Command) {
    trace_action(&display(cmd));
}

/// Under `--verbose`, prints an action the harness does itself, shell-style.
pub fn trace_action(what: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("+ {what}");
    }
}

/// Looks a program up in `PATH`, then in the sbin directories a non-login root shell may miss.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `ip netns exec NS PROGRAM`: the program, run in the namespace (ip execs it, so the child's
/// pid is the program's).
pub fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Runs a command to completion; its stdout on success, an error carrying its stderr otherwise.
/// (It runs even after SIGINT: teardown uses it. Waits and spawns notice the interrupt.)
pub fn run(cmd: &mut Command) -> Result<String> {
    trace(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context(|| format!("running `{}`", display(cmd)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(command_failed(
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

/// Whether a command exits zero (its output is discarded).
pub fn succeeds(cmd: &mut Command) -> Result<bool> {
    trace(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context(|| format!("running `{}`", display(cmd)))?;
    Ok(status.success())
}

fn command_failed(cmd: &Command, status: ExitStatus, detail: &str) -> Error {
    Error::Command {
        command: display(cmd),
        status: status.to_string(),
        detail: if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        },
    }
}

/// Polls `cond` until it returns true, failing after `timeout` or on SIGINT.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        check_interrupt()?;
        if cond()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// A process the harness started and must stop: SIGTERM, then SIGKILL, when dropped.
/// Its stdout and stderr go to a file (`log`), shown when it fails.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr written to `log`.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Daemon> {
        Daemon::spawn_with(name, cmd, None, log)
    }

    /// Starts `cmd` with stdout written to `stdout` and stderr to `log`.
    pub fn spawn_split(name: &str, cmd: Command, stdout: &Path, log: &Path) -> Result<Daemon> {
        Daemon::spawn_with(name, cmd, Some(stdout), log)
    }

    fn spawn_with(
        name: &str,
        mut cmd: Command,
        stdout: Option<&Path>,
        log: &Path,
    ) -> Result<Daemon> {
        check_interrupt()?;
        let create = |p: &Path| File::create(p).context(|| format!("creating {}", p.display()));
        let err = create(log)?;
        let out = match stdout {
            Some(p) => create(p)?,
            None => err
                .try_clone()
                .context(|| format!("duplicating {}", log.display()))?,
        };
        trace(&cmd);
        // Its own process group: a Ctrl-C in the terminal reaches the harness only, which then
        // stops the daemon itself, in order (a sandbox is removed through its daemon before the
        // daemon goes).
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context(|| format!("starting {name}: `{}`", display(&cmd)))?;
        Ok(Daemon {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if it has exited (reaping it).
    fn poll_exit(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.exited)
    }

    /// An error if it has already exited (it should still be running), with its log's tail.
    pub fn check_running(&mut self) -> Result<()> {
        match self.poll_exit()? {
            None => Ok(()),
            Some(status) => Err(Error::Command {
                command: self.name.clone(),
                status: format!("exited early, {status}"),
                detail: self.log_tail(),
            }),
        }
    }

    /// Waits for it to exit by itself, up to `timeout`; an error (with the log's tail) if it
    /// exited non-zero or is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let mut status = None;
        wait_until(&format!("{} to finish", self.name), timeout, || {
            status = self.poll_exit()?;
            Ok(status.is_some())
        })?;
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(Error::Command {
                command: self.name.clone(),
                status: s.to_string(),
                detail: self.log_tail(),
            }),
            None => unreachable!("wait_until returned Ok only once the process exited"),
        }
    }

    /// The last lines of its log, prefixed with ": ", or nothing.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
        if tail.is_empty() {
            String::new()
        } else {
            format!(":\n    {tail}")
        }
    }

    /// Kills it at once (SIGKILL) and reaps it, as a crash would end it. Idempotent.
    pub fn kill(&mut self) -> Result<()> {
        if self.poll_exit()?.is_some() {
            return Ok(());
        }
        trace_action(&format!("kill -KILL {}  # {}", self.child.id(), self.name));
        let _ = self.child.kill();
        self.exited = Some(
            self.child
                .wait()
                .context(|| format!("reaping {}", self.name))?,
        );
        Ok(())
    }

    /// Stops it: SIGTERM, up to 5 s to exit, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if self.poll_exit()?.is_some() {
            return Ok(());
        }
        let pid = self.child.id() as libc::pid_t;
        trace_action(&format!("kill -TERM {pid}  # {}", self.name));
        // SAFETY: plain kill(2) on our own child, which has not been reaped (poll_exit above).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.poll_exit()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        self.exited = Some(
            self.child
                .wait()
                .context(|| format!("reaping {}", self.name))?,
        );
        Err(Error::Unexpected(format!(
            "{} ignored SIGTERM for 5 s and was killed",
            self.name
        )))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("e2e: cleanup: {e}");
        }
    }
}
