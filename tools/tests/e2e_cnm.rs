//! Real end-to-end tests of the Container Networking Model in `vswitchd`/`vswitchctl`, as root:
//! networks and their drivers, sandboxes, endpoints, IPAM, and the state surviving a crash.
//!
//! Each test runs its own daemon in a switch namespace `vst<pid>t<N>-sw` (the "host" of its
//! sandboxes: the gateway TAPs live there), makes sandboxes named `vst<pid>t<N>-…` (sandbox
//! names are global, under `/run/netns`), and checks what a user sees: `ip` inside the
//! sandboxes, pings, `sandbox ls`, `network inspect`, errors. Every sandbox is held by a guard
//! that removes it even when the test fails (see `common`). Traffic goes only to addresses inside
//! the test's own namespaces. Without root each test prints `skipped: needs root` (and fails
//! under `CI=true`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tools::daemon::store::{Store, Table};

/// The default network's subnet and gateway in a fresh namespace (Docker's first pool).
const BRIDGE_SUBNET: &str = "172.17.0.0/16";
const BRIDGE_GATEWAY: &str = "172.17.0.1";

// ---------------------------------------------------------------------------------------------
// Addresses

/// `IP/PREFIX` → (IP, PREFIX).
fn split_cidr(cidr: &str) -> (Ipv4Addr, u8) {
    let (ip, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr:?} is not IP/PREFIX"));
    (
        ip.parse()
            .unwrap_or_else(|_| panic!("{cidr:?}: bad address")),
        len.parse()
            .unwrap_or_else(|_| panic!("{cidr:?}: bad prefix")),
    )
}

/// The address part of `IP/PREFIX`.
fn ip_of(cidr: &str) -> String {
    split_cidr(cidr).0.to_string()
}

/// Tells whether `ip` lies in `subnet` and is neither its network nor its broadcast address.
fn is_host_address_in(ip: Ipv4Addr, subnet: &str) -> bool {
    let (net, len) = split_cidr(subnet);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let (ip, net) = (u32::from(ip), u32::from(net));
    ip & mask == net && ip != net && ip != net | !mask
}

/// Docker's MAC for an address: 02:42 and the four bytes of the address.
fn docker_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

// ---------------------------------------------------------------------------------------------
// What the daemon says

/// What `network connect --json` answered.
#[derive(Debug, Clone)]
struct Endpoint {
    sandbox: String,
    interface: String,
    /// `IP/PREFIX`.
    ipv4: String,
    mac: String,
}

impl Endpoint {
    fn ip(&self) -> String {
        ip_of(&self.ipv4)
    }

    fn from_answer(sandbox: &str, v: &Value) -> Endpoint {
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("network connect --json has no {k}: {v}"))
                .to_string()
        };
        assert_eq!(v["sandbox"], sandbox, "{v}");
        Endpoint {
            sandbox: sandbox.to_string(),
            interface: field("interface"),
            ipv4: field("ipv4"),
            mac: field("mac"),
        }
    }
}

/// `network connect NET SANDBOX [--ip IP]`, which must succeed.
fn connect(d: &Daemon, network: &str, sandbox: &str, ip: Option<&str>) -> Endpoint {
    let mut args = vec!["network", "connect", network, sandbox];
    if let Some(ip) = ip {
        args.extend(["--ip", ip]);
    }
    Endpoint::from_answer(sandbox, &d.ctl_json(&args))
}

/// `network inspect NAME --json`: the one network object.
fn inspect(d: &Daemon, network: &str) -> Value {
    let v = d.ctl_json(&["network", "inspect", network]);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let n = v[0].clone();
    assert_eq!(n["Name"], network, "{n}");
    n
}

/// An inspected network's containers: sandbox name → (MacAddress, IPv4Address).
fn containers(net: &Value) -> BTreeMap<String, (String, String)> {
    let map = net["Containers"]
        .as_object()
        .unwrap_or_else(|| panic!("no Containers object: {net}"));
    let mut out = BTreeMap::new();
    for c in map.values() {
        let name = c["Name"].as_str().expect("a container's Name").to_string();
        let mac = c["MacAddress"].as_str().unwrap_or("").to_string();
        let ip = c["IPv4Address"].as_str().unwrap_or("").to_string();
        assert!(
            out.insert(name.clone(), (mac, ip)).is_none(),
            "{name} listed twice in {net}"
        );
    }
    out
}

/// An inspected network's ports (`Ports`).
fn inspect_ports(net: &Value) -> Vec<String> {
    net["Ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no Ports list: {net}"))
        .iter()
        .map(|p| p.as_str().expect("a port name").to_string())
        .collect()
}

/// The IPAM config of an inspected network: (Subnet, Gateway).
fn ipam_config(net: &Value) -> (String, String) {
    let c = &net["IPAM"]["Config"][0];
    (
        c["Subnet"].as_str().unwrap_or("").to_string(),
        c["Gateway"].as_str().unwrap_or("").to_string(),
    )
}

/// `sandbox ls --json`.
fn sandbox_ls(d: &Daemon) -> Vec<Value> {
    match d.ctl_json(&["sandbox", "ls"]) {
        Value::Array(rows) => rows,
        other => panic!("sandbox ls --json is not a list: {other}"),
    }
}

/// `network ls --json`.
fn network_ls(d: &Daemon) -> Vec<Value> {
    match d.ctl_json(&["network", "ls"]) {
        Value::Array(rows) => rows,
        other => panic!("network ls --json is not a list: {other}"),
    }
}

