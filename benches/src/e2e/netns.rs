//! Network namespaces owned by the run (named `vsb<pid>-…`, so they are recognisably ours and
//! never collide with another run), and threads that enter one with `setns(2)`.

use super::cleanup::Resource;
use super::proc::run;
use super::{Error, IoContext, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The prefix every name this process makes starts with: `vsb<pid>`.
pub fn run_prefix() -> String {
    format!("vsb{}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted when released or dropped.
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
            deleted: false,
        };
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Its name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Resource for Netns {
    fn describe(&self) -> String {
        format!("netns {}", self.name)
    }
    fn release(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.deleted, true) {
            return Ok(());
        }
        delete(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("e2e: cleanup: {e}");
        }
    }
}

/// Kills whatever still runs in the namespace (only processes the run started can be there),
/// then deletes it; its veths go with it.
pub fn delete(name: &str) -> Result<()> {
    let pids = run(Command::new("ip").args(["netns", "pids", name])).unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill(2) on a pid that `ip netns pids` found inside our own namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    run(Command::new("ip").args(["netns", "del", name])).map(drop)
}

/// Runs `f` on a new thread that has first entered namespace `ns` (`setns(CLONE_NEWNET)` affects
/// only the calling thread, so the rest of the process stays where it was).
pub fn spawn_in<T, F>(ns: &str, thread_name: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = Path::new(NETNS_DIR).join(ns);
    let file = File::open(&path).context(|| format!("opening {}", path.display()))?;
    let ns = ns.to_string();
    std::thread::Builder::new()
        .name(thread_name.to_string())
        .spawn(move || {
            // SAFETY: setns(2) with a valid namespace fd, on this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context(|| format!("entering netns {ns}"));
            }
            drop(file);
            f()
        })
        .context(|| format!("starting thread {thread_name}"))
}

/// Joins a thread from [`spawn_in`], turning a panic into an error.
pub fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    let name = handle.thread().name().unwrap_or("thread").to_string();
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Unexpected(format!("{name} panicked"))))
}

/// Removes namespaces and temp dirs left by an earlier run of this harness that was killed
/// (`vsb<PID>-…` whose PID no longer exists). Returns what it removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("vsb") else {
            return false;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[digits.len()..];
        match digits.parse::<u32>() {
            Ok(pid) if after.is_empty() || after.starts_with('-') => {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            }
            _ => false,
        }
    };
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in names(Path::new(NETNS_DIR)) {
        if dead(&name) && delete(&name).is_ok() {
            removed.push(format!("netns {name}"));
        }
    }
    let tmp = std::env::temp_dir();
    for name in names(&tmp) {
        if dead(&name) && std::fs::remove_dir_all(tmp.join(&name)).is_ok() {
            removed.push(format!("directory {}", tmp.join(&name).display()));
        }
    }
    removed
}
