//! Root end-to-end tests of the L3 edge (`tools::daemon::firewall`) against the real kernel, in
//! namespaces the test makes.
//!
//! A "host" namespace plays vswitchd's namespace (IPv4 forwarding turned on by the product's
//! `enable_ipv4_forwarding`, the firewall applied from a thread inside it). Stand-ins for the
//! switch's gateway ports: network A is a Linux bridge `bra` holding the gateway address with two
//! sandboxes on it (so that a second sandbox of the same network can try the hairpin), network B
//! a veth `gwb` whose host end holds the gateway, and the internal network C a veth `gwc`. An
//! uplink veth leads to an "outside" namespace running a TCP server that answers with the
//! address it sees. Every server answers one line: the peer address it saw.
//!
//! Addresses are 10.25x.<N>.0/24, inside the test's own namespaces only. The test shells out to
//! `ip` and to `nft` (only to read our table, inside the host namespace); the product does not.
//! Without root each test prints `skipped: needs root`; without nft, `skipped: needs nft`.

mod common;

use common::{ip, peer, root_or_skip, Netns};
use nftables::schema::{NfCmd, NfListObject, NfObject, Rule};
use nftables::stmt::{JumpTarget, Statement};
use nftables::types::NfFamily;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tools::daemon::firewall::{
    enable_ipv4_forwarding, Backend, Firewall, FirewallError, Model, NetworkEdge, NftBackend,
    PortRange,
};

/// How long a connection that must work may take.
const CONNECT: Duration = Duration::from_secs(5);
/// How long a connection that must fail (its SYN dropped) is given before we call it dropped.
const DROPPED: Duration = Duration::from_millis(1500);

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

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    tools::netns::in_netns(&ns.open(), f).expect("enter the test's namespace")
}

/// The peer server of the shared harness, in a namespace of this test's.
struct Server;

impl Server {
    fn start(ns: &Netns, addr: SocketAddr) -> peer::Server {
        peer::Server::start(&ns.path(), addr)
    }

    fn start_udp(ns: &Netns, addr: SocketAddr) -> peer::Server {
        peer::Server::start_udp(&ns.path(), addr)
    }
}

/// Sends datagrams from `ns` to `addr` until one is answered (a few tries within [`CONNECT`]).
fn fetch_udp(ns: &Netns, addr: SocketAddr) -> Result<String, String> {
    peer::fetch_udp(&ns.path(), addr, CONNECT)
}

/// Connects from `ns` to `addr` and returns the address the server saw, or the error.
fn fetch(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    peer::fetch(&ns.path(), addr, timeout, CONNECT)
}

fn must_fetch(ns: &Netns, addr: SocketAddr, what: &str) -> String {
    fetch(ns, addr, CONNECT).unwrap_or_else(|e| panic!("{what}: {addr} from {}: {e}", ns.name))
}