/// Every endpoint `sandbox ls` lists: (sandbox, network, interface, ipv4).
fn listed_endpoints(d: &Daemon) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for s in sandbox_ls(d) {
        let name = s["name"].as_str().expect("a sandbox's name");
        for e in s["endpoints"].as_array().expect("endpoints list") {
            out.push((
                name.to_string(),
                e["network"].as_str().unwrap_or("").to_string(),
                e["interface"].as_str().unwrap_or("").to_string(),
                e["ipv4"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

/// Everything a refused request must leave as it was: networks, sandboxes with endpoints, each
/// network in detail, the daemon namespace's interfaces, and the test's names under /run/netns.
fn snapshot(lab: &Lab) -> Value {
    let d = lab.d();
    let nets = network_ls(d);
    let detail: Vec<Value> = nets
        .iter()
        .map(|n| inspect(d, n["name"].as_str().unwrap()))
        .collect();
    // By name: a restart makes the TAPs again, with new indexes.
    let links: BTreeSet<String> = ns_link_names(&lab.sw.name).into_iter().collect();
    let mut ours: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&lab.prefix))
                .collect()
        })
        .unwrap_or_default();
    ours.sort();
    json!({
        "networks": nets,
        "sandboxes": sandbox_ls(d),
        "inspect": detail,
        "links": links,
        "netns": ours,
    })
}

/// The interfaces of the daemon's namespace that are endpoint veths (`vse…`).
fn endpoint_veths(lab: &Lab) -> BTreeSet<String> {
    ns_link_names(&lab.sw.name)
        .into_iter()
        .filter(|n| n.starts_with("vse"))
        .collect()
}

/// The host end (in the daemon's namespace) of the veth whose other end is `ifname` in `ns`.
fn host_end_of(lab: &Lab, ns: &str, ifname: &str) -> String {
    let inside = ip_json(&["-n", ns, "link", "show", "dev", ifname]);
    let peer = inside[0]["link_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("{ifname} in {ns} is not a veth: {inside}"));
    let links = ip_json(&["-n", &lab.sw.name, "link", "show"]);
    links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifindex"].as_u64() == Some(peer))
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no interface {peer} in {}: {links}", lab.sw.name))
        .to_string()
}

/// Checks that the endpoint is what the sandbox has: the interface with the address and the
/// MAC `network connect` reported (Docker's 02:42:<address>).
fn assert_plumbed(ep: &Endpoint) {
    let addrs = ns_ipv4_addrs(&ep.sandbox, &ep.interface);
    assert_eq!(
        addrs,
        std::slice::from_ref(&ep.ipv4),
        "{} in {} should hold exactly {}",
        ep.interface,
        ep.sandbox,
        ep.ipv4
    );
    let link = ip_json(&["-n", &ep.sandbox, "link", "show", "dev", &ep.interface]);
    let mac = link[0]["address"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase();
    let (ip, _) = split_cidr(&ep.ipv4);
    assert_eq!(
        mac,
        docker_mac(ip),
        "MAC of {} in {}",
        ep.interface,
        ep.sandbox
    );
    assert_eq!(
        ep.mac.to_ascii_lowercase(),
        mac,
        "the MAC reported by connect"
    );
    assert!(
        link[0]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "{} in {} is not up: {link}",
        ep.interface,
        ep.sandbox
    );
}

/// Runs `vswitchctl` without waiting (for requests that must be in flight together).
fn spawn_ctl(d: &Daemon, args: &[&str]) -> Child {
    Command::new(VSWITCHCTL)
        .env_remove("VSWITCH_SOCKET")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitchctl")
}

/// Child processes killed and reaped on drop (a `sleep` in a namespace, vswitchctl runs).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Refused requests: exit status 1, `vswitchctl: …` on stderr naming the problem.
fn refused(d: &Daemon, args: &[&str], message: &str) {
    let err = d.ctl_err(args);
    assert!(
        err.starts_with("vswitchctl: ") && err.contains(message),
        "vswitchctl {args:?}: stderr {err:?} should say {message:?}"
    );
}

// ---------------------------------------------------------------------------------------------

/// (1) Two sandboxes on the default `bridge` network: each gets eth0 with the address and MAC
/// `network connect` reported and a default route via 172.17.0.1; they reach each other and the
/// gateway; the daemon's namespace (the host) reaches both; `network inspect` lists both.
#[test]
fn bridge_sandboxes_reach_each_other_the_gateway_and_the_host() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let d = lab.d();
    // The three default networks of a fresh daemon.
    let nets = network_ls(d);
    for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "none")] {
        assert!(
            nets.iter()
                .any(|n| n["name"] == name && n["driver"] == driver),
            "{name} ({driver}) not in {nets:?}"
        );
    }
    let bridge = inspect(d, "bridge");
    assert_eq!(
        ipam_config(&bridge),
        (BRIDGE_SUBNET.to_string(), BRIDGE_GATEWAY.to_string()),
        "{bridge}"
    );
    assert_eq!(bridge["Driver"], "bridge");
    // The gateway lives on vswitch0 in the daemon's namespace.
    assert_eq!(
        ns_ipv4_addrs(&lab.sw.name, "vswitch0"),
        [format!("{BRIDGE_GATEWAY}/16")]
    );

    let a = lab.sandbox("a");
    let b = lab.sandbox("b");
    let d = lab.d();
    let ea = connect(d, "bridge", &a, None);
    let eb = connect(d, "bridge", &b, None);
    for ep in [&ea, &eb] {
        assert_eq!(ep.interface, "eth0", "{ep:?}");
        let (ip, len) = split_cidr(&ep.ipv4);
        assert_eq!(len, 16, "{ep:?}");
        assert!(is_host_address_in(ip, BRIDGE_SUBNET), "{ep:?}");
        assert_ne!(ip.to_string(), BRIDGE_GATEWAY, "{ep:?}");
        assert!(
            ep.mac.starts_with("02:42:ac:11:00:"),
            "a low 172.17 address gives 02:42:ac:11:00:NN: {ep:?}"
        );
        assert_plumbed(ep);
        assert_eq!(
            ns_default_route(&ep.sandbox),
            Some((BRIDGE_GATEWAY.to_string(), "eth0".to_string())),
            "default route of {}",
            ep.sandbox
        );
        assert!(
            std::path::Path::new(&format!("/run/netns/{}", ep.sandbox)).exists(),
            "ip netns sees {}",
            ep.sandbox
        );
    }
    assert_ne!(ea.ipv4, eb.ipv4);

    std::thread::scope(|s| {
        s.spawn(|| ns_ping_until(&a, &eb.ip()));
        s.spawn(|| ns_ping_until(&b, &ea.ip()));
        s.spawn(|| ns_ping_until(&a, BRIDGE_GATEWAY));
        s.spawn(|| ns_ping_until(&b, BRIDGE_GATEWAY));
        s.spawn(|| lab.sw.ping_until(&ea.ip()));
        s.spawn(|| lab.sw.ping_until(&eb.ip()));
    });

    let listed = containers(&inspect(d, "bridge"));
    assert_eq!(listed.len(), 2, "{listed:?}");
    for ep in [&ea, &eb] {
        assert_eq!(
            listed.get(&ep.sandbox),
            Some(&(ep.mac.clone(), ep.ipv4.clone())),
            "{listed:?}"
        );
    }
    // `sandbox ls` says the same, with the namespace path.
    for s in sandbox_ls(d) {
        let name = s["name"].as_str().unwrap();
        let ep = [&ea, &eb]
            .into_iter()
            .find(|e| e.sandbox == name)
            .unwrap_or_else(|| panic!("unexpected sandbox {s}"));
        assert_eq!(s["netns"], format!("/run/netns/{name}"), "{s}");
        assert_eq!(
            s["endpoints"],
            json!([{"network": "bridge", "interface": "eth0", "ipv4": ep.ipv4, "mac": ep.mac}]),
            "{s}"
        );
    }
}

