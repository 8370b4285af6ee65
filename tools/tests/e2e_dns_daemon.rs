//! End-to-end tests of the embedded DNS server as vswitchd serves it, as root: a real
//! `vswitchd` runs in a "daemon" namespace of the test's with `--dns-upstream` pointing at a
//! `dnsmasq` the test runs in an "upstream" namespace (joined to the daemon's by a veth pair);
//! sandboxes are made and connected with `vswitchctl`, and asked with `dig`, `getent` and raw
//! queries at `127.0.0.11`. The machine's own resolver is never asked.
//!
//! Namespaces are named `vsdw<pid>t<N>-…` and removed by their guards, also on failure; so is
//! `/etc/netns/<sandbox>/`. Without root each test prints `skipped: needs root` (and fails
//! under `CI=true`); without `dig` or `dnsmasq`, `skipped: needs TOOL`.

mod common;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;
use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The upstream's hosts file: names only dnsmasq knows (forwarded).
const HOSTS: &str = "10.99.0.7 ready.test\n10.99.0.8 far.test\n";

/// The daemon's side and the upstream's side of the veth joining them.
const DAEMON_ADDR: &str = "10.252.0.1/24";
const UPSTREAM_IP: &str = "10.252.0.2";

/// A unique prefix for this test's namespaces.
fn prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "vsdw{}t{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// True if `tool` runs; else prints how to install it (a failure under `CI=true`).
fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs {tool} (apt-get install {package}), and CI=true requires it");
        }
        println!("skipped: needs {tool} (apt-get install {package})");
    }
    found
}

/// Root, `dig` and `dnsmasq`, or a skip line.
fn prerequisites() -> bool {
    root_or_skip() && have_tool("dig", "dnsutils") && have_tool("dnsmasq", "dnsmasq")
}

/// The test's world: the daemon and upstream namespaces, dnsmasq, a vswitchd.
/// Fields drop in order: sandboxes (through the daemon), the daemon, dnsmasq, namespaces.
struct World {
    sandboxes: Vec<(Sandbox, EtcNetnsGuard)>,
    daemon: Daemon,
    _dnsmasq: ChildGuard,
    _upstream: Netns,
    daemon_ns: Netns,
    tmp: TempDir,
    prefix: String,
}

impl World {
    fn new() -> World {
        let prefix = prefix();
        let tmp = TempDir::new(&prefix);
        let daemon_ns = Netns::new(format!("{prefix}-d"));
        let upstream = Netns::new(format!("{prefix}-u"));
        for ns in [&daemon_ns, &upstream] {
            ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &daemon_ns.name,
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &upstream.name,
        ]);
        ip(&[
            "-n",
            &daemon_ns.name,
            "addr",
            "add",
            DAEMON_ADDR,
            "dev",
            "up0",
        ]);
        ip(&["-n", &daemon_ns.name, "link", "set", "up0", "up"]);
        let up_addr = format!("{UPSTREAM_IP}/24");
        ip(&["-n", &upstream.name, "addr", "add", &up_addr, "dev", "eth0"]);
        ip(&["-n", &upstream.name, "link", "set", "eth0", "up"]);