fn must_not_fetch(ns: &Netns, addr: SocketAddr, what: &str) {
    if let Ok(seen) = fetch(ns, addr, DROPPED) {
        panic!("{what}: {addr} answered {} (it saw {seen})", ns.name);
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The namespaces and addresses of one test.
struct Lab {
    n: u8,
    host: Netns,
    outside: Netns,
    s1: Netns,
    s2: Netns,
    s3: Netns,
    s4: Netns,
}

fn next_n() -> u8 {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) as u8
}

impl Lab {
    fn new() -> Lab {
        let n = next_n();
        let name = |s: &str| format!("vfw{}t{n}-{s}", std::process::id());
        let lab = Lab {
            n,
            host: Netns::new(name("host")),
            outside: Netns::new(name("out")),
            s1: Netns::new(name("s1")),
            s2: Netns::new(name("s2")),
            s3: Netns::new(name("s3")),
            s4: Netns::new(name("s4")),
        };
        let h = lab.host.name.as_str();
        ip(&["-n", h, "link", "set", "lo", "up"]);
        // Bridged frames must not go through the IP hooks: the bridge stands in for our switch.
        if lab
            .host
            .exec(&["test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables"])
            .status
            .success()
        {
            lab.host.sysctl("net.bridge.bridge-nf-call-iptables", "0");
        }
        // Uplink to the outside namespace.
        lab.veth("uplink", &lab.outside, "eth0");
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", lab.uplink_ip()),
            "dev",
            "uplink",
        ]);
        ip(&["-n", h, "link", "set", "uplink", "up"]);
        lab.addr_up(&lab.outside, &format!("{}/24", lab.outside_ip()), None);
        // Network A: a bridge holding the gateway, sandboxes 1 and 2.
        ip(&["-n", h, "link", "add", "bra", "type", "bridge"]);
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("{}/24", lab.gw(1)),
            "dev",
            "bra",
        ]);
        ip(&["-n", h, "link", "set", "bra", "up"]);
        for (i, sb) in [(2u8, &lab.s1), (3, &lab.s2)] {
            let port = format!("pa{i}");
            lab.veth(&port, sb, "eth0");
            ip(&["-n", h, "link", "set", &port, "master", "bra"]);
            ip(&["-n", h, "link", "set", &port, "up"]);
            lab.addr_up(sb, &format!("{}/24", lab.ip(1, i)), Some(lab.gw(1)));
        }
        // Network B and internal network C: one veth each, host end holding the gateway.
        for (net, gwif, sb) in [(2u8, "gwb", &lab.s3), (3, "gwc", &lab.s4)] {
            lab.veth(gwif, sb, "eth0");
            ip(&[
                "-n",
                h,
                "addr",
                "add",
                &format!("{}/24", lab.gw(net)),
                "dev",
                gwif,
            ]);
            ip(&["-n", h, "link", "set", gwif, "up"]);
            lab.addr_up(sb, &format!("{}/24", lab.ip(net, 2)), Some(lab.gw(net)));
        }
        lab
    }

    fn veth(&self, host_end: &str, other: &Netns, other_end: &str) {
        ip(&[
            "-n",
            &self.host.name,
            "link",
            "add",
            host_end,
            "type",
            "veth",
            "peer",
            "name",
            other_end,
            "netns",
            &other.name,
        ]);
    }

    fn addr_up(&self, ns: &Netns, cidr: &str, gw: Option<Ipv4Addr>) {
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.name, "addr", "add", cidr, "dev", "eth0"]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        if let Some(gw) = gw {
            ip(&[
                "-n",
                &ns.name,
                "route",
                "add",
                "default",
                "via",
                &gw.to_string(),
            ]);
        }
    }

    fn uplink_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.n, 1)
    }

    fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.n, 2)
    }

    /// Network `net` (1 = A, 2 = B, 3 = C internal): host `i`.
    fn ip(&self, net: u8, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250 + net, self.n, i)
    }

    fn gw(&self, net: u8) -> Ipv4Addr {
        self.ip(net, 1)
    }

    fn model(&self) -> Model {
        let mut m = Model::new();
        let subnet = |net: u8| format!("10.{}.{}.0/24", 250 + net, self.n).parse().unwrap();
        m.add_network(NetworkEdge::new("neta", subnet(1), "bra"))
            .unwrap();
        m.add_network(NetworkEdge::new("netb", subnet(2), "gwb"))
            .unwrap();
        let mut c = NetworkEdge::new("netc", subnet(3), "gwc");
        c.internal = true;
        m.add_network(c).unwrap();
        m
    }

    fn publish(
        &self,
        m: &mut Model,
        spec: &str,
        net: &str,
        sandbox: Ipv4Addr,
    ) -> Result<(), FirewallError> {
        let spec = tools::daemon::firewall::parse_publish(spec)?;
        let b = in_ns(&self.host, || spec.bind(m, net, sandbox))?;
        m.add_bindings(&[b])
    }

    /// A firewall running in the host namespace (as the daemon's would), with `model` applied.
    fn apply(&self, fw: &mut Firewall, model: &Model) {
        in_ns(&self.host, || fw.apply(model)).expect("apply the model");
    }

    fn firewall(&self) -> Firewall {
        in_ns(&self.host, || {
            let fw = Firewall::detect();
            assert!(
                fw.status().is_ok(),
                "nftables unavailable: {:?}",
                fw.status()
            );
            fw
        })
    }

    /// The rules of `table inet vswitch` in the host namespace, as (comment, JSON expr) pairs.
    fn programmed(&self) -> Vec<(String, String)> {
        let out = self
            .host
            .exec(&["nft", "-j", "list", "table", "inet", "vswitch"]);
        assert!(
            out.status.success(),
            "nft list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("rule"))
            .map(|r| {
                (
                    r["comment"].as_str().unwrap_or("").to_owned(),
                    r["expr"].to_string(),
                )
            })
            .collect()
    }
}

