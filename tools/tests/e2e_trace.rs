//! Real end-to-end tests of packet tracing and capture, as root: `vswitchctl trace` (one frame
//! through the pipeline, no side effects), `vswitchctl trace --live` and `vswitchd --trace` (the
//! path of real frames), and `vswitchctl capture` (a pcap file tshark reads).
//!
//! Each test makes its own namespaces (`vst<pid>t<N>-…`, `vso<pid>t<N>-…` for the overlay one),
//! runs the real daemon in them, and removes everything when it ends, also when it fails (see
//! `common`). The streaming commands run as child processes behind a guard that kills them.
//! Nothing sleeps to synchronise: a streaming client is known to be connected when it prints
//! the records of frames made after it started, and every wait has a deadline. Without root
//! each test prints `skipped: needs root` (and fails under `CI=true`).

mod common;
#[path = "common/overlay.rs"]
mod overlay;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Helpers

/// An ICMP echo request flow spec from (`src_mac`, `src_ip`) to (`dst_mac`, `dst_ip`).
fn icmp_flow(src_mac: &str, dst_mac: &str, src_ip: &str, dst_ip: &str) -> String {
    format!("dl_src={src_mac},dl_dst={dst_mac},ip,nw_src={src_ip},nw_dst={dst_ip},icmp")
}

/// The output ports of a trace record's actions.
fn outputs(t: &Value) -> Vec<String> {
    t["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions list in {t}"))
        .iter()
        .map(|a| {
            a["output"]
                .as_str()
                .unwrap_or_else(|| panic!("an action without output: {t}"))
                .to_string()
        })
        .collect()
}

/// The stage names of a trace record, in order.
fn stage_names(t: &Value) -> Vec<String> {
    t["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages list in {t}"))
        .iter()
        .map(|s| s["stage"].as_str().expect("a stage's name").to_string())
        .collect()
}

/// What `stage` decided, if the frame got that far.
fn stage<'a>(t: &'a Value, name: &str) -> Option<&'a str> {
    t["stages"]
        .as_array()?
        .iter()
        .find(|s| s["stage"] == name)
        .and_then(|s| s["result"].as_str())
}

/// The set of names of `rows` (`port list --json`) that satisfy `keep`.
fn names(rows: &[Value], keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    rows.iter()
        .filter(|r| keep(r))
        .map(|r| r["name"].as_str().expect("a port's name").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `fdb show --json` without the ages (they tick while a test runs).
fn fdb_without_ages(d: &Daemon) -> Vec<Value> {
    let mut rows = d.fdb();
    for r in &mut rows {
        r.as_object_mut()
            .expect("an fdb row is an object")
            .remove("age_s");
    }
    rows
}

/// True when a trace record's frame is an ICMP message of `icmp_type` from `src` to `dst`.
fn is_icmp(t: &Value, icmp_type: u64, src: &str, dst: &str) -> bool {
    let f = &t["frame"];
    f["icmp"]["type"] == icmp_type && f["ip"]["src"] == src && f["ip"]["dst"] == dst
}

/// True when a trace record's frame is ICMP between `a` and `b` (either way, any type).
fn is_icmp_between(t: &Value, a: &str, b: &str) -> bool {
    let f = &t["frame"];
    f["icmp"].is_object()
        && ((f["ip"]["src"] == a && f["ip"]["dst"] == b)
            || (f["ip"]["src"] == b && f["ip"]["dst"] == a))
}

/// Makes `ns`'s neighbour entry for `addr` permanent (no ARP from it ever after).
fn permanent_neighbour(ns: &str, addr: &str, mac: &str) {
    ip(&[
        "-n",
        ns,
        "neigh",
        "replace",
        addr,
        "lladdr",
        mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
}

/// Unix time now, in nanoseconds.
fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

/// A streaming `vswitchctl` (`trace --live`, `capture`) running as a child process. A thread
/// reads its stdout line by line into a channel; its stderr goes to a file. Killed (by its own
/// pid) on drop if it still runs.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Streaming {
    /// Starts `vswitchctl --socket SOCKET ARGS…`, stderr to `stderr`.
    fn spawn(socket: &Path, args: &[&str], stderr: PathBuf) -> Streaming {
        let err = File::create(&stderr).expect("create a stderr file");
        let mut child = Command::new(VSWITCHCTL)
            .env_remove("VSWITCH_SOCKET")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("spawn vswitchctl");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Streaming {
            child,
            lines,
            reader: Some(reader),
            stderr,
            status: None,
        }
    }

    /// The lines printed since the last call.
    fn take_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The JSON lines printed since the last call, parsed.
    fn take_json(&mut self) -> Vec<Value> {
        self.take_lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("vswitchctl printed a line that is not JSON ({e}): {l:?}")
                })
            })
            .collect()
    }

    /// Once it has exited: every line not taken yet, up to the end of its output.
    fn rest(&mut self) -> Vec<String> {
        assert!(self.exit_status().is_some(), "vswitchctl still runs");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader");
        }
        self.take_lines()
    }

    /// [`Streaming::rest`], parsed as JSON lines.
    fn rest_json(&mut self) -> Vec<Value> {
        self.rest()
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("vswitchctl printed a line that is not JSON ({e}): {l:?}")
                })
            })
            .collect()
    }

    /// The exit status once it has exited.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on vswitchctl");
        }
        self.status
    }

    /// What it wrote on stderr so far.
    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A background command (a long `ping`) killed by its own pid on drop.
struct Background(Child);