/// (2) Sandboxes on two user networks are kept apart (neither through the host nor on the
/// wire) and each reaches its own gateway; a sandbox of an `--internal` network has no default
/// route.
#[test]
fn user_networks_are_isolated_and_internal_has_no_default_route() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let d = lab.d();
    d.ctl_ok(&["network", "create", "a", "--subnet", "10.61.0.0/24"]);
    d.ctl_ok(&["network", "create", "b", "--subnet", "10.62.0.0/24"]);
    d.ctl_ok(&[
        "network",
        "create",
        "c",
        "--subnet",
        "10.67.0.0/24",
        "--internal",
    ]);
    for (net, subnet, gw) in [
        ("a", "10.61.0.0/24", "10.61.0.1"),
        ("b", "10.62.0.0/24", "10.62.0.1"),
        ("c", "10.67.0.0/24", "10.67.0.1"),
    ] {
        let n = inspect(d, net);
        assert_eq!(ipam_config(&n), (subnet.into(), gw.into()), "{n}");
        assert_eq!(n["Internal"], net == "c", "{n}");
    }
    let sa = lab.sandbox("sa");
    let sb = lab.sandbox("sb");
    let sc = lab.sandbox("sc");
    let d = lab.d();
    let ea = connect(d, "a", &sa, None);
    let eb = connect(d, "b", &sb, None);
    let ec = connect(d, "c", &sc, None);
    assert!(is_host_address_in(ea.ip().parse().unwrap(), "10.61.0.0/24"));
    assert!(is_host_address_in(eb.ip().parse().unwrap(), "10.62.0.0/24"));
    assert!(is_host_address_in(ec.ip().parse().unwrap(), "10.67.0.0/24"));
    for ep in [&ea, &eb, &ec] {
        assert_plumbed(ep);
    }
    assert_eq!(
        ns_default_route(&sa),
        Some(("10.61.0.1".into(), "eth0".into()))
    );
    assert_eq!(
        ns_default_route(&sb),
        Some(("10.62.0.1".into(), "eth0".into()))
    );
    assert_eq!(
        ns_default_route(&sc),
        None,
        "an internal network gives no default route"
    );

    std::thread::scope(|s| {
        s.spawn(|| ns_ping_until(&sa, "10.61.0.1"));
        s.spawn(|| ns_ping_until(&sb, "10.62.0.1"));
    });
    // Through the gateways: the daemon's namespace does not route between its networks. With
    // nftables the daemon turns forwarding on (as Docker does) and its table drops what one
    // network forwards to another (Docker's DOCKER-ISOLATION stages); without it forwarding
    // stays off. Either way the premise is stated.
    let forward = lab.sw.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]);
    let forward = String::from_utf8_lossy(&forward.stdout).trim().to_string();
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok();
    assert_eq!(forward, if nft { "1" } else { "0" }, "nft installed: {nft}");
    assert!(ns_ping_fails(&sa, &eb.ip()), "{sa} reached {}", eb.ip());
    assert!(ns_ping_fails(&sb, &ea.ip()), "{sb} reached {}", ea.ip());
    // The internal sandbox has no way off its subnet.
    assert!(ns_ping_fails(&sc, &ea.ip()), "{sc} reached {}", ea.ip());

    // On the wire: with b's subnet declared on-link, sa ARPs for sb on network a. The switch
    // must not carry one frame of it to b: sb's port sends nothing meanwhile.
    ip(&["-n", &sa, "route", "add", "10.62.0.0/24", "dev", "eth0"]);
    let sb_port = host_end_of(&lab, &sb, "eth0");
    let sa_port = host_end_of(&lab, &sa, "eth0");
    let d = lab.d();
    assert!(inspect_ports(&inspect(d, "b")).contains(&sb_port));
    let before = d.ports();
    assert!(
        ns_ping_fails(&sa, &eb.ip()),
        "{sa} reached {} on-link",
        eb.ip()
    );
    let after = d.ports();
    let find = |rows: &[Value], p: &str| {
        rows.iter()
            .find(|r| r["name"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} not in port list"))
    };
    assert!(
        counter(&find(&after, &sa_port), "rx_packets")
            > counter(&find(&before, &sa_port), "rx_packets"),
        "sa sent nothing on its port, so the check proves nothing"
    );
    assert_eq!(
        counter(&find(&after, &sb_port), "tx_packets"),
        counter(&find(&before, &sb_port), "tx_packets"),
        "a frame of network a reached sb's port"
    );
}

/// (3) A sandbox on `host` sees the daemon's own interfaces (it is the daemon's namespace); one
/// on `none` has only `lo`.
#[test]
fn host_sandbox_shares_the_daemon_namespace_and_none_has_only_lo() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let h = lab.sandbox("h");
    let n = lab.sandbox("n");
    let d = lab.d();
    d.ctl_ok(&["network", "connect", "host", &h]);
    d.ctl_ok(&["network", "connect", "none", &n]);

    let links = ns_link_names(&h);
    assert!(links.iter().any(|l| l == "vswitch0"), "{links:?}");
    assert_eq!(links, ns_link_names(&lab.sw.name));
    assert_eq!(
        netns_identity(format!("/run/netns/{h}")),
        netns_identity(lab.sw.path()),
        "the host sandbox's name must point at the daemon's namespace"
    );
    // `ip netns exec` works on it too (the name is a real mount, visible outside the daemon).
    let out = ns_exec(&h, &["ip", "-br", "link"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vswitch0"),
        "{out:?}"
    );

    assert_eq!(ns_link_names(&n), ["lo"]);
    assert_ne!(
        netns_identity(format!("/run/netns/{n}")),
        netns_identity(lab.sw.path())
    );
    assert!(containers(&inspect(d, "none")).contains_key(&n));
    assert!(containers(&inspect(d, "host")).contains_key(&h));

    // Neither can join a bridged network besides.
    refused(d, &["network", "connect", "bridge", &h], "host network");
    refused(d, &["network", "connect", "bridge", &n], "none or host");
    assert_eq!(ns_link_names(&n), ["lo"]);

    // Leaving `host` gives the sandbox a namespace of its own again; the daemon's is untouched.
    d.ctl_ok(&["network", "disconnect", "host", &h]);
    assert_ne!(
        netns_identity(format!("/run/netns/{h}")),
        netns_identity(lab.sw.path())
    );
    assert_eq!(ns_link_names(&h), ["lo"]);
    assert!(lab.sw.has_link("vswitch0"));
}

