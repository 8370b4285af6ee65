//! Bad input at a switch port: every malformed or unacceptable frame is a counted drop with
//! the right reason on the port it came in on, never a panic, and loses nothing the switch
//! already knew. A proptest then feeds arbitrary bytes through the whole datapath and checks
//! that every frame is accounted for: forwarded or dropped, never both, never neither.

mod netsim;

use netsim::{mac, Net, RawPort};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use switch::datapath::{Datapath, TraceEvent};
use switch::port::memory::{self, MemoryPeer};
use switch::{BridgeConfig, DropReason, FdbEntry, MacAddr, PortCounters, PortMode, VlanSet};

/// A frame from `src` to `dst` with `tags` (TPID, VID) and an IPv4 EtherType, `payload` long.
fn frame(dst: MacAddr, src: MacAddr, tags: &[(u16, u16)], payload: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.resize(f.len() + payload, 0x45);
    f
}

/// The MAC table as a sorted list, to compare before and after.
fn table(net: &Net) -> Vec<(u16, MacAddr, FdbEntry)> {
    let mut t: Vec<_> = net.bridge().fdb().iter(net.now).collect();
    t.sort_by_key(|(v, m, _)| (*v, *m));
    t
}

/// Three raw ports on VLAN 1 (`a`, `b`, and `bad`, where the bad input comes from), and a
/// trunk carrying VLANs 10 and 20 with no native VLAN. `a` and `b` are learned.
struct Bench {
    net: Net,
    a: RawPort,
    b: RawPort,
    bad: RawPort,
    trunk: RawPort,
}

impl Bench {
    fn new() -> Bench {
        let mut net = Net::new();
        let a = net.add_raw_port("a", PortMode::DEFAULT);
        let b = net.add_raw_port("b", PortMode::DEFAULT);
        let bad = net.add_raw_port("bad", PortMode::DEFAULT);
        let trunk = net.add_raw_port(
            "trunk",
            PortMode::Trunk {
                native: None,
                allowed: [10, 20].into_iter().collect::<VlanSet>(),
            },
        );
        a.peer.inject(&frame(MacAddr::BROADCAST, mac(1), &[], 46));
        b.peer.inject(&frame(mac(1), mac(2), &[], 46));
        net.step();
        let bench = Bench {
            net,
            a,
            b,
            bad,
            trunk,
        };
        bench.drain_all();
        assert_eq!(bench.net.bridge().fdb().len(), 2, "a and b learned");
        bench
    }

    fn drain_all(&self) {
        for p in [&self.a, &self.b, &self.bad, &self.trunk] {
            p.peer.drain();
        }
    }

    /// Injects `bytes` on `port` and checks it was dropped there for `reason` and for nothing
    /// else, that nothing went out anywhere, and that the MAC table did not change.
    fn expect_drop(&mut self, port: &RawPort, bytes: &[u8], reason: DropReason, what: &str) {
        let counters = self.net.dp.counters(port.handle).unwrap();
        let before = counters.snapshot();
        let table_before = table(&self.net);
        port.peer.inject(bytes);
        self.net.step();
        let after = counters.snapshot();
        assert_eq!(after.rx_packets, before.rx_packets + 1, "{what}: received");
        assert_eq!(
            after.drops.get(reason.name()).copied().unwrap_or(0),
            before.drops.get(reason.name()).copied().unwrap_or(0) + 1,
            "{what}: counted as {reason}; drops now {:?}",
            after.drops
        );
        assert_eq!(
            after.total_drops(),
            before.total_drops() + 1,
            "{what}: one drop only"
        );
        for p in [&self.a, &self.b, &self.bad, &self.trunk] {
            assert_eq!(
                p.peer.pending(),
                0,
                "{what}: nothing may reach port {}",
                p.name
            );
        }
        assert_eq!(
            table(&self.net),
            table_before,
            "{what}: the MAC table is untouched"
        );
    }
}

#[test]
fn runts_are_dropped_as_runt() {
    let mut bench = Bench::new();
    let bad = bench.bad.clone();
    let full = frame(mac(1), mac(7), &[], 46);
    for len in 0..14 {
        bench.expect_drop(
            &bad,
            &full[..len],
            DropReason::Runt,
            &format!("{len}-byte runt"),
        );
    }
}

