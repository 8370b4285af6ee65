//! Real end-to-end tests of `vswitchd` and `vswitchctl`, as root.
//!
//! Each test makes its own network namespaces (`vst<pid>t<N>-…`), runs the real daemon inside a
//! switch namespace, joins host namespaces to it with veth pairs, and checks what a user sees:
//! pings, a verified TCP stream, `port list`, `fdb show`, errors. Everything a test makes is
//! removed by guards when it ends, also when it fails (see `common`). Without root each test
//! prints `skipped: needs root` (and fails under `CI=true`).

mod common;
use common::stream::{fill_stream, receive_and_verify, send_stream};

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tools::netns::in_netns;

// ---------------------------------------------------------------------------------------------
// A pseudo-random byte stream both ends can generate: byte `i` is byte `i % 8` of
// splitmix64(SEED + i / 8), so the receiver checks every byte at any offset.

/// Accepts one connection on a non-blocking listener, within [`WAIT`].
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let stream = wait_for("the client to connect", WAIT, || match listener.accept() {
        Ok((s, _)) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("accept: {e}"),
    });
    stream.set_nonblocking(false).unwrap();
    stream
}

#[test]
fn stream_generator_is_position_independent() {
    let mut whole = vec![0u8; 100];
    fill_stream(0, &mut whole);
    let mut part = vec![0u8; 37];
    fill_stream(13, &mut part);
    assert_eq!(&whole[13..50], &part[..]);
    assert_ne!(&whole[..8], &whole[8..16]);
}

/// The row of `port` in a `port list --json` result.
fn row<'a>(rows: &'a [Value], port: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == port)
        .unwrap_or_else(|| panic!("port {port} not in port list: {rows:?}"))
}

/// The names of the ports a user added, in `port list` order: not the daemon's own
/// `internal` ports (a network's gateway).
fn user_ports(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .filter(|r| r["type"] != "internal")
        .map(|r| r["name"].as_str().expect("a port's name"))
        .collect()
}

/// The ports the daemon made itself: TAPs and `internal` ports, which must go when it stops.
fn daemon_made_ports(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .filter(|r| r["type"] == "tap" || r["type"] == "internal")
        .map(|r| r["name"].as_str().expect("a port's name").to_string())
        .collect()
}

/// Pings every pair of `hosts` concurrently, each until it answers (or [`WAIT`] passes).
fn ping_all_pairs(hosts: &[&Host]) {
    std::thread::scope(|s| {
        for (i, a) in hosts.iter().enumerate() {
            for b in &hosts[i + 1..] {
                s.spawn(move || a.ns.ping_until(&b.addr));
            }
        }
    });
}

/// Runs each `(from, to)` ping concurrently; all must fail (`ping -c 2 -W 1`).
fn pings_all_fail(pairs: &[(&Host, &str)]) {
    std::thread::scope(|s| {
        let checks: Vec<_> = pairs
            .iter()
            .map(|(from, to)| s.spawn(move || (from.ns.name.clone(), *to, from.ns.ping_fails(to))))
            .collect();
        for c in checks {
            let (from, to, failed) = c.join().unwrap();
            assert!(failed, "{from} reached {to}, which it must not");
        }
    });
}

// ---------------------------------------------------------------------------------------------

