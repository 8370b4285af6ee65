//! Virtual hosts without root: smoltcp interfaces on in-memory ports of the switch doing ARP,
//! ping and TCP, with the MAC table, flooding, aging, station moves, static entries, the
//! per-port learning limit and VLANs checked from the outside (what each host's wire carried)
//! and from the inside (the bridge's table and counters).
//!
//! Time is virtual (see `netsim`): aging is tested by moving the clock, never by sleeping.

mod netsim;

use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder, SlicedPacket};
use netsim::{ip, mac, pattern, Net, Transfer, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::Duration;
use switch::{DropReason, FdbConfig, MacAddr, PortMode, VlanSet};

const VLAN: u16 = netsim::DEFAULT_VLAN;

/// A frame with an EtherType nobody answers (IEEE local experimental), `payload` bytes long.
fn raw_frame(dst: MacAddr, src: MacAddr, payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.resize(14 + payload, 0x5a);
    f
}

/// Host A pings host B: ARP resolves B, the echo reply comes back, and both MACs are in the
/// table on the right ports. A second ping needs no ARP at all: both ARP caches hold the other.
#[test]
fn arp_then_ping_between_two_hosts() {
    let mut net = Net::new();
    let a = net.add_host(1);
    let b = net.add_host(2);

    net.ping(a, ip(2), 500)
        .expect("A gets an echo reply from B");

    let (pa, pb) = (net.local(net.hosts[a].port), net.local(net.hosts[b].port));
    assert_eq!(
        net.fdb_port(VLAN, mac(1)),
        Some(pa),
        "A learned on A's port"
    );
    assert_eq!(
        net.fdb_port(VLAN, mac(2)),
        Some(pb),
        "B learned on B's port"
    );
    assert_eq!(net.bridge().fdb().len(), 2, "nothing else learned");
    let is_arp = |s: &netsim::Seen| s.ethertype == ETHERTYPE_ARP;
    assert_eq!(
        net.hosts[b].seen_count(|s| is_arp(s) && s.dst == MacAddr::BROADCAST && s.src == mac(1)),
        1,
        "B saw A's ARP request"
    );
    assert_eq!(
        net.hosts[a].seen_count(|s| is_arp(s) && s.dst == mac(1) && s.src == mac(2)),
        1,
        "A saw B's ARP reply, unicast"
    );
    assert!(
        net.hosts[a].seen_count(|s| s.ethertype == ETHERTYPE_IPV4 && s.src == mac(2)) >= 1,
        "the echo reply reached A"
    );

    let arp_frames = |net: &Net| {
        net.hosts
            .iter()
            .map(|h| h.seen_count(is_arp))
            .sum::<usize>()
    };
    let before = arp_frames(&net);
    net.ping(a, ip(2), 50).expect("A pings B again");
    net.ping(b, ip(1), 50).expect("B pings A");
    assert_eq!(
        arp_frames(&net),
        before,
        "A and B resolved each other once and kept the answer"
    );
    for h in &net.hosts {
        assert_eq!(
            net.counters(h.port).total_drops(),
            0,
            "no drop on {}",
            h.name
        );
    }
}

/// Two concurrent 4 MiB TCP transfers, A→B and C→D, across four ports; every byte is checked
/// against the pseudo-random stream that was sent.
#[test]
fn tcp_transfers_of_4_mib_arrive_intact() {
    const LEN: usize = 4 << 20;
    let mut net = Net::new();
    let hosts: Vec<usize> = (1..=4).map(|n| net.add_host(n)).collect();
    let mut ab = Transfer::start(&mut net, hosts[0], hosts[1], 5001, LEN, 0xa11ce);
    let mut cd = Transfer::start(&mut net, hosts[2], hosts[3], 5002, LEN, 0xb0b);

    let steps = net.run_until("both 4 MiB transfers complete", 20_000, |net| {
        ab.pump(net);
        cd.pump(net);
        ab.done(net) && cd.done(net)
    });

    assert_eq!(ab.received, LEN);
    assert_eq!(cd.received, LEN);
    // Sanity check of the harness: the two streams differ, so a crossed wire would show.
    assert_ne!(pattern(0xa11ce, 64), pattern(0xb0b, 64));
    assert!(
        steps > 10,
        "a real transfer takes some round trips ({steps} steps)"
    );
    for (i, h) in net.hosts.iter().enumerate() {
        let c = net.counters(h.port);
        assert_eq!(c.total_drops(), 0, "no drop on {}: {:?}", h.name, c.drops);
        assert_eq!(h.dev.bad_checksums, 0, "{} got damaged frames", h.name);
        assert_eq!(
            net.fdb_port(VLAN, h.mac),
            Some(net.local(h.port)),
            "host {i} learned on its own port"
        );
    }
    // Each receiver got the stream as data segments addressed to it, most of them full size.
    for &r in &[hosts[1], hosts[3]] {
        let h = &net.hosts[r];
        let full = h.seen_count(|s| s.dst == h.mac && s.len == 14 + 20 + 20 + 1460);
        assert!(
            full >= LEN / 1460 * 9 / 10,
            "{full} full segments at {}",
            h.name
        );
    }
}

/// The first frame to an unknown station floods (the third host sees it); once both ends are
/// learned the third host sees none of their unicast traffic.
#[test]
fn unknown_unicast_floods_then_learned_traffic_stays_private() {
    let mut net = Net::new();
    let a = net.add_host(1);
    let b = net.add_host(2);
    let c = net.add_host(3);

    net.ping(a, ip(2), 500).expect("A reaches B");
    assert_eq!(
        net.hosts[c].seen_count(|s| s.dst == MacAddr::BROADCAST && s.src == mac(1)),
        1,
        "C saw A's broadcast ARP request"
    );

    // The switch forgets; the hosts do not (their ARP caches still hold each other), so A's
    // next frame is unicast to a MAC the switch does not know.
    net.bridge_mut().fdb_mut().flush_learned();
    let mark = net.hosts[c].dev.seen.len();
    net.ping(a, ip(2), 500).expect("A reaches B again");
    let seen_by_c = &net.hosts[c].dev.seen[mark..];
    assert_eq!(
        seen_by_c.iter().filter(|s| s.dst == mac(2)).count(),
        1,
        "exactly the first echo request to B flooded to C: {seen_by_c:?}"
    );
    assert_eq!(
        seen_by_c.iter().filter(|s| s.dst == mac(1)).count(),
        0,
        "A was learned from that request, so B's reply went to A only"
    );

    // Everything learned: a TCP transfer and a ping between A and B pass C by.
    let mark = net.hosts[c].dev.seen.len();
    let c_tx = net.counters(net.hosts[c].port).tx_packets;
    let mut t = Transfer::start(&mut net, a, b, 6000, 512 * 1024, 7);
    net.run_until("512 KiB from A to B", 5_000, |net| {
        t.pump(net);
        t.done(net)
    });
    net.ping(b, ip(1), 500).expect("B reaches A");
    assert_eq!(net.hosts[b].dev.bad_checksums, 0);
    let seen_by_c = &net.hosts[c].dev.seen[mark..];
    let leaked = seen_by_c
        .iter()
        .filter(|s| s.dst == mac(1) || s.dst == mac(2))
        .count();
    assert_eq!(leaked, 0, "C saw unicast between A and B: {seen_by_c:?}");
    let c_tx_now = net.counters(net.hosts[c].port).tx_packets;
    assert_eq!(
        c_tx_now - c_tx,
        seen_by_c.len() as u64,
        "C's port counters agree with what C's wire carried"
    );
    assert!(net.hosts[b].seen_count(|s| s.dst == mac(2)) > 300);
}

/// Learned entries age out on the virtual clock: after the aging time the next frame to the
/// station floods again, and `age` removes the entries.
#[test]
fn learned_entries_age_out_with_virtual_time() {
    let aging = Duration::from_secs(10);
    let mut net = Net::with_fdb(FdbConfig {
        aging,
        ..FdbConfig::default()
    });
    let a = net.add_host(1);
    let b = net.add_host(2);
    let c = net.add_host(3);
    net.ping(a, ip(2), 500).expect("A reaches B");
    let (pa, pb) = (net.local(net.hosts[a].port), net.local(net.hosts[b].port));
    let mut learned: Vec<_> = net
        .bridge()
        .fdb()
        .iter(net.now)
        .map(|(v, m, e)| (v, m, e.port, e.is_static))
        .collect();
    learned.sort();
    assert_eq!(
        learned,
        vec![(VLAN, mac(1), pa, false), (VLAN, mac(2), pb, false)]
    );

    // Just under the aging time: still known, nothing floods.
    net.advance(aging - Duration::from_secs(1));
    assert_eq!(net.fdb_port(VLAN, mac(2)), Some(pb));
    let mark = net.hosts[c].dev.seen.len();
    net.ping(a, ip(2), 500).expect("A reaches B");
    assert_eq!(net.hosts[c].dev.seen.len(), mark, "C saw nothing");

    // Past it: the entries are stale, then gone.
    net.advance(aging + Duration::from_secs(1));
    assert_eq!(net.fdb_port(VLAN, mac(1)), None);
    assert_eq!(net.fdb_port(VLAN, mac(2)), None);
    assert_eq!(net.bridge().fdb().iter(net.now).count(), 0, "no live entry");
    let now = net.now;
    assert_eq!(net.bridge_mut().fdb_mut().age(now), 2, "age removed both");
    assert!(net.bridge().fdb().is_empty());
    assert_eq!(net.bridge().fdb().port_count(pa), 0);

    // A still has B in its ARP cache, so its next frame is unicast to B: it floods.
    let mark = net.hosts[c].dev.seen.len();
    net.ping(a, ip(2), 500).expect("A reaches B after aging");
    let seen_by_c = &net.hosts[c].dev.seen[mark..];
    assert_eq!(
        seen_by_c
            .iter()
            .filter(|s| s.dst == mac(2) && s.ethertype == ETHERTYPE_IPV4)
            .count(),
        1,
        "the first echo request after aging flooded: {seen_by_c:?}"
    );
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(pa), "A relearned");
    assert_eq!(net.fdb_port(VLAN, mac(2)), Some(pb), "B relearned");
}

