//! Root end-to-end tests of the L3 edge as vswitchd programs it: outbound NAT, published ports
//! (from outside, from the host, hairpin), isolation between networks with forwarding on,
//! internal networks, ICC off, the table after `kill -9`, and refusals that change nothing.
//!
//! The daemon's namespace `vnat<pid>t<N>-host` plays the host: an uplink veth (10.251.N.1/24)
//! leads to an "outside" namespace (10.251.N.2/24, no route back to any sandbox subnet, so only
//! masqueraded traffic can be answered) running a TCP server that answers one line: the peer
//! address it saw. Sandboxes are made with `vswitchctl sandbox create` and `network connect`;
//! networks use 10.24x.N.0/24. Every wait is a condition with a deadline; a connection that
//! must fail is given [`DROPPED`] before it is called dropped.
//!
//! Without root: `skipped: needs root`; without nft: `skipped: needs nft`.

mod common;

use common::{ip, ns_ping_once, ns_ping_until, root_or_skip, Daemon, Netns, Sandbox, TempDir};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a connection that must work may take.
const CONNECT: Duration = Duration::from_secs(5);
/// How long a connection that must fail (its SYN dropped) is given.
const DROPPED: Duration = Duration::from_millis(1500);
/// The outside server's port.
const OUTSIDE_PORT: u16 = 7000;

fn nft_or_skip() -> bool {
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs nft (apt-get install nftables), and CI=true requires it");
    }
    println!("skipped: needs nft (apt-get install nftables)");
    false
}

use common::peer::{in_ns_at as in_ns, Server};

/// Connects from the namespace at `ns` and returns the address the server saw, or the error.
fn fetch(ns: &Path, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    common::peer::fetch(ns, addr, timeout, timeout)
}

fn must_fetch(ns: &Path, addr: SocketAddr, what: &str) -> String {
    fetch(ns, addr, CONNECT).unwrap_or_else(|e| panic!("{what}: {addr}: {e}"))
}