        let hosts_file = tmp.path.join("hosts");
        std::fs::write(&hosts_file, HOSTS).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &upstream.name, "dnsmasq", "--no-daemon"])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port",
                "53",
            ])
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            .arg(format!("--listen-address={UPSTREAM_IP}"))
            .arg(format!(
                "--pid-file={}",
                tmp.path.join("dnsmasq.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let dnsmasq = ChildGuard(child);
        let dns_ns = daemon_ns.open();
        let upstream_at = format!("{UPSTREAM_IP}:53");
        wait_for("dnsmasq to answer", WAIT, || {
            tools::netns::in_netns(&dns_ns, || udp_query(&upstream_at, "ready.test")).unwrap()
        });
        let daemon = Daemon::start_with(
            &daemon_ns,
            &tmp.path.join("d"),
            &["--dns-upstream", UPSTREAM_IP],
        );
        World {
            sandboxes: Vec::new(),
            daemon,
            _dnsmasq: dnsmasq,
            _upstream: upstream,
            daemon_ns,
            tmp,
            prefix,
        }
    }

    /// Makes sandbox `PREFIX-short` through vswitchctl; returns its name.
    fn sandbox(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        self.sandboxes.push((
            Sandbox::guard(name.clone(), &self.daemon.socket),
            EtcNetnsGuard(name.clone()),
        ));
        self.daemon.ctl_ok(&["sandbox", "create", &name]);
        name
    }

    /// `network connect NET SB [--alias A]…`; returns the sandbox's address.
    fn connect(&self, net: &str, sb: &str, aliases: &[&str]) -> Ipv4Addr {
        let mut args = vec!["network", "connect", net, sb];
        for a in aliases {
            args.extend(["--alias", a]);
        }
        let out = self.daemon.ctl_json(&args);
        let ipv4 = out["ipv4"].as_str().expect("connect prints ipv4");
        ipv4.split('/').next().unwrap().parse().unwrap()
    }

    fn dns_stats(&self) -> Value {
        self.daemon.ctl_json(&["dns", "stats"])
    }
}

/// Sends one A query for `name` over UDP to `server` from the calling thread's namespace;
/// Some(()) once any answer comes back.
fn udp_query(server: &str, name: &str) -> Option<()> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    socket
        .send_to(&query_msg(1, name, RecordType::A), server)
        .ok()?;
    let mut buf = [0u8; 512];
    socket.recv(&mut buf).ok().map(|_| ())
}

/// `ip netns exec SB dig @127.0.0.11 ARGS…`: (status, A/PTR data of the answer section).
fn dig(sb: &str, args: &[&str]) -> (String, Vec<String>) {
    let mut all = vec![
        "dig",
        "@127.0.0.11",
        "+time=2",
        "+tries=1",
        "+noall",
        "+comments",
        "+answer",
    ];
    all.extend_from_slice(args);
    let out = ns_exec(sb, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("dig {args:?} in {sb} gave no status: {text}"))
        .to_string();
    let data = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect();
    (status, data)
}

/// The A records dig gets for `name` from `sb`.
fn a_of(sb: &str, name: &str) -> Vec<String> {
    let (status, data) = dig(sb, &[name, "A"]);
    assert_eq!(status, "NOERROR", "{name} from {sb}");
    data
}