/// A host unplugged from its port and plugged into another: the first frame it sends from
/// the new port moves its entry, and traffic to it follows; the old port gets nothing more.
#[test]
fn station_move_follows_the_host() {
    let mut net = Net::new();
    let a = net.add_host(1);
    let b = net.add_host(2);
    let c = net.add_host(3);
    let spare = net.add_raw_port("veth9", PortMode::DEFAULT);
    net.ping(a, ip(2), 500).expect("A reaches B");
    let old = net.local(net.hosts[a].port);
    let new = net.local(spare.handle);
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(old));

    let old_wire = net.hosts[a].dev.rewire(spare.peer.clone());
    let c_mark = net.hosts[c].dev.seen.len();
    net.ping(a, ip(2), 500)
        .expect("A reaches B from its new port");
    net.ping(b, ip(1), 500)
        .expect("B reaches A at its new port");

    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(new), "A's entry moved");
    let fdb = net.bridge().fdb();
    assert_eq!((fdb.port_count(old), fdb.port_count(new)), (0, 1));
    assert_eq!(fdb.len(), 2);
    assert_eq!(old_wire.pending(), 0, "nothing was sent to A's old port");
    let to_a_at_c = net.hosts[c].dev.seen[c_mark..]
        .iter()
        .filter(|s| s.dst == mac(1))
        .count();
    assert_eq!(to_a_at_c, 0, "C saw no traffic to A after the move");
}

