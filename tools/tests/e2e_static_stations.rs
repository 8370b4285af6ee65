//! Real end-to-end tests of the stations the control plane knows (issue 12, item 6), as root:
//! every endpoint's MAC and every gateway TAP's MAC is a static entry on its own port (made at
//! connect, made again after a restart, gone with the port), and a frame claiming such a MAC
//! from elsewhere (a host on another port, a spoofed VXLAN datagram from a peer's address) is
//! dropped as `mac_move_refused` while the station keeps talking.
//!
//! Each test makes its own namespaces (see `common` and `common/overlay.rs`), removed by guards
//! even when it fails. Without root each test prints `skipped: needs root` (and fails under
//! `CI=true`).

mod common;
#[path = "common/overlay.rs"]
mod overlay;

use common::{ip, root_or_skip, wait_for, Daemon, Lab, WAIT};
use serde_json::Value;

/// The `fdb show` row of `mac` in `network`, if any.
fn fdb_row(d: &Daemon, network: &str, mac: &str) -> Option<Value> {
    d.fdb()
        .into_iter()
        .find(|e| e["network"] == network && e["mac"].as_str() == Some(mac))
}

/// Asserts that `mac` is a static entry on `port` in `network`, VLAN 1.
fn assert_static_on(d: &Daemon, network: &str, mac: &str, port: &str) {
    let e = fdb_row(d, network, mac)
        .unwrap_or_else(|| panic!("{mac} not in the MAC table of {network}: {:?}", d.fdb()));
    assert_eq!(e["port"], port, "{e}");
    assert_eq!(e["static"], true, "{e}");
    assert_eq!(e["vlan"], 1, "{e}");
}

/// (1) On the default bridge network: the sandbox's MAC is static on its veth port and the
/// gateway TAP's MAC static on `vswitch0`; a host on another port that takes the sandbox's MAC
/// cannot move it (its frames are counted as `mac_move_refused` on its port) and the sandbox
/// still reaches its gateway; after a restart both entries are static again; after `network
/// disconnect` the sandbox's entry is gone.
#[test]
fn known_stations_are_static_on_their_ports_and_go_with_them() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let sb = lab.sandbox("s1");
    let ep = lab.d().ctl_json(&["network", "connect", "bridge", &sb]);
    let mac = ep["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("no mac in {ep}"))
        .to_ascii_lowercase();
    let gateway = "172.17.0.1";
    common::ns_ping_until(&sb, gateway);
    let port = lab
        .d()
        .ports()
        .into_iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .find(|n| n.starts_with("vse"))
        .expect("the endpoint's port is listed");
    let gw_mac = lab.sw.mac("vswitch0");
    assert_static_on(lab.d(), "bridge", &mac, &port);
    assert_static_on(lab.d(), "bridge", &gw_mac, "vswitch0");
    // The table shows it too.
    let text = lab.d().ctl_ok(&["fdb", "show"]);
    assert!(text.contains(&mac), "{text}");

    // A host on port p1 takes the sandbox's MAC and broadcasts ARP requests with it.
    let h = lab.add_host(1, Some("bridge"));
    let host_ns = lab.hosts[h].ns.name.clone();
    ip(&["-n", &host_ns, "link", "set", "eth0", "address", &mac]);
    let stranger = lab.addr(9);
    let refused = wait_for("the spoofing host's frames to be refused", WAIT, || {
        let _ = common::ns_ping_once(&host_ns, &stranger);
        let n = lab.d().drops("p1", "mac_move_refused");
        (n > 0).then_some(n)
    });
    assert!(refused > 0);
    assert_static_on(lab.d(), "bridge", &mac, &port);
    assert!(
        common::ns_ping_once(&sb, gateway),
        "the sandbox lost its gateway"
    );

    // After a restart the entries are made again from the stored endpoint and gateway.
    drop(lab.daemon.take());
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    assert_static_on(lab.d(), "bridge", &mac, &port);
    assert_static_on(lab.d(), "bridge", &lab.sw.mac("vswitch0"), "vswitch0");
    common::ns_ping_until(&sb, gateway);

    // The entry goes with the port.
    lab.d().ctl_ok(&["network", "disconnect", "bridge", &sb]);
    assert!(
        fdb_row(lab.d(), "bridge", &mac).is_none(),
        "{mac} outlived its port: {:?}",
        lab.d().fdb()
    );
    assert!(lab.d_mut().is_running(), "vswitchd died");
}

/// (2) A spoofed VXLAN datagram from the peer's own address whose inner source MAC is host 1's
/// sandbox does not move that MAC to the VXLAN port: host 1 counts it as `mac_move_refused` on
/// the VXLAN port, its MAC table still has the sandbox static on its veth port, and the
/// sandbox keeps talking to its neighbour on host 2 both ways.
#[test]
fn a_spoofed_vxlan_datagram_cannot_hijack_a_local_mac() {
    if !root_or_skip() {
        return;
    }
    const VNI: u32 = 4600;
    let vxlan_port = format!("vxlan{VNI}");
    let mut w = overlay::World::new(2);
    w.overlay_everywhere("sp", VNI, 1);
    w.sandbox(1, "sp", "s1");
    w.sandbox(2, "sp", "s2");
    let (s1, s2) = (w.sb("s1"), w.sb("s2"));
    overlay::pings_succeed(&[(&s1.ns, s2.ip.as_str()), (&s2.ns, s1.ip.as_str())]);
    let h1 = w.h(1).d();
    assert_static_on(h1, "sp", &s1.mac, &s1.port);
    let before = h1.drops(&vxlan_port, "mac_move_refused");

    // From host 2's namespace and address, as host 2's VTEP would send: broadcast ARP and a
    // unicast frame to s2's MAC, both with s1's MAC as their source.
    let (h1_ip, h2_ip) = (w.underlay_ip(1), w.underlay_ip(2));
    let s1_mac = overlay::mac_bytes(&s1.mac);
    let s2_mac = overlay::mac_bytes(&s2.mac);
    let liar = w.addr(1, 250);
    let spoofed = vec![
        overlay::vxlan_datagram(
            0x08,
            VNI,
            &overlay::arp_request([0xff; 6], s1_mac, &liar, &s2.ip),
        ),
        overlay::vxlan_datagram(
            0x08,
            VNI,
            &overlay::arp_request(s2_mac, s1_mac, &liar, &s2.ip),
        ),
        overlay::vxlan_datagram(
            0x08,
            VNI,
            &overlay::arp_request([0xff; 6], s1_mac, &liar, &s1.ip),
        ),
    ];
    overlay::send_udp(&w.h(2).ns, &h2_ip, &h1_ip, &spoofed);
    let after = wait_for(
        "host 1 to count the spoofed datagrams",
        overlay::OWAIT,
        || {
            let n = h1.drops(&vxlan_port, "mac_move_refused");
            (n >= before + 3).then_some(n)
        },
    );
    assert_eq!(after - before, 3, "three spoofed datagrams");
    // Nothing moved: s1 is still static on its port, not behind the VXLAN port.
    assert_static_on(h1, "sp", &s1.mac, &s1.port);
    let rows: Vec<Value> = h1
        .fdb()
        .into_iter()
        .filter(|e| e["mac"] == s1.mac.as_str())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // And s1 keeps talking, both ways.
    assert!(overlay::ping1(&s1.ns, &s2.ip, &[]), "s1 lost s2");
    assert!(overlay::ping1(&s2.ns, &s1.ip, &[]), "s2 lost s1");
    assert!(w.h_mut(1).d_mut().is_running(), "vswitchd of host 1 died");
}
