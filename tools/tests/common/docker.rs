//! A real dockerd for the end-to-end tests, all its state in a temp dir of its own, inside a
//! network namespace the test made; and a busybox image built without a registry.
//!
//! [`Dockerd::start`] runs `nsenter --net=/run/netns/NS dockerd --data-root D/data --exec-root
//! D/exec --pidfile D/pid -H unix://D/sock --bridge=none --iptables=false --ip6tables=false
//! --storage-driver vfs --ip-forward=false` (`nsenter --net`, not `ip netns exec`, which
//! remounts /sys and hides the cgroup mounts dockerd needs) and waits for `docker info` to answer. Every test gets its own D
//! (`/tmp/vsd<pid>n<N>`) and its own plugin name (`vswitch-<pid>n<N>`), so tests running side
//! by side never share a dockerd, a containerd or a plugin socket. The CLI is the package's
//! `/usr/bin/docker -H unix://D/sock`, with its config in D.
//!
//! dockerd looks for plugins in `/run/docker/plugins` of the mount namespace it runs in, which
//! is the test's: the test's plugin socket goes there, under its unique name.
//!
//! The [`Dockerd`] guard, when dropped (also when the test failed), removes every container,
//! stops dockerd (SIGTERM, a bounded wait, SIGKILL) and the containerd it started, unmounts
//! everything under D (the netns files of its sandboxes, the data root's own bind mount), and
//! removes D. Declare the plugin (or vswitchd) before the dockerd, so that dockerd is dropped
//! first: a dockerd whose plugin is gone retries each call for 30 s.

use super::{run_with_timeout, wait_for, Netns};
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The daemon, from Debian's docker.io.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The CLI, from Debian's docker.io.
pub const DOCKER: &str = "/usr/bin/docker";
/// The image every test imports: busybox and its applets.
pub const IMAGE: &str = "vswitch-busybox";
/// Where Docker looks for plugin sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// How long dockerd may take to answer, and a docker command to finish.
pub const DOCKER_WAIT: Duration = Duration::from_secs(90);
/// How long dockerd may take to stop after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// The statically linked busybox (Debian's busybox-static), where it may be.
const BUSYBOX: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// True when dockerd, the docker CLI and busybox are installed. Otherwise prints
/// `skipped: needs TOOL (apt-get install PKG)` and returns false, or panics under `CI=true`.
pub fn dockerd_or_skip() -> bool {
    let missing = if !Path::new(DOCKERD).exists() {
        Some(("dockerd", "docker.io"))
    } else if !Path::new(DOCKER).exists() {
        Some(("docker", "docker.io"))
    } else if busybox().is_none() {
        Some(("busybox", "busybox-static"))
    } else {
        None
    };
    match missing {
        None => true,
        Some((tool, pkg)) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("this test needs {tool} (apt-get install {pkg}), and CI=true requires it to run");
            }
            println!("skipped: needs {tool} (apt-get install {pkg})");
            false
        }
    }
}

fn busybox() -> Option<&'static str> {
    BUSYBOX.into_iter().find(|p| Path::new(p).exists())
}

/// A unique number for this process's dockerds and plugins (with the pid, unique on the machine).
fn next_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A plugin name no other test uses at the same time: `vswitch-<pid>n<N>`.
pub fn unique_plugin_name() -> String {
    format!("vswitch-{}n{}", std::process::id(), next_number())
}

/// The socket Docker finds the plugin `name` at: `/run/docker/plugins/NAME.sock`.
pub fn plugin_socket(name: &str) -> PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