impl Background {
    fn spawn(cmd: &str, args: &[&str]) -> Background {
        let child = Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd} {args:?}: {e}"));
        Background(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------

/// (1) A trace to an unknown MAC floods to exactly the other ports of the network; after a ping
/// the same trace outputs to exactly p2; and 20 traces of frames from new source MACs change
/// neither the MAC table nor any counter.
#[test]
fn trace_floods_then_outputs_and_changes_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    for i in 1..=3 {
        lab.add_host(i, None);
    }
    let d = lab.d();
    d.ctl_ok(&["fdb", "flush"]);
    let (h1, h2, h3) = (lab.host(1), lab.host(2), lab.host(3));
    let (m1, m2) = (h1.ns.mac("eth0"), h2.ns.mac("eth0"));
    assert!(
        d.fdb().iter().all(|e| e["mac"] != m2.as_str()),
        "h2's MAC is known before any traffic"
    );

    // The ports a flood from p1 reaches: every other port of `bridge` that is up (p2, p3 and
    // the daemon's gateway port).
    let rows = d.ports();
    let on_bridge = names(&rows, |r| r["network"] == "bridge");
    assert!(on_bridge.is_superset(&set(&["p1", "p2", "p3"])), "{rows:?}");
    let mut flood = names(&rows, |r| r["network"] == "bridge" && r["state"] == "up");
    flood.remove("p1");
    assert!(flood.is_superset(&set(&["p2", "p3"])), "{rows:?}");

    let spec = icmp_flow(&m1, &m2, &h1.addr, &h2.addr);
    let t = d.ctl_json(&["trace", "--in-port", "p1", "--flow", &spec]);
    assert_eq!(t["in_port"], "p1", "{t}");
    assert_eq!(t["network"], "bridge", "{t}");
    assert!(t["drop"].is_null(), "{t}");
    let outs = outputs(&t);
    assert_eq!(
        outs.iter().cloned().collect::<BTreeSet<_>>(),
        flood,
        "a frame to an unknown MAC floods to every other port of the network: {t}"
    );
    assert_eq!(outs.len(), flood.len(), "a port listed twice: {t}");
    assert_eq!(
        stage_names(&t),
        ["admit", "learn", "lookup", "forward"],
        "{t}"
    );
    assert!(stage(&t, "lookup").unwrap().starts_with("miss"), "{t}");
    assert!(stage(&t, "forward").unwrap().starts_with("flood"), "{t}");
    // The frame summary says what the spec asked for.
    let f = &t["frame"];
    assert_eq!(f["dl_src"], m1.as_str(), "{t}");
    assert_eq!(f["dl_dst"], m2.as_str(), "{t}");
    assert_eq!(f["ip"]["src"], h1.addr.as_str(), "{t}");
    assert_eq!(f["ip"]["dst"], h2.addr.as_str(), "{t}");
    assert_eq!(f["icmp"]["type"], 8, "{t}");
    let summary = t["summary"].as_str().unwrap_or("");
    assert!(summary.contains("icmp echo request"), "{t}");
    // A person reads the same.
    let text = d.ctl_ok(&["trace", "--in-port", "p1", "--flow", &spec]);
    for p in &flood {
        assert!(text.contains(&format!("output:{p}")), "{text}");
    }
    assert!(text.contains("flood"), "{text}");

    // Real traffic teaches the switch where h2 is.
    h1.ns.ping_until(&h2.addr);
    let t = d.ctl_json(&["trace", "--in-port", "p1", "--flow", &spec]);
    assert_eq!(t["actions"], json!([{ "output": "p2" }]), "{t}");
    assert!(t["drop"].is_null(), "{t}");
    assert!(stage(&t, "lookup").unwrap().starts_with("hit"), "{t}");
    assert!(stage(&t, "learn").unwrap().starts_with("refresh"), "{t}");
    let back = icmp_flow(&m2, &m1, &h2.addr, &h1.addr);
    let t = d.ctl_json(&["trace", "--in-port", "p2", "--flow", &back]);
    assert_eq!(t["actions"], json!([{ "output": "p1" }]), "{t}");
    let text = d.ctl_ok(&["trace", "--in-port", "p1", "--flow", &spec]);
    assert!(
        text.contains("output:p2") && !text.contains("output:p3"),
        "{text}"
    );

    // Hosts idle: no pending ARP probe (IPv6 is off everywhere), then a batch of traces.
    for h in [h1, h2, h3] {
        ip(&["-n", &h.ns.name, "neigh", "flush", "all"]);
    }
    let snapshot = || {
        (
            fdb_without_ages(d),
            d.ctl_json(&["port", "list"]),
            d.ctl_json(&["stats"]),
        )
    };
    let before = snapshot();
    let new_macs: Vec<String> = (0..20).map(|k| format!("02:00:5e:77:00:{k:02x}")).collect();
    for (k, mac) in new_macs.iter().enumerate() {
        let (port, dst) = match k % 4 {
            0 => ("p1", m2.as_str()),
            1 => ("p3", m2.as_str()),
            2 => ("p3", "ff:ff:ff:ff:ff:ff"),
            _ => ("p2", "02:00:5e:77:01:01"),
        };
        let spec = format!(
            "dl_src={mac},dl_dst={dst},ip,nw_src=10.99.0.{},nw_dst={},udp,tp_dst=9",
            k + 1,
            h2.addr
        );
        let t = d.ctl_json(&["trace", "--in-port", port, "--flow", &spec]);
        assert!(t["drop"].is_null(), "{t}");
        assert!(
            stage(&t, "learn").unwrap().starts_with("new"),
            "a new source is reported as new: {t}"
        );
    }
    let after = snapshot();
    assert_eq!(after.0, before.0, "traces changed the MAC table");
    assert_eq!(after.1, before.1, "traces changed port counters");
    assert_eq!(after.2, before.2, "traces changed stats");
    // Nothing was learned: a frame to one of those MACs is still flooded.
    let spec = icmp_flow(&m2, &new_macs[0], &h2.addr, "10.99.0.1");
    let t = d.ctl_json(&["trace", "--in-port", "p2", "--flow", &spec]);
    assert!(stage(&t, "lookup").unwrap().starts_with("miss"), "{t}");
    assert!(outputs(&t).contains(&"p1".to_string()), "{t}");
}

/// (2) Drops carry their reason, in JSON and in the text a person reads, and a traced drop is
/// not counted as a real one.
#[test]
fn trace_drops_say_why() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.add_host(2, None);
    let d = lab.d();
    let (a1, a2) = (lab.addr(1), lab.addr(2));
    let stats_before = d.ctl_json(&["stats"]);
    let vlan20 = format!(
        "dl_src=02:00:5e:00:00:01,dl_dst=02:00:5e:00:00:02,vlan=20,ip,nw_src={a1},nw_dst={a2},icmp"
    );
    let mcast_src = format!(
        "dl_src=01:00:5e:00:00:01,dl_dst=02:00:5e:00:00:02,ip,nw_src={a1},nw_dst={a2},icmp"
    );
    let cases: [(&str, &str, &str, &str); 3] = [
        ("--frame", "ff ff ff ff ff ff 02 00 00 00", "runt", "admit"),
        ("--flow", &vlan20, "vlan_not_allowed", "admit"),
        ("--flow", &mcast_src, "invalid_source_mac", "learn"),
    ];
    for (flag, what, reason, at) in cases {
        let args = ["trace", "--in-port", "p1", flag, what];
        let t = d.ctl_json(&args);
        assert_eq!(t["drop"], reason, "{args:?}: {t}");
        assert_eq!(t["actions"], json!([]), "{args:?}: {t}");
        let names = stage_names(&t);
        assert_eq!(names.last().map(String::as_str), Some(at), "{args:?}: {t}");
        let last = stage(&t, at).unwrap();
        assert!(last.starts_with("drop"), "{args:?}: {t}");
        let text = d.ctl_ok(&args);
        assert!(
            text.contains("drop") && text.contains(reason),
            "{args:?}: the text must name {reason}: {text}"
        );
    }
    let runt = d.ctl_json(&[
        "trace",
        "--in-port",
        "p1",
        "--frame",
        "ffffffffffff02000000",
    ]);
    assert_eq!(runt["frame"]["len"], 10, "{runt}");
    assert_eq!(d.ctl_json(&["stats"]), stats_before, "traces counted drops");
}