/// (1) Two hosts ping each other through vswitchd, and 32 MiB of pseudo-random bytes cross from
/// h1 to h2 over TCP, every byte checked; the counters and the MAC table show it.
#[test]
fn two_hosts_ping_and_verified_tcp_stream() {
    if !root_or_skip() {
        return;
    }
    const LEN: u64 = 32 << 20;
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.add_host(2, None);
    let (h1, h2) = (lab.host(1), lab.host(2));
    h1.ns.ping_until(&h2.addr);
    h2.ns.ping_until(&h1.addr);

    let server_addr: SocketAddr = format!("{}:5201", h2.addr).parse().unwrap();
    // Sockets stay in the namespace they were made in, whichever thread uses them later.
    let listener = in_netns(&h2.ns.open(), || TcpListener::bind(server_addr))
        .unwrap()
        .expect("listen in h2");
    let started = Instant::now();
    let (received, acknowledged) = std::thread::scope(|s| {
        let server =
            s.spawn(|| receive_and_verify(accept_within(&listener), Duration::from_secs(30)));
        let client = in_netns(&h1.ns.open(), || {
            TcpStream::connect_timeout(&server_addr, WAIT)
        })
        .unwrap()
        .expect("connect from h1 to h2");
        let acknowledged = send_stream(client, LEN, Duration::from_secs(30));
        (server.join().unwrap(), acknowledged)
    });
    let secs = started.elapsed().as_secs_f64();
    // The receiver's verdict first: it says where the stream went wrong, if it did.
    let received = received.expect("h2 received the stream intact");
    assert_eq!(received, LEN, "h2 received {received} of {LEN} bytes");
    assert_eq!(acknowledged, Ok(LEN), "h1's view of the transfer");
    println!(
        "32 MiB in {secs:.2} s ({:.0} Mbit/s)",
        LEN as f64 * 8.0 / secs / 1e6
    );

    let d = lab.d();
    let rows = d.ports();
    let (p1, p2) = (row(&rows, "p1"), row(&rows, "p2"));
    for p in [p1, p2] {
        assert_eq!(p["state"], "up", "{p}");
        assert_eq!(p["network"], "bridge", "{p}");
        assert_eq!(p["type"], "system", "{p}");
    }
    // Into the switch from h1 on p1, out of it to h2 on p2; ACKs the other way.
    assert!(counter(p1, "rx_bytes") >= LEN, "p1 rx_bytes: {p1}");
    assert!(counter(p2, "tx_bytes") >= LEN, "p2 tx_bytes: {p2}");
    assert!(counter(p2, "rx_packets") > 0 && counter(p1, "tx_packets") > 0);
    // `stats PORT` shows the same counters (a last FIN may have crossed since).
    let stats = d.ctl_json(&["stats", "p1"]);
    assert_eq!(stats[0]["port"], "p1", "{stats}");
    let stats_rx = stats[0]["rx_bytes"].as_u64().expect("stats rx_bytes");
    assert!(stats_rx >= counter(p1, "rx_bytes"), "{stats} vs {p1}");

    let fdb = d.fdb();
    for (host, port) in [(h1, "p1"), (h2, "p2")] {
        let mac = host.ns.mac("eth0");
        let entry = fdb
            .iter()
            .find(|e| e["mac"].as_str().map(str::to_ascii_lowercase).as_deref() == Some(&mac))
            .unwrap_or_else(|| panic!("{mac} of {} not in fdb: {fdb:?}", host.ns.name));
        assert_eq!(entry["port"], port, "{entry}");
        assert_eq!(entry["network"], "bridge", "{entry}");
        assert_eq!(entry["vlan"], 1, "{entry}");
        assert_eq!(entry["static"], false, "{entry}");
    }
}

/// (2) A TAP port: created in the switch namespace, moved into a host namespace, addressed
/// there, and it reaches a veth host by ping.
#[test]
fn tap_port_moved_into_a_namespace_reaches_a_veth_host() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.d().ctl_ok(&["port", "add", "tap0", "--type", "tap"]);
    assert!(
        lab.sw.has_link("tap0"),
        "the TAP is made in the daemon's namespace"
    );
    let tap = lab.d().port("tap0").expect("tap0 listed");
    assert_eq!(tap["type"], "tap", "{tap}");
    assert_eq!(tap["state"], "up", "{tap}");

    let tap_addr = lab.addr(100);
    // Owned by the lab, so it goes after the daemon even when the test fails.
    lab.hosts.push(Host {
        ns: lab.netns("ht"),
        port: "tap0".into(),
        addr: tap_addr.clone(),
    });
    let ht = &lab.host(100).ns;
    ip(&["-n", &lab.sw.name, "link", "set", "tap0", "netns", &ht.name]);
    assert!(!lab.sw.has_link("tap0") && ht.has_link("tap0"));
    ip(&[
        "-n",
        &ht.name,
        "addr",
        "add",
        &format!("{tap_addr}/24"),
        "dev",
        "tap0",
    ]);
    ip(&["-n", &ht.name, "link", "set", "tap0", "up"]);

    let h1 = lab.host(1);
    wait_for("the TAP host to reach h1", WAIT, || {
        ht.ping_once(&h1.addr).then_some(())
    });
    h1.ns.ping_until(&tap_addr);

    let tap = lab.d().port("tap0").expect("tap0 still listed");
    assert_eq!(
        tap["state"], "up",
        "moving the TAP must not break the port: {tap}"
    );
    assert!(
        counter(&tap, "rx_packets") > 0 && counter(&tap, "tx_packets") > 0,
        "{tap}"
    );
    let tap_mac = ht.mac("tap0");
    let fdb = lab.d().fdb();
    assert!(
        fdb.iter()
            .any(|e| e["mac"] == tap_mac.as_str() && e["port"] == "tap0"),
        "{tap_mac} on tap0 not in fdb: {fdb:?}"
    );
    // Stopping the daemon closes the TAP, wherever it now lives.
    drop(lab.daemon.take());
    assert!(
        !lab.host(100).ns.has_link("tap0"),
        "the TAP goes when the daemon stops"
    );
}