#[test]
fn truncated_and_stacked_tags_are_malformed() {
    let mut bench = Bench::new();
    let bad = bench.bad.clone();
    for tpid in [0x8100u16, 0x88a8] {
        // 12 address bytes, the TPID, then 1 to 3 bytes of what should be a 4-byte tag + type.
        let head = frame(mac(1), mac(7), &[(tpid, 1)], 0);
        for extra in 1..=3 {
            bench.expect_drop(
                &bad,
                &head[..14 + extra],
                DropReason::Malformed,
                &format!("tag {tpid:#06x} cut after {extra} bytes"),
            );
        }
    }
    let qinq = frame(mac(1), mac(7), &[(0x88a8, 100), (0x8100, 1)], 0);
    bench.expect_drop(
        &bad,
        &qinq[..19],
        DropReason::Malformed,
        "inner tag cut short",
    );
    let three = frame(
        mac(1),
        mac(7),
        &[(0x88a8, 100), (0x8100, 1), (0x8100, 1)],
        46,
    );
    bench.expect_drop(&bad, &three, DropReason::Malformed, "three tags");
}

#[test]
fn oversize_frames_are_dropped_at_the_port_mtu() {
    let mut bench = Bench::new();
    let bad = bench.bad.clone();
    let max = memory::plain_caps().max_frame_len();
    let too_long = frame(mac(1), mac(7), &[], max + 1 - 14);
    assert_eq!(too_long.len(), max + 1);
    bench.expect_drop(&bad, &too_long, DropReason::Oversize, "one byte too long");
    let jumbo = frame(mac(1), mac(7), &[], 9000);
    bench.expect_drop(&bad, &jumbo, DropReason::Oversize, "jumbo frame");

    // The longest frame the port takes goes through: the MTU after its header and tags.
    let mtu = memory::plain_caps().mtu;
    let longest = frame(mac(1), mac(7), &[], mtu);
    bad.peer.inject(&longest);
    bench.net.step();
    assert_eq!(bench.a.peer.drain(), vec![longest.clone()]);
    let tagged = frame(mac(1), mac(7), &[(0x8100, 0)], mtu);
    bad.peer.inject(&tagged);
    bench.net.step();
    assert_eq!(bench.a.peer.drain().len(), 1, "a priority tag rides on top");
    assert_eq!(bench.net.counters(bad.handle).total_drops(), 2);
}

#[test]
fn frames_over_the_ingress_mtu_are_dropped_once_where_they_enter() {
    let mut bench = Bench::new();
    let bad = bench.bad.clone();
    let mtu = memory::plain_caps().mtu;
    // Within the allowance for tags, but untagged: one byte more than the MTU carries.
    let over = frame(mac(1), mac(7), &[], mtu + 1);
    assert!(over.len() <= memory::plain_caps().max_frame_len());
    bench.expect_drop(
        &bad,
        &over,
        DropReason::TooBigForIngressPort,
        "one byte over the MTU",
    );
    let tagged_over = frame(mac(1), mac(7), &[(0x8100, 0)], mtu + 1);
    bench.expect_drop(
        &bad,
        &tagged_over,
        DropReason::TooBigForIngressPort,
        "tagged, one byte over the MTU",
    );
    // Flooded (unknown destination), it would have been dropped at every egress port; it is
    // counted once, at the ingress port, and nowhere else.
    let egress = |bench: &Bench| {
        [&bench.a, &bench.b, &bench.trunk].map(|p| {
            let s = bench.net.counters(p.handle);
            (s.tx_packets, s.total_drops())
        })
    };
    let before = egress(&bench);
    let flood = frame(mac(99), mac(7), &[], mtu + 2);
    bad.peer.inject(&flood);
    bench.net.step();
    let c = bench.net.counters(bad.handle);
    assert_eq!(c.drops["too_big_for_ingress_port"], 3);
    assert_eq!(egress(&bench), before, "no egress port saw it");

    // A super-frame (GSO virtio-net header) is big by design and passes.
    let (hdr, sup) = switch::testing::tso4_frame(20000);
    let mut sup = sup;
    sup[0..6].copy_from_slice(&mac(1).0);
    sup[6..12].copy_from_slice(&mac(7).0);
    bad.peer.inject_with(hdr, &sup);
    bench.net.step();
    let got: usize = bench.a.peer.drain().iter().map(|f| f.len() - 54).sum();
    assert_eq!(
        got,
        sup.len() - 54,
        "the super-frame's payload, whole or in segments"
    );
    assert_eq!(bench.net.counters(bad.handle).total_drops(), 3);
}

