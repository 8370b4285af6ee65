//! End-to-end tests of the daemon against its clients, its state dir, its neighbours and a
//! second copy of itself (issue 12): a storm of idle API connections, two daemons on one state
//! dir, a restart right after `kill -9`, veths the daemon did not make, `--netns` paths that
//! are not namespaces, file modes under `umask 000`, and IPv6 autoconfiguration on the ports it
//! makes. Each needs root and runs in namespaces of its own (see `common`).

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How many idle connections the storm opens: well past the daemon's cap of 1024.
const STORM: usize = 3000;

/// The daemon's default cap of API connections (`--api-max-clients`).
const MAX_CLIENTS: usize = 1024;

/// Raises this process's soft limit of open files to at least `want` (up to the hard limit).
fn raise_fd_limit(want: u64) -> bool {
    // SAFETY: getrlimit/setrlimit read and write the local struct only.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        if lim.rlim_cur >= want {
            return true;
        }
        if lim.rlim_max < want {
            return false;
        }
        lim.rlim_cur = want;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
    }
}

/// Reads whatever one connection holds without blocking: `Some(text)` (maybe empty) or None
/// when nothing has arrived.
fn try_read(s: &UnixStream) -> Option<String> {
    s.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 4096];
    match (&*s).read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(format!("error: {e}")),
    }
}