/// (3) Eight hosts on one network all reach each other; two hosts on `blue` reach each other
/// but no host of `bridge`, in either direction, and not one frame crosses.
#[test]
fn eight_hosts_all_pairs_and_networks_are_isolated() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    for i in 1..=8 {
        lab.add_host(i, None);
    }
    lab.d().ctl_ok(&["network", "create", "blue"]);
    // Same IP subnet as the bridge hosts: only the switch keeps them apart.
    lab.add_host(21, Some("blue"));
    lab.add_host(22, Some("blue"));
    let nets = lab.d().ctl_json(&["network", "ls"]);
    let rows = lab.d().ports();
    for (name, ours) in [("bridge", 8), ("blue", 2)] {
        let n = nets
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {nets}"));
        let on_net: Vec<&Value> = rows.iter().filter(|r| r["network"] == name).collect();
        assert_eq!(
            user_ports(&rows)
                .iter()
                .filter(|p| on_net.iter().any(|r| r["name"] == **p))
                .count(),
            ours,
            "{rows:?}"
        );
        assert_eq!(
            n["ports"],
            on_net.len(),
            "network ls disagrees with port list: {n}"
        );
    }

    let bridge: Vec<&Host> = (1..=8).map(|i| lab.host(i)).collect();
    let (b21, b22) = (lab.host(21), lab.host(22));
    let started = Instant::now();
    ping_all_pairs(&bridge);
    println!(
        "28 pairs answered in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Quiet the bridge hosts (no ARP probe may come later), then count what reaches them.
    for h in &bridge {
        ip(&["-n", &h.ns.name, "neigh", "flush", "all"]);
    }
    let before = lab.d().ports();
    let pairs: Vec<(&Host, &str)> = [b21, b22]
        .iter()
        .flat_map(|b| bridge.iter().map(move |h| (*b, h.addr.as_str())))
        .collect();
    pings_all_fail(&pairs);
    let after = lab.d().ports();
    for h in &bridge {
        let (was, is) = (row(&before, &h.port), row(&after, &h.port));
        assert_eq!(
            counter(is, "tx_packets"),
            counter(was, "tx_packets"),
            "a frame of blue reached {}: before {was}, after {is}",
            h.port
        );
    }
    for b in [b21, b22] {
        let (was, is) = (row(&before, &b.port), row(&after, &b.port));
        assert!(
            counter(is, "rx_packets") > counter(was, "rx_packets"),
            "the blue host {} sent nothing, so the check proves nothing: {is}",
            b.port
        );
    }
    // blue's gateway TAP holds a static entry (its MAC) on blue too.
    let blue_gateway = rows
        .iter()
        .find(|r| r["network"] == "blue" && r["type"] == "internal")
        .and_then(|r| r["name"].as_str())
        .unwrap_or_else(|| panic!("blue has no gateway port: {rows:?}"));
    let fdb = lab.d().fdb();
    for e in &fdb {
        let port = e["port"].as_str().unwrap();
        let want = if port == "p21" || port == "p22" || port == blue_gateway {
            "blue"
        } else {
            "bridge"
        };
        assert_eq!(e["network"], want, "{e}");
    }

    // The other way round: a bridge host cannot reach blue either. The blue hosts' kernels
    // are still retrying ARP for the addresses they could not reach, and those broadcasts
    // flood inside blue: stop them before counting.
    for b in [b21, b22] {
        ip(&["-n", &b.ns.name, "neigh", "flush", "all"]);
    }
    let before = lab.d().ports();
    let (from_a, from_b) = (bridge[2], bridge[5]);
    pings_all_fail(&[(from_a, b21.addr.as_str()), (from_b, b22.addr.as_str())]);
    let after = lab.d().ports();
    for b in [b21, b22] {
        let (was, is) = (row(&before, &b.port), row(&after, &b.port));
        assert_eq!(
            counter(is, "tx_packets"),
            counter(was, "tx_packets"),
            "a frame of bridge reached {}: before {was}, after {is}",
            b.port
        );
    }
    for h in [from_a, from_b] {
        let (was, is) = (row(&before, &h.port), row(&after, &h.port));
        assert!(
            counter(is, "rx_packets") > counter(was, "rx_packets"),
            "{is}"
        );
    }

    // Inside each network all is well.
    std::thread::scope(|s| {
        s.spawn(|| b21.ns.ping_until(&b22.addr));
        s.spawn(|| bridge[0].ns.ping_until(&bridge[7].addr));
    });
}