/// (4) macvlan: the parent interface joins the network as its uplink, so a sandbox appears on
/// the parent's segment: an external host there and the sandbox reach each other.
#[test]
fn macvlan_sandbox_is_on_the_parent_segment() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let ext = lab.netns("ext");
    ip(&[
        "-n",
        &lab.sw.name,
        "link",
        "add",
        "mvp",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &ext.name,
    ]);
    ip(&[
        "-n",
        &ext.name,
        "addr",
        "add",
        "10.63.0.100/24",
        "dev",
        "eth0",
    ]);
    ip(&["-n", &ext.name, "link", "set", "eth0", "up"]);
    lab.d().ctl_ok(&[
        "network",
        "create",
        "mv",
        "--driver",
        "macvlan",
        "--parent",
        "mvp",
        "--subnet",
        "10.63.0.0/24",
    ]);
    let net = inspect(lab.d(), "mv");
    assert_eq!(net["Driver"], "macvlan", "{net}");
    assert_eq!(net["Options"]["parent"], "mvp", "{net}");
    assert!(inspect_ports(&net).contains(&"mvp".to_string()), "{net}");

    let s = lab.sandbox("m");
    let ep = connect(lab.d(), "mv", &s, None);
    assert!(
        is_host_address_in(ep.ip().parse().unwrap(), "10.63.0.0/24"),
        "{ep:?}"
    );
    assert_ne!(ep.ip(), "10.63.0.100");
    assert_plumbed(&ep);
    std::thread::scope(|sc| {
        sc.spawn(|| ext.ping_until(&ep.ip()));
        sc.spawn(|| ns_ping_until(&s, "10.63.0.100"));
    });
    // The external host learned the sandbox's own MAC: it is on the segment, not routed.
    let neigh = ip_json(&["-n", &ext.name, "neigh", "show", &ep.ip()]);
    assert_eq!(
        neigh[0]["lladdr"].as_str().map(str::to_ascii_lowercase),
        Some(ep.mac.to_ascii_lowercase()),
        "{neigh}"
    );
    let rows = lab.d().ports();
    let up = rows
        .iter()
        .find(|r| r["name"] == "mvp")
        .expect("mvp listed");
    assert_eq!(up["network"], "mv", "{up}");
    assert!(
        counter(up, "rx_packets") > 0 && counter(up, "tx_packets") > 0,
        "{up}"
    );
}