#[test]
fn masquerade_publish_hairpin_and_isolation_with_forwarding_on() {
    if !root_or_skip() || !nft_or_skip() {
        return;
    }
    let lab = Lab::new();
    let was_off = in_ns(&lab.host, enable_ipv4_forwarding).unwrap();
    assert!(was_off, "a new namespace starts with forwarding off");
    assert!(
        !in_ns(&lab.host, enable_ipv4_forwarding).unwrap(),
        "second call: already on"
    );
    let fwd = lab.host.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");

    let _outside = Server::start(&lab.outside, sa(lab.outside_ip(), 9000));
    let _web = Server::start(&lab.s1, sa(Ipv4Addr::UNSPECIFIED, 80));
    let _b = Server::start(&lab.s3, sa(Ipv4Addr::UNSPECIFIED, 80));
    let _gwc = Server::start(&lab.host, sa(lab.gw(3), 7000));
    let _dns = Server::start_udp(&lab.s1, sa(Ipv4Addr::UNSPECIFIED, 53));

    // Without our table, forwarding on means every network routes to every other: the isolation
    // checks below could fail.
    must_fetch(
        &lab.s1,
        sa(lab.ip(2, 2), 80),
        "before the firewall, A reaches B",
    );
    // The outside has no route back to the sandboxes' subnets: only masquerade makes it work.
    must_not_fetch(
        &lab.s1,
        sa(lab.outside_ip(), 9000),
        "before the firewall, A to outside",
    );

    let mut model = lab.model();
    lab.publish(&mut model, "8080:80", "neta", lab.ip(1, 2))
        .unwrap();
    lab.publish(
        &mut model,
        &format!("{}:9090:80/tcp", lab.uplink_ip()),
        "neta",
        lab.ip(1, 2),
    )
    .unwrap();
    lab.publish(&mut model, "5353:53/udp", "neta", lab.ip(1, 2))
        .unwrap();
    let mut fw = lab.firewall();
    lab.apply(&mut fw, &model);

    // Outbound: the outside server sees the host's uplink address.
    assert_eq!(
        must_fetch(&lab.s1, sa(lab.outside_ip(), 9000), "A to outside"),
        lab.uplink_ip().to_string()
    );
    assert_eq!(
        must_fetch(&lab.s3, sa(lab.outside_ip(), 9000), "B to outside"),
        lab.uplink_ip().to_string()
    );
    // Published port from outside: the sandbox sees the real client.
    assert_eq!(
        must_fetch(
            &lab.outside,
            sa(lab.uplink_ip(), 8080),
            "published, from outside"
        ),
        lab.outside_ip().to_string()
    );
    // From the host itself, to its own addresses.
    must_fetch(
        &lab.host,
        sa(lab.uplink_ip(), 8080),
        "published, from the host",
    );
    must_fetch(
        &lab.host,
        sa(lab.gw(2), 8080),
        "published, from the host to another of its addresses",
    );
    // Hairpin: a second sandbox of the same network, through the host's address.
    assert_eq!(
        must_fetch(
            &lab.s2,
            sa(lab.uplink_ip(), 8080),
            "hairpin from the same network"
        ),
        lab.gw(1).to_string(),
        "the hairpin is masqueraded so the reply comes back through the host"
    );
    // And a sandbox of another network, through the host's address.
    must_fetch(
        &lab.s3,
        sa(lab.uplink_ip(), 8080),
        "published, from network B",
    );
    // UDP too.
    let seen = fetch_udp(&lab.outside, sa(lab.uplink_ip(), 5353)).expect("published UDP port");
    assert_eq!(seen, lab.outside_ip().to_string());
    // host_ip restricts the binding to that address.
    must_fetch(
        &lab.outside,
        sa(lab.uplink_ip(), 9090),
        "published on the uplink address",
    );
    let other = fetch(&lab.host, sa(lab.gw(2), 9090), CONNECT);
    assert!(
        other.is_err(),
        "9090 is published on the uplink address only: {other:?}"
    );

    // Isolation with forwarding on.
    must_not_fetch(&lab.s1, sa(lab.ip(2, 2), 80), "A must not reach B");
    must_not_fetch(&lab.s3, sa(lab.ip(1, 2), 80), "B must not reach A");
    must_fetch(
        &lab.s2,
        sa(lab.ip(1, 2), 80),
        "inside one network traffic is switched",
    );
    // The internal network reaches its gateway, nothing outside, no other network.
    must_fetch(
        &lab.s4,
        sa(lab.gw(3), 7000),
        "internal network to its gateway",
    );
    must_not_fetch(
        &lab.s4,
        sa(lab.outside_ip(), 9000),
        "internal network to outside",
    );
    must_not_fetch(
        &lab.s4,
        sa(lab.ip(1, 2), 80),
        "internal network to network A",
    );
    must_not_fetch(
        &lab.s1,
        sa(lab.ip(3, 2), 80),
        "network A to the internal network",
    );

    // What `nat show` reports is what the kernel holds.
    let shown = fw.list();
    let rows: usize = shown.networks.iter().map(|n| n.rules.len()).sum();
    assert_eq!(rows, lab.programmed().len());
    let a = shown.networks.iter().find(|n| n.network == "neta").unwrap();
    assert_eq!(a.bindings.len(), 3);
    // Each rule's text, as `nat show` prints it, is how nft itself prints the programmed rule.
    let listed = lab.host.exec(&["nft", "list", "table", "inet", "vswitch"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    for row in shown.networks.iter().flat_map(|n| &n.rules) {
        assert!(
            listed.contains(&row.rule),
            "{:?} not in:\n{listed}",
            row.rule
        );
    }
}

#[test]
fn refused_bindings_change_nothing() {
    if !root_or_skip() || !nft_or_skip() {
        return;
    }
    let lab = Lab::new();
    let mut model = lab.model();
    lab.publish(&mut model, "8080:80", "neta", lab.ip(1, 2))
        .unwrap();
    let mut fw = lab.firewall();
    lab.apply(&mut fw, &model);
    let before = lab.programmed();

    // Published twice, by vswitch.
    let err = lab
        .publish(&mut model, "8080:80", "netb", lab.ip(2, 2))
        .unwrap_err();
    assert!(matches!(err, FirewallError::Conflict(_)), "{err}");
    assert!(
        err.to_string().contains("already published by vswitch"),
        "{err}"
    );
    // Held by a listening socket on the host.
    let _held = in_ns(&lab.host, || TcpListener::bind("0.0.0.0:7777")).unwrap();
    let err = lab
        .publish(&mut model, "7777:80", "netb", lab.ip(2, 2))
        .unwrap_err();
    assert!(
        err.to_string().contains("listening on 0.0.0.0:7777"),
        "{err}"
    );
    // A host range with one container port takes the first free host port.
    lab.publish(&mut model, "7777-7779:80", "netb", lab.ip(2, 2))
        .unwrap();
    assert_eq!(
        model.bindings.last().unwrap().host_ports,
        PortRange::single(7778).unwrap()
    );
    // A host address that is not the host's.
    let err = lab
        .publish(&mut model, "203.0.113.9:8081:80", "neta", lab.ip(1, 2))
        .unwrap_err();
    assert!(
        err.to_string().contains("not an address of this host"),
        "{err}"
    );
    // An internal network publishes nothing.
    let err = lab
        .publish(&mut model, "8082:80", "netc", lab.ip(3, 2))
        .unwrap_err();
    assert!(err.to_string().contains("internal"), "{err}");
    // Malformed specs never reach the model.
    for bad in [
        "0:80",
        "8080:70000",
        "80:80/sctp",
        "8000-8010:80-81",
        "192.0.2.1::80",
        "127.0.0.1:8083:80",
    ] {
        assert!(
            lab.publish(&mut model, bad, "neta", lab.ip(1, 2)).is_err(),
            "{bad}"
        );
    }
    assert_eq!(lab.programmed(), before, "nothing was applied");

    // A batch the kernel refuses (its last rule jumps to a chain that does not exist) is rolled
    // back whole: the `delete table` it starts with did not happen either.
    let mut batch = tools::daemon::firewall::Ruleset::build(&lab.model()).batch();
    let mut objs = batch.objects.into_owned();
    objs.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: "vswitch".into(),
        chain: "forward".into(),
        expr: vec![Statement::Jump(JumpTarget {
            target: "no-such-chain".into(),
        })]
        .into(),
        handle: None,
        index: None,
        comment: None,
    }))));
    batch.objects = objs.into();
    let refused = in_ns(&lab.host, || NftBackend::new().apply(&batch));
    assert!(
        matches!(refused, Err(FirewallError::Apply(_))),
        "{refused:?}"
    );
    assert_eq!(
        lab.programmed(),
        before,
        "the refused transaction changed nothing"
    );
}