/// (4) `port remove` cuts that host off and leaves the others working.
#[test]
fn port_remove_cuts_off_only_that_host() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    for i in 1..=3 {
        lab.add_host(i, None);
    }
    let (h1, h2, h3) = (lab.host(1), lab.host(2), lab.host(3));
    ping_all_pairs(&[h1, h2, h3]);

    lab.d().ctl_ok(&["port", "remove", "p2"]);
    let rows = lab.d().ports();
    assert_eq!(
        user_ports(&rows),
        ["p1", "p3"],
        "p2 must be gone from port list"
    );
    assert!(
        lab.d().fdb().iter().all(|e| e["port"] != "p2"),
        "no MAC may stay on a removed port"
    );
    assert!(
        lab.sw.has_link("p2"),
        "a system port's interface is not deleted"
    );

    std::thread::scope(|s| {
        s.spawn(|| pings_all_fail(&[(h1, &h2.addr), (h2, &h3.addr)]));
        s.spawn(|| {
            h1.ns.ping_until(&h3.addr);
            h3.ns.ping_until(&h1.addr);
        });
    });
    let err = lab.d().ctl_err(&["port", "remove", "p2"]);
    assert!(err.contains("no such port: p2"), "{err}");
}

/// (5) Deleting a port's veth under the running daemon: the port goes down, the daemon lives
/// on, the others forward; with the veth back, remove + add brings the host back.
#[test]
fn veth_deleted_under_the_daemon_marks_the_port_down() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    for i in 1..=3 {
        lab.add_host(i, None);
    }
    ping_all_pairs(&[lab.host(1), lab.host(2), lab.host(3)]);

    ip(&["-n", &lab.sw.name, "link", "del", "p2"]);
    wait_for("port p2 to be reported down", WAIT, || {
        let p2 = lab.d().port("p2").expect("p2 stays listed");
        (p2["state"] == "down").then_some(())
    });
    assert!(
        lab.d_mut().is_running(),
        "vswitchd died:\n{}",
        lab.d().log_text()
    );
    let rows = lab.d().ports();
    assert_eq!(row(&rows, "p1")["state"], "up");
    assert_eq!(row(&rows, "p3")["state"], "up");
    {
        let (h1, h3) = (lab.host(1), lab.host(3));
        h1.ns.ping_until(&h3.addr);
        h3.ns.ping_until(&h1.addr);
    }
    assert!(
        lab.d_mut().is_running(),
        "vswitchd died:\n{}",
        lab.d().log_text()
    );

    // The veth again (its peer eth0 went with it), then the port again.
    lab.wire(2, &lab.host(2).ns);
    let err = lab.d().ctl_err(&["port", "add", "p2"]);
    assert!(err.contains("already exists"), "{err}");
    lab.d().ctl_ok(&["port", "remove", "p2"]);
    lab.d().ctl_ok(&["port", "add", "p2"]);
    assert_eq!(lab.d().port("p2").expect("p2 listed")["state"], "up");
    let (h1, h2) = (lab.host(1), lab.host(2));
    h2.ns.ping_until(&h1.addr);
    h1.ns.ping_until(&h2.addr);
    assert!(lab.d_mut().is_running());
}