/// (5) Twenty `network connect` requests at once get twenty distinct addresses of the subnet,
/// none the gateway, all listed by `network inspect` and all plumbed.
#[test]
fn concurrent_connects_get_distinct_addresses() {
    if !root_or_skip() {
        return;
    }
    const N: usize = 20;
    const SUBNET: &str = "10.68.0.0/24";
    let mut lab = Lab::new();
    lab.d()
        .ctl_ok(&["network", "create", "conc", "--subnet", SUBNET]);
    let names: Vec<String> = (0..N).map(|i| lab.sandbox(&format!("c{i}"))).collect();
    let d = lab.d();
    let mut kids = Children(
        names
            .iter()
            .map(|s| spawn_ctl(d, &["--json", "network", "connect", "conc", s]))
            .collect(),
    );
    let mut eps = Vec::new();
    for (child, name) in kids.0.drain(..).zip(&names) {
        let out = child.wait_with_output().expect("wait for vswitchctl");
        assert!(
            out.status.success(),
            "connect {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("connect --json is JSON");
        eps.push(Endpoint::from_answer(name, &v));
    }
    let ips: BTreeSet<String> = eps.iter().map(Endpoint::ip).collect();
    assert_eq!(ips.len(), N, "addresses handed out twice: {eps:?}");
    for ep in &eps {
        let ip: Ipv4Addr = ep.ip().parse().unwrap();
        assert!(is_host_address_in(ip, SUBNET), "{ep:?}");
        assert_ne!(ep.ip(), "10.68.0.1", "the gateway was handed out: {ep:?}");
        assert_eq!(ep.interface, "eth0");
    }
    let listed = containers(&inspect(d, "conc"));
    assert_eq!(listed.len(), N, "{listed:?}");
    for ep in &eps {
        assert_eq!(
            listed.get(&ep.sandbox),
            Some(&(ep.mac.clone(), ep.ipv4.clone()))
        );
        assert_plumbed(ep);
    }
    assert_eq!(endpoint_veths(&lab).len(), N);
    // A sample of them is really on the network.
    std::thread::scope(|s| {
        s.spawn(|| ns_ping_until(&eps[0].sandbox, &eps[N - 1].ip()));
        s.spawn(|| ns_ping_until(&eps[N / 2].sandbox, "10.68.0.1"));
    });
}

/// Checks that the daemon's story is consistent with the system: every endpoint `sandbox ls`
/// lists exists in its sandbox with its address, no address is listed twice, `network inspect`
/// agrees with `sandbox ls`, a sandbox without endpoints has only `lo`, and every endpoint veth
/// in the daemon's namespace belongs to a listed endpoint. Returns the listed endpoints.
fn assert_consistent(lab: &Lab) -> Vec<(String, String, String, String)> {
    let d = lab.d();
    let listed = listed_endpoints(d);
    let mut seen = BTreeSet::new();
    for (sb, net, ifname, ipv4) in &listed {
        assert!(seen.insert(ipv4.clone()), "{ipv4} listed twice: {listed:?}");
        assert_eq!(
            ns_ipv4_addrs(sb, ifname),
            std::slice::from_ref(ipv4),
            "{net} endpoint {ifname} of {sb}"
        );
        let c = containers(&inspect(d, net));
        assert_eq!(
            c.get(sb).map(|(_, ip)| ip),
            Some(ipv4),
            "inspect {net} disagrees with sandbox ls: {c:?}"
        );
    }
    for s in sandbox_ls(d) {
        let name = s["name"].as_str().unwrap();
        if s["endpoints"].as_array().is_some_and(Vec::is_empty) {
            assert_eq!(ns_link_names(name), ["lo"], "{name} has no endpoint");
        }
    }
    let veths = endpoint_veths(lab);
    let owned: BTreeSet<String> = network_ls(d)
        .iter()
        .flat_map(|n| inspect_ports(&inspect(d, n["name"].as_str().unwrap())))
        .filter(|p| p.starts_with("vse"))
        .collect();
    assert_eq!(
        veths, owned,
        "endpoint veths in the daemon's namespace vs its ports"
    );
    assert_eq!(
        veths.len(),
        listed.len(),
        "one veth per endpoint: {listed:?}"
    );
    let rows = d.ports();
    for v in &veths {
        let r = rows
            .iter()
            .find(|r| r["name"] == v.as_str())
            .expect("listed");
        assert_eq!(r["state"], "up", "{r}");
    }
    listed
}

/// (6) `kill -9` while connects are in flight, then a restart on the same state: what the daemon
/// answered before the kill is there; what it lists is real and consistent; no orphan veth; new
/// connects get unused addresses; restored sandboxes talk to each other and to the gateway.
#[test]
fn kill_9_during_connects_then_restart_is_consistent() {
    if !root_or_skip() {
        return;
    }
    const STORM: usize = 15;
    let mut lab = Lab::new();
    let r0 = lab.sandbox("r0");
    let r1 = lab.sandbox("r1");
    let storm: Vec<String> = (0..STORM).map(|i| lab.sandbox(&format!("k{i}"))).collect();
    let late = lab.sandbox("n0");
    let e0 = connect(lab.d(), "bridge", &r0, None);
    let e1 = connect(lab.d(), "bridge", &r1, None);

    let mut kids = Children(
        storm
            .iter()
            .map(|s| spawn_ctl(lab.d(), &["--json", "network", "connect", "bridge", s]))
            .collect(),
    );
    // Kill as soon as three have answered, with the rest still queued or in progress.
    let mut done: Vec<Option<std::process::ExitStatus>> = vec![None; STORM];
    let deadline = Instant::now() + WAIT;
    loop {
        for (i, c) in kids.0.iter_mut().enumerate() {
            if done[i].is_none() {
                done[i] = c.try_wait().expect("try_wait");
            }
        }
        if done.iter().flatten().filter(|s| s.success()).count() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "three connects did not answer in time: {done:?}\n{}",
            lab.d().log_text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = lab
        .d_mut()
        .signal(libc::SIGKILL, WAIT)
        .expect("vswitchd dies on SIGKILL");
    assert!(!status.success());
    // What each client was told.
    let mut answered = Vec::new();
    for (child, name) in kids.0.drain(..).zip(&storm) {
        let out = child.wait_with_output().expect("wait for vswitchctl");
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("connect --json is JSON");
            answered.push(Endpoint::from_answer(name, &v));
        }
    }
    println!(
        "{} of {STORM} connects answered before the kill",
        answered.len()
    );
    assert!(answered.len() >= 3);
    // Whether the kill fell between a veth's creation and the state's save is luck; leave such
    // a veth for sure: what a crash mid-connect of `late` leaves (host end in the daemon's
    // namespace, the other end in the sandbox, nothing saved).
    const ORPHAN: &str = "vse0123456789ab";
    ip(&[
        "-n",
        &lab.sw.name,
        "link",
        "add",
        ORPHAN,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &late,
    ]);
    // A veth the daemon made carries its state dir's ID in its alias.
    let id = std::fs::read_to_string(lab.dir.path.join("state").join("id")).expect("state id");
    let alias = format!("vswitch:{}", id.trim());
    ip(&["-n", &lab.sw.name, "link", "set", ORPHAN, "alias", &alias]);

    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    let log = lab.d().log_text();
    for line in log.lines().filter(|l| l.contains("repaired")) {
        println!("{line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("repaired") && l.contains("orphan") && l.contains(ORPHAN)),
        "the orphan veth {ORPHAN} is not reported:\n{log}"
    );
    assert!(!lab.sw.has_link(ORPHAN) && !ns_has_link(&late, "eth0"));
    let listed = assert_consistent(&lab);
    // Nothing answered is lost, and it is unchanged.
    for ep in answered.iter().chain([&e0, &e1]) {
        assert!(
            listed.iter().any(|(s, n, i, a)| *s == ep.sandbox
                && n == "bridge"
                && *i == ep.interface
                && *a == ep.ipv4),
            "{ep:?} was answered before the kill but is not listed after: {listed:?}"
        );
    }
    assert!(lab.sw.has_link("vswitch0"), "the gateway TAP is back");
    assert_eq!(
        ns_ipv4_addrs(&lab.sw.name, "vswitch0"),
        [format!("{BRIDGE_GATEWAY}/16")]
    );

    // New connects: every sandbox not connected yet gets an address nobody holds.
    let mut in_use: BTreeSet<String> = listed.iter().map(|e| e.3.clone()).collect();
    let connected: BTreeSet<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    let fresh: Vec<&String> = storm
        .iter()
        .chain([&late])
        .filter(|s| !connected.contains(s.as_str()))
        .collect();
    assert!(fresh.contains(&&late));
    let mut new_eps = Vec::new();
    for s in fresh {
        let ep = connect(lab.d(), "bridge", s, None);
        assert!(
            in_use.insert(ep.ipv4.clone()),
            "{ep:?} got an address already in use"
        );
        assert_ne!(ep.ip(), BRIDGE_GATEWAY);
        assert_plumbed(&ep);
        new_eps.push(ep);
    }
    assert_consistent(&lab);

    let late_ep = new_eps.iter().find(|e| e.sandbox == late).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| ns_ping_until(&r0, &e1.ip()));
        s.spawn(|| ns_ping_until(&r1, &e0.ip()));
        s.spawn(|| ns_ping_until(&r0, BRIDGE_GATEWAY));
        s.spawn(|| lab.sw.ping_until(&e1.ip()));
        s.spawn(|| ns_ping_until(&late, &answered[0].ip()));
        s.spawn(|| ns_ping_until(&answered[1].sandbox, &late_ep.ip()));
    });
}

