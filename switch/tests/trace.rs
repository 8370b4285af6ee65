//! Traces: `Bridge::decide` with a `Trace` records one line per pipeline stage (admit, learn,
//! lookup, forward) and changes nothing, so `vswitchctl trace` can run any frame through the
//! live bridge without side effects.

use std::sync::Arc;
use switch::fdb::Learn;
use switch::port::FrameRef;
use switch::trace::{Stage, Trace};
use switch::{
    Bridge, BridgeConfig, BridgePort, Decision, Instant, Lookup, MacAddr, PortCounters, PortId,
    PortMode, VirtioNetHdr,
};

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.resize(60, 0);
    f
}

fn plain(data: &[u8]) -> FrameRef<'_> {
    FrameRef {
        meta: VirtioNetHdr::NONE,
        data,
    }
}

/// A bridge with ports eth0..eth3 on VLAN 1, where 02:00:00:00:00:01 is known on eth0.
fn bridge(now: Instant) -> (Bridge, Vec<PortId>) {
    let mut bridge = Bridge::new(BridgeConfig::default());
    let ports: Vec<PortId> = (0..4)
        .map(|i| {
            bridge.add_port(BridgePort {
                name: format!("eth{i}"),
                mode: PortMode::DEFAULT,
                max_frame_len: 1522,
                up: true,
                counters: Arc::new(PortCounters::default()),
            })
        })
        .collect();
    let mut out = Vec::new();
    let d = bridge.process(
        now,
        ports[0],
        plain(&frame(MacAddr::BROADCAST, mac(1))),
        &mut out,
    );
    assert_eq!(d.learn, Some(Learn::New));
    (bridge, ports)
}

fn counters(bridge: &Bridge) -> Vec<switch::counters::CountersSnapshot> {
    bridge.ports().map(|(_, p)| p.counters.snapshot()).collect()
}

/// The stages a trace recorded, in order, as (name, result).
fn stages(trace: &Trace) -> Vec<(&'static str, &str)> {
    trace
        .stages
        .iter()
        .map(|r| (r.stage.name(), r.result.as_str()))
        .collect()
}

#[test]
fn trace_of_a_frame_to_an_unknown_mac_floods_and_changes_nothing() {
    let now = Instant::from_secs(100);
    let (bridge, ports) = bridge(now);
    let fdb_before = bridge.fdb().len();
    let counters_before = counters(&bridge);

    let f = frame(mac(9), mac(2));
    let mut out = Vec::new();
    let mut trace = Trace::new();
    let d: Decision = bridge.decide(now, ports[1], plain(&f), &mut out, &mut trace);

    let names: Vec<&str> = stages(&trace).iter().map(|s| s.0).collect();
    assert_eq!(names, ["admit", "learn", "lookup", "forward"], "{trace}");
    let admit = trace.result(Stage::Admit).unwrap();
    assert!(
        admit.starts_with("ok: 02:00:00:00:00:02 -> 02:00:00:00:00:09, vlan 1"),
        "{admit}"
    );
    let learn = trace.result(Stage::Learn).unwrap();
    assert!(learn.starts_with("new: 02:00:00:00:00:02"), "{learn}");
    assert!(learn.ends_with("on eth1"), "{learn}");
    let lookup = trace.result(Stage::Lookup).unwrap();
    assert!(lookup.starts_with("miss"), "{lookup}");
    let forward = trace.result(Stage::Forward).unwrap();
    let flooded = forward.strip_prefix("flood: ").expect(forward);
    let mut names: Vec<&str> = flooded.split(", ").collect();
    names.sort();
    assert_eq!(names, ["eth0", "eth2", "eth3"], "every other port, once");

    assert_eq!(d.verdict, Ok(true));
    assert_eq!(d.lookup, Some(Lookup::Miss));
    assert_eq!(d.learn, Some(Learn::New));
    assert_eq!(out, vec![ports[0], ports[2], ports[3]]);

    assert_eq!(bridge.fdb().len(), fdb_before, "decide learned nothing");
    assert_eq!(bridge.fdb().get(now, 1, mac(2)), None);
    assert_eq!(counters(&bridge), counters_before, "decide counted nothing");
}

#[test]
fn trace_of_a_known_destination_names_its_port() {
    let now = Instant::from_secs(100);
    let (bridge, ports) = bridge(now);
    let f = frame(mac(1), mac(2));
    let mut out = Vec::new();
    let mut trace = Trace::new();
    let d = bridge.decide(now, ports[3], plain(&f), &mut out, &mut trace);
    assert_eq!(
        stages(&trace)[2..],
        [
            ("lookup", "hit: 02:00:00:00:00:01 vlan 1 on eth0"),
            ("forward", "output: eth0"),
        ]
    );
    assert_eq!(d.verdict, Ok(false));
    assert_eq!(out, vec![ports[0]]);
}

#[test]
fn trace_of_a_dropped_frame_stops_at_the_stage_that_dropped_it() {
    let now = Instant::from_secs(100);
    let (bridge, ports) = bridge(now);
    let mut out = Vec::new();

    let mut trace = Trace::new();
    let d = bridge.decide(now, ports[1], plain(&[0u8; 9]), &mut out, &mut trace);
    assert_eq!(stages(&trace), [("admit", "drop: runt")]);
    assert_eq!(d.verdict, Err(switch::DropReason::Runt));

    let mut trace = Trace::new();
    let f = frame(mac(1), MacAddr::BROADCAST);
    let d = bridge.decide(now, ports[1], plain(&f), &mut out, &mut trace);
    let names: Vec<&str> = stages(&trace).iter().map(|s| s.0).collect();
    assert_eq!(names, ["admit", "learn"], "{trace}");
    assert!(trace.result(Stage::Learn).unwrap().starts_with("drop:"));
    assert_eq!(d.verdict, Err(switch::DropReason::InvalidSource));
    assert!(out.is_empty());
}