#[test]
fn removal_and_rebuild_after_a_crash_leave_exactly_the_model() {
    if !root_or_skip() || !nft_or_skip() {
        return;
    }
    let lab = Lab::new();
    // A table of someone else's, which we must never touch.
    let foreign = lab.host.exec(&[
        "nft",
        "add table inet other ; add chain inet other c ; add rule inet other c counter",
    ]);
    assert!(
        foreign.status.success(),
        "{}",
        String::from_utf8_lossy(&foreign.stderr)
    );

    let mut model = lab.model();
    lab.publish(&mut model, "8080:80", "neta", lab.ip(1, 2))
        .unwrap();
    lab.publish(&mut model, "8081:80/udp", "netb", lab.ip(2, 2))
        .unwrap();
    {
        // The run that crashes: it also had a binding the stored state never saw.
        let mut crashed = model.clone();
        lab.publish(&mut crashed, "6000:60", "neta", lab.ip(1, 3))
            .unwrap();
        let mut fw = lab.firewall();
        lab.apply(&mut fw, &crashed);
        assert!(lab.programmed().iter().any(|(c, _)| c.contains("6000")));
        // `kill -9`: the Firewall is gone without any teardown.
    }
    let mut fw = lab.firewall();
    lab.apply(&mut fw, &model);
    let rules = lab.programmed();
    assert!(
        !rules.iter().any(|(c, _)| c.contains("6000")),
        "stale rule of the crashed run"
    );
    assert_eq!(
        rules.len(),
        tools::daemon::firewall::Ruleset::build(&model).rows().len()
    );
    let mut unique = rules.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), rules.len(), "no rule twice");
    // Applying the same model again is a no-op on the table's content.
    lab.apply(&mut fw, &model);
    assert_eq!(lab.programmed(), rules);

    // network rm: no rule of it stays, the others do.
    assert!(model.remove_network("netb"));
    lab.apply(&mut fw, &model);
    let rules = lab.programmed();
    assert!(
        !rules
            .iter()
            .any(|(c, e)| c.contains("net=netb") || e.contains("gwb")),
        "{rules:?}"
    );
    assert!(rules.iter().any(|(c, _)| c.contains("net=neta")));
    // disconnect: the endpoint's bindings go.
    assert_eq!(model.remove_bindings("neta", lab.ip(1, 2)), 1);
    lab.apply(&mut fw, &model);
    assert!(!lab.programmed().iter().any(|(c, _)| c.contains("publish=")));

    let read = in_ns(&lab.host, || NftBackend::new().read_table())
        .unwrap()
        .unwrap();
    let n = read["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("rule").is_some())
        .count();
    assert_eq!(n, lab.programmed().len());

    in_ns(&lab.host, || fw.teardown()).unwrap();
    assert_eq!(
        in_ns(&lab.host, || NftBackend::new().read_table()).unwrap(),
        None
    );
    let gone = lab.host.exec(&["nft", "list", "table", "inet", "vswitch"]);
    assert!(!gone.status.success(), "our table is gone after teardown");
    let other = lab.host.exec(&["nft", "list", "table", "inet", "other"]);
    assert!(other.status.success(), "the foreign table survives");
    assert!(String::from_utf8_lossy(&other.stdout).contains("counter"));
}