fn must_not_fetch(ns: &Path, addr: SocketAddr, what: &str) {
    if let Ok(seen) = fetch(ns, addr, DROPPED) {
        panic!("{what}: {addr} answered (it saw {seen}) but must not be reachable");
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn next_n() -> u8 {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) as u8
}

/// The daemon in its "host" namespace with an uplink to the outside. Fields drop in order:
/// sandboxes (through the daemon), the daemon, its directory, then the namespaces.
struct Lab {
    sandboxes: Vec<Sandbox>,
    d: Daemon,
    dir: TempDir,
    outside: Netns,
    host: Netns,
    n: u8,
}

impl Lab {
    fn new() -> Lab {
        let n = next_n();
        let pid = std::process::id();
        let host = Netns::new(format!("vnat{pid}t{n}-host"));
        let outside = Netns::new(format!("vnat{pid}t{n}-out"));
        for ns in [&host, &outside] {
            ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &host.name,
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        let up = format!("10.251.{n}.1/24");
        let out = format!("10.251.{n}.2/24");
        ip(&["-n", &host.name, "addr", "add", &up, "dev", "uplink"]);
        ip(&["-n", &outside.name, "addr", "add", &out, "dev", "eth0"]);
        ip(&["-n", &host.name, "link", "set", "uplink", "up"]);
        ip(&["-n", &outside.name, "link", "set", "eth0", "up"]);
        let dir = TempDir::new(&format!("vnat{pid}t{n}"));
        let d = Daemon::start(&host, &dir.path);
        Lab {
            sandboxes: Vec::new(),
            d,
            dir,
            outside,
            host,
            n,
        }
    }

    fn uplink_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.n, 1)
    }

    fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.n, 2)
    }

    fn subnet(&self, i: u8) -> String {
        format!("10.{}.{}.0/24", 240 + i, self.n)
    }

    fn gateway(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 240 + i, self.n, 1)
    }

    /// `network create NAME --subnet 10.24i.N.0/24 EXTRA…`.
    fn network(&self, name: &str, i: u8, extra: &[&str]) {
        let subnet = self.subnet(i);
        let mut args = vec!["network", "create", name, "--subnet", &subnet];
        args.extend_from_slice(extra);
        self.d.ctl_ok(&args);
    }

    /// A sandbox the test owns; returns its name.
    fn sandbox(&mut self, suffix: &str) -> String {
        let name = format!("vn{}t{}{suffix}", std::process::id(), self.n);
        self.sandboxes
            .push(Sandbox::guard(name.clone(), &self.d.socket));
        self.d.ctl_ok(&["sandbox", "create", &name]);
        name
    }

    /// `network connect NET SB EXTRA…`; returns the sandbox's address.
    fn connect(&self, net: &str, sb: &str, extra: &[&str]) -> Ipv4Addr {
        let mut args = vec!["network", "connect", net, sb];
        args.extend_from_slice(extra);
        let v = self.d.ctl_json(&args);
        let ipv4 = v["ipv4"].as_str().unwrap_or_else(|| panic!("no ipv4: {v}"));
        ipv4.split('/').next().unwrap().parse().unwrap()
    }

    fn sb_path(sb: &str) -> std::path::PathBuf {
        Path::new("/run/netns").join(sb)
    }

    /// Our table as `nft` prints it inside the daemon's namespace ("" when absent).
    fn table(&self) -> String {
        let out = self.host.exec(&["nft", "list", "table", "inet", "vswitch"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The whole ruleset of the daemon's namespace.
    fn ruleset(&self) -> String {
        let out = self.host.exec(&["nft", "list", "ruleset"]);
        assert!(out.status.success(), "nft list ruleset");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The endpoints `sandbox ls --json` lists for `sb`.
    fn endpoints(&self, sb: &str) -> Vec<Value> {
        let v = self.d.ctl_json(&["sandbox", "ls"]);
        v.as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == sb)
            .and_then(|s| s["endpoints"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The bridge port a station was learned on (`fdb show`).
    fn port_of_mac(&self, mac: &str) -> String {
        let e = self
            .d
            .fdb_entry(mac)
            .unwrap_or_else(|| panic!("{mac} is not in the MAC table: {:?}", self.d.fdb()));
        e["port"].as_str().unwrap_or_default().to_string()
    }
}

#[test]
fn nat_out_published_ports_from_everywhere_isolation_and_internal_networks() {
    if !root_or_skip() || !nft_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let fwd = lab.host.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(
        String::from_utf8_lossy(&fwd.stdout).trim(),
        "1",
        "vswitchd turns forwarding on in its namespace"
    );
    assert!(
        lab.d.log_text().contains("IPv4 forwarding"),
        "and says so in its log"
    );
    lab.network("a", 1, &[]);
    lab.network("b", 2, &[]);
    lab.network("c", 3, &["--internal"]);
    let (s1, s2, s3, s4, s5) = (
        lab.sandbox("s1"),
        lab.sandbox("s2"),
        lab.sandbox("s3"),
        lab.sandbox("s4"),
        lab.sandbox("s5"),
    );
    let ip1 = lab.connect("a", &s1, &["--publish", "8080:80", "-p", "9000-9001:90-91"]);
    let _ip2 = lab.connect("a", &s2, &[]);
    let _ip3 = lab.connect("b", &s3, &[]);
    let _ip4 = lab.connect("c", &s4, &[]);
    let (p1, p2, p3, p4, p5) = (
        Lab::sb_path(&s1),
        Lab::sb_path(&s2),
        Lab::sb_path(&s3),
        Lab::sb_path(&s4),
        Lab::sb_path(&s5),
    );
    let host = lab.host.path();
    let outside = lab.outside.path();
    let _far = Server::start(&outside, sa(lab.outside_ip(), OUTSIDE_PORT));
    let _web = Server::start(&p1, sa(Ipv4Addr::UNSPECIFIED, 80));
    let _web91 = Server::start(&p1, sa(Ipv4Addr::UNSPECIFIED, 91));
    let far = sa(lab.outside_ip(), OUTSIDE_PORT);

    // Outbound: the server sees the host's uplink address.
    let seen = must_fetch(&p1, far, "a sandbox fetching from outside");
    assert_eq!(seen, lab.uplink_ip().to_string(), "masqueraded as the host");
    must_fetch(
        &p3,
        far,
        "a sandbox of another network fetching from outside",
    );

    // Published: from outside, from the host itself, from another sandbox (hairpin).
    let published = sa(lab.uplink_ip(), 8080);
    let seen = must_fetch(&outside, published, "the published port from outside");
    assert_eq!(
        seen,
        lab.outside_ip().to_string(),
        "no SNAT for inbound traffic"
    );
    must_fetch(&host, published, "the published port from the host itself");
    must_fetch(
        &p2,
        published,
        "the published port from a sandbox (hairpin)",
    );
    must_fetch(
        &outside,
        sa(lab.uplink_ip(), 9001),
        "the second port of a range",
    );

    // Two networks stay isolated with forwarding on; the internal one reaches nothing outside.
    must_not_fetch(&p3, sa(ip1, 80), "network b to a sandbox of network a");
    must_not_fetch(&p4, far, "an internal network to the outside");
    assert!(
        ns_ping_once(&s4, &lab.gateway(3).to_string()),
        "the internal network still reaches its gateway"
    );

    // The bindings as Docker shows them, and what is programmed.
    let eps = lab.endpoints(&s1);
    let ports: Vec<&str> = eps[0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(ports.contains(&"0.0.0.0:8080->80/tcp"), "{eps:?}");
    let inspect = lab.d.ctl_json(&["network", "inspect", "a"]);
    let c = inspect[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["Name"] == s1.as_str())
        .unwrap()
        .clone();
    assert_eq!(c["Ports"]["80/tcp"][0]["HostPort"], "8080", "{c}");
    assert_eq!(c["Ports"]["91/tcp"][0]["HostPort"], "9001", "{c}");
    assert!(
        inspect[0]["Rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["Rule"].as_str().unwrap_or("").contains("masquerade")),
        "{inspect}"
    );
    let nat = lab.d.ctl_json(&["nat", "show"]);
    assert_eq!(nat["available"], true);
    let text = nat.to_string();
    assert!(
        text.contains("dnat ip to") && text.contains("8080"),
        "{nat}"
    );
    let human = lab.d.ctl_ok(&["nat", "show"]);
    assert!(human.contains("0.0.0.0:8080"), "{human}");

    // Refusals change nothing: the table, the sandbox's endpoints.
    let before = lab.table();
    let err = lab
        .d
        .ctl_err(&["network", "connect", "a", &s5, "-p", "8080:80"]);
    assert!(err.contains("already published"), "{err}");
    let held = in_ns(&host, || TcpListener::bind("0.0.0.0:8090")).unwrap();
    let err = lab
        .d
        .ctl_err(&["network", "connect", "a", &s5, "-p", "8090:80"]);
    assert!(err.contains("in use"), "{err}");
    drop(held);
    for (spec, why) in [
        ("70000:80", "out of range"),
        ("0:80", "port 0"),
        ("80", "host port is required"),
        ("8000-8010:80-85", "differ in length"),
        ("1:2/sctp", "unknown protocol"),
        ("192.0.2.99:8085:80", "not an address of this host"),
        ("x:80", "not a port number"),
    ] {
        let err = lab
            .d
            .ctl_err(&["network", "connect", "a", &s5, "-p", "8087:80", "-p", spec]);
        assert!(err.contains(why), "--publish {spec}: {err}");
    }
    let err = lab
        .d
        .ctl_err(&["network", "connect", "c", &s5, "-p", "8086:80"]);
    assert!(err.contains("internal"), "{err}");
    assert!(lab.endpoints(&s5).is_empty(), "no endpoint was left behind");
    assert_eq!(lab.table(), before, "no rule was added or removed");
    must_not_fetch(&p5, far, "a sandbox whose connect was refused");

    // Disconnect takes exactly the endpoint's rules away.
    lab.d.ctl_ok(&["network", "disconnect", "a", &s1]);
    let after = lab.table();
    assert!(
        !after.contains("8080") && !after.contains("9000"),
        "{after}"
    );
    assert!(
        after.contains("masquerade"),
        "the networks' rules stay: {after}"
    );
    must_not_fetch(&outside, published, "a port no longer published");
}

#[test]
fn icc_off_keeps_sandboxes_apart_but_the_gateway_and_the_outside_reachable() {
    if !root_or_skip() || !nft_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.network(
        "quiet",
        1,
        &["-o", "com.docker.network.bridge.enable_icc=false"],
    );
    let (s1, s2) = (lab.sandbox("s1"), lab.sandbox("s2"));
    let _ip1 = lab.connect("quiet", &s1, &[]);
    let ip2 = lab.connect("quiet", &s2, &[]);
    let gw = lab.gateway(1).to_string();
    ns_ping_until(&s1, &gw);
    ns_ping_until(&s2, &gw);
    let _far = Server::start(&lab.outside.path(), sa(lab.outside_ip(), OUTSIDE_PORT));
    must_fetch(
        &Lab::sb_path(&s1),
        sa(lab.outside_ip(), OUTSIDE_PORT),
        "ICC off: the outside",
    );
    let mac1 = common::ns_exec(&s1, &["cat", "/sys/class/net/eth0/address"]);
    let mac1 = String::from_utf8_lossy(&mac1.stdout).trim().to_string();
    let mac2 = common::ns_exec(&s2, &["cat", "/sys/class/net/eth0/address"]);
    let mac2 = String::from_utf8_lossy(&mac2.stdout).trim().to_string();
    // ARP between them goes unanswered (a flood from an isolated port skips the other one).
    assert!(
        common::ns_ping_fails(&s1, &ip2.to_string()),
        "ICC off: one sandbox must not reach another"
    );
    // Told s2's MAC, s1 sends unicast frames: the bridge drops them as `isolated`.
    ip(&[
        "-n",
        &s1,
        "neigh",
        "replace",
        &ip2.to_string(),
        "lladdr",
        &mac2,
        "dev",
        "eth0",
    ]);
    assert!(
        common::ns_ping_fails(&s1, &ip2.to_string()),
        "ICC off: not even with the neighbour's MAC known"
    );
    let port1 = lab.port_of_mac(&mac1);
    assert!(lab.d.drops(&port1, "isolated") > 0, "the drops are counted");
    let inspect = lab.d.ctl_json(&["network", "inspect", "quiet"]);
    assert_eq!(
        inspect[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );

    // The trace shows the rule, and says when a frame goes to the gateway for routing.
    let flow = format!("dl_src={mac1},dl_dst={mac2},ip");
    let t = lab
        .d
        .ctl_json(&["trace", "--in-port", &port1, "--flow", &flow]);
    assert_eq!(t["drop"], "isolated", "{t}");
    assert!(t.to_string().contains("\"isolate\""), "{t}");
    let gw_mac = {
        let o = lab.gateway(1).octets();
        format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    };
    let flow = format!("dl_src={mac1},dl_dst={gw_mac},ip");
    let t = lab
        .d
        .ctl_json(&["trace", "--in-port", &port1, "--flow", &flow]);
    assert!(t["drop"].is_null(), "{t}");
    let text = t.to_string();
    assert!(text.contains("routed by the host"), "{t}");
}

#[test]
fn rules_survive_kill_9_without_duplicates_and_network_rm_leaves_none() {
    if !root_or_skip() || !nft_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.network("keep", 1, &[]);
    let s1 = lab.sandbox("s1");
    lab.connect("keep", &s1, &["-p", "8080:80"]);
    let _web = Server::start(&Lab::sb_path(&s1), sa(Ipv4Addr::UNSPECIFIED, 80));
    let outside = lab.outside.path();
    let published = sa(lab.uplink_ip(), 8080);
    must_fetch(&outside, published, "published before the crash");
    let before = lab.table();
    assert_eq!(before.matches("dnat ip to").count(), 1, "{before}");

    assert!(lab.d.signal(libc::SIGKILL, common::WAIT).is_some());
    // A stale rule from the crashed run is still in the kernel: the restart must replace it.
    lab.d = Daemon::start(&lab.host, &lab.dir.path);
    let after = lab.table();
    assert_eq!(
        after.matches("dnat ip to").count(),
        1,
        "rebuilt, not duplicated: {after}"
    );
    assert_eq!(
        after.lines().count(),
        before.lines().count(),
        "the same table: {before}\n---\n{after}"
    );
    assert!(lab.d.log_text().contains("rebuilt from the stored state"));
    must_fetch(&outside, published, "published after the restart");

    // network rm leaves no rule of the network behind.
    let gw_if = lab
        .d
        .ports()
        .into_iter()
        .find(|p| p["network"] == "keep" && p["name"].as_str().unwrap_or("").starts_with("vsg"))
        .map(|p| p["name"].as_str().unwrap().to_string())
        .expect("the network's gateway port");
    lab.d.ctl_ok(&["network", "disconnect", "keep", &s1]);
    lab.d.ctl_ok(&["network", "rm", "keep"]);
    let ruleset = lab.ruleset();
    let subnet_base = format!("10.241.{}.", lab.n);
    for gone in [gw_if.as_str(), subnet_base.as_str(), "8080", "\"keep\""] {
        assert!(!ruleset.contains(gone), "{gone} is still in: {ruleset}");
    }
}