/// (7) After SIGTERM and a restart, networks, sandboxes and endpoints are as they were, the
/// gateway TAPs are made again (same address, same MAC), and the sandboxes talk again.
#[test]
fn restart_after_clean_stop_restores_everything() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.d()
        .ctl_ok(&["network", "create", "u", "--subnet", "10.69.0.0/24"]);
    let a = lab.sandbox("a");
    let b = lab.sandbox("b");
    let c = lab.sandbox("c");
    let d = lab.d();
    let ea = connect(d, "bridge", &a, None);
    let eb = connect(d, "bridge", &b, None);
    let ec = connect(d, "u", &c, None);
    let ea2 = connect(d, "u", &a, None);
    assert_eq!(
        ea2.interface, "eth1",
        "a second network gives eth1: {ea2:?}"
    );
    // The default route stays on the first network.
    assert_eq!(
        ns_default_route(&a),
        Some((BRIDGE_GATEWAY.into(), "eth0".into()))
    );
    ns_ping_until(&a, &eb.ip());
    let gw_u = ipam_config(&inspect(d, "u")).1;
    let gateways: Vec<String> = inspect_ports(&inspect(d, "u"))
        .into_iter()
        .chain(["vswitch0".to_string()])
        .filter(|p| !p.starts_with("vse"))
        .collect();
    assert_eq!(gateways.len(), 2, "{gateways:?}");
    let macs: Vec<String> = gateways.iter().map(|g| lab.sw.mac(g)).collect();
    let before = snapshot(&lab);

    let status = lab.d_mut().terminate(WAIT).expect("stops on SIGTERM");
    assert!(status.success(), "{status}\n{}", lab.d().log_text());
    for g in &gateways {
        assert!(
            !lab.sw.has_link(g),
            "the gateway TAP {g} stays after SIGTERM"
        );
    }
    // The sandboxes stay: they are the user's.
    for s in [&a, &b, &c] {
        assert!(ns_has_link(s, "eth0"));
    }

    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    assert_eq!(snapshot(&lab), before, "the state after restart");
    for (g, mac) in gateways.iter().zip(&macs) {
        assert!(lab.sw.has_link(g), "the gateway TAP {g} is not back");
        assert_eq!(&lab.sw.mac(g), mac, "{g} keeps its MAC");
    }
    assert_eq!(
        ns_ipv4_addrs(&lab.sw.name, "vswitch0"),
        [format!("{BRIDGE_GATEWAY}/16")]
    );
    for ep in [&ea, &eb, &ec, &ea2] {
        assert_plumbed(ep);
    }
    std::thread::scope(|s| {
        s.spawn(|| ns_ping_until(&a, &eb.ip()));
        s.spawn(|| ns_ping_until(&b, BRIDGE_GATEWAY));
        s.spawn(|| ns_ping_until(&c, &ea2.ip()));
        s.spawn(|| ns_ping_until(&c, &gw_u));
        s.spawn(|| lab.sw.ping_until(&ec.ip()));
        s.spawn(|| lab.sw.ping_until(&ea.ip()));
    });
}

/// `network rm` goes on past a failure and reports every problem, as `sandbox rm` does: with
/// the network's pool lost from IPAM (a hand-edited state), the gateway TAP and the bridge
/// still go, the network is gone from the list and the saved state, and the answer says what
/// failed.
#[test]
fn network_rm_goes_on_past_a_failure_and_reports_it() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.d()
        .ctl_ok(&["network", "create", "u", "--subnet", "10.71.0.0/24"]);
    let ports = inspect_ports(&inspect(lab.d(), "u"));
    assert_eq!(ports.len(), 1, "the gateway TAP: {ports:?}");
    let status = lab.d_mut().terminate(WAIT).expect("stops on SIGTERM");
    assert!(status.success(), "{status}");

    // Point the network at a pool IPAM does not have.
    let state_dir = lab.d().state_dir.clone();
    {
        let mut store = Store::open(&state_dir).unwrap();
        let nets: Vec<(String, Value)> = store.load(Table::Networks).unwrap();
        let mut u = nets.into_iter().find(|(k, _)| k == "u").unwrap().1;
        u["ipam"]["pool"] = json!("10.99.0.0/24");
        store.write(|tx| tx.put(Table::Networks, "u", &u)).unwrap();
    }
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    assert!(lab.sw.has_link(&ports[0]), "the gateway TAP is back");

    let err = lab.d().ctl_err(&["network", "rm", "u"]);
    assert!(
        err.contains("network u removed, with problems")
            && err.contains("releasing the pool")
            && err.contains("10.99.0.0/24"),
        "{err}"
    );
    assert!(!lab.sw.has_link(&ports[0]), "the gateway TAP stays");
    let names: Vec<String> = lab
        .d()
        .ctl_json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!names.contains(&"u".to_string()), "{names:?}");
    // The store no longer has it either.
    let status = lab.d_mut().terminate(WAIT).expect("stops on SIGTERM");
    assert!(status.success(), "{status}");
    let mut store = Store::open(&state_dir).unwrap();
    let saved: Vec<(String, Value)> = store.load(Table::Networks).unwrap();
    assert!(!saved.iter().any(|(k, _)| k == "u"), "{saved:?}");
}