/// (3a) A live trace of a ping: the echo request comes in on p1 and goes out to p2, the reply
/// the other way; `--count` ends the stream; `--port p3` sees the floods but none of the
/// unicast frames between h1 and h2.
#[test]
fn live_trace_follows_a_ping() {
    if !root_or_skip() {
        return;
    }
    const COUNT: usize = 6;
    let mut lab = Lab::new();
    for i in 1..=3 {
        lab.add_host(i, None);
    }
    let d = lab.d();
    let (h1, h2, h3) = (lab.host(1), lab.host(2), lab.host(3));
    // Everyone learned (and every ARP cache filled) before tracing.
    h1.ns.ping_until(&h2.addr);
    h3.ns.ping_until(&h1.addr);
    h3.ns.ping_until(&h2.addr);

    // A ping at a time until the stream has COUNT records and ends by itself.
    let mut live = Streaming::spawn(
        &d.socket,
        &["--json", "trace", "--live", "--count", &COUNT.to_string()],
        lab.dir.path.join("live.stderr"),
    );
    let mut records = Vec::new();
    let status = wait_for("the live trace to end after --count records", WAIT, || {
        let status = live.exit_status();
        records.extend(live.take_json());
        if status.is_none() {
            h1.ns.ping_once(&h2.addr);
        }
        status
    });
    records.extend(live.rest_json());
    assert!(status.success(), "{status}: {}", live.stderr_text());
    assert_eq!(
        records.len(),
        COUNT,
        "--count {COUNT} printed: {records:#?}"
    );
    for r in &records {
        assert!(r["in_port"].is_string() && r["frame"].is_object(), "{r}");
        assert_eq!(
            stage_names(r),
            ["admit", "learn", "lookup", "forward"],
            "{r}"
        );
        assert_eq!(r["len"], r["frame"]["len"], "{r}");
    }
    let request = records
        .iter()
        .find(|r| is_icmp(r, 8, &h1.addr, &h2.addr))
        .unwrap_or_else(|| panic!("no echo request among {records:#?}"));
    // Its reply, matched by id and seq (the stream may have begun between a request and its
    // reply, but not for all three pings).
    let reply = records
        .iter()
        .filter(|r| is_icmp(r, 8, &h1.addr, &h2.addr))
        .find_map(|q| {
            records.iter().find(|r| {
                is_icmp(r, 0, &h2.addr, &h1.addr)
                    && r["frame"]["icmp"]["id"] == q["frame"]["icmp"]["id"]
                    && r["frame"]["icmp"]["seq"] == q["frame"]["icmp"]["seq"]
            })
        })
        .unwrap_or_else(|| panic!("no echo reply matching a request among {records:#?}"));
    assert_eq!(request["in_port"], "p1", "{request}");
    assert_eq!(request["actions"], json!([{ "output": "p2" }]), "{request}");
    assert!(request["drop"].is_null(), "{request}");
    assert!(
        stage(request, "lookup").unwrap().starts_with("hit"),
        "{request}"
    );
    assert_eq!(reply["in_port"], "p2", "{reply}");
    assert_eq!(reply["actions"], json!([{ "output": "p1" }]), "{reply}");
    assert!(reply["drop"].is_null(), "{reply}");
    assert!(
        request["summary"]
            .as_str()
            .unwrap_or("")
            .contains("icmp echo request"),
        "{request}"
    );

    // Without --json: records a person reads.
    let mut text = Streaming::spawn(
        &d.socket,
        &["trace", "--live", "--count", "2"],
        lab.dir.path.join("live-text.stderr"),
    );
    let mut lines = Vec::new();
    let status = wait_for("the text live trace to end", WAIT, || {
        let status = text.exit_status();
        lines.extend(text.take_lines());
        if status.is_none() {
            h1.ns.ping_once(&h2.addr);
        }
        status
    });
    assert!(status.success(), "{status}: {}", text.stderr_text());
    lines.extend(text.rest());
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("result:")).count(),
        2,
        "--count 2 printed: {lines:#?}"
    );
    let all = lines.join("\n");
    assert!(
        all.contains("in_port: p1") || all.contains("in_port: p2"),
        "{all}"
    );
    assert!(all.contains("icmp echo"), "{all}");
    assert!(all.contains("result:  output:p"), "{all}");

    // --port p3: after learning, only what p3 takes part in. h1 forgets h2's MAC, so its next
    // ping starts with a broadcast ARP request (flooded, to p3 too); the ARP reply and the
    // ICMP are unicast between p1 and p2.
    ip(&["-n", &h1.ns.name, "neigh", "flush", "all"]);
    let mut p3 = Streaming::spawn(
        &d.socket,
        &["--json", "trace", "--live", "--port", "p3"],
        lab.dir.path.join("live-p3.stderr"),
    );
    let mut seen = Vec::new();
    wait_for("the p3 live trace to show h3's pings", WAIT, || {
        seen.extend(p3.take_json());
        if let Some(status) = p3.exit_status() {
            panic!("the p3 live trace ended ({status}): {}", p3.stderr_text());
        }
        if seen.iter().any(|r| r["in_port"] == "p3") {
            return Some(());
        }
        h3.ns.ping_once(&h1.addr);
        None
    });
    assert!(h1.ns.ping_once(&h2.addr), "h1 no longer reaches h2");
    // A marker after it: h3 to h2, which p3's trace shows.
    assert!(h3.ns.ping_once(&h2.addr), "h3 no longer reaches h2");
    wait_for("the marker ping in the p3 trace", WAIT, || {
        seen.extend(p3.take_json());
        seen.iter()
            .any(|r| is_icmp(r, 8, &h3.addr, &h2.addr))
            .then_some(())
    });
    for r in &seen {
        assert!(
            r["in_port"] == "p3" || outputs(r).iter().any(|o| o == "p3"),
            "a record p3 takes no part in: {r}"
        );
        assert!(
            !is_icmp_between(r, &h1.addr, &h2.addr),
            "p3's trace shows a unicast frame between h1 and h2: {r}"
        );
    }
    let arp = seen
        .iter()
        .find(|r| {
            r["frame"]["arp"]["op"] == "request"
                && r["frame"]["arp"]["sender_ip"] == h1.addr.as_str()
                && r["frame"]["arp"]["target_ip"] == h2.addr.as_str()
        })
        .unwrap_or_else(|| panic!("h1's broadcast ARP request is not in p3's trace: {seen:#?}"));
    assert_eq!(arp["in_port"], "p1", "{arp}");
    assert!(stage(arp, "forward").unwrap().starts_with("flood"), "{arp}");
    assert!(
        !seen.iter().any(|r| r["frame"]["arp"]["op"] == "reply"
            && r["frame"]["arp"]["sender_ip"] == h2.addr.as_str()),
        "p3's trace shows h2's unicast ARP reply: {seen:#?}"
    );
}