/// A frame injected on another port with A's source MAC takes A's entry (as on any learning
/// bridge): B's frames to A go there. A's next frame takes it back.
#[test]
fn forged_source_moves_the_entry_until_the_station_speaks() {
    let mut net = Net::new();
    let a = net.add_host(1);
    let b = net.add_host(2);
    let thief = net.add_raw_port("veth9", PortMode::DEFAULT);
    net.ping(a, ip(2), 500).expect("A reaches B");
    let pa = net.local(net.hosts[a].port);

    thief
        .peer
        .inject(&raw_frame(MacAddr::BROADCAST, mac(1), 46));
    net.step();
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(net.local(thief.handle)));
    thief.peer.drain();

    let to_a = |net: &Net| net.hosts[a].seen_count(|s| s.dst == mac(1));
    let before = to_a(&net);
    assert_eq!(
        net.ping(b, ip(1), 300),
        None,
        "B's echo requests go to the thief"
    );
    let stolen = thief.peer.drain();
    assert!(
        stolen
            .iter()
            .any(|f| f[0..6] == mac(1).0 && f[12..14] == ETHERTYPE_IPV4.to_be_bytes()),
        "the thief's port got B's echo requests to A"
    );
    assert_eq!(to_a(&net), before, "A got none of them");

    net.ping(a, ip(2), 500).expect("A speaks");
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(pa), "A's entry is back");
    net.ping(b, ip(1), 500).expect("B reaches A again");
}

