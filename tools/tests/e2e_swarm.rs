//! Swarm-scope networks end to end (root, namespaces): etcd in its own namespace on the
//! underlay, three `vswitchd --cluster` hosts. One network made on one host appears on the
//! others; sandboxes on all three ping; 2×15 concurrent connects on two hosts get 30 distinct
//! addresses; remote stations are in `fdb show` before the first packet; ARP for a remote
//! address is answered by the local switch (counter and trace); etcd killed and restarted loses
//! nothing and the datapath works throughout; a host killed with -9 disappears from the others
//! within the lease TTL, and, restarted, reconciles its endpoint; `network rm` is refused while
//! endpoints exist and leaves no key behind.

mod common;
#[path = "common/overlay.rs"]
mod overlay;

use common::etcd::{etcd_or_skip, EtcdLab};
use common::{ip, wait_for, Netns};
use overlay::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long a change may take to reach every host (well under it in practice: one watch event).
const SPREAD: Duration = Duration::from_secs(10);
/// The lease TTL (the daemon's default) and the slack a dead host gets on top of it.
const TTL_AND_SLACK: Duration = Duration::from_secs(5 + 6);
/// The last octet of etcd's address on the underlay.
const ETCD: u8 = 98;

/// etcd on the underlay: a namespace with a veth into the underlay bridge.
fn etcd_on_underlay(w: &World) -> EtcdLab {
    let under = w.under.name.clone();
    let addr = w.underlay_ip(ETCD);
    EtcdLab::start_on(|ns: &Netns| {
        ip(&[
            "-n", &under, "link", "add", "ue", "type", "veth", "peer", "name", "ul0", "netns",
            &ns.name,
        ]);
        ip(&["-n", &under, "link", "set", "ue", "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "ul0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "ul0", "up"]);
        Some(addr)
    })
}

/// Every key under the prefix, with its value as text.
fn keys(lab: &EtcdLab) -> Vec<(String, String)> {
    lab.keys("/vswitch/")
}

fn count(keys: &[(String, String)], prefix: &str) -> usize {
    keys.iter().filter(|(k, _)| k.starts_with(prefix)).count()
}

/// Host i's view of network `net` (`network inspect`).
fn inspect(w: &World, i: u8, net: &str) -> Value {
    w.h(i).d().ctl_json(&["network", "inspect", net])[0].clone()
}

/// The `fdb show` row of `mac` on host i, if any.
fn fdb_row(w: &World, i: u8, mac: &str) -> Option<Value> {
    w.h(i)
        .d()
        .fdb()
        .into_iter()
        .find(|r| r["mac"].as_str() == Some(mac))
}