/// (3b) `vswitchd --trace` prints one line per frame on stderr: the ping's request and reply.
#[test]
fn vswitchd_trace_flag_prints_each_frame() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::with_daemon_args(&["--trace"]);
    lab.add_host(1, None);
    lab.add_host(2, None);
    let (h1, h2) = (lab.host(1), lab.host(2));
    h1.ns.ping_until(&h2.addr);
    let d = lab.d();
    let request = format!("ipv4 {} > {} ttl 64 icmp echo request", h1.addr, h2.addr);
    let reply = format!("ipv4 {} > {} ttl 64 icmp echo reply", h2.addr, h1.addr);
    wait_for("trace lines of the ping on vswitchd's stderr", WAIT, || {
        let log = d.log_text();
        let has = |port: &str, what: &str, out: &str| {
            log.lines().any(|l| {
                l.starts_with(&format!("trace: in_port={port} "))
                    && l.contains(what)
                    && l.contains(out)
            })
        };
        (has("p1", &request, "output(p2)") && has("p2", &reply, "output(p1)")).then_some(())
    });
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("trace: in_port=p1 ") && l.contains(&request))
        .expect("just seen");
    for stage in ["admit:", "learn:", "lookup:", "forward:"] {
        assert!(line.contains(stage), "{line}");
    }
}