#[test]
fn invalid_source_addresses_are_dropped() {
    let mut bench = Bench::new();
    let bad = bench.bad.clone();
    let cases = [
        (
            MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
            "IPv4 multicast source",
        ),
        (MacAddr([0x33, 0x33, 0, 0, 0, 1]), "IPv6 multicast source"),
        (MacAddr::BROADCAST, "broadcast source"),
        (MacAddr::ZERO, "zero source"),
    ];
    for (src, what) in cases {
        let f = frame(mac(1), src, &[], 46);
        bench.expect_drop(&bad, &f, DropReason::InvalidSource, what);
    }
}

#[test]
fn garbage_is_dropped_with_a_reason() {
    let mut bench = Bench::new();
    let bad = bench.bad.clone();
    bench.expect_drop(&bad, &[0xff; 64], DropReason::InvalidSource, "all ones");
    bench.expect_drop(&bad, &[0x00; 64], DropReason::InvalidSource, "all zeros");
    let tpids: Vec<u8> = [0x81, 0x00].repeat(40);
    bench.expect_drop(&bad, &tpids, DropReason::Malformed, "0x8100 repeated");
    let stags: Vec<u8> = [0x88, 0xa8].repeat(40);
    bench.expect_drop(&bad, &stags, DropReason::Malformed, "0x88a8 repeated");
    // Nothing of it hurt the switch: a and b still reach each other, unicast.
    bench.a.peer.inject(&frame(mac(2), mac(1), &[], 46));
    bench.net.step();
    assert_eq!(bench.b.peer.drain().len(), 1);
    assert_eq!(bench.bad.peer.pending(), 0);
}

#[test]
fn tags_the_port_does_not_carry_are_dropped() {
    let mut bench = Bench::new();
    let (bad, trunk) = (bench.bad.clone(), bench.trunk.clone());
    for vid in [1, 5, 10] {
        let f = frame(mac(1), mac(7), &[(0x8100, vid)], 46);
        let what = format!("VLAN {vid} tag on an access port");
        bench.expect_drop(&bad, &f, DropReason::VlanNotAllowed, &what);
    }
    let f = frame(mac(1), mac(7), &[(0x8100, 30)], 46);
    bench.expect_drop(
        &trunk,
        &f,
        DropReason::VlanNotAllowed,
        "VLAN 30 on the trunk",
    );
    let f = frame(mac(1), mac(7), &[], 46);
    bench.expect_drop(
        &trunk,
        &f,
        DropReason::VlanNotAllowed,
        "untagged, no native VLAN",
    );

    // A priority tag (VID 0) is no VLAN: the access port takes it, and the frame leaves on
    // another access port untagged.
    let f = frame(mac(1), mac(7), &[(0x8100, 0)], 46);
    bad.peer.inject(&f);
    bench.net.step();
    assert_eq!(bench.a.peer.drain(), vec![frame(mac(1), mac(7), &[], 46)]);
    assert_eq!(bench.net.counters(bad.handle).total_drops(), 3);
}

// --- Accounting under arbitrary input -------------------------------------------------------

const PORTS: usize = 4;

/// Four in-memory ports: two access ports on VLAN 1, one on VLAN 10, and a trunk with native
/// VLAN 1 carrying 10 and 20.
fn datapath(trace: Option<Arc<Mutex<Vec<TraceEvent>>>>) -> (Datapath, Vec<Port>) {
    let mut dp = Datapath::new();
    let net = dp.add_network(BridgeConfig::default());
    let modes = [
        PortMode::Access(1),
        PortMode::Access(1),
        PortMode::Access(10),
        PortMode::Trunk {
            native: Some(1),
            allowed: [10, 20].into_iter().collect(),
        },
    ];
    let mut ports = Vec::new();
    for (i, mode) in modes.into_iter().enumerate() {
        let (port, peer) = memory::wire(&format!("p{i}"), memory::plain_caps());
        let handle = dp.add_port(net, Box::new(port), mode).ok().unwrap();
        let counters = dp.counters(handle).unwrap();
        ports.push(Port { peer, counters });
    }
    if let Some(events) = trace {
        dp.set_trace_sink(Some(Box::new(move |e: &TraceEvent| {
            events.lock().unwrap().push(e.clone())
        })));
    }
    (dp, ports)
}

struct Port {
    peer: MemoryPeer,
    counters: Arc<PortCounters>,
}

/// Drops that happen where a frame enters (the others happen at egress).
const INGRESS: [DropReason; 9] = [
    DropReason::Runt,
    DropReason::Malformed,
    DropReason::Oversize,
    DropReason::TooBigForIngressPort,
    DropReason::VlanNotAllowed,
    DropReason::InvalidSource,
    DropReason::MacMoveRefused,
    DropReason::SamePort,
    DropReason::NoOutput,
];