/// (8) With the daemon stopped, a sandbox's namespace is deleted and another sandbox's host
/// veth too: on restart the daemon says what it repaired, the first sandbox is gone and its
/// address free again, the second one's endpoint is re-made and works.
#[test]
fn restart_reconciles_deleted_namespaces_and_veths() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let x = lab.sandbox("x");
    let y = lab.sandbox("y");
    let z = lab.sandbox("z");
    let d = lab.d();
    let ex = connect(d, "bridge", &x, None);
    let ey = connect(d, "bridge", &y, None);
    let ez = connect(d, "bridge", &z, None);
    ns_ping_until(&y, &ez.ip());
    let y_veth = host_end_of(&lab, &y, "eth0");
    let x_veth = host_end_of(&lab, &x, "eth0");

    let status = lab.d_mut().terminate(WAIT).expect("stops on SIGTERM");
    assert!(status.success());
    ip(&["netns", "del", &x]);
    ip(&["-n", &lab.sw.name, "link", "del", &y_veth]);
    assert!(!ns_has_link(&y, "eth0"), "the pair goes together");

    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    let log = lab.d().log_text();
    let repairs: Vec<&str> = log.lines().filter(|l| l.contains("repaired")).collect();
    assert!(
        repairs
            .iter()
            .any(|l| l.contains(&x) && l.contains("namespace")),
        "no repair reported for the deleted namespace of {x}:\n{log}"
    );
    assert!(
        repairs.iter().any(|l| l.contains(&y) && l.contains("veth")),
        "no repair reported for the deleted veth of {y}:\n{log}"
    );
    assert!(
        !repairs.iter().any(|l| l.contains(&z)),
        "{z} was untouched:\n{log}"
    );

    let d = lab.d();
    assert!(
        sandbox_ls(d).iter().all(|s| s["name"] != x.as_str()),
        "{x} must be gone from sandbox ls"
    );
    let listed = containers(&inspect(d, "bridge"));
    assert!(!listed.contains_key(&x), "{listed:?}");
    assert_eq!(
        listed.get(&y),
        Some(&(ey.mac.clone(), ey.ipv4.clone())),
        "{listed:?}"
    );
    assert!(!lab.sw.has_link(&x_veth), "{x}'s veth stays");
    assert_consistent(&lab);

    // y is whole again: address, MAC, default route, traffic.
    assert_plumbed(&ey);
    assert_eq!(
        ns_default_route(&y),
        Some((BRIDGE_GATEWAY.into(), "eth0".into()))
    );
    std::thread::scope(|s| {
        s.spawn(|| ns_ping_until(&y, &ez.ip()));
        s.spawn(|| ns_ping_until(&z, &ey.ip()));
        s.spawn(|| ns_ping_until(&y, BRIDGE_GATEWAY));
        s.spawn(|| lab.sw.ping_until(&ey.ip()));
    });

    // x's address was released: a new sandbox can have it.
    let w = lab.sandbox("w");
    let ew = connect(lab.d(), "bridge", &w, Some(&ex.ip()));
    assert_eq!(ew.ipv4, ex.ipv4);
    ns_ping_until(&w, &ez.ip());
}

/// (9) Bad requests: each gets a clear error and changes nothing (networks, sandboxes,
/// endpoints, interfaces, names under /run/netns).
#[test]
fn bad_cnm_requests_are_refused_and_change_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    lab.d()
        .ctl_ok(&["network", "create", "a", "--subnet", "10.70.0.0/24"]);
    let s1 = lab.sandbox("s1");
    let s2 = lab.sandbox("s2");
    let e1 = connect(lab.d(), "a", &s1, None);
    let ghost = lab.name("ghost");
    let before = snapshot(&lab);
    let d = lab.d();

    // Two the CLI catches itself (a usage error, exit 2, as for any bad argument)…
    for (subnet, message) in [
        ("10.0.0.0/33", "prefix length 33 is too long"),
        ("300.1.1.0/24", "not a CIDR prefix"),
    ] {
        let out = d.ctl(&["network", "create", "n1", "--subnet", subnet]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--subnet {subnet}: {err}");
        assert!(err.contains(message), "--subnet {subnet}: {err}");
        assert_eq!(
            snapshot(&lab),
            before,
            "--subnet {subnet} changed something"
        );
        // …and the daemon refuses them as well when they reach it unchecked.
        let line = format!(
            "{}\n",
            json!({"cmd": "network_create", "name": "n1", "subnet": subnet})
        );
        let answer = raw_request(&d.connect(), line.as_bytes());
        assert_eq!(answer["ok"], false, "{answer}");
        let error = answer["error"].as_str().unwrap_or("");
        assert!(
            error.contains("invalid subnet") && error.contains(subnet),
            "{answer}"
        );
        assert_eq!(
            snapshot(&lab),
            before,
            "raw --subnet {subnet} changed something"
        );
    }

    let taken = e1.ip();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["network", "create", "n1", "--subnet", "10.64.0.1/24"],
            "host bits are set; did you mean 10.64.0.0/24".into(),
        ),
        (
            vec![
                "network",
                "create",
                "n1",
                "--subnet",
                "10.71.0.0/24",
                "--gateway",
                "10.72.0.1",
            ],
            "gateway 10.72.0.1 is outside the subnet 10.71.0.0/24".into(),
        ),
        (
            vec![
                "network",
                "create",
                "n1",
                "--subnet",
                "10.71.0.0/24",
                "--ip-range",
                "10.72.0.0/25",
            ],
            "ip range 10.72.0.0/25 is not inside the subnet 10.71.0.0/24".into(),
        ),
        (
            vec!["network", "create", "n1", "--subnet", "10.70.0.128/25"],
            "overlapping subnets: 10.70.0.128/25 overlaps the existing pool 10.70.0.0/24".into(),
        ),
        (
            vec!["network", "create", "n1", "--subnet", "10.0.0.0/8"],
            "overlapping subnets".into(),
        ),
        (
            vec!["network", "create", "a", "--subnet", "10.74.0.0/24"],
            "network a already exists".into(),
        ),
        (
            vec!["network", "connect", "a", &s2, "--ip", &taken],
            format!("address {taken} is already allocated"),
        ),
        (
            vec!["network", "connect", "a", &s2, "--ip", "10.99.0.5"],
            "address 10.99.0.5 is outside the subnet 10.70.0.0/24".into(),
        ),
        (
            vec!["network", "connect", "a", &s2, "--ip", "10.70.0.1"],
            "it is the gateway".into(),
        ),
        (
            vec!["network", "connect", "a", &ghost],
            format!("no such sandbox: {ghost}"),
        ),
        (
            vec!["network", "connect", "nosuchnet", &s2],
            "no such network: nosuchnet".into(),
        ),
        (
            vec!["network", "connect", "a", &s1],
            format!("sandbox {s1} is already connected to a"),
        ),
        (
            vec!["network", "disconnect", "a", &s2],
            format!("sandbox {s2} is not connected to a"),
        ),
        (
            vec!["network", "rm", "a"],
            "network a has active endpoints".into(),
        ),
        (vec!["network", "rm", "bridge"], "default network".into()),
        (
            vec!["sandbox", "create", &s1],
            format!("sandbox {s1} already exists"),
        ),
        (
            vec!["sandbox", "rm", &ghost],
            format!("no such sandbox: {ghost}"),
        ),
        (
            vec![
                "network",
                "create",
                "mv",
                "--driver",
                "macvlan",
                "--subnet",
                "10.73.0.0/24",
            ],
            "the macvlan driver needs --parent".into(),
        ),
        (
            vec![
                "network",
                "create",
                "mv",
                "--driver",
                "macvlan",
                "--parent",
                "nosuchif0",
                "--subnet",
                "10.73.0.0/24",
            ],
            "no such interface: nosuchif0".into(),
        ),
        (
            vec!["network", "create", "n1", "--driver", "none"],
            "only one network of driver none".into(),
        ),
    ];
    for (args, message) in &cases {
        refused(d, args, message);
        assert_eq!(
            snapshot(&lab),
            before,
            "vswitchctl {args:?} changed something"
        );
    }
    // A namespace of that name that is not a sandbox is not taken over silently.
    let squatter = lab.netns("sq");
    refused(d, &["sandbox", "create", &squatter.name], "already exists");
    assert_eq!(ns_link_names(&squatter.name), ["lo"]);
    drop(squatter);
    assert_eq!(snapshot(&lab), before);
    assert!(lab.d_mut().is_running());

    // An exhausted pool: a /29 has .2 to .6 for sandboxes (.0 network, .1 gateway, .7
    // broadcast); the sixth connect is refused.
    lab.d()
        .ctl_ok(&["network", "create", "ex", "--subnet", "10.65.0.0/29"]);
    let names: Vec<String> = (0..6).map(|i| lab.sandbox(&format!("e{i}"))).collect();
    let mut got = BTreeSet::new();
    for s in &names[..5] {
        got.insert(connect(lab.d(), "ex", s, None).ip());
    }
    let want: BTreeSet<String> = (2..=6).map(|i| format!("10.65.0.{i}")).collect();
    assert_eq!(got, want);
    let before = snapshot(&lab);
    refused(
        lab.d(),
        &["network", "connect", "ex", &names[5]],
        "no free address left in 10.65.0.0/29",
    );
    assert_eq!(
        snapshot(&lab),
        before,
        "the refused connect changed something"
    );
    assert_eq!(ns_link_names(&names[5]), ["lo"]);
    // Freeing one makes room again, for exactly that address.
    lab.d().ctl_ok(&["network", "disconnect", "ex", &names[2]]);
    let ep = connect(lab.d(), "ex", &names[5], None);
    assert_eq!(ep.ip(), "10.65.0.4");
    assert!(lab.d_mut().is_running());
}