/// (4) `capture p2 -w FILE --count 2N` while h1 pings h2: tshark reads exactly N echo requests
/// (sent by p2) and N replies (received on p2), nanosecond timestamps, nothing malformed. A
/// capture of a port that does not exist fails clearly.
///
/// When the capture's subscription takes effect cannot be seen from outside, so h1 pings every
/// 0.2 s until the capture has its 2N frames: any 2N consecutive frames of that exchange are N
/// requests and N replies (ARP is ruled out by permanent neighbour entries, IPv6 is off).
#[test]
fn capture_writes_a_pcap_tshark_reads() {
    if !root_or_skip() {
        return;
    }
    const N: usize = 5;
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.add_host(2, None);
    let (h1, h2) = (lab.host(1), lab.host(2));
    let (m1, m2) = (h1.ns.mac("eth0"), h2.ns.mac("eth0"));
    permanent_neighbour(&h1.ns.name, &h2.addr, &m2);
    permanent_neighbour(&h2.ns.name, &h1.addr, &m1);
    h1.ns.ping_until(&h2.addr);
    let d = lab.d();
    let file = lab.dir.path.join("p2.pcap");
    let file_s = file.to_str().expect("UTF-8 path");
    let started = unix_ns();
    let mut cap = Streaming::spawn(
        &d.socket,
        &[
            "capture",
            "p2",
            "-w",
            file_s,
            "--count",
            &(2 * N).to_string(),
        ],
        lab.dir.path.join("capture.stderr"),
    );
    let status = {
        let _ping = Background::spawn(
            "ip",
            &[
                "netns",
                "exec",
                &h1.ns.name,
                "ping",
                "-n",
                "-q",
                "-i",
                "0.2",
                &h2.addr,
            ],
        );
        wait_for(
            "the capture to reach its count",
            Duration::from_secs(30),
            || cap.exit_status(),
        )
    };
    let ended = unix_ns();
    let stderr = cap.stderr_text();
    assert!(status.success(), "capture failed ({status}): {stderr}");
    assert!(
        stderr.contains(&format!("{} frames written to {file_s}", 2 * N)),
        "{stderr}"
    );

    // The file: pcap with nanosecond timestamps (magic 0xa1b23c4d, little-endian), version 2.4,
    // Ethernet.
    let bytes = fs::read(&file).expect("read the pcap file");
    assert!(bytes.len() > 24, "{} bytes", bytes.len());
    assert_eq!(&bytes[0..4], &[0x4d, 0x3c, 0xb2, 0xa1], "magic");
    assert_eq!(&bytes[4..8], &[2, 0, 4, 0], "version 2.4");
    assert_eq!(&bytes[20..24], &[1, 0, 0, 0], "LINKTYPE_ETHERNET");
    let capinfos = run("capinfos", &[file_s]);
    let info = String::from_utf8_lossy(&capinfos.stdout);
    assert!(capinfos.status.success(), "capinfos: {capinfos:?}");
    assert!(info.contains("nanoseconds"), "{info}");

    let out = run(
        "tshark",
        &[
            "-n",
            "-r",
            file_s,
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.time_epoch",
            "-e",
            "eth.src",
            "-e",
            "eth.dst",
            "-e",
            "icmp.type",
            "-e",
            "icmp.seq",
        ],
    );
    assert!(out.status.success(), "tshark: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 2 * N, "{text}");
    let (mut requests, mut replies) = (Vec::new(), Vec::new());
    let mut last_ts = 0u128;
    for r in &rows {
        let [ts, src, dst, icmp_type, seq] = r[..] else {
            panic!("unexpected tshark row {r:?}")
        };
        let (secs, frac) = ts.split_once('.').unwrap_or_else(|| panic!("{ts}"));
        assert_eq!(frac.len(), 9, "nanosecond timestamps: {ts}");
        let ns: u128 =
            secs.parse::<u128>().unwrap() * 1_000_000_000 + frac.parse::<u128>().unwrap();
        assert!(
            ns + 1_000_000_000 >= started && ns <= ended + 1_000_000_000,
            "timestamp {ts} is not the time of the capture"
        );
        assert!(ns >= last_ts, "timestamps go back: {text}");
        last_ts = ns;
        let seq: u64 = seq
            .parse()
            .unwrap_or_else(|_| panic!("no ICMP seq in {r:?}"));
        match (src, dst, icmp_type) {
            (s, d, "8") if s == m1 && d == m2 => requests.push(seq),
            (s, d, "0") if s == m2 && d == m1 => replies.push(seq),
            _ => panic!("a frame that is not the ping's: {r:?}\n{text}"),
        }
    }
    assert_eq!(requests.len(), N, "{text}");
    assert_eq!(replies.len(), N, "{text}");
    let consecutive = |v: &[u64]| v.windows(2).all(|w| w[1] == w[0] + 1);
    assert!(consecutive(&requests) && consecutive(&replies), "{text}");
    let paired = requests.iter().filter(|s| replies.contains(s)).count();
    assert!(paired >= N - 1, "requests and replies do not match: {text}");

    let bad = run(
        "tshark",
        &[
            "-n",
            "-r",
            file_s,
            "-Y",
            "_ws.malformed || _ws.expert.severity >= error",
        ],
    );
    assert!(bad.status.success(), "tshark: {bad:?}");
    assert!(
        bad.stdout.is_empty(),
        "malformed frames or expert errors: {}",
        String::from_utf8_lossy(&bad.stdout)
    );

    // A port that does not exist: a clear error, exit 1, and no packet in the file.
    let missing = lab.dir.path.join("nope.pcap");
    let missing_s = missing.to_str().unwrap();
    let out = run_with_timeout(
        VSWITCHCTL,
        &[
            "--socket",
            d.socket.to_str().unwrap(),
            "capture",
            "nope",
            "-w",
            missing_s,
            "--count",
            "1",
        ],
        WAIT,
    )
    .expect("capture of a missing port returns at once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("no such port: nope"), "{stderr}");
    assert!(!stderr.contains("frames written"), "{stderr}");
    // vswitchctl creates the file before asking the daemon: it is left with the pcap header
    // alone (24 bytes, no packet). Not creating it at all would do too.
    match fs::metadata(&missing) {
        Err(_) => println!("capture of a missing port: no file created"),
        Ok(m) => {
            assert_eq!(m.len(), 24, "the file of a failed capture holds packets");
            println!("capture of a missing port: file created with the header only");
        }
    }
}

/// Two captures of the same port at once: either both get the frames, or the second is refused
/// with a clear error. Neither may end early with a truncated file and exit status 0.
#[test]
fn two_captures_of_one_port_both_get_the_frames() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.add_host(2, None);
    let (h1, h2) = (lab.host(1), lab.host(2));
    h1.ns.ping_until(&h2.addr);
    let d = lab.d();
    let (fa, fb) = (lab.dir.path.join("a.pcap"), lab.dir.path.join("b.pcap"));
    let mut a = Streaming::spawn(
        &d.socket,
        &["capture", "p2", "-w", fa.to_str().unwrap(), "--count", "4"],
        lab.dir.path.join("a.stderr"),
    );
    // A is capturing once its file has a packet (it flushes after each).
    wait_for("the first capture to write a packet", WAIT, || {
        if let Some(status) = a.exit_status() {
            panic!(
                "the first capture ended early ({status}): {}",
                a.stderr_text()
            );
        }
        if fs::metadata(&fa).is_ok_and(|m| m.len() > 24) {
            return Some(());
        }
        h1.ns.ping_once(&h2.addr);
        None
    });
    let mut b = Streaming::spawn(
        &d.socket,
        &["capture", "p2", "-w", fb.to_str().unwrap(), "--count", "4"],
        lab.dir.path.join("b.stderr"),
    );
    let _ping = Background::spawn(
        "ip",
        &[
            "netns",
            "exec",
            &h1.ns.name,
            "ping",
            "-n",
            "-q",
            "-i",
            "0.2",
            &h2.addr,
        ],
    );
    let (sa, sb) = wait_for("both captures to end", Duration::from_secs(30), || {
        Some((a.exit_status()?, b.exit_status()?))
    });
    let (ea, eb) = (a.stderr_text(), b.stderr_text());
    if sb.code() == Some(1) {
        assert!(ea.contains("4 frames written"), "first: {sa} {ea}");
        assert!(eb.contains("p2"), "the refusal names the port: {eb}");
        return;
    }
    assert!(
        sa.success() && ea.contains("4 frames written"),
        "the first capture ended early: {sa} {ea}"
    );
    assert!(
        sb.success() && eb.contains("4 frames written"),
        "the second capture ended early: {sb} {eb}"
    );
}

/// (5) Malformed flow specs and hex get clear errors (exit 1, naming the field); --frame with
/// --flow, or neither, is a usage error (exit 2); an unknown --in-port is refused.
#[test]
fn bad_trace_requests_are_refused() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    let d = lab.d();
    let before = (d.ctl_json(&["port", "list"]), fdb_without_ages(d));
    let refused: [(&str, &str, &[&str]); 8] = [
        ("--flow", "tcp,udp", &["--flow", "tcp", "udp"]),
        ("--flow", "dl_src=zz", &["--flow", "dl_src", "zz"]),
        ("--flow", "tp_dst=80", &["--flow", "tp_dst", "tcp"]),
        (
            "--flow",
            "nw_src=10.0.0.300,ip",
            &["--flow", "nw_src", "10.0.0.300"],
        ),
        ("--flow", "bogus=1", &["--flow", "bogus"]),
        ("--frame", "0xfg", &["--frame", "'g'"]),
        ("--frame", "abc", &["--frame", "abc", "odd"]),
        ("--frame", "", &["--frame", "empty"]),
    ];
    for (flag, value, words) in refused {
        let err = d.ctl_err(&["trace", "--in-port", "p1", flag, value]);
        assert!(err.starts_with("vswitchctl: "), "{flag} {value:?}: {err}");
        for w in words {
            assert!(
                err.contains(w),
                "{flag} {value:?}: stderr {err:?} should mention {w:?}"
            );
        }
    }
    let usage: [&[&str]; 3] = [
        &["trace", "--in-port", "p1", "--frame", "00", "--flow", "ip"],
        &["trace", "--in-port", "p1"],
        &["trace", "--frame", "ffffffffffff020000000001"],
    ];
    for args in usage {
        let out = d.ctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(err.contains("Usage"), "{args:?}: {err}");
    }
    let err = d.ctl_err(&["trace", "--in-port", "nope", "--flow", "ip"]);
    assert!(err.contains("no such port: nope"), "{err}");
    let err = d.ctl_err(&["trace", "--live", "--port", "nope"]);
    assert!(err.contains("no such port: nope"), "{err}");
    assert_eq!((d.ctl_json(&["port", "list"]), fdb_without_ages(d)), before);
    assert!(
        lab.d_mut().is_running(),
        "vswitchd died: {}",
        lab.d().log_text()
    );
}