fn nodes(w: &World, i: u8) -> Vec<String> {
    let s = w.h(i).d().ctl_json(&["cluster", "status"]);
    s["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn swarm_networks_across_three_hosts() {
    if !etcd_or_skip() {
        return;
    }
    let mut w = World::with_hosts(&[false, false, false]);
    let mut lab = etcd_on_underlay(&w);
    let cluster = format!("etcd://{}:2379", w.underlay_ip(ETCD));
    for i in 1..=3u8 {
        let node = format!("h{i}");
        w.start_daemon(i, &["--cluster", &cluster, "--node", &node]);
    }
    // Refusals that need no cluster state.
    let e = w.h(1).d().ctl_err(&[
        "network", "create", "x", "--driver", "bridge", "--scope", "swarm",
    ]);
    assert!(e.contains("overlay"), "{e}");

    // (1) One create on h1; every host has the network within a second or so.
    let subnet = w.subnet(1);
    let made = w.h(1).d().ctl_json(&[
        "network", "create", "sw", "--driver", "overlay", "--scope", "swarm", "--subnet", &subnet,
    ]);
    let vni = made["vni"].as_u64().expect("the chosen VNI");
    for i in 2..=3u8 {
        wait_for(&format!("sw on h{i}"), SPREAD, || {
            let ls = w.h(i).d().ctl_json(&["network", "ls"]);
            ls.as_array()?
                .iter()
                .any(|n| n["name"] == "sw" && n["scope"] == "swarm")
                .then_some(())
        });
        assert_eq!(
            inspect(&w, i, "sw")["Options"]["vxlan.vni"],
            vni.to_string()
        );
    }
    // The VNI is the cluster's: another network cannot take it.
    let vni_text = vni.to_string();
    let e = w.h(2).d().ctl_err(&[
        "network",
        "create",
        "sw2",
        "--driver",
        "overlay",
        "--scope",
        "swarm",
        "--subnet",
        &w.subnet(2),
        "--vni",
        &vni_text,
    ]);
    assert!(e.contains("already used"), "{e}");

    // (2) A sandbox on each host; the remote stations are programmed before any packet.
    w.sandbox(1, "sw", "a");
    w.sandbox(2, "sw", "b");
    w.sandbox(3, "sw", "c");
    let (a, b, c) = (w.sb("a"), w.sb("b"), w.sb("c"));
    let ips: BTreeSet<&str> = [&a.ip, &b.ip, &c.ip]
        .into_iter()
        .map(String::as_str)
        .collect();
    assert_eq!(ips.len(), 3, "three distinct addresses");
    for (mac, host) in [(&b.mac, 2u8), (&c.mac, 3u8)] {
        let row = wait_for(&format!("{mac} in h1's fdb"), SPREAD, || {
            fdb_row(&w, 1, mac)
        });
        assert_eq!(row["static"], true, "{row}");
        assert_eq!(row["remote"], w.underlay_ip(host), "{row}");
    }
    let stats = |i: u8, port: &str| -> u64 {
        w.h(i)
            .d()
            .stats()
            .iter()
            .find(|r| r["port"] == port)
            .map(|r| common::counter(r, "rx_packets"))
            .unwrap_or(0)
    };
    assert_eq!(
        stats(1, &format!("vxlan{vni}")),
        0,
        "nothing came over the overlay yet"
    );

    // (3) ARP for a remote address is answered by h1's switch: a trace shows the stage.
    let req = arp_request([0xff; 6], mac_bytes(&a.mac), &a.ip, &b.ip);
    let hex: String = req.iter().map(|x| format!("{x:02x}")).collect();
    let t = w
        .h(1)
        .d()
        .ctl_ok(&["trace", "--in-port", &a.port, "--frame", &hex]);
    assert!(t.contains("arp") && t.contains("suppressed"), "{t}");
    assert!(t.contains(&a.port), "answered on the ingress port: {t}");

    // (4) Every sandbox reaches every other.
    pings_succeed(&[
        (&a.ns, &b.ip),
        (&a.ns, &c.ip),
        (&b.ns, &c.ip),
        (&c.ns, &a.ip),
    ]);
    let suppressed = inspect(&w, 1, "sw")["Cluster"]["arp_suppressed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        suppressed >= 1,
        "h1 answered ARP for remote stations itself"
    );

    // (5) 2×15 concurrent connects on h2 and h3: 30 distinct addresses.
    let guards: Vec<Netns> = (0..30)
        .map(|n| Netns {
            name: format!("{}-p{n}", w.prefix),
        })
        .collect();
    let got: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [2u8, 3u8]
            .into_iter()
            .map(|host| {
                let (w, guards) = (&w, &guards);
                s.spawn(move || {
                    let d = w.h(host).d();
                    let mut ips = Vec::new();
                    for g in guards.iter().skip(usize::from(host - 2) * 15).take(15) {
                        d.ctl_ok(&["sandbox", "create", &g.name]);
                        let ep = d.ctl_json(&["network", "connect", "sw", &g.name]);
                        ips.push(ep["ipv4"].as_str().unwrap_or_default().to_string());
                    }
                    ips
                })
            })
            .collect();
        runs.into_iter()
            .flat_map(|h| h.join().expect("connect thread"))
            .collect()
    });
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 30, "30 distinct addresses: {got:?}");
    assert!(!distinct
        .iter()
        .any(|ip| ip.starts_with(&format!("{}/", a.ip))));
    std::thread::scope(|s| {
        for host in [2u8, 3u8] {
            let (w, guards) = (&w, &guards);
            s.spawn(move || {
                let d = w.h(host).d();
                for g in guards.iter().skip(usize::from(host - 2) * 15).take(15) {
                    d.ctl_ok(&["sandbox", "rm", &g.name]);
                }
            });
        }
    });
    let k = keys(&lab);
    assert_eq!(count(&k, "/vswitch/endpoints/sw/"), 3, "{k:?}");
    assert_eq!(
        k.iter()
            .filter(|(key, _)| key.starts_with("/vswitch/pool/sw/") && !key.ends_with("/next"))
            .count(),
        3,
        "disconnects released their addresses: {k:?}"
    );
    drop(guards);

    // (6) etcd killed: forwarding goes on, changes needing the cluster fail clearly.
    let before = keys(&lab);
    lab.kill();
    pings_succeed(&[(&a.ns, &b.ip), (&c.ns, &a.ip)]);
    let e = w.h(1).d().ctl_err(&[
        "network",
        "create",
        "sw3",
        "--driver",
        "overlay",
        "--scope",
        "swarm",
        "--subnet",
        &w.subnet(3),
    ]);
    assert!(
        e.contains("unavailable") || e.contains("unreachable"),
        "{e}"
    );
    assert!(fdb_row(&w, 1, &b.mac).is_some(), "last known state kept");
    lab.restart();
    pings_succeed(&[(&a.ns, &b.ip), (&b.ns, &c.ip)]);
    let after = keys(&lab);
    let durable = |k: &[(String, String)]| -> Vec<(String, String)> {
        k.iter()
            .filter(|(key, _)| !key.starts_with("/vswitch/nodes/"))
            .cloned()
            .collect()
    };
    assert_eq!(
        durable(&after),
        durable(&before),
        "etcd kept every network, endpoint, address"
    );
    for i in 1..=3u8 {
        wait_for(&format!("h{i} to see the cluster again"), SPREAD, || {
            let s = w.h(i).d().ctl_json(&["cluster", "status"]);
            (s["synced"] == true && s["nodes"].as_array()?.len() == 3).then_some(())
        });
    }

    // (7) h3 killed with -9: gone from the others within the TTL, its station too.
    let c_mac = c.mac.clone();
    let c_ip = c.ip.clone();
    w.h_mut(3)
        .d_mut()
        .signal(libc::SIGKILL, Duration::from_secs(5));
    let dead_since = std::time::Instant::now();
    wait_for("h3 to vanish from h1", TTL_AND_SLACK, || {
        (!nodes(&w, 1).contains(&"h3".to_string()) && fdb_row(&w, 1, &c_mac).is_none())
            .then_some(())
    });
    assert!(dead_since.elapsed() <= TTL_AND_SLACK);
    wait_for("h3 out of h2's flood list", SPREAD, || {
        let p = inspect(&w, 2, "sw")["Cluster"]["peers"].clone();
        (!p.to_string().contains(&w.underlay_ip(3))).then_some(())
    });
    wait_for("no key of h3 left", SPREAD, || {
        let k = keys(&lab);
        let left = k.iter().any(|(key, v)| {
            key == "/vswitch/nodes/h3" || v.contains("\"node\":\"h3\"") || v.starts_with("h3/")
        });
        (!left).then_some(())
    });

    // (8) h3 restarted: it reconciles its endpoint (address claimed again, published).
    w.start_daemon(3, &["--cluster", &cluster, "--node", "h3"]);
    wait_for("c back in h1's fdb", SPREAD, || fdb_row(&w, 1, &c_mac));
    pings_succeed(&[(&w.sb("a").ns, &c_ip)]);

    // (9) rm refused while endpoints exist anywhere; then everywhere, with no key left.
    let e = w.h(1).d().ctl_err(&["network", "rm", "sw"]);
    assert!(e.contains("endpoint"), "{e}");
    for (i, sb) in [(1u8, "a"), (2, "b"), (3, "c")] {
        let name = format!("{}-{sb}", w.prefix);
        w.h(i).d().ctl_ok(&["network", "disconnect", "sw", &name]);
    }
    w.h(2).d().ctl_ok(&["network", "rm", "sw"]);
    for i in [1u8, 3] {
        wait_for(&format!("sw gone from h{i}"), SPREAD, || {
            let ls = w.h(i).d().ctl_json(&["network", "ls"]);
            (!ls.as_array()?.iter().any(|n| n["name"] == "sw")).then_some(())
        });
    }
    let k = keys(&lab);
    let orphans: Vec<&(String, String)> = k
        .iter()
        .filter(|(key, _)| !key.starts_with("/vswitch/nodes/"))
        .collect();
    assert!(orphans.is_empty(), "orphan keys: {orphans:?}");
}

#[test]
fn swarm_scope_without_a_cluster_is_refused() {
    if !common::root_or_skip() {
        return;
    }
    let w = World::new(1);
    let e = w.h(1).d().ctl_err(&[
        "network",
        "create",
        "sw",
        "--driver",
        "overlay",
        "--scope",
        "swarm",
        "--subnet",
        &w.subnet(1),
    ]);
    assert!(e.contains("--cluster"), "{e}");
}

#[test]
fn a_cluster_needs_a_concrete_vtep_address() {
    let out = std::process::Command::new(common::VSWITCHD)
        .args(["--cluster", "etcd://127.0.0.1:9", "--vtep", "0.0.0.0"])
        .output()
        .expect("run vswitchd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("concrete --vtep"), "{err}");
}

// The same tests with the VTEP on its UDP socket backend (the tests above run the default,
// `auto`: the TAP where the kernel has UDP-tunnel GSO), so one `cargo test` covers both.

#[test]
fn swarm_networks_across_three_hosts_on_the_socket_vtep() {
    on_backend("socket", swarm_networks_across_three_hosts);
}
