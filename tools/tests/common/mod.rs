//! The harness of the root end-to-end tests: network namespaces, veth hosts, a real `vswitchd`
//! and `vswitchctl`, each behind a guard that removes what it made when dropped, also when the
//! test fails.
//!
//! A test builds a [`Lab`]: a switch namespace `vst<pid>t<N>-sw` where the daemon runs (so the
//! TAPs it creates live there), and hosts `vst<pid>t<N>-h<i>`, each joined to the switch
//! namespace by a veth pair (`p<i>` on the switch side, `eth0` in the host). Addresses are
//! `10.200.<N>.<i>/24`, inside the test's own namespaces only. IPv6 is off in every namespace so
//! that no router solicitation or MLD report moves a counter behind a test's back.
//!
//! The daemon is started with `nsenter --net=…` (not `ip netns exec`, which would give it a
//! private mount namespace): the sandboxes it bind-mounts under `/run/netns` must be visible to
//! the test and to `ip netns exec`. Sandboxes are global names: each is held by a [`Sandbox`]
//! guard that removes it (through the daemon, else with `ip netns del`) when dropped.
//!
//! Nothing here sleeps to synchronise: every wait is a condition polled until a deadline.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod docker;
pub mod etcd;
pub mod peer;
pub mod stream;

use serde_json::Value;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const VSWITCHD: &str = env!("CARGO_BIN_EXE_vswitchd");
pub const VSWITCHCTL: &str = env!("CARGO_BIN_EXE_vswitchctl");

/// How long a condition (daemon ready, ping answers, port state) may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// The pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(20);

/// True when running as root. Without root: prints `skipped: needs root` and returns false,
/// unless `CI=true`, where the test must run and this panics (the rule lives in `switch`).
pub use switch::testing::needs_root as root_or_skip;

/// Waits until `cond` returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// A unique test number within this process (with the pid, a unique prefix on the machine).
fn next_test_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command, returning its output (stdout and stderr captured).
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} {args:?}: {e}"))
}

/// Runs `ip ARGS…` and panics with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip ARGS…` and tells whether it succeeded.
pub fn ip_ok(args: &[&str]) -> bool {
    run("ip", args).status.success()
}

/// A named network namespace (`ip netns add`); on drop, the processes still in it (ours: the
/// namespace is the test's) are killed and it is deleted.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace with IPv6 off (for interfaces created or moved in later too).
    pub fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns
    }

    /// Writes a sysctl of this namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        let out = run(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-q", "-w", &kv],
        );
        assert!(
            out.status.success(),
            "sysctl {kv} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Opens the namespace file, for `tools::netns::in_netns`.
    pub fn open(&self) -> File {
        tools::netns::open_netns(self.path()).expect("open the test's namespace")
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        ns_exec(&self.name, args)
    }

    /// Tells whether the interface exists in this namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        ns_has_link(&self.name, ifname)
    }

    /// The MAC address of an interface in this namespace, lower case.
    pub fn mac(&self, ifname: &str) -> String {
        let out = run(
            "ip",
            &["-n", &self.name, "-j", "link", "show", "dev", ifname],
        );
        assert!(
            out.status.success(),
            "ip link show {ifname} in {}",
            self.name
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j output is JSON");
        v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {ifname}: {v}"))
            .to_ascii_lowercase()
    }

    /// One `ping -c1 -W1` to `addr`: true if it answered.
    pub fn ping_once(&self, addr: &str) -> bool {
        ns_ping_once(&self.name, addr)
    }

    /// Pings `addr` until it answers, or panics after [`WAIT`].
    pub fn ping_until(&self, addr: &str) {
        ns_ping_until(&self.name, addr)
    }

    /// Tells whether `ping -c 2 -W 1` fails (nothing answered).
    pub fn ping_fails(&self, addr: &str) -> bool {
        ns_ping_fails(&self.name, addr)
    }
}

// The same for any named namespace (a sandbox the daemon made, say), by name.

/// Runs a command inside the named namespace (`ip netns exec NS ARGS…`).
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Tells whether the interface exists in the named namespace.
pub fn ns_has_link(ns: &str, ifname: &str) -> bool {
    ip_ok(&["-n", ns, "link", "show", "dev", ifname])
}

