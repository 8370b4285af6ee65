//! `vswitchctl` end to end against a fake daemon: a unix socket that answers each connection with
//! one canned JSON line. Checks the output modes, the exit statuses and `--help`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// A socket path under the temp dir, unique per process and per call; removed on drop.
struct TempSocket(PathBuf);

impl TempSocket {
    fn new() -> TempSocket {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("vswitchctl-test-{}-{n}.sock", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempSocket(path)
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fake vswitchd: answers one connection per canned line, and hands back the requests it read.
struct FakeDaemon {
    socket: TempSocket,
    thread: JoinHandle<Vec<String>>,
}

impl FakeDaemon {
    fn start(answers: &[&str]) -> FakeDaemon {
        let socket = TempSocket::new();
        let listener = UnixListener::bind(&socket.0).expect("bind the fake daemon's socket");
        let answers: Vec<String> = answers.iter().map(ToString::to_string).collect();
        let thread = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().expect("accept");
                let mut line = String::new();
                BufReader::new(&stream)
                    .read_line(&mut line)
                    .expect("read request");
                requests.push(line.trim_end().to_string());
                (&stream)
                    .write_all(format!("{answer}\n").as_bytes())
                    .expect("answer");
            }
            requests
        });
        FakeDaemon { socket, thread }
    }

    fn path(&self) -> &Path {
        &self.socket.0
    }

    /// The request lines the daemon received (call after every expected connection was made).
    fn requests(self) -> Vec<String> {
        self.thread.join().expect("fake daemon thread")
    }
}

/// Runs `vswitchctl --socket SOCKET ARGS…` with no `VSWITCH_SOCKET` in the environment.
fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .env_remove("VSWITCH_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run vswitchctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const PORT_LIST: &str = r#"[{"name":"veth1","type":"system","network":"bridge","state":"up","mtu":1500,"vlan":"1","rx_packets":10,"tx_packets":8,"rx_bytes":1000,"tx_bytes":800,"drops":2}]"#;

#[test]
fn json_port_list_prints_the_result() {
    let daemon = FakeDaemon::start(&[&format!(r#"{{"ok":true,"result":{PORT_LIST}}}"#)]);
    let out = ctl(daemon.path(), &["--json", "port", "list"]);
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    let expected: serde_json::Value = serde_json::from_str(PORT_LIST).unwrap();
    assert_eq!(printed, expected);
    let requests = daemon.requests();
    let request: serde_json::Value = serde_json::from_str(&requests[0]).unwrap();
    assert_eq!(request, serde_json::json!({"cmd": "port_list"}));
}

#[test]
fn human_port_list_prints_a_table() {
    let daemon = FakeDaemon::start(&[&format!(r#"{{"ok":true,"result":{PORT_LIST}}}"#)]);
    let out = ctl(daemon.path(), &["port", "list"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "TYPE", "NETWORK", "STATE", "MTU", "VLAN", "RX_PKTS", "TX_PKTS", "RX_BYTES",
            "TX_BYTES", "DROPS"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        ["veth1", "system", "bridge", "up", "1500", "1", "10", "8", "1000", "800", "2"]
    );
    // Each value starts under its column's name.
    for (name, value) in [("TYPE", "system"), ("MTU", "1500"), ("DROPS", "2")] {
        assert_eq!(lines[0].find(name), lines[1].find(value), "{text}");
    }
    daemon.requests();
}

#[test]
fn requests_carry_the_arguments() {
    let ok = r#"{"ok":true}"#;
    let daemon = FakeDaemon::start(&[ok, ok]);
    let out = ctl(
        daemon.path(),
        &["port", "add", "tap0", "--type", "tap", "--vlan", "10"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "");
    let out = ctl(
        daemon.path(),
        &[
            "network", "create", "ov", "-d", "overlay", "--peer", "10.0.0.1", "--peer", "10.0.0.2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let requests: Vec<serde_json::Value> = daemon
        .requests()
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert_eq!(requests[0]["cmd"], "port_add");
    assert_eq!(requests[0]["type"], "tap");
    assert_eq!(requests[0]["vlan"], 10);
    assert_eq!(requests[1]["cmd"], "network_create");
    assert_eq!(
        requests[1]["peers"],
        serde_json::json!(["10.0.0.1", "10.0.0.2"])
    );
}

#[test]
fn socket_from_the_environment() {
    let daemon = FakeDaemon::start(&[r#"{"ok":true,"result":"4e1f0c"}"#]);
    let out = Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .env("VSWITCH_SOCKET", daemon.path())
        .args(["network", "create", "blue"])
        .output()
        .expect("run vswitchctl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "4e1f0c\n");
    daemon.requests();
}

#[test]
fn daemon_error_exits_1() {
    let daemon = FakeDaemon::start(&[r#"{"ok":false,"error":"no such network: blue"}"#]);
    let out = ctl(daemon.path(), &["fdb", "show", "--network", "blue"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr(&out), "vswitchctl: no such network: blue\n");
    assert_eq!(stdout(&out), "");
    daemon.requests();
}

#[test]
fn missing_socket_exits_1() {
    let socket = TempSocket::new();
    let out = ctl(&socket.0, &["port", "list"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.starts_with("vswitchctl: ") && err.contains("vswitchd"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_without_calling_the_daemon() {
    let socket = TempSocket::new();
    for args in [
        &["port", "add", "veth1", "--vlan", "4095"][..],
        &["fdb", "add", "not-a-mac", "veth1"],
        &["network", "create", "n", "--vni", "16777216"],
        &["frobnicate"],
        &[],
    ] {
        let out = ctl(&socket.0, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!stderr(&out).contains("is vswitchd running"), "{args:?}");
    }
}

#[test]
fn help_works_for_every_subcommand() {
    let nowhere = Path::new("/nonexistent/vswitchd.sock");
    for args in [
        &[][..],
        &["port"],
        &["port", "add"],
        &["port", "remove"],
        &["port", "list"],
        &["fdb"],
        &["fdb", "show"],
        &["fdb", "add"],
        &["fdb", "del"],
        &["fdb", "flush"],
        &["stats"],
        &["network"],
        &["network", "create"],
        &["network", "rm"],
        &["network", "ls"],
        &["network", "inspect"],
    ] {
        let mut argv = args.to_vec();
        argv.push("--help");
        let out = ctl(nowhere, &argv);
        assert!(out.status.success(), "{argv:?}: {out:?}");
        let text = stdout(&out);
        assert!(text.contains("Usage: vswitchctl"), "{argv:?}: {text}");
        assert!(text.contains("--socket <PATH>"), "{argv:?}: {text}");
    }
}