#[test]
fn root_a_storm_of_idle_connections_is_capped_and_the_daemon_lives() {
    if !root_or_skip() {
        return;
    }
    assert!(
        raise_fd_limit(STORM as u64 + 512),
        "the test needs {} open files",
        STORM + 512
    );
    let mut lab = Lab::new();
    let conns: Vec<UnixStream> = (0..STORM)
        .map(|i| {
            UnixStream::connect(&lab.d().socket)
                .unwrap_or_else(|e| panic!("connection {i} of the storm: {e}"))
        })
        .collect();
    // At the cap, a request is refused with a clear one-line error (it is accepted after the
    // storm, in order, so every connection of the storm has been dealt with by then).
    let err = lab.d().ctl_err(&["port", "list"]);
    assert!(err.contains("too many clients"), "{err}");
    assert!(lab.d_mut().is_running(), "the daemon died in the storm");
    // The first MAX_CLIENTS are served (idle, nothing to read); every one past them was told
    // why in one JSON line, then closed.
    let mut refused = 0;
    for (i, c) in conns.iter().enumerate() {
        match try_read(c) {
            None => assert!(i < MAX_CLIENTS, "connection {i} neither served nor refused"),
            Some(text) => {
                let v: serde_json::Value = serde_json::from_str(text.trim())
                    .unwrap_or_else(|e| panic!("refusal {i} is not one JSON line ({e}): {text:?}"));
                assert_eq!(v["ok"], false, "{v}");
                assert!(
                    v["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("too many clients"),
                    "{v}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(refused, STORM - MAX_CLIENTS);
    // Once the idle ones hang up, requests are answered again.
    drop(conns);
    wait_for("a request to be answered after the storm", WAIT, || {
        lab.d()
            .ctl(&["port", "list"])
            .status
            .success()
            .then_some(())
    });
    assert!(lab.d_mut().is_running());
}

#[test]
fn root_idle_connections_are_closed_after_the_timeout() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::with_daemon_args(&["--api-idle-timeout", "0.5"]);
    let started = Instant::now();
    let idle = lab.d().connect();
    let mut b = [0u8; 1];
    // The helper's read timeout (WAIT) is far above the daemon's idle timeout.
    assert_eq!((&idle).read(&mut b).unwrap(), 0, "closed by the daemon");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(lab.d().ctl(&["port", "list"]).status.success());
}

/// The names of the ports `port list` shows.
fn port_names(d: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = d
        .ports()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn root_a_second_daemon_on_the_same_state_dir_is_refused() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let before = port_names(lab.d());
    assert!(before.contains(&"vswitch0".to_string()), "{before:?}");
    let saved = state_files(&lab.d().state_dir);
    assert!(
        saved.keys().any(|p| p.ends_with("id")),
        "{:?}",
        saved.keys()
    );

    let other_socket = lab.dir.path.join("other.sock");
    let net = format!("--net={}", lab.sw.path().display());
    let state_dir = lab.d().state_dir.display().to_string();
    let socket = other_socket.display().to_string();
    let vswitchd = [
        net.as_str(),
        "--",
        VSWITCHD,
        "--socket",
        &socket,
        "--state-dir",
        &state_dir,
    ];
    let out = run_with_timeout("nsenter", &vswitchd, WAIT).expect("the second vswitchd must stop");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second daemon started: {stderr}");
    assert!(
        stderr.contains(&format!(
            "another vswitchd is using state dir {state_dir} (pid {})",
            lab.d().pid()
        )),
        "{stderr}"
    );
    assert!(!other_socket.exists(), "it must not have bound its socket");

    // The first one still has everything: ports, gateway TAP, state.
    assert_eq!(port_names(lab.d()), before);
    assert!(lab.sw.has_link("vswitch0"), "the gateway TAP is gone");
    assert_eq!(
        state_files(&lab.d().state_dir),
        saved,
        "the state was rewritten"
    );
}

#[test]
fn root_restart_right_after_kill_9_succeeds() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let sb = lab.sandbox("k");
    lab.d().ctl_ok(&["network", "connect", "bridge", &sb]);
    let mut old = lab.daemon.take().expect("the first daemon");
    // No wait for it to die: the new one starts while the kernel still tears the old down.
    // SAFETY: kill has no memory effects; the pid is our own unreaped child.
    unsafe { libc::kill(old.pid(), libc::SIGKILL) };
    let new = Daemon::start(&lab.sw, &lab.dir.path);
    assert!(
        old.signal(libc::SIGKILL, WAIT).is_some(),
        "the old one died"
    );
    drop(old);
    lab.daemon = Some(new);
    assert!(port_names(lab.d()).contains(&"vswitch0".to_string()));
    let listed = lab.d().ctl_json(&["sandbox", "ls"]);
    assert!(listed.to_string().contains(&sb), "{listed}");
    ns_ping_until(&sb, "172.17.0.1");
}

/// Every file under `dir` (whatever the store keeps there) with its contents.
fn state_files(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = fs::read(&path).unwrap_or_default();
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// The state dir's ID, as the daemon wrote it.
fn state_id(state_dir: &Path) -> String {
    fs::read_to_string(state_dir.join("id"))
        .expect("the state dir's id file")
        .trim()
        .to_string()
}

#[test]
fn root_startup_removes_only_veths_marked_with_its_state_dir_id() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let id = state_id(&lab.d().state_dir);
    assert_eq!(id.len(), 32, "{id}");
    // A veth the daemon makes carries the mark.
    let sb = lab.sandbox("m");
    let ep = lab.d().ctl_json(&["network", "connect", "bridge", &sb]);
    let host_end = lab
        .d()
        .ports()
        .into_iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .find(|n| n.starts_with("vse"))
        .unwrap_or_else(|| panic!("no endpoint port after {ep}"));
    let v = ip_json(&["-n", &lab.sw.name, "link", "show", "dev", &host_end]);
    assert_eq!(v[0]["ifalias"], format!("vswitch:{id}"), "{v}");
    lab.d().ctl_ok(&["network", "disconnect", "bridge", &sb]);
    assert!(lab.d_mut().terminate(WAIT).is_some());
    drop(lab.daemon.take());

    let sw = lab.sw.name.clone();
    let mine = format!("vswitch:{id}");
    let make = |name: &str, alias: Option<&str>| {
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("vsq{}", &name[3..]),
        ]);
        if let Some(a) = alias {
            ip(&["-n", &sw, "link", "set", name, "alias", a]);
        }
    };
    // Killed between creating the veth and marking it: no alias, but the name is the one the
    // daemon gives this (network, sandbox) pair, both stored. It is ours.
    make(&host_end, None);
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    assert!(!lab.sw.has_link(&host_end), "our unmarked orphan was kept");
    assert!(lab
        .d()
        .log_text()
        .contains(&format!("removed orphan endpoint veth {host_end}")));
    assert!(lab.d_mut().terminate(WAIT).is_some());
    drop(lab.daemon.take());

    // Three endpoint-looking veths appear while it is down: a stranger's, another daemon's,
    // and one of ours (left by a crash mid-connect).
    make("vse0000000000a1", None);
    make(
        "vse0000000000a2",
        Some("vswitch:0123456789abcdef0123456789abcdef"),
    );
    make("vse0000000000a3", Some(&mine));
    // The state is lost too: the daemon starts empty.
    for path in state_files(&lab.dir.path.join("state")).keys() {
        if !path.ends_with("id") {
            fs::remove_file(path).unwrap();
        }
    }
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    assert!(
        lab.sw.has_link("vse0000000000a1"),
        "a stranger's veth was deleted"
    );
    assert!(
        lab.sw.has_link("vse0000000000a2"),
        "another daemon's veth was deleted"
    );
    assert!(!lab.sw.has_link("vse0000000000a3"), "our orphan was kept");
    assert!(lab
        .d()
        .log_text()
        .contains("removed orphan endpoint veth vse0000000000a3"));
}

/// A FIFO made by the test; on drop a writer is opened once (which frees a reader blocked in
/// `open`, should a daemon be stuck there) and the FIFO is removed.
struct Fifo(PathBuf);

impl Fifo {
    fn new(path: PathBuf) -> Fifo {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        Fifo(path)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0);
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn root_netns_paths_that_are_not_foreign_namespaces_are_refused_without_blocking() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let fifo = Fifo::new(lab.dir.path.join("fifo"));
    let name = lab.guard_sandbox("fifo");
    let socket = lab.d().socket.display().to_string();
    let fifo_path = fifo.0.display().to_string();
    let mut child = Command::new(VSWITCHCTL)
        .args([
            "--socket", &socket, "sandbox", "create", &name, "--netns", &fifo_path,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitchctl");
    // Another client is served meanwhile.
    let other = run_with_timeout(VSWITCHCTL, &["--socket", &socket, "port", "list"], WAIT);
    let status = wait_for("sandbox create --netns FIFO to finish", WAIT, || {
        child.try_wait().unwrap()
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        other.is_some_and(|o| o.status.success()),
        "another client was not served while --netns FIFO was handled"
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a network namespace"), "{stderr}");
    assert!(!Path::new("/run/netns").join(&name).exists());

    // The daemon's own namespace, by any path: refused, nothing made.
    let own = [
        format!("/proc/{}/ns/net", lab.d().pid()),
        lab.sw.path().display().to_string(),
    ];
    for path in &own {
        let name = lab.guard_sandbox("own");
        let err = lab
            .d()
            .ctl_err(&["sandbox", "create", &name, "--netns", path]);
        assert!(err.contains("own network namespace"), "{path}: {err}");
        assert!(!Path::new("/run/netns").join(&name).exists());
    }
    let listed = lab.d().ctl_json(&["sandbox", "ls"]);
    assert_eq!(listed, serde_json::json!([]), "{listed}");
}

/// Removes `/run/netns/NAME` (detaching its mount) on drop, should a daemon have made it under
/// a name no tool would take for an argument.
struct NetnsFileGuard(PathBuf);

impl Drop for NetnsFileGuard {
    fn drop(&mut self) {
        if self.0.symlink_metadata().is_err() {
            return;
        }
        if let Ok(c) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 reads the NUL-terminated path we own.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn root_bad_sandbox_names_are_refused() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let prefix = lab.prefix.clone();
    let too_long = "x".repeat(65);
    let mut guards = Vec::new();
    for bad in [
        format!("{prefix} sp"),
        format!("{prefix}\nnl"),
        format!("-{prefix}"),
        format!(".{prefix}"),
        format!("{prefix}/x"),
        format!("{prefix}:x"),
        too_long,
    ] {
        guards.push(NetnsFileGuard(Path::new("/run/netns").join(&bad)));
        // After `--`, so that vswitchctl passes even a leading '-' on to the daemon.
        let out = lab.d().ctl(&["sandbox", "create", "--", &bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(stderr.contains("invalid"), "{bad:?}: {stderr}");
        assert!(!Path::new("/run/netns").join(&bad).exists(), "{bad:?}");
    }
    let listed = lab.d().ctl_json(&["sandbox", "ls"]);
    assert_eq!(listed, serde_json::json!([]), "{listed}");
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn root_modes_do_not_follow_a_umask_of_000() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::without_daemon();
    let d = Daemon::start_with_umask(
        &lab.sw,
        &lab.dir.path,
        &["--socket-group", "65534"],
        Some(0),
    );
    let state = d.state_dir.clone();
    // A change, so the state file is written under the umask too.
    d.ctl_ok(&["network", "create", "m", "--subnet", "10.63.0.0/24"]);
    assert_eq!(mode(&state), 0o700, "state dir");
    let files = state_files(&state);
    for f in ["id", "lock"] {
        assert!(
            files.contains_key(&state.join(f)),
            "no {f} in {:?}",
            files.keys()
        );
    }
    assert!(files.len() > 2, "no state written: {:?}", files.keys());
    for path in files.keys() {
        assert_eq!(mode(path), 0o600, "{}", path.display());
        let dir = path.parent().unwrap();
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&d.socket), 0o660, "socket");
    assert_eq!(
        fs::metadata(&d.socket).unwrap().gid(),
        65534,
        "socket group"
    );
    let lock = PathBuf::from(format!("{}.lock", d.socket.display()));
    assert_eq!(mode(&lock), 0o600, "socket lock");
    lab.daemon = Some(d);

    // An unknown group is refused before anything starts.
    let out = run(
        VSWITCHD,
        &[
            "--socket-group",
            "no-such-group-vst",
            "--socket",
            "/nonexistent/x.sock",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no group named"));
}

/// The IPv6 addresses of `ifname` in namespace `ns`.
fn ipv6_addrs(ns: &str, ifname: &str) -> Vec<String> {
    let out = run("ip", &["-n", ns, "-6", "-o", "addr", "show", "dev", ifname]);
    assert!(out.status.success(), "ip -6 addr show dev {ifname} in {ns}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn root_the_host_ends_the_daemon_makes_have_no_ipv6_link_local() {
    if !root_or_skip() {
        return;
    }
    if !Path::new("/proc/net/if_inet6").exists() {
        println!("skipped: needs a kernel with IPv6");
        return;
    }
    let mut lab = Lab::without_daemon();
    // The lab turns IPv6 off in the switch namespace; here it is on, as on a real host.
    lab.sw.sysctl("net.ipv6.conf.all.disable_ipv6", "0");
    lab.sw.sysctl("net.ipv6.conf.default.disable_ipv6", "0");
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    let sb = lab.sandbox("v6");
    lab.d().ctl_ok(&["network", "connect", "bridge", &sb]);
    let host_end = lab
        .d()
        .ports()
        .into_iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .find(|n| n.starts_with("vse"))
        .expect("the endpoint's port");
    // A control: a plain veth pair of the test's in the same namespace, autoconfiguration on,
    // gets its link-local addresses once it has carrier; by then the daemon's ends would too.
    let sw = lab.sw.name.clone();
    for args in [
        &[
            "-n", &sw, "link", "add", "v6ctl0", "type", "veth", "peer", "name", "v6ctl1",
        ][..],
        &["-n", &sw, "link", "set", "v6ctl0", "up"],
        &["-n", &sw, "link", "set", "v6ctl1", "up"],
    ] {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    }
    wait_for("the control veth to get a link-local address", WAIT, || {
        ipv6_addrs(&sw, "v6ctl0")
            .iter()
            .any(|a| a.contains("fe80"))
            .then_some(())
    });
    // The sandbox's end is IPv4 only too (as Docker makes a container's interface on an
    // IPv4 network): no link-local address, so no router solicitations flooded to every port.
    let out = ns_exec(&sb, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("fe80"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        ipv6_addrs(&sw, &host_end),
        Vec::<String>::new(),
        "{host_end}"
    );
    assert_eq!(
        ipv6_addrs(&sw, "vswitch0"),
        Vec::<String>::new(),
        "gateway TAP"
    );
    let v = ip_json(&["-n", &sw, "-d", "link", "show", "dev", "vswitch0"]);
    assert_eq!(v[0]["inet6_addr_gen_mode"], "none", "{v}");
}