/// Two hosts joined by VXLAN (VNI `vni`, sandbox `s1` on host 1, `s2` on host 2) that reach
/// each other, both learned, with permanent neighbour entries (no ARP from now on).
fn overlay_pair(vni: u32) -> overlay::World {
    let mut w = overlay::World::new(2);
    w.overlay_everywhere("ov", vni, 1);
    w.sandbox(1, "ov", "s1");
    w.sandbox(2, "ov", "s2");
    let (s1, s2) = (w.sb("s1"), w.sb("s2"));
    overlay::ping_until(&s1.ns, &s2.ip);
    overlay::ping_until(&s2.ns, &s1.ip);
    permanent_neighbour(&s1.ns.name, &s2.ip, &s2.mac);
    permanent_neighbour(&s2.ns.name, &s1.ip, &s1.mac);
    w
}

/// Starts a live trace on `socket` with `args`, pings once at a time from `from` to `to` until
/// a record satisfies `want`, and returns the records seen so far (the stream keeps running).
fn live_until(
    socket: &Path,
    args: &[&str],
    stderr: PathBuf,
    from: &Netns,
    to: &str,
    want: impl Fn(&Value) -> bool,
) -> (Streaming, Vec<Value>) {
    let mut all = vec!["--json", "trace", "--live"];
    all.extend_from_slice(args);
    let mut live = Streaming::spawn(socket, &all, stderr);
    let mut seen = Vec::new();
    wait_for(
        &format!("a live trace {args:?} to show the ping"),
        overlay::OWAIT,
        || {
            if let Some(status) = live.exit_status() {
                panic!(
                    "the live trace {args:?} ended ({status}): {}",
                    live.stderr_text()
                );
            }
            seen.extend(live.take_json());
            if seen.iter().any(&want) {
                return Some(());
            }
            overlay::ping1(from, to, &[]);
            None
        },
    );
    (live, seen)
}