/// Removes a file (a plugin socket) when dropped, whoever made it.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A running dockerd with all its state under its own directory; see the module doc.
pub struct Dockerd {
    /// D: the directory holding everything of this dockerd.
    pub dir: PathBuf,
    /// Its API socket, `D/sock`.
    pub sock: PathBuf,
    /// The namespace it runs in.
    pub netns: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Dockerd {
    /// Starts dockerd inside `netns` and waits until `docker info` answers.
    pub fn start(netns: &Netns) -> Dockerd {
        let dir = std::env::temp_dir().join(format!("vsd{}n{}", std::process::id(), next_number()));
        if dir.exists() {
            unmount_under(&dir);
            let _ = fs::remove_dir_all(&dir);
        }
        fs::create_dir_all(&dir).expect("create the dockerd dir");
        // An empty config of its own, so the machine's /etc/docker/daemon.json is not read.
        fs::write(dir.join("daemon.json"), b"{}\n").expect("write daemon.json");
        let mut d = Dockerd {
            sock: dir.join("sock"),
            log: dir.join("dockerd.log"),
            dir,
            netns: netns.name.clone(),
            child: None,
        };
        d.spawn();
        d
    }

    /// Runs dockerd on this directory's state (its log appended to) and waits for `docker info`.
    fn spawn(&mut self) {
        let logfile = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open dockerd.log");
        let ns = format!("--net=/run/netns/{}", self.netns);
        let p = |sub: &str| self.dir.join(sub).to_string_lossy().into_owned();
        let child = Command::new("nsenter")
            .args([ns.as_str(), "--", DOCKERD])
            .args(["--config-file", &p("daemon.json")])
            .args(["--data-root", &p("data")])
            .args(["--exec-root", &p("exec")])
            .args(["--pidfile", &p("pid")])
            .args(["-H", &self.host()])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            // No routing between the gateways of networks: without vswitch's firewall, that is
            // what keeps two networks apart at layer 3 (layer 2 is the switch's).
            .arg("--ip-forward=false")
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("dup the log file"))
            .stderr(logfile)
            .spawn()
            .expect("start nsenter dockerd");
        self.child = Some(child);
        let started = Instant::now();
        wait_for("dockerd to answer docker info", DOCKER_WAIT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "dockerd exited ({status}) before answering:\n{}",
                    self.log_text()
                );
            }
            let out = run_with_timeout(
                DOCKER,
                &["-H", &self.host(), "info", "--format", "{{.ID}}"],
                Duration::from_secs(10),
            )?;
            out.status.success().then_some(())
        });
        eprintln!(
            "dockerd in {} answered after {:?}",
            self.netns,
            started.elapsed()
        );
    }

    /// Stops dockerd as a host shutdown does (SIGTERM: it stops its containers) and starts it
    /// again on the same state, waiting until it answers.
    pub fn restart(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// `unix://D/sock`, for `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// What dockerd logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `docker -H unix://D/sock ARGS…` with a deadline (its config in D).
    pub fn docker(&self, args: &[&str]) -> Output {
        let host = self.host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        let mut child = Command::new(DOCKER)
            .args(&all)
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
        let deadline = Instant::now() + DOCKER_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return child.wait_with_output().expect("docker's output"),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let out = child.wait_with_output();
                    panic!(
                        "docker {args:?} took over {DOCKER_WAIT:?}: {out:?}\n{}",
                        self.log_text()
                    );
                }
            }
        }
    }

    /// Runs a docker command that must succeed; returns its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {} failed ({}): {}\n--- dockerd log ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs a docker command that must fail; returns its stderr.
    pub fn docker_err(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {} succeeded, expected a failure: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    /// The last lines of the dockerd log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Builds the image [`IMAGE`] with no registry: a root file system holding `/bin/busybox`
    /// and a link for each of its applets, `tar -C rootfs -c . | docker import - IMAGE`.
    pub fn import_busybox(&self) {
        let busybox = busybox().expect("busybox-static is installed (dockerd_or_skip)");
        let rootfs = self.dir.join("rootfs");
        let bin = rootfs.join("bin");
        for sub in [
            "bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var",
        ] {
            fs::create_dir_all(rootfs.join(sub)).expect("make the rootfs");
        }
        fs::copy(busybox, bin.join("busybox")).expect("copy busybox into the rootfs");
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        assert!(list.status.success(), "busybox --list failed");
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" && !applet.contains('/') {
                let _ = symlink("busybox", bin.join(applet));
            }
        }
        let mut tar = Command::new("tar")
            .args(["-C", &rootfs.to_string_lossy(), "-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tar");
        let tar_out = tar.stdout.take().expect("tar's stdout");
        let host = self.host();
        let import = Command::new(DOCKER)
            .args(["-H", &host, "import", "-", IMAGE])
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .stdin(Stdio::from(tar_out))
            .output()
            .expect("run docker import");
        let tar_status = tar.wait().expect("tar's status");
        assert!(tar_status.success(), "tar of the rootfs failed");
        assert!(
            import.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        let _ = fs::remove_dir_all(&rootfs);
    }

    /// The full id of a Docker network.
    pub fn network_id(&self, name: &str) -> String {
        self.docker_ok(&["network", "inspect", "--format", "{{.ID}}", name])
    }

    /// Removes every container, then stops dockerd.
    fn stop(&mut self) {
        if !matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None))) {
            self.terminate();
            return;
        }
        let host = self.host();
        if let Some(out) =
            run_with_timeout(DOCKER, &["-H", &host, "ps", "-aq"], Duration::from_secs(20))
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["-H", host.as_str(), "rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = run_with_timeout(DOCKER, &args, Duration::from_secs(30));
            }
        }
        self.terminate();
    }

    /// Stops dockerd: SIGTERM, a bounded wait, SIGKILL; then the containerd it started, if a
    /// SIGKILL left it behind.
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill has no memory effects; the pid is our child's (nsenter exec'd dockerd).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_WAIT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        self.kill_containerd();
    }

    /// Kills dockerd and its containerd with SIGKILL, as a crash does (the containers' shims
    /// live on), and starts dockerd again on the same state, waiting until it answers.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_containerd();
        self.spawn();
    }

    /// SIGKILLs the containerd this dockerd started, if it still runs, and removes its pid file
    /// once it is dead: dockerd starts it with a parent-death SIGKILL, so after a crash of
    /// dockerd it is often a zombie nobody reaps (PID 1 of a container may not), which still
    /// answers kill(pid, 0); without the pid file the next dockerd does not wait for it.
    fn kill_containerd(&self) {
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return;
        };
        // Only if that pid is still this dockerd's containerd (its command line names D).
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let dir = self.dir.to_string_lossy();
        if String::from_utf8_lossy(&cmdline).contains(dir.as_ref()) {
            // SAFETY: kill has no memory effects; the pid is the containerd of this test's dockerd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let dead = || {
            fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
                st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let deadline = Instant::now() + STOP_WAIT;
        while !dead() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if dead() {
            let _ = fs::remove_file(&pidfile);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- dockerd log ({}) ---\n{}",
                self.dir.display(),
                self.log_tail()
            );
        }
        self.stop();
        unmount_under(&self.dir);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Unmounts every mount at or under `dir` (deepest first, lazily), as dockerd's data root and
/// exec root leave them when it is killed: the netns files of sandboxes, its own bind mounts.
pub fn unmount_under(dir: &Path) {
    for _ in 0..5 {
        let mut points = mounts_under(dir);
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let Ok(c) = std::ffi::CString::new(p.clone()) else {
                continue;
            };
            // SAFETY: c is a valid NUL-terminated path; umount2 does not keep the pointer.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: umount {p}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// The mount points at or under `dir`, from /proc/self/mountinfo (field 5, octal escapes undone).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| {
            p.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\134", "\\")
        })
        .filter(|p| p == &dir || p.starts_with(&format!("{dir}/")))
        .collect()
}

/// Sends one plugin call to the socket at `socket` as Docker does (`POST /CALL` with a JSON
/// body, HTTP/1.1) and returns the status and the JSON answer (`Null` if the body is not JSON).
pub fn plugin_call(socket: &Path, call: &str, body: &[u8]) -> (u16, serde_json::Value) {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to the plugin at {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .expect("write the request head");
    s.write_all(body).expect("write the request body");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .expect("read the plugin's answer");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null),
    )
}