/// A static entry sends a MAC to its port whatever the station does, refuses frames claiming
/// the MAC on another port (`mac_move_refused`), and never ages.
#[test]
fn static_entry_wins_over_learning_and_survives_aging() {
    let aging = Duration::from_secs(10);
    let mut net = Net::with_fdb(FdbConfig {
        aging,
        ..FdbConfig::default()
    });
    let a = net.add_host(1);
    let b = net.add_host(2);
    let s = net.add_raw_port("veth9", PortMode::DEFAULT);
    let (pa, ps) = (net.local(net.hosts[a].port), net.local(s.handle));
    let now = net.now;
    net.bridge_mut()
        .fdb_mut()
        .add_static(now, VLAN, mac(1), ps)
        .expect("room for a static entry");

    // A sends from its own port, but A's MAC is fixed on S: a frame claiming it elsewhere is a
    // spoof, dropped and counted (`mac_move_refused`); the entry does not move, and A's ARP
    // request never reaches B.
    assert_eq!(net.ping(a, ip(2), 300), None);
    let entry = net.bridge().fdb().get(net.now, VLAN, mac(1)).unwrap();
    assert!(entry.is_static);
    assert_eq!(entry.port, ps, "learning did not move a static entry");
    let refused = net.counters(net.hosts[a].port).drops["mac_move_refused"];
    assert!(refused >= 1, "A's frames were refused");
    assert_eq!(
        net.fdb_port(VLAN, mac(2)),
        None,
        "B never heard A, never spoke"
    );
    assert_eq!(
        net.hosts[b].seen_count(|s| s.src == mac(1)),
        0,
        "B got nothing from A's MAC"
    );
    assert_eq!(net.counters(net.hosts[a].port).learn_refused, 0);

    // Frames to A's MAC still go to S, where the static entry says.
    let r = net.add_raw_port("veth8", PortMode::DEFAULT);
    r.peer.inject(&raw_frame(mac(1), mac(5), 64));
    net.step();
    let to_a_at_s = s
        .peer
        .drain()
        .iter()
        .filter(|f| f[0..6] == mac(1).0)
        .count();
    assert_eq!(to_a_at_s, 1, "the frame to A went to S");
    assert_eq!(
        net.fdb_port(VLAN, mac(5)),
        Some(net.local(r.handle)),
        "others learned as usual"
    );

    // Long past the aging time, the static entry is still there; B's learned one is gone.
    net.advance(aging * 100);
    let now = net.now;
    net.bridge_mut().fdb_mut().age(now);
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(ps));
    assert_eq!(net.fdb_port(VLAN, mac(2)), None);
    assert_eq!(net.bridge().fdb().len(), 1);

    // Removed, learning takes over.
    assert!(net.bridge_mut().fdb_mut().remove(VLAN, mac(1)).is_some());
    net.ping(a, ip(2), 2_000)
        .expect("A reaches B once the static entry is gone");
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(pa));
}

/// One port floods 10 000 random source MACs: it gets at most `max_per_port` entries, the
/// refusals are counted, and the other hosts keep their entries and keep talking.
#[test]
fn per_port_limit_holds_under_a_mac_flood() {
    const FLOOD: usize = 10_000;
    const PER_PORT: usize = 64;
    let mut net = Net::with_fdb(FdbConfig {
        max_entries: 1024,
        max_per_port: PER_PORT,
        ..FdbConfig::default()
    });
    let a = net.add_host(1);
    let b = net.add_host(2);
    let attacker = net.add_raw_port("veth9", PortMode::DEFAULT);
    net.ping(a, ip(2), 500).expect("A reaches B");
    let (pa, pb, px) = (
        net.local(net.hosts[a].port),
        net.local(net.hosts[b].port),
        net.local(attacker.handle),
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf100d);
    let mut sources = HashSet::new();
    let random_unicast = |rng: &mut rand::rngs::StdRng| {
        let mut m: [u8; 6] = rng.random();
        m[0] = (m[0] & 0xfe) | 0x02; // unicast, locally administered
        MacAddr(m)
    };
    while sources.len() < FLOOD {
        let m = random_unicast(&mut rng);
        if m != mac(1) && m != mac(2) {
            sources.insert(m);
        }
    }
    let sources: Vec<MacAddr> = sources.into_iter().collect();
    for chunk in sources.chunks(500) {
        for &src in chunk {
            let dst = random_unicast(&mut rng);
            attacker.peer.inject(&raw_frame(dst, src, 46));
        }
        net.run_until("the switch read the burst", 10, |_| {
            attacker.peer.unread() == 0
        });
        net.step(); // the hosts take the flooded frames
    }

    let fdb = net.bridge().fdb();
    assert_eq!(
        fdb.port_count(px),
        PER_PORT,
        "the attacker got its share only"
    );
    assert_eq!(
        fdb.iter(net.now).filter(|(_, _, e)| e.port == px).count(),
        PER_PORT
    );
    assert_eq!(fdb.len(), PER_PORT + 2);
    let cx = net.counters(attacker.handle);
    assert_eq!(cx.rx_packets, FLOOD as u64);
    assert_eq!(cx.learn_refused, (FLOOD - PER_PORT) as u64);
    assert_eq!(cx.total_drops(), 0, "refused sources still flood");
    assert_eq!(net.fdb_port(VLAN, mac(1)), Some(pa), "A kept its entry");
    assert_eq!(net.fdb_port(VLAN, mac(2)), Some(pb), "B kept its entry");
    for h in [a, b] {
        let c = net.counters(net.hosts[h].port);
        assert_eq!(c.total_drops(), 0, "{:?}", c.drops);
    }
    net.ping(a, ip(2), 500).expect("A still reaches B");
    net.ping(b, ip(1), 500).expect("B still reaches A");
}