/// (6) Over VXLAN: on host 1, a trace to host 2's sandbox outputs to VXLAN toward host 2's
/// underlay address, with the VNI and a UDP source port from the dynamic range; live traces
/// show the encapsulation on host 1 and, on host 2, the frame coming in on `vxlan`
/// (decapsulated, its source learned behind host 1) and going out to the sandbox's port; a
/// capture of `vtep` holds the VXLAN datagrams tshark decodes.
#[test]
fn overlay_trace_shows_vxlan_encap_and_decap() {
    if !root_or_skip() {
        return;
    }
    const VNI: u64 = 4321;
    let w = overlay_pair(VNI as u32);
    let (s1, s2) = (w.sb("s1"), w.sb("s2"));
    let (h1, h2) = (w.h(1), w.h(2));
    let (u1, u2) = (w.underlay_ip(1), w.underlay_ip(2));

    let spec = icmp_flow(&s1.mac, &s2.mac, &s1.ip, &s2.ip);
    let t = h1
        .d()
        .ctl_json(&["trace", "--in-port", &s1.port, "--flow", &spec]);
    assert!(t["drop"].is_null(), "{t}");
    assert_eq!(t["network"], "ov", "{t}");
    let actions = t["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{t}");
    let a = &actions[0];
    assert_eq!(a["output"], "vxlan", "{t}");
    assert_eq!(a["remote"], u2.as_str(), "{t}");
    assert_eq!(a["vni"], VNI, "{t}");
    let sport = a["src_port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no src_port: {t}"));
    assert!((49152..=65535).contains(&sport), "src_port {sport}: {t}");
    assert!(stage(&t, "lookup").unwrap().starts_with("hit"), "{t}");
    let vx = stage(&t, "vxlan").unwrap_or_else(|| panic!("no vxlan stage: {t}"));
    assert!(
        vx.contains("encap") && vx.contains(&VNI.to_string()) && vx.contains(&u2),
        "{t}"
    );
    let text = h1
        .d()
        .ctl_ok(&["trace", "--in-port", &s1.port, "--flow", &spec]);
    assert!(
        text.contains("output:vxlan") && text.contains(&u2),
        "{text}"
    );
    // A broadcast goes to every peer of the VNI: here host 2.
    let bcast = format!(
        "dl_src={},arp,arp_spa={},arp_tpa={}",
        s1.mac,
        s1.ip,
        w.addr(1, 250)
    );
    let t = h1
        .d()
        .ctl_json(&["trace", "--in-port", &s1.port, "--flow", &bcast]);
    assert!(
        t["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["output"] == "vxlan" && a["remote"] == u2.as_str() && a["vni"] == VNI),
        "{t}"
    );

    // Host 1, live: the request goes out to vxlan, encapsulated toward host 2.
    let request = |r: &Value| is_icmp(r, 8, &s1.ip, &s2.ip);
    let (_h1_live, seen) = live_until(
        &h1.d().socket,
        &["--port", &s1.port],
        w.file("live-h1.stderr"),
        &s1.ns,
        &s2.ip,
        request,
    );
    let rec = seen.iter().find(|r| request(r)).expect("just seen");
    assert_eq!(rec["in_port"], s1.port.as_str(), "{rec}");
    assert_eq!(outputs(rec), ["vxlan"], "{rec}");
    let vx = stage(rec, "vxlan").unwrap_or_else(|| panic!("no vxlan stage: {rec}"));
    assert!(
        vx.contains("encap") && vx.contains(&VNI.to_string()) && vx.contains(&u2),
        "{rec}"
    );
    // The live record's action names the peer, the VNI and the source port, as a one-shot
    // trace's does.
    let action = &rec["actions"][0];
    assert_eq!(action["remote"], u2.as_str(), "{rec}");
    assert_eq!(action["vni"], VNI, "{rec}");
    let sport = action["src_port"].as_u64().unwrap_or(0);
    assert!((49152..=65535).contains(&sport), "{rec}");

    // Host 2, live (frames in or out of vxlan): the request comes in on vxlan and goes out to
    // s2's port.
    let (_h2_live, seen) = live_until(
        &h2.d().socket,
        &["--port", "vxlan"],
        w.file("live-h2.stderr"),
        &s1.ns,
        &s2.ip,
        request,
    );
    for r in &seen {
        assert!(
            r["in_port"] == "vxlan" || outputs(r).iter().any(|o| o == "vxlan"),
            "--port vxlan shows a frame vxlan takes no part in: {r}"
        );
    }
    let rec = seen.iter().find(|r| request(r)).expect("just seen");
    assert_eq!(rec["in_port"], "vxlan", "{rec}");
    assert_eq!(
        rec["actions"],
        json!([{ "output": s2.port.as_str() }]),
        "{rec}"
    );
    assert!(rec["drop"].is_null(), "{rec}");
    let learn = stage(rec, "learn").unwrap_or_else(|| panic!("no learn stage: {rec}"));
    assert!(learn.contains(&s1.mac) && learn.contains("vxlan"), "{rec}");
    assert!(stage(rec, "lookup").unwrap().contains(&s2.port), "{rec}");
    let vx = stage(rec, "vxlan").unwrap_or_else(|| panic!("no vxlan stage: {rec}"));
    assert!(
        vx.contains("decap") && vx.contains(&VNI.to_string()) && vx.contains(&u1),
        "{rec}"
    );
    let entry = h2.d().fdb_entry(&s1.mac).expect("s1 in host 2's fdb");
    assert_eq!(entry["port"], "vxlan", "{entry}");
    assert_eq!(entry["remote"], u1.as_str(), "{entry}");

    // `capture vtep`: the underlay datagrams, which tshark decodes as VXLAN. s1 pings every
    // 0.2 s until the capture has its two frames: one request and one reply, whatever the
    // moment the capture began.
    let file = w.file("vtep.pcap");
    let file_s = file.to_str().unwrap();
    let mut cap = Streaming::spawn(
        &h1.d().socket,
        &["capture", "vtep", "-w", file_s, "--count", "2"],
        w.file("vtep.stderr"),
    );
    let status = {
        let _ping = Background::spawn(
            "ip",
            &[
                "netns",
                "exec",
                &s1.ns.name,
                "ping",
                "-n",
                "-q",
                "-i",
                "0.2",
                &s2.ip,
            ],
        );
        wait_for(
            "the vtep capture to reach its count",
            overlay::OWAIT,
            || cap.exit_status(),
        )
    };
    assert!(status.success(), "{status}: {}", cap.stderr_text());
    assert!(
        cap.stderr_text().contains("2 frames written"),
        "{}",
        cap.stderr_text()
    );
    let rows = overlay::tshark_read(
        &file,
        &[
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "vxlan.vni",
            "-e",
            "icmp.type",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mut types = BTreeSet::new();
    for r in &rows {
        let f: Vec<&str> = r.split('|').collect();
        let [ip_src, ip_dst, dport, vni, icmp_type] = f[..] else {
            panic!("unexpected tshark row {r:?}")
        };
        // Outer, then inner addresses.
        let (outer_src, outer_dst) = (ip_src.split(',').next(), ip_dst.split(',').next());
        assert_eq!(dport.split(',').next(), Some("4789"), "{r}");
        assert_eq!(vni, VNI.to_string(), "{r}");
        match icmp_type {
            "8" => {
                assert_eq!(
                    (outer_src, outer_dst),
                    (Some(u1.as_str()), Some(u2.as_str())),
                    "{r}"
                );
                assert!(ip_src.contains(&s1.ip) && ip_dst.contains(&s2.ip), "{r}");
            }
            "0" => {
                assert_eq!(
                    (outer_src, outer_dst),
                    (Some(u2.as_str()), Some(u1.as_str())),
                    "{r}"
                );
                assert!(ip_src.contains(&s2.ip) && ip_dst.contains(&s1.ip), "{r}");
            }
            _ => panic!("not the ping: {r}"),
        }
        types.insert(icmp_type.to_string());
    }
    assert_eq!(types, set(&["0", "8"]), "{rows:?}");
    let bad = overlay::tshark_read(
        &file,
        &["-Y", "_ws.malformed || _ws.expert.severity >= error"],
    );
    assert!(bad.is_empty(), "malformed frames or expert errors: {bad:?}");
}

/// A live trace filtered by the overlay port's name as `port list` shows it (`vxlanVNI`)
/// shows the frames that come in on it, or is refused: it must not be accepted and then stay
/// silent while frames cross that port.
#[test]
fn live_trace_by_listed_vxlan_port_name_sees_its_frames() {
    if !root_or_skip() {
        return;
    }
    const VNI: u32 = 4322;
    let w = overlay_pair(VNI);
    let (s1, s2) = (w.sb("s1"), w.sb("s2"));
    let h2 = w.h(2);
    let listed = format!("vxlan{VNI}");
    assert_eq!(h2.d().port(&listed).expect("port listed")["type"], "vxlan");
    let mut by_name = Streaming::spawn(
        &h2.d().socket,
        &["--json", "trace", "--live", "--port", &listed],
        w.file("by-name.stderr"),
    );
    // The same frames through the filter the daemon's traces use (`vxlan`), as a reference.
    let request = |r: &Value| is_icmp(r, 8, &s1.ip, &s2.ip);
    let (_reference, _) = live_until(
        &h2.d().socket,
        &["--port", "vxlan"],
        w.file("reference.stderr"),
        &s1.ns,
        &s2.ip,
        request,
    );
    // The reference saw the ping: the filtered stream has had its chance; a few more pings
    // within a deadline, then a verdict.
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        seen.extend(by_name.take_json());
        if seen.iter().any(request) {
            break Ok(());
        }
        if let Some(status) = by_name.exit_status() {
            break Err(status);
        }
        assert!(
            Instant::now() < deadline,
            "`trace --live --port {listed}` (the port's name in `port list`) was accepted but \
             showed no record in {WAIT:?} of pings from s1 to s2 crossing that port, which \
             `--port vxlan` shows; records seen: {seen:?}"
        );
        overlay::ping1(&s1.ns, &s2.ip, &[]);
    };
    if let Err(status) = outcome {
        assert_eq!(status.code(), Some(1), "{}", by_name.stderr_text());
        assert!(
            by_name.stderr_text().contains(&listed),
            "{}",
            by_name.stderr_text()
        );
    }
}

// The same tests with the VTEP on its UDP socket backend (the tests above run the default,
// `auto`: the TAP where the kernel has UDP-tunnel GSO), so one `cargo test` covers both.

#[test]
fn overlay_trace_shows_vxlan_encap_and_decap_on_the_socket_vtep() {
    overlay::on_backend("socket", overlay_trace_shows_vxlan_encap_and_decap);
}

#[test]
fn live_trace_by_listed_vxlan_port_name_sees_its_frames_on_the_socket_vtep() {
    overlay::on_backend(
        "socket",
        live_trace_by_listed_vxlan_port_name_sees_its_frames,
    );
}