/// A refusal says what kind it is (`not_found`, `conflict`, `invalid`), so clients can map it.
#[test]
fn refusals_carry_their_kind() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    let d = lab.d();
    let conn = d.connect();
    let cases: [(&[u8], &str, &str); 8] = [
        (
            b"{\"cmd\":\"fdb_show\",\"network\":\"nope\"}\n",
            "not_found",
            "no such network: nope",
        ),
        (
            b"{\"cmd\":\"sandbox_rm\",\"name\":\"nope\"}\n",
            "not_found",
            "no such sandbox: nope",
        ),
        (
            b"{\"cmd\":\"port_remove\",\"name\":\"nope\"}\n",
            "not_found",
            "no such port: nope",
        ),
        (
            b"{\"cmd\":\"network_create\",\"name\":\"bridge\"}\n",
            "conflict",
            "already exists",
        ),
        (
            b"{\"cmd\":\"network_rm\",\"name\":\"bridge\"}\n",
            "conflict",
            "default network",
        ),
        (
            b"{\"cmd\":\"network_create\",\"name\":\"a/b\"}\n",
            "invalid",
            "invalid network name",
        ),
        (
            b"{\"cmd\":\"network_create\",\"name\":\"x\",\"driver\":\"vlan\"}\n",
            "invalid",
            "unknown driver",
        ),
        (b"not json\n", "invalid", "malformed request"),
    ];
    for (line, kind, message) in cases {
        let answer = raw_request(&conn, line);
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["kind"], kind, "{answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(error.contains(message), "{answer}");
    }
    let answer = raw_request(&conn, b"{\"cmd\":\"network_ls\"}\n");
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(answer.get("kind").is_none(), "{answer}");
    // The CLI prints the message and exits 1, whatever the kind.
    let err = d.ctl_err(&["network", "create", "bridge"]);
    assert!(err.contains("already exists"), "{err}");
}

/// (6) Bad requests get a clear error, change nothing, and never stop the daemon.
#[test]
fn bad_requests_are_refused_and_change_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    // pX: an interface that exists but is not a port yet.
    let hx = lab.netns("h9");
    lab.wire(9, &hx);
    lab.hosts.push(Host {
        ns: hx,
        port: "p9".into(),
        addr: lab.addr(9),
    });
    let d = lab.d();
    let snapshot = || {
        (
            d.ctl_json(&["port", "list"]),
            d.ctl_json(&["network", "ls"]),
        )
    };
    // A second network with a port of its own, to be refused removal.
    d.ctl_ok(&["network", "create", "blue"]);
    d.ctl_ok(&["port", "add", "p1b", "--network", "blue", "--type", "tap"]);
    let before = snapshot();
    let rows = before.0.as_array().unwrap();
    assert_eq!(user_ports(rows), ["p1", "p1b"], "{rows:?}");

    // The daemon's own ports cannot be removed by hand.
    for row in rows.iter().filter(|r| r["type"] == "internal") {
        let name = row["name"].as_str().unwrap();
        let err = d.ctl_err(&["port", "remove", name]);
        assert!(err.contains(name), "{err}");
        assert_eq!(snapshot(), before, "port remove {name} changed something");
    }

    let refused: [(&[&str], &str); 7] = [
        (&["port", "remove", "nope"], "no such port: nope"),
        (
            &["port", "add", "p9", "--network", "nope"],
            "no such network: nope",
        ),
        (&["port", "add", "nosuchif"], "no such interface: nosuchif"),
        (&["port", "add", "p1"], "port p1 already exists"),
        (&["network", "rm", "blue"], "still has ports: p1b"),
        (&["network", "rm", "bridge"], "network bridge "),
        (&["network", "create", "bridge"], "already exists"),
    ];
    for (args, message) in refused {
        let err = d.ctl_err(args);
        assert!(
            err.starts_with("vswitchctl: ") && err.contains(message),
            "vswitchctl {args:?}: stderr {err:?} should say {message:?}"
        );
        assert_eq!(snapshot(), before, "vswitchctl {args:?} changed something");
    }
    // A TAP over an existing interface is refused too, and the interface is left alone.
    let err = d.ctl_err(&["port", "add", "p9", "--type", "tap"]);
    assert!(err.contains("already exists"), "{err}");
    assert!(lab.sw.has_link("p9"));
    assert_eq!(snapshot(), before);

    // Raw lines on one connection: each bad one is answered {"ok":false,…}; the connection
    // and the daemon keep serving.
    let conn = d.connect();
    for bad in [
        &b"{\"cmd\":\n"[..],
        b"not json\n",
        b"{\"cmd\":\"frobnicate\"}\n",
    ] {
        let answer = raw_request(&conn, bad);
        assert_eq!(answer["ok"], false, "{answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(error.contains("malformed request"), "{answer}");
        assert_eq!(snapshot(), before);
    }
    let answer = raw_request(&conn, b"{\"cmd\":\"port_list\"}\n");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["result"], before.0);
    drop(conn);

    // A line longer than the limit is refused (and that client dropped).
    let long = d.connect();
    let mut line = vec![b' '; tools::api::MAX_REQUEST_LEN + 1];
    line.push(b'\n');
    let answer = raw_request(&long, &line);
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("longer than"),
        "{answer}"
    );
    drop(long);

    // A client that stays connected with half a request does not block the others…
    let mut stalled = d.connect();
    stalled.write_all(b"{\"cmd\":\"port_remo").unwrap();
    assert_eq!(snapshot(), before);
    // …and one that hangs up mid-request gets no answer and nothing done: the daemon closes
    // its side (EOF here) once it has seen the request end early.
    let mut gone = d.connect();
    gone.write_all(b"{\"cmd\":\"port_remove\",\"name\":\"p1\"}")
        .unwrap();
    gone.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    gone.read_to_end(&mut rest)
        .expect("the daemon closes a half request's connection");
    assert!(rest.is_empty(), "answered a half request: {rest:?}");
    drop(stalled);
    let next = d.connect();
    let answer = raw_request(&next, b"{\"cmd\":\"network_ls\"}\n");
    assert_eq!(answer["result"], before.1, "{answer}");
    assert_eq!(snapshot(), before);
    assert!(
        lab.d_mut().is_running(),
        "vswitchd died:\n{}",
        lab.d().log_text()
    );
}