/// An ARP request for `target` from station 99 (02:00:00:00:00:63, 10.0.0.99), tagged `vid`.
fn tagged_arp_request(vid: u16, target: u8) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &mac(99).0,
        &ip(99).octets(),
        &[0; 6],
        &ip(target).octets(),
    )
    .unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac(99).0, MacAddr::BROADCAST.0)
        .single_vlan(vid.try_into().unwrap())
        .arp(arp)
        .write(&mut out)
        .unwrap();
    out
}

/// The VLAN id of each tag of a frame, outermost first.
fn vids(frame: &[u8]) -> Vec<u16> {
    SlicedPacket::from_ethernet(frame)
        .expect("the switch sends parseable frames")
        .vlan_ids()
        .iter()
        .map(|v| v.value())
        .collect()
}

/// Access VLANs 10 and 20 are separate broadcast domains; a trunk carries both, tagged, and
/// frames tagged on the trunk reach the right access ports untagged.
#[test]
fn vlans_isolate_access_ports_and_trunks_carry_tags() {
    let mut net = Net::new();
    let network = net.network();
    let h1 = net.add_host_on(1, network, PortMode::Access(10));
    let h2 = net.add_host_on(2, network, PortMode::Access(10));
    let h3 = net.add_host_on(3, network, PortMode::Access(20));
    let h4 = net.add_host_on(4, network, PortMode::Access(20));
    let trunk = net.add_raw_port(
        "trunk0",
        PortMode::Trunk {
            native: None,
            allowed: [10, 20].into_iter().collect::<VlanSet>(),
        },
    );

    net.ping(h1, ip(2), 500)
        .expect("VLAN 10 hosts reach each other");
    net.ping(h3, ip(4), 500)
        .expect("VLAN 20 hosts reach each other");
    assert_eq!(
        net.ping(h1, ip(3), 1_500),
        None,
        "VLAN 10 cannot reach VLAN 20"
    );
    assert_eq!(
        net.ping(h4, ip(2), 1_500),
        None,
        "VLAN 20 cannot reach VLAN 10"
    );

    let from = |macs: [u8; 2]| move |s: &netsim::Seen| macs.iter().any(|&n| s.src == mac(n));
    for h in [h3, h4] {
        assert_eq!(
            net.hosts[h].seen_count(from([1, 2])),
            0,
            "VLAN 10 leaked to {h}"
        );
    }
    for h in [h1, h2] {
        assert_eq!(
            net.hosts[h].seen_count(from([3, 4])),
            0,
            "VLAN 20 leaked to {h}"
        );
    }
    for h in &net.hosts {
        let tagged = h.seen_count(|s| s.ethertype == 0x8100 || s.ethertype == 0x88a8);
        assert_eq!(tagged, 0, "access port {} got a tagged frame", h.name);
    }
    assert_eq!(
        net.fdb_port(10, mac(1)),
        Some(net.local(net.hosts[h1].port))
    );
    assert_eq!(net.fdb_port(20, mac(1)), None, "VLANs learn independently");

    // The trunk got the broadcasts of both VLANs, each tagged once with its sender's VLAN.
    let on_trunk = trunk.peer.drain();
    let mut per_vlan = [0usize; 2];
    for f in &on_trunk {
        let src = MacAddr::from_bytes(&f[6..12]);
        let want = if src == mac(1) || src == mac(2) {
            10
        } else {
            20
        };
        assert_eq!(vids(f), vec![want], "frame from {src} on the trunk");
        per_vlan[(want == 20) as usize] += 1;
    }
    assert!(
        per_vlan[0] > 0 && per_vlan[1] > 0,
        "both VLANs on the trunk: {per_vlan:?}"
    );

    // Tagged 20 on the trunk: an ARP request for host 3 reaches hosts 3 and 4 untagged, and
    // host 3's answer comes back on the trunk tagged 20.
    let seen_99 = |net: &Net, h: usize| net.hosts[h].seen_count(|s| s.src == mac(99));
    trunk.peer.inject(&tagged_arp_request(20, 3));
    net.run_for(3);
    assert_eq!(
        net.hosts[h3].seen_count(|s| s.src == mac(99) && s.ethertype == ETHERTYPE_ARP),
        1,
        "host 3 got the request untagged"
    );
    assert_eq!(seen_99(&net, h4), 1);
    assert_eq!((seen_99(&net, h1), seen_99(&net, h2)), (0, 0));
    // (The trunk also carries host 1's ARP retries for 10.0.0.3 in VLAN 10, hence the filter.)
    let to_99 = |frames: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        frames
            .into_iter()
            .filter(|f| f[0..6] == mac(99).0)
            .collect()
    };
    let replies = to_99(trunk.peer.drain());
    assert_eq!(replies.len(), 1, "one answer on the trunk: {replies:x?}");
    assert_eq!(replies[0][0..6], mac(99).0);
    assert_eq!(vids(&replies[0]), vec![20]);
    let arp = match SlicedPacket::from_ethernet(&replies[0]).unwrap().net {
        Some(etherparse::NetSlice::Arp(a)) => a.to_packet().try_eth_ipv4().unwrap(),
        other => panic!("expected ARP, got {other:?}"),
    };
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(
        (arp.sender_mac, arp.sender_ipv4),
        (mac(3).0, ip(3).octets())
    );
    assert_eq!(net.fdb_port(20, mac(99)), Some(net.local(trunk.handle)));

    // The same question in VLAN 10 reaches only VLAN 10, where nobody has 10.0.0.3.
    trunk.peer.inject(&tagged_arp_request(10, 3));
    net.run_for(3);
    assert_eq!((seen_99(&net, h1), seen_99(&net, h2)), (1, 1));
    assert_eq!(
        (seen_99(&net, h3), seen_99(&net, h4)),
        (1, 1),
        "no new frame in VLAN 20"
    );
    assert!(to_99(trunk.peer.drain()).is_empty(), "no answer");

    // A VLAN the trunk does not carry is dropped where it enters.
    trunk.peer.inject(&tagged_arp_request(30, 3));
    net.run_for(2);
    let c = net.counters(trunk.handle);
    assert_eq!(c.drops.get(DropReason::VlanNotAllowed.name()), Some(&1));
    assert_eq!(c.total_drops(), 1);
    assert_eq!(
        net.hosts
            .iter()
            .map(|h| h.seen_count(|s| s.src == mac(99)))
            .sum::<usize>(),
        4
    );
}