/// One `ping -c1 -W1` from the named namespace to `addr`: true if it answered.
pub fn ns_ping_once(ns: &str, addr: &str) -> bool {
    ns_exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "1", addr])
        .status
        .success()
}

/// Pings `addr` from the named namespace until it answers, or panics after [`WAIT`].
pub fn ns_ping_until(ns: &str, addr: &str) {
    let what = format!("{ns} to reach {addr} by ping");
    wait_for(&what, WAIT, || ns_ping_once(ns, addr).then_some(()));
}

/// Tells whether `ping -c 2 -W 1` from the named namespace fails (nothing answered).
pub fn ns_ping_fails(ns: &str, addr: &str) -> bool {
    !ns_exec(ns, &["ping", "-n", "-q", "-c", "2", "-W", "1", addr])
        .status
        .success()
}

/// Runs `ip -j ARGS…`, which must succeed, and parses its JSON (`[]` when it prints nothing).
pub fn ip_json(args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run("ip", &all);
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        all.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Array(vec![]);
    }
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ip {} printed bad JSON ({e})", all.join(" ")))
}

/// The names of the interfaces of the named namespace, in index order.
pub fn ns_link_names(ns: &str) -> Vec<String> {
    match ip_json(&["-n", ns, "link", "show"]) {
        Value::Array(links) => links
            .iter()
            .map(|l| l["ifname"].as_str().expect("a link's name").to_string())
            .collect(),
        other => panic!("ip -j link is not a list: {other}"),
    }
}

/// The IPv4 addresses (`IP/PREFIX`) of an interface of the named namespace.
pub fn ns_ipv4_addrs(ns: &str, ifname: &str) -> Vec<String> {
    let v = ip_json(&["-n", ns, "-4", "addr", "show", "dev", ifname]);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// The default IPv4 route of the named namespace: `(gateway, device)`, if it has one.
pub fn ns_default_route(ns: &str) -> Option<(String, String)> {
    let v = ip_json(&["-n", ns, "-4", "route", "show", "default"]);
    let r = v.as_array()?.first()?;
    Some((
        r["gateway"].as_str().unwrap_or("").to_string(),
        r["dev"].as_str().unwrap_or("").to_string(),
    ))
}

/// The (device, inode) pair that identifies the namespace a namespace file names.
pub fn netns_identity(path: impl AsRef<Path>) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let path = path.as_ref();
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// Runs `cmd ARGS…` with a deadline: its output, or None (it was killed) if it took longer.
pub fn run_with_timeout(cmd: &str, args: &[&str], timeout: Duration) -> Option<Output> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A sandbox (a namespace `/run/netns/NAME` the daemon makes or adopts) this test owns. On drop
/// it is removed through the daemon (`vswitchctl sandbox rm`) if the daemon still answers, and
/// its name with `ip netns del` if it is still there, so nothing is left even when the test
/// failed or the daemon was killed. Removing a name never kills processes: the name may point
/// at a namespace the test does not own alone (the daemon's own, for the `host` driver).
pub struct Sandbox {
    pub name: String,
    socket: PathBuf,
}

impl Sandbox {
    /// A guard for the sandbox `name` of the daemon listening on `socket`; it need not exist
    /// yet (take the guard first, then create the sandbox).
    pub fn guard(name: String, socket: &Path) -> Sandbox {
        Sandbox {
            name,
            socket: socket.to_path_buf(),
        }
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if UnixStream::connect(&self.socket).is_ok() {
            let socket = self.socket.to_string_lossy();
            let _ = run_with_timeout(
                VSWITCHCTL,
                &["--socket", &socket, "sandbox", "rm", &self.name],
                WAIT,
            );
        }
        if self.path().symlink_metadata().is_ok() {
            let out = run("ip", &["netns", "del", &self.name]);
            if !out.status.success() {
                eprintln!(
                    "warning: could not delete sandbox netns {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        remove_etc_netns(&self.name);
    }
}

/// Removes `/etc/netns/NAME` on drop (the daemon does on `sandbox rm`; not when killed).
pub struct EtcNetnsGuard(pub String);

impl Drop for EtcNetnsGuard {
    fn drop(&mut self) {
        remove_etc_netns(&self.0);
    }
}

/// A process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DNS query message for `name`/`qtype` with id `id`, recursion desired.
pub fn query_msg(id: u16, name: &str, qtype: hickory_proto::rr::RecordType) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use std::str::FromStr;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        hickory_proto::rr::Name::from_str(name).unwrap(),
        qtype,
    ));
    msg.to_vec().unwrap()
}

/// `/etc/netns/NAME`, where the daemon writes a sandbox's `resolv.conf` (its DNS service): a
/// test that removed the namespace without the daemon removes that too.
pub fn remove_etc_netns(name: &str) {
    let dir = Path::new("/etc/netns").join(name);
    if dir.exists() {
        let _ = fs::remove_dir_all(&dir);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still running in the namespace was started by this test.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill has no memory effects; the pid is a process in our namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("warning: could not delete netns {}: {out:?}", self.name);
        }
        remove_etc_netns(&self.name);
    }
}