/// (7) SIGTERM: exit status 0, the socket file is gone, and so is the TAP it made.
#[test]
fn sigterm_stops_cleanly() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.d().ctl_ok(&["port", "add", "tap7", "--type", "tap"]);
    assert!(lab.sw.has_link("tap7"));
    assert!(lab.d().socket.exists());
    // tap7, and the network gateway's port if the daemon makes one.
    let made = daemon_made_ports(&lab.d().ports());
    assert!(made.iter().any(|p| p == "tap7"), "{made:?}");
    for p in &made {
        assert!(
            lab.sw.has_link(p),
            "{p} listed but not in the switch namespace"
        );
    }

    let status = lab
        .d_mut()
        .terminate(WAIT)
        .expect("vswitchd stops within 10 s of SIGTERM");
    let log = lab.d().log_text();
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(!lab.d().socket.exists(), "the socket file stays behind");
    for p in &made {
        assert!(!lab.sw.has_link(p), "{p} stays behind after SIGTERM");
    }
    assert!(
        lab.sw.has_link("p1"),
        "a system port's interface is not the daemon's"
    );

    // Started again on the same state, it brings the TAP back; SIGINT stops it the same way.
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    for p in &made {
        assert!(lab.sw.has_link(p), "the saved port {p} is not restored");
    }
    let status = lab
        .d_mut()
        .signal(libc::SIGINT, WAIT)
        .expect("vswitchd stops within 10 s of SIGINT");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        lab.d().log_text()
    );
    assert!(!lab.d().socket.exists(), "the socket file stays behind");
    for p in &made {
        assert!(!lab.sw.has_link(p), "{p} stays behind after SIGINT");
    }
}

/// A system port whose interface goes down and up again forwards again, as a kernel bridge
/// port does.
#[test]
fn port_recovers_after_its_interface_flaps() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.add_host(2, None);
    let (h1, h2) = (lab.host(1), lab.host(2));
    h1.ns.ping_until(&h2.addr);
    ip(&["-n", &lab.sw.name, "link", "set", "p1", "down"]);
    ip(&["-n", &lab.sw.name, "link", "set", "p1", "up"]);
    h1.ns.ping_until(&h2.addr);
    assert_eq!(lab.d().port("p1").expect("p1 listed")["state"], "up");
}

