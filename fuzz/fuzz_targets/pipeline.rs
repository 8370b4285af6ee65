//! Any bytes, on any of four ports, through the whole bridge pipeline: a decision, never a panic,
//! and the trace (dry run) agrees with the real run.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use switch::bridge::{Bridge, BridgeConfig, BridgePort, PortMode, VlanSet};
use switch::port::{FrameRef, PortId};
use switch::trace::Trace;
use switch::{Instant, PortCounters, VirtioNetHdr};

fuzz_target!(|data: &[u8]| {
    let mut b = Bridge::new(BridgeConfig::default());
    for i in 0..4u16 {
        let mode = if i == 3 {
            PortMode::Trunk { native: Some(1), allowed: VlanSet::from_iter([10, 20]) }
        } else {
            PortMode::Access(if i == 2 { 10 } else { 1 })
        };
        b.add_port(BridgePort {
            name: format!("p{i}"),
            mode,
            max_frame_len: 1522,
            up: true,
            counters: Arc::new(PortCounters::default()),
        });
    }
    let mut out = Vec::new();
    for (n, chunk) in data.split(|b| *b == 0xA5).enumerate() {
        let port = PortId((n % 4) as u16);
        let now = Instant::from_secs(n as u64);
        let frame = FrameRef { meta: VirtioNetHdr::NONE, data: chunk };
        let mut trace = Trace::new();
        let dry = b.decide(now, port, frame, &mut out, &mut trace);
        let dry_out = out.clone();
        let real = b.process(now, port, frame, &mut out);
        assert_eq!(dry, real);
        assert_eq!(dry_out, out);
    }
});