/// (10) `sandbox create --netns PATH` adopts an existing namespace (a process's, or another
/// name's): `ip netns exec NAME` enters that very namespace, endpoints go into it, and removing
/// the sandbox leaves the namespace (and what the user put in it) alone.
#[test]
fn sandbox_adopts_an_existing_namespace() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let ext = lab.netns("ext");
    ip(&[
        "-n", &ext.name, "link", "add", "ve0", "type", "veth", "peer", "name", "ve1",
    ]);
    let sleeper = Command::new("ip")
        .args(["netns", "exec", &ext.name, "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep in the namespace");
    let pid = sleeper.id();
    let _sleeper = Children(vec![sleeper]);
    let proc_ns = format!("/proc/{pid}/ns/net");
    // `ip netns exec` enters the namespace, then execs sleep: wait until it is in.
    wait_for("the sleeper to enter its namespace", WAIT, || {
        (std::fs::metadata(&proc_ns).is_ok()
            && netns_identity(&proc_ns) == netns_identity(ext.path()))
        .then_some(())
    });

    let ad = lab.guard_sandbox("ad");
    lab.d()
        .ctl_ok(&["sandbox", "create", &ad, "--netns", &proc_ns]);
    assert_eq!(
        netns_identity(format!("/run/netns/{ad}")),
        netns_identity(ext.path())
    );
    let out = ns_exec(&ad, &["ip", "-br", "link"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ve0") && text.contains("ve1"),
        "{text}"
    );

    // Another name for it, adopted by its /run/netns path.
    let ad2 = lab.guard_sandbox("ad2");
    let ext_path = ext.path().display().to_string();
    lab.d()
        .ctl_ok(&["sandbox", "create", &ad2, "--netns", &ext_path]);
    assert_eq!(
        netns_identity(format!("/run/netns/{ad2}")),
        netns_identity(ext.path())
    );
    let listed: Vec<Value> = sandbox_ls(lab.d());
    for name in [&ad, &ad2] {
        assert!(
            listed.iter().any(|s| s["name"] == name.as_str()),
            "{name} not in {listed:?}"
        );
    }

    // An endpoint of the adopted sandbox lands in the adopted namespace and works.
    let ep = connect(lab.d(), "bridge", &ad, None);
    assert_plumbed(&ep);
    assert!(ext.has_link("eth0"));
    ext.ping_until(BRIDGE_GATEWAY);

    // Not a network namespace: refused, nothing changes.
    let before = snapshot(&lab);
    for bad in ["/proc/self/ns/uts", "/etc/hostname", "/nonexistent/ns"] {
        let name = lab.guard_sandbox("bad");
        let err = lab
            .d()
            .ctl_err(&["sandbox", "create", &name, "--netns", bad]);
        assert!(err.contains(bad), "{err}");
        assert_eq!(snapshot(&lab), before, "--netns {bad} changed something");
    }

    // Removing it takes its endpoint away and leaves the namespace and its interfaces.
    lab.d().ctl_ok(&["sandbox", "rm", &ad]);
    assert!(!ext.has_link("eth0"), "the endpoint goes with the sandbox");
    assert!(ext.has_link("ve0") && ext.has_link("ve1"));
    assert!(ext.path().exists());
    assert!(sandbox_ls(lab.d()).iter().all(|s| s["name"] != ad.as_str()));
}

/// (10b) Removing a sandbox adopted with `--netns PATH` removes the name the daemon bound
/// (`/run/netns/NAME`), as `sandbox rm` of any sandbox does, and keeps the namespace itself;
/// the name can then be used again.
#[test]
fn removing_an_adopted_sandbox_removes_the_name_it_bound() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let ext = lab.netns("ext");
    ip(&[
        "-n", &ext.name, "link", "add", "ve0", "type", "veth", "peer", "name", "ve1",
    ]);
    let ad = lab.guard_sandbox("ad");
    let ext_path = ext.path().display().to_string();
    lab.d()
        .ctl_ok(&["sandbox", "create", &ad, "--netns", &ext_path]);
    assert!(ns_has_link(&ad, "ve0"));
    lab.d().ctl_ok(&["sandbox", "rm", &ad]);
    assert!(ext.has_link("ve0"), "the adopted namespace is the user's");
    assert!(
        !std::path::Path::new(&format!("/run/netns/{ad}")).exists(),
        "sandbox rm left the bind mount /run/netns/{ad} it made"
    );
    // So the name is free for a new sandbox.
    lab.d().ctl_ok(&["sandbox", "create", &ad]);
    assert_eq!(ns_link_names(&ad), ["lo"]);
}