fn ingress_drops(c: &PortCounters) -> u64 {
    INGRESS.iter().map(|r| c.drops(*r)).sum()
}

/// Frames sent or dropped at egress, over all ports.
fn egress_total(ports: &[Port]) -> u64 {
    ports
        .iter()
        .map(|p| {
            let s = p.counters.snapshot();
            s.tx_packets + s.total_drops() - ingress_drops(&p.counters)
        })
        .sum()
}

fn rx_total(ports: &[Port]) -> u64 {
    ports.iter().map(|p| p.counters.snapshot().rx_packets).sum()
}

/// Frames that look like Ethernet often enough to reach every stage: addresses from a small
/// pool (so lookups hit and sources repeat), optional tags, any length.
fn framey() -> impl Strategy<Value = Vec<u8>> {
    let pool = [
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]),
        mac(1),
        mac(2),
        mac(3),
        mac(4),
    ];
    let tag = prop_oneof![Just(None), Just(Some(0x8100u16)), Just(Some(0x88a8u16)),];
    (
        0..pool.len(),
        0..pool.len(),
        proptest::collection::vec(
            (tag, prop::sample::select(vec![0u16, 1, 10, 20, 30, 4095])),
            0..4,
        ),
        0usize..1600,
    )
        .prop_map(move |(d, s, tags, payload)| {
            let tags: Vec<(u16, u16)> = tags
                .into_iter()
                .filter_map(|(tpid, vid)| tpid.map(|t| (t, vid)))
                .collect();
            frame(pool[d], pool[s], &tags, payload)
        })
}

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..2000), framey()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the bytes, the datapath does not panic, reads every frame, and each frame is
    /// either dropped once at its ingress port or sent out of at least one other port; the
    /// fast path (no trace) and the traced path count exactly the same.
    #[test]
    fn every_frame_is_forwarded_or_counted(
        input in proptest::collection::vec((0..PORTS, any_frame()), 1..48)
    ) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let (mut traced, tports) = datapath(Some(events.clone()));
        let (mut plain, pports) = datapath(None);
        let mut now = netsim::START;

        for (i, (port, bytes)) in input.iter().enumerate() {
            let (ingress, port) = (&tports[*port], *port);
            let (rx_before, out_before) = (rx_total(&tports), egress_total(&tports));
            let dropped_before = ingress_drops(&ingress.counters);

            ingress.peer.inject(bytes);
            pports[port].peer.inject(bytes);
            prop_assert_eq!(traced.poll_all(now), 1);
            prop_assert_eq!(plain.poll_all(now), 1);
            now = now + netsim::STEP;

            prop_assert_eq!(rx_total(&tports), rx_before + 1);
            let event = events.lock().unwrap().pop().expect("one trace event per frame");
            prop_assert!(events.lock().unwrap().is_empty());
            prop_assert_eq!(event.len, bytes.len());
            prop_assert_eq!(&event.in_port, &format!("p{port}"));
            let dropped = ingress_drops(&ingress.counters) - dropped_before;
            let went_out = egress_total(&tports) - out_before;
            match event.drop {
                Some(reason) => {
                    prop_assert!(event.outputs.is_empty(), "frame {} dropped ({}) and sent", i, reason);
                    prop_assert_eq!(dropped, 1, "frame {}: dropped as {} but not counted once", i, reason);
                    prop_assert!(ingress.counters.drops(reason) > 0, "frame {}: counted under another reason", i);
                    prop_assert_eq!(went_out, 0);
                }
                None => {
                    prop_assert!(!event.outputs.is_empty(), "frame {} neither dropped nor sent", i);
                    prop_assert!(!event.outputs.contains(&event.in_port), "frame {} sent back", i);
                    prop_assert_eq!(dropped, 0);
                    prop_assert_eq!(went_out, event.outputs.len() as u64, "frame {}: outputs vs counters", i);
                }
            }
        }

        for (i, (t, p)) in tports.iter().zip(&pports).enumerate() {
            let (ts, ps) = (t.counters.snapshot(), p.counters.snapshot());
            prop_assert_eq!(&ts, &ps, "traced and fast path agree on port p{}", i);
            prop_assert_eq!(ts.tx_packets, t.peer.drain().len() as u64, "tx counts what p{} got", i);
            let injected = input.iter().filter(|(q, _)| *q == i).count() as u64;
            prop_assert_eq!(ts.rx_packets, injected, "p{} read every frame injected", i);
        }
    }
}