/// A port follows its interface's MTU: raised to 9000 on both hosts' paths, `port list` shows
/// it and 8000-byte packets cross unfragmented; before, they did not.
#[test]
fn port_follows_its_interface_mtu() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.add_host(1, None);
    lab.add_host(2, None);
    let (h1, h2) = (lab.host(1), lab.host(2));
    h1.ns.ping_until(&h2.addr);
    let big = |ns: &common::Netns| {
        ns.exec(&[
            "ping", "-c", "1", "-W", "1", "-M", "do", "-s", "8000", &h2.addr,
        ])
        .status
        .success()
    };
    assert!(!big(&h1.ns), "an 8000-byte packet crossed 1500-byte ports");
    for (i, host) in [(1, h1), (2, h2)] {
        ip(&[
            "-n",
            &lab.sw.name,
            "link",
            "set",
            &format!("p{i}"),
            "mtu",
            "9000",
        ]);
        ip(&["-n", &host.ns.name, "link", "set", "eth0", "mtu", "9000"]);
    }
    wait_for("port list to show MTU 9000", WAIT, || {
        let ok = ["p1", "p2"]
            .iter()
            .all(|p| lab.d().port(p).is_some_and(|r| r["mtu"] == 9000));
        ok.then_some(())
    });
    wait_for("an 8000-byte ping to cross", WAIT, || {
        big(&h1.ns).then_some(())
    });
}

/// (8) Without CAP_NET_ADMIN / CAP_NET_RAW the daemon says which it lacks and exits non-zero.
#[test]
fn without_privileges_it_says_which_and_fails() {
    if !root_or_skip() {
        return;
    }
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !setpriv {
        println!("skipped: needs setpriv (util-linux)");
        return;
    }
    // In a namespace of the test's own, so that a daemon that wrongly starts touches nothing.
    let lab = Lab::without_daemon();
    let nobody: &[&str] = &["--reuid=65534", "--regid=65534", "--clear-groups"];
    let no_caps: &[&str] = &[
        "--inh-caps=-net_admin,-net_raw",
        "--bounding-set=-net_admin,-net_raw",
    ];
    let no_raw: &[&str] = &["--inh-caps=-net_raw", "--bounding-set=-net_raw"];
    /// One way to lack privileges, and what the daemon must (not) name.
    struct Case<'a> {
        name: &'a str,
        setpriv: &'a [&'a str],
        says: &'a [&'a str],
        not_says: &'a [&'a str],
    }
    let both: &[&str] = &["CAP_NET_ADMIN", "CAP_NET_RAW"];
    let cases = [
        Case {
            name: "nobody",
            setpriv: nobody,
            says: both,
            not_says: &[],
        },
        Case {
            name: "root-without-caps",
            setpriv: no_caps,
            says: both,
            not_says: &[],
        },
        Case {
            name: "root-without-raw",
            setpriv: no_raw,
            says: &["CAP_NET_RAW"],
            not_says: &["CAP_NET_ADMIN"],
        },
    ];
    for Case {
        name,
        setpriv: setpriv_args,
        says,
        not_says,
    } in cases
    {
        let socket = lab.dir.path.join(format!("{name}.sock"));
        let log_path = lab.dir.path.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.sw.name, "setpriv"])
            .args(setpriv_args)
            .arg("--")
            .arg(VSWITCHD)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(lab.dir.path.join(format!("{name}-state")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn setpriv vswitchd");
        let status = {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let stderr = std::fs::read_to_string(&log_path).unwrap();
        let status = status.unwrap_or_else(|| panic!("{name}: vswitchd kept running:\n{stderr}"));
        assert!(!status.success(), "{name}: exit status {status}:\n{stderr}");
        assert_ne!(
            status.code(),
            Some(126),
            "{name}: setpriv could not run it: {stderr}"
        );
        for word in says {
            assert!(
                stderr.contains(word),
                "{name}: stderr should name {word}: {stderr}"
            );
        }
        for word in not_says {
            assert!(!stderr.contains(word), "{name}: it has {word}: {stderr}");
        }
        assert!(!socket.exists(), "{name}: it bound its socket");
    }
}