/// A directory under the temp dir, unique per test; removed with its contents on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-e2e"));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the test's temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A running `vswitchd` inside the switch namespace; on drop SIGTERM, a bounded wait, then
/// SIGKILL. Its stderr goes to a file, printed when the test fails.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `nsenter --net=/run/netns/NETNS -- vswitchd --socket DIR/sock --state-dir
    /// DIR/state` and waits until it answers `port list`. `nsenter` enters the network namespace
    /// only: the daemon shares the test's mount namespace, so the sandboxes it mounts under
    /// `/run/netns` are seen by everyone (`ip netns exec` would hide them in a private one).
    /// Each start logs to a file of its own (`vswitchd.log`, then `vswitchd.1.log`, …).
    pub fn start(netns: &Netns, dir: &Path) -> Daemon {
        Daemon::start_with(netns, dir, &[])
    }

    /// [`Daemon::start`] with `extra` arguments for vswitchd (e.g. `--trace`).
    pub fn start_with(netns: &Netns, dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_umask(netns, dir, extra, None)
    }

    /// [`Daemon::start_with`], the daemon started under `umask` when given.
    pub fn start_with_umask(
        netns: &Netns,
        dir: &Path,
        extra: &[&str],
        umask: Option<libc::mode_t>,
    ) -> Daemon {
        fs::create_dir_all(dir).expect("create the daemon's dir");
        let socket = dir.join("vswitchd.sock");
        let state_dir = dir.join("state");
        let log = (0..)
            .map(|i| match i {
                0 => dir.join("vswitchd.log"),
                i => dir.join(format!("vswitchd.{i}.log")),
            })
            .find(|p| !p.exists())
            .expect("some log name is free");
        let err = File::create(&log).expect("create the daemon's log");
        let net = format!("--net={}", netns.path().display());
        let mut cmd = Command::new("nsenter");
        if let Some(mask) = umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and touches only the child's own mask.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        let child = cmd
            .args([net.as_str(), "--", VSWITCHD, "--socket"])
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--log-level", "debug"])
            .args(extra)
            .env_remove("VSWITCH_SOCKET")
            .env_remove("VSWITCH_STATE_DIR")
            // No Docker plugin at the machine's default socket; a test wanting one passes
            // `--docker-plugin PATH` in `extra`, which wins over the environment.
            .env("VSWITCH_DOCKER_PLUGIN", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn nsenter vswitchd");
        let mut d = Daemon {
            child: Some(child),
            socket,
            state_dir,
            log,
        };
        wait_for("vswitchd to answer on its socket", WAIT, || {
            if let Some(status) = d.exit_status() {
                panic!(
                    "vswitchd exited during start-up ({status}):\n{}",
                    d.log_text()
                );
            }
            if UnixStream::connect(&d.socket).is_err() {
                return None;
            }
            d.ctl(&["port", "list"]).status.success().then_some(())
        });
        let comm = fs::read_to_string(format!("/proc/{}/comm", d.pid())).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "vswitchd",
            "nsenter must exec the daemon itself"
        );
        d
    }

    /// The process id (`nsenter` execs the daemon, so it is vswitchd's own).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon not yet reaped").id() as i32
    }

    /// The exit status if it has exited (reaping it), else None.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait on vswitchd"))
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// What the daemon wrote to stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM, timeout)
    }

    /// Sends `sig` and waits (up to `timeout`) for the exit status.
    pub fn signal(&mut self, sig: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill has no memory effects; the pid is our own unreaped child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs `vswitchctl --socket SOCKET ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(VSWITCHCTL)
            .env_remove("VSWITCH_SOCKET")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vswitchctl")
    }

    /// Runs vswitchctl and panics (with both outputs and the daemon's log) unless it succeeds.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vswitchctl {} failed ({}): stdout {:?} stderr {:?}\n--- vswitchd log ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8(out.stdout).expect("vswitchctl prints UTF-8")
    }

    /// Runs `vswitchctl --json ARGS…`, which must succeed, and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ctl_ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("vswitchctl --json {args:?} printed bad JSON ({e}): {text}"))
    }

    /// Runs vswitchctl, which must fail with exit status 1; returns its stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "vswitchctl {} should have been refused: stdout {:?} stderr {:?}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `port list --json`.
    pub fn ports(&self) -> Vec<Value> {
        match self.ctl_json(&["port", "list"]) {
            Value::Array(rows) => rows,
            other => panic!("port list --json is not a list: {other}"),
        }
    }

    /// The `port list --json` row of one port, if listed.
    pub fn port(&self, name: &str) -> Option<Value> {
        self.ports().into_iter().find(|r| r["name"] == name)
    }

    /// `fdb show --json`.
    pub fn fdb(&self) -> Vec<Value> {
        match self.ctl_json(&["fdb", "show"]) {
            Value::Array(rows) => rows,
            other => panic!("fdb show --json is not a list: {other}"),
        }
    }

    /// Sends raw bytes on a fresh connection to the API socket.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connect to vswitchd");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }
    /// The `fdb show --json` row of `mac`, if any.
    pub fn fdb_entry(&self, mac: &str) -> Option<Value> {
        self.fdb()
            .into_iter()
            .find(|e| e["mac"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(mac))
    }

    /// `stats --json` of every port.
    pub fn stats(&self) -> Vec<Value> {
        match self.ctl_json(&["stats"]) {
            Value::Array(rows) => rows,
            Value::Object(o) => vec![Value::Object(o)],
            other => panic!("stats --json is neither a list nor an object: {other}"),
        }
    }

    /// The drop counter `reason` of `port` (`stats PORT --json`), 0 when not listed.
    pub fn drops(&self, port: &str, reason: &str) -> u64 {
        let v = self.ctl_json(&["stats", port]);
        let row = match &v {
            Value::Array(rows) => rows
                .iter()
                .find(|r| r["port"] == port)
                .unwrap_or_else(|| panic!("stats {port} --json has no row for it: {v}")),
            Value::Object(_) => &v,
            _ => panic!("stats {port} --json: {v}"),
        };
        row["drops"][reason].as_u64().unwrap_or(0)
    }
}

/// Writes one raw line on `stream` and reads the daemon's one-line JSON answer.
pub fn raw_request(stream: &UnixStream, line: &[u8]) -> Value {
    let mut w = stream;
    w.write_all(line).expect("write a raw request");
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("read the daemon's answer");
    serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("answer to {line:?} is not JSON ({e}): {answer:?}"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if self.terminate(Duration::from_secs(5)).is_none() {
            if let Some(child) = self.child.as_mut() {
                eprintln!("vswitchd ignored SIGTERM for 5 s; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- vswitchd log ---\n{}", self.log_text());
        }
    }
}

/// A host: a namespace with `eth0`, one end of a veth whose other end `p<i>` is in the switch
/// namespace.
pub struct Host {
    pub ns: Netns,
    pub port: String,
    pub addr: String,
}

/// One test's world: the switch namespace, the daemon in it, and hosts. Dropped in order:
/// daemon, hosts, switch namespace, temp dir.
pub struct Lab {
    pub prefix: String,
    /// The third octet of every address of this test.
    pub net: usize,
    pub daemon: Option<Daemon>,
    /// Sandboxes of the daemon, removed before it stops.
    pub sandboxes: Vec<Sandbox>,
    pub hosts: Vec<Host>,
    pub sw: Netns,
    pub dir: TempDir,
}

impl Lab {
    /// Makes the switch namespace and starts the daemon in it.
    pub fn new() -> Lab {
        let mut lab = Lab::without_daemon();
        lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
        lab
    }

    /// Makes the switch namespace and starts the daemon in it with `extra` arguments.
    pub fn with_daemon_args(extra: &[&str]) -> Lab {
        let mut lab = Lab::without_daemon();
        lab.daemon = Some(Daemon::start_with(&lab.sw, &lab.dir.path, extra));
        lab
    }

    /// Makes the switch namespace only.
    pub fn without_daemon() -> Lab {
        let n = next_test_number();
        let prefix = format!("vst{}t{n}", std::process::id());
        let dir = TempDir::new(&prefix);
        let sw = Netns::new(format!("{prefix}-sw"));
        Lab {
            net: n % 250,
            prefix,
            daemon: None,
            sandboxes: Vec::new(),
            hosts: Vec::new(),
            sw,
            dir,
        }
    }

    /// The daemon.
    pub fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("the lab's daemon")
    }

    /// The daemon, mutably.
    pub fn d_mut(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the lab's daemon")
    }

    /// The address of host `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.200.{}.{i}", self.net)
    }

    /// A new namespace `PREFIX-SUFFIX` (removed with the lab).
    pub fn netns(&self, suffix: &str) -> Netns {
        Netns::new(format!("{}-{suffix}", self.prefix))
    }

    /// Creates the veth `p<i>` (switch side, up) / `eth0` (in `ns`, with the host's address,
    /// up).
    pub fn wire(&self, i: usize, ns: &Netns) {
        let port = format!("p{i}");
        let sw = self.sw.name.as_str();
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        ip(&["-n", sw, "link", "set", &port, "up"]);
        let cidr = format!("{}/24", self.addr(i));
        ip(&["-n", &ns.name, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
    }

    /// Adds host `i` (namespace `PREFIX-h<i>`, address `10.200.NET.i`) and attaches its port to
    /// `network` (the daemon's default when None). Returns its index in `hosts`.
    pub fn add_host(&mut self, i: usize, network: Option<&str>) -> usize {
        let ns = self.netns(&format!("h{i}"));
        self.wire(i, &ns);
        let port = format!("p{i}");
        let mut args = vec!["port", "add", port.as_str()];
        if let Some(net) = network {
            args.extend(["--network", net]);
        }
        self.d().ctl_ok(&args);
        self.hosts.push(Host {
            ns,
            port,
            addr: self.addr(i),
        });
        self.hosts.len() - 1
    }

    /// `PREFIX-SUFFIX`: a name unique on the machine (for sandboxes, whose names are global).
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Takes a guard on the sandbox `PREFIX-SUFFIX` (removed with the lab, before the daemon
    /// stops) and returns its name; the sandbox itself is not created.
    pub fn guard_sandbox(&mut self, suffix: &str) -> String {
        let name = self.name(suffix);
        let socket = self.dir.path.join("vswitchd.sock");
        self.sandboxes.push(Sandbox::guard(name.clone(), &socket));
        name
    }

    /// Creates the sandbox `PREFIX-SUFFIX` with `vswitchctl sandbox create` (guarded) and
    /// returns its name.
    pub fn sandbox(&mut self, suffix: &str) -> String {
        let name = self.guard_sandbox(suffix);
        self.d().ctl_ok(&["sandbox", "create", &name]);
        name
    }

    /// The host whose address ends in `.i`.
    pub fn host(&self, i: usize) -> &Host {
        let addr = self.addr(i);
        self.hosts
            .iter()
            .find(|h| h.addr == addr)
            .unwrap_or_else(|| panic!("no host {i}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The sandboxes while the daemon still answers, then the daemon (it closes its TAPs),
        // then the hosts, then the switch namespace; the temp dir goes last, with the fields.
        self.sandboxes.clear();
        drop(self.daemon.take());
        self.hosts.clear();
    }
}

/// A `port list --json` row's counter.
pub fn counter(row: &Value, field: &str) -> u64 {
    row[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {field} in {row}"))
}