#[test]
fn names_aliases_ptr_tcp_forwarding_and_views_through_vswitchd() {
    if !prerequisites() {
        return;
    }
    let mut w = World::new();
    let d = &w.daemon;
    d.ctl_ok(&["network", "create", "front", "--subnet", "10.31.0.0/24"]);
    d.ctl_ok(&["network", "create", "back", "--subnet", "10.32.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    let c = w.sandbox("c");
    let e = w.sandbox("e");
    let x = w.sandbox("x");
    let ip_a = w.connect("front", &a, &[]);
    let ip_b = w.connect("front", &b, &["web", "svc"]);
    let ip_c = w.connect("front", &c, &["svc"]);
    let ip_e = w.connect("back", &e, &["db"]);
    let _ = w.connect("bridge", &x, &[]);
    let d = &w.daemon;

    // Aliases are checked before anything changes, and refused on the default bridge.
    let bad = d.ctl(&["network", "connect", "back", &a, "--alias", "bad_name"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    let err = d.ctl_err(&["network", "connect", "bridge", &a, "--alias", "ok"]);
    assert!(err.contains("no name resolution"), "{err}");

    // Names and aliases across one network; round robin over the two "svc" endpoints.
    assert_eq!(a_of(&a, &b), vec![ip_b.to_string()]);
    assert_eq!(a_of(&a, "WEB"), vec![ip_b.to_string()]);
    assert_eq!(a_of(&b, &a), vec![ip_a.to_string()]);
    let first = a_of(&a, "svc");
    let second = a_of(&a, "svc");
    let mut both = first.clone();
    both.sort();
    let mut want = vec![ip_b.to_string(), ip_c.to_string()];
    want.sort();
    assert_eq!(both, want);
    assert_ne!(
        first, second,
        "two endpoints of one alias answer round robin"
    );

    // Another network's names are NXDOMAIN; its own resolve there.
    assert_eq!(dig(&e, &[&b, "A"]).0, "NXDOMAIN");
    assert_eq!(dig(&e, &["web", "A"]).0, "NXDOMAIN");
    assert_eq!(dig(&a, &["db", "A"]).0, "NXDOMAIN");
    assert_eq!(a_of(&e, "db"), vec![ip_e.to_string()]);

    // PTR for an address vswitch handed out.
    let (status, ptr) = dig(&a, &["-x", &ip_b.to_string()]);
    assert_eq!(status, "NOERROR");
    assert_eq!(ptr, vec![format!("{b}.")]);

    // TCP.
    let (status, tcp) = dig(&a, &["+tcp", "web", "A"]);
    assert_eq!((status.as_str(), tcp), ("NOERROR", vec![ip_b.to_string()]));

    // Forwarded to the upstream, from a user network and from the default bridge.
    assert_eq!(a_of(&a, "far.test"), vec!["10.99.0.8".to_string()]);
    assert_eq!(a_of(&x, "far.test"), vec!["10.99.0.8".to_string()]);
    // The default bridge has no names: nothing of ours answers there (forwarded instead).
    assert!(dig(&x, &[&a, "A"]).1.is_empty());
    assert!(dig(&a, &[&x, "A"]).1.is_empty());

    // `ip netns exec SB getent hosts NAME` goes through /etc/netns/SB/resolv.conf.
    let conf = std::fs::read_to_string(format!("/etc/netns/{a}/resolv.conf")).unwrap();
    assert!(conf.contains("nameserver 127.0.0.11"), "{conf}");
    let out = ns_exec(&a, &["getent", "hosts", "web"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with(&format!("{ip_b} ")),
        "getent hosts web: {text:?} {:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `network inspect` shows the aliases, Docker's shape.
    let inspect = d.ctl_json(&["network", "inspect", "front"]);
    let containers = inspect[0]["Containers"].as_object().unwrap();
    let of_b = containers
        .values()
        .find(|v| v["Name"] == b.as_str())
        .unwrap();
    assert_eq!(of_b["Aliases"], serde_json::json!(["web", "svc"]));

    // Disconnect removes the name at once; so does removing a sandbox.
    d.ctl_ok(&["network", "disconnect", "front", &b]);
    assert!(dig(&a, &[&b, "A"]).1.is_empty());
    assert!(dig(&a, &["web", "A"]).1.is_empty());
    assert_eq!(a_of(&a, "svc"), vec![ip_c.to_string()]);
    assert!(
        !Path::new(&format!("/etc/netns/{b}/resolv.conf")).exists(),
        "a sandbox on no network loses its resolv.conf"
    );
    d.ctl_ok(&["sandbox", "rm", &c]);
    assert!(dig(&a, &["svc", "A"]).1.is_empty());

    // The counters saw it all.
    let stats = w.dns_stats();
    for key in ["queries", "answered_locally", "nxdomain", "forwarded"] {
        assert!(stats[key].as_u64().unwrap() > 0, "{key}: {stats}");
    }
    let text = w.daemon.ctl_ok(&["dns", "stats"]);
    assert!(text.contains("nxdomain"), "{text}");
}

#[test]
fn ten_thousand_queries_from_several_sandboxes_are_all_answered() {
    if !prerequisites() {
        return;
    }
    const SANDBOXES: usize = 4;
    const PER_SANDBOX: usize = 2500;
    let mut w = World::new();
    w.daemon
        .ctl_ok(&["network", "create", "load", "--subnet", "10.33.0.0/24"]);
    let names: Vec<String> = (0..SANDBOXES)
        .map(|i| w.sandbox(&format!("l{i}")))
        .collect();
    for n in &names {
        w.connect("load", n, &["peer"]);
    }
    let before = w.dns_stats()["queries"].as_u64().unwrap();
    let answered: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let target = names[(i + 1) % SANDBOXES].clone();
                let ns = tools::netns::open_netns(format!("/run/netns/{n}")).unwrap();
                s.spawn(move || flood(&ns, &target, PER_SANDBOX))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answered,
        vec![PER_SANDBOX; SANDBOXES],
        "every query answered"
    );
    let stats = w.dns_stats();
    let total = (SANDBOXES * PER_SANDBOX) as u64;
    assert!(
        stats["queries"].as_u64().unwrap() - before >= total,
        "{stats}"
    );
    assert_eq!(stats["dropped_other"], 0, "{stats}");
}

/// Asks `name` `count` times from namespace `ns`, up to 32 in flight; returns how many
/// NOERROR answers with one A record came back (each query gets one try).
fn flood(ns: &File, name: &str, count: usize) -> usize {
    tools::netns::in_netns(ns, || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect("127.0.0.11:53").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let queries: Vec<Vec<u8>> = (0..count)
            .map(|i| query_msg(i as u16, name, RecordType::A))
            .collect();
        let mut buf = [0u8; 512];
        let mut answered = 0;
        let (mut sent, mut received) = (0, 0);
        while received < count {
            while sent < count && sent - received < 32 {
                socket.send(&queries[sent]).unwrap();
                sent += 1;
            }
            let Ok(n) = socket.recv(&mut buf) else {
                break;
            };
            received += 1;
            let msg = Message::from_vec(&buf[..n]).unwrap();
            let ok = msg.metadata.response_code == ResponseCode::NoError
                && msg.answers.len() == 1
                && matches!(msg.answers[0].data, RData::A(_));
            answered += usize::from(ok);
        }
        answered
    })
    .unwrap()
}

#[test]
fn names_answer_again_after_kill_9_and_restart() {
    if !prerequisites() {
        return;
    }
    let mut w = World::new();
    w.daemon
        .ctl_ok(&["network", "create", "front", "--subnet", "10.34.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.connect("front", &a, &[]);
    let ip_b = w.connect("front", &b, &["api"]);
    assert_eq!(a_of(&a, "api"), vec![ip_b.to_string()]);

    w.daemon.signal(libc::SIGKILL, WAIT).expect("vswitchd dies");
    // The old process's sockets died with it: nothing answers until the restart.
    let out = ns_exec(&a, &["dig", "@127.0.0.11", "+time=1", "+tries=1", "api"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "no resolver while vswitchd is down"
    );

    let dir = w.tmp.path.join("d");
    w.daemon = Daemon::start_with(&w.daemon_ns, &dir, &["--dns-upstream", UPSTREAM_IP]);
    assert_eq!(a_of(&a, "api"), vec![ip_b.to_string()]);
    assert_eq!(a_of(&b, &a).len(), 1);
    assert_eq!(a_of(&a, "far.test"), vec!["10.99.0.8".to_string()]);
    let inspect = w.daemon.ctl_json(&["network", "inspect", "front"]);
    let aliases: Vec<Value> = inspect[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["Aliases"].clone())
        .collect();
    assert!(aliases.contains(&serde_json::json!(["api"])), "{inspect}");
}

#[test]
fn an_adopted_namespace_gets_the_resolver_and_a_hint() {
    if !prerequisites() {
        return;
    }
    let p = prefix();
    // Dropped after the world (whose sandbox guard removes the adopted name first).
    let own = Netns::new(format!("{p}-own"));
    let mut w = World::new();
    w.daemon
        .ctl_ok(&["network", "create", "front", "--subnet", "10.35.0.0/24"]);
    let a = w.sandbox("a");
    let ip_a = w.connect("front", &a, &["api"]);
    let adopted = format!("{}-ad", w.prefix);
    w.sandboxes.push((
        Sandbox::guard(adopted.clone(), &w.daemon.socket),
        EtcNetnsGuard(adopted.clone()),
    ));
    let own_path = own.path().display().to_string();
    let hint = w
        .daemon
        .ctl_ok(&["sandbox", "create", &adopted, "--netns", &own_path]);
    assert!(
        hint.contains("127.0.0.11") && hint.contains(&format!("/etc/netns/{adopted}/")),
        "{hint}"
    );
    w.connect("front", &adopted, &[]);
    // Asked from the namespace itself (by its own name, not the sandbox's).
    let (status, data) = dig(&own.name, &["api", "A"]);
    assert_eq!((status.as_str(), data), ("NOERROR", vec![ip_a.to_string()]));
    assert_eq!(a_of(&a, &adopted).len(), 1);
}