/// Two networks in one datapath are two bridges: each learns and floods on its own, and a host
/// on one cannot reach a host on the other even in the same VLAN and subnet.
#[test]
fn networks_are_separate_bridges() {
    let mut net = Net::new();
    let other = net.add_network(FdbConfig::default());
    let h1 = net.add_host(1);
    let _h2 = net.add_host(2);
    let h3 = net.add_host_on(3, other, PortMode::DEFAULT);
    let h4 = net.add_host_on(4, other, PortMode::DEFAULT);

    net.ping(h1, ip(2), 500)
        .expect("1 reaches 2 on the first network");
    net.ping(h3, ip(4), 500)
        .expect("3 reaches 4 on the second network");
    assert_eq!(net.ping(h1, ip(3), 1_500), None, "1 cannot reach 3");

    let macs = |net: &Net, id| -> Vec<MacAddr> {
        let mut m: Vec<MacAddr> = net
            .dp
            .bridge(id)
            .unwrap()
            .fdb()
            .iter(net.now)
            .map(|(_, m, _)| m)
            .collect();
        m.sort();
        m
    };
    assert_eq!(macs(&net, net.network()), vec![mac(1), mac(2)]);
    assert_eq!(macs(&net, other), vec![mac(3), mac(4)]);
    for h in [h3, h4] {
        let from_first = net.hosts[h].seen_count(|s| s.src == mac(1) || s.src == mac(2));
        assert_eq!(from_first, 0, "{} saw the first network", net.hosts[h].name);
    }
}
