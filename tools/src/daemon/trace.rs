//! Seeing what the switch does: one-shot traces (`vswitchctl trace`), live traces streamed to
//! clients (`trace --live`, `vswitchd --trace`) and captures (`vswitchctl capture`).
//!
//! A one-shot trace runs the frame through [`switch::Bridge::decide`], which changes nothing: no
//! learning, no counters, nothing sent. Live traces and captures hook the datapath only while
//! somebody listens: with no listener the datapath has no sink and pays nothing.

use super::{err, ApiError, Daemon};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use switch::datapath::{Direction, TraceEvent};
use switch::trace::{Stage, Trace};
use switch::wire::{ethernet, ipv4, udp, EtherType, Frame, MacAddr, IPPROTO_UDP};
use switch::{Instant, VirtioNetHdr};

/// Lines a slow listener may fall behind before lines are dropped for it.
const BACKLOG: usize = 4096;

struct Sub {
    id: u64,
    tx: mpsc::SyncSender<String>,
    /// Only frames in or out of this port (bridge name) …
    port: Option<String>,
    /// … of this network (for the VXLAN ports, all named `vxlan` on their bridges).
    network: Option<switch::datapath::NetworkId>,
    human: bool,
}

/// The listeners of live traces.
#[derive(Default)]
pub struct TraceHub {
    subs: Mutex<Vec<Sub>>,
    next: AtomicU64,
    /// Overlay networks (datapath id → VNI and endpoint), to explain frames that came from
    /// or go to the overlay.
    overlays: Mutex<Vec<(switch::datapath::NetworkId, u32, vxlan::Overlay)>>,
}

impl TraceHub {
    /// Adds a listener (for frames in or out of `port`, or all); returns its id and its lines.
    pub fn subscribe(
        &self,
        port: Option<String>,
        network: Option<switch::datapath::NetworkId>,
        human: bool,
    ) -> (u64, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::sync_channel(BACKLOG);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Sub {
            id,
            tx,
            port,
            network,
            human,
        });
        (id, rx)
    }

    /// Removes a listener; returns how many remain.
    pub fn unsubscribe(&self, id: u64) -> usize {
        let mut subs = self.lock();
        subs.retain(|s| s.id != id);
        subs.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sub>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an overlay network, so its traces show decapsulation and encapsulation.
    pub fn add_overlay(&self, net: switch::datapath::NetworkId, vni: u32, o: vxlan::Overlay) {
        let mut ov = self.overlays.lock().unwrap_or_else(|p| p.into_inner());
        ov.retain(|(n, _, _)| *n != net);
        ov.push((net, vni, o));
    }

    /// Adds the VXLAN stage to a frame of an overlay network: where it came from (decap and
    /// the remote MAC learned), or where it goes (encap to which peers).
    fn explain_overlay(&self, ev: &TraceEvent) -> Option<(switch::trace::StageRecord, Vec<Value>)> {
        let from = ev.in_port == "vxlan";
        let to = ev.outputs.iter().any(|o| o == "vxlan");
        if !from && !to {
            return None;
        }
        let ov = self.overlays.lock().unwrap_or_else(|p| p.into_inner());
        let (_, vni, o) = ov.iter().find(|(n, _, _)| *n == ev.network)?;
        let now = Instant::now();
        let mut actions = Vec::new();
        let result = if from {
            let src = switch::wire::L2Header::parse(&ev.head).ok()?.src;
            match o.remote_of(now, *vni, src) {
                Some(peer) => format!("decap vni {vni} from {peer}; learned {src} behind {peer}"),
                None => format!("decap vni {vni}"),
            }
        } else {
            match o.explain(now, *vni, &ev.head) {
                Ok((peers, sport)) => {
                    let list: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                    for p in &list {
                        actions.push(json!({
                            "output": "vxlan",
                            "remote": p,
                            "vni": vni,
                            "src_port": sport,
                        }));
                    }
                    format!(
                        "encap vni {vni}, udp {sport} -> {}, to {}",
                        o.udp_port(),
                        list.join(", ")
                    )
                }
                Err(r) => format!("drop: {r}"),
            }
        };
        let stage = switch::trace::StageRecord {
            stage: Stage::Vxlan,
            result,
        };
        Some((stage, actions))
    }

    /// Hands one frame's trace to every listener that wants it (never blocks the datapath).
    pub fn publish(&self, ev: &TraceEvent) {
        let (ev_with, vxlan_actions);
        let ev = match self.explain_overlay(ev) {
            Some((stage, actions)) => {
                let mut e = ev.clone();
                e.trace.stages.push(stage);
                ev_with = e;
                vxlan_actions = actions;
                &ev_with
            }
            None => {
                vxlan_actions = Vec::new();
                ev
            }
        };
        let subs = self.lock();
        let mut json_line: Option<String> = None;
        let mut human_line: Option<String> = None;
        for s in subs.iter() {
            if let Some(p) = &s.port {
                if ev.in_port != *p && !ev.outputs.iter().any(|o| o == p) {
                    continue;
                }
            }
            if s.network.is_some_and(|n| n != ev.network) {
                continue;
            }
            let line = if s.human {
                human_line.get_or_insert_with(|| human(ev)).clone()
            } else {
                json_line
                    .get_or_insert_with(|| live_record(ev, &vxlan_actions).to_string())
                    .clone()
            };
            let _ = s.tx.try_send(line);
        }
    }
}

/// A live trace record, in the shape of a one-shot trace (DESIGN.md): an output to the overlay
/// is one action per remote peer, with its VNI and UDP source port.
fn live_record(ev: &TraceEvent, vxlan_actions: &[Value]) -> Value {
    let summary = switch::trace::summary::summarize(&ev.head);
    let mut actions = Vec::new();
    for o in &ev.outputs {
        if o == "vxlan" && !vxlan_actions.is_empty() {
            actions.extend_from_slice(vxlan_actions);
        } else {
            actions.push(json!({ "output": o }));
        }
    }
    json!({
        "in_port": ev.in_port,
        "len": ev.len,
        "frame": summary,
        "summary": summary.to_string(),
        "stages": ev.trace.stages,
        "actions": actions,
        "drop": ev.drop.map(|d| d.name()),
    })
}

/// One line a person reads: the frame, each stage, the outcome.
fn human(ev: &TraceEvent) -> String {
    let out = match ev.drop {
        Some(d) => format!("drop({d})"),
        None => format!("output({})", ev.outputs.join(",")),
    };
    format!(
        "in_port={} len={} {} | {} -> {out}",
        ev.in_port,
        ev.len,
        switch::trace::summary::summarize(&ev.head),
        ev.trace
    )
}

impl Daemon {
    /// Starts a live trace for a client; the datapath traces while anybody listens.
    pub fn trace_subscribe(
        &mut self,
        port: Option<String>,
        human: bool,
    ) -> Result<(u64, mpsc::Receiver<String>), ApiError> {
        // A VXLAN port is listed as `vxlanVNI` but named `vxlan` on its bridge.
        let (port, network) = match &port {
            Some(p) if p == "vxlan" => (port, None),
            Some(p) => {
                let live = self.port(p)?;
                if live.record.port_type == crate::api::PortType::Vxlan {
                    let net = self.network(&live.record.network)?.id;
                    (Some("vxlan".to_string()), Some(net))
                } else {
                    (port, None)
                }
            }
            None => (None, None),
        };
        let (id, rx) = self.hub.subscribe(port, network, human);
        let hub = self.hub.clone();
        if let Err(e) = self.set_trace(Some(Box::new(move |ev| hub.publish(ev)))) {
            self.hub.unsubscribe(id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Ends a live trace; the last one turns tracing off.
    pub fn trace_unsubscribe(&mut self, id: u64) {
        if self.hub.unsubscribe(id) == 0 {
            let _ = self.set_trace(None);
        }
    }

    /// Starts capturing a port's frames for a client: JSON lines with time, direction and hex.
    /// Several clients may capture one port; each gets every frame. The port `vtep` captures
    /// the VXLAN underlay (outer headers rebuilt: the kernel makes the real ones). Returns the
    /// client's id (for [`Daemon::capture_stop`]) and its lines.
    pub fn capture_start(&mut self, port: &str) -> Result<(u64, mpsc::Receiver<String>), ApiError> {
        let underlay = port == "vtep" && self.overlay.is_some();
        if !underlay {
            self.port(port)?;
        }
        let (tx, rx) = mpsc::sync_channel::<String>(BACKLOG);
        let id = self.hub.next.fetch_add(1, Ordering::Relaxed);
        if let Some(fan) = self.captures.get(port) {
            lock(fan).push((id, tx));
            return Ok((id, rx));
        }
        let fan: CaptureFan = Arc::new(Mutex::new(vec![(id, tx)]));
        let out = fan.clone();
        if underlay {
            let o = self.overlay.as_ref().expect("checked");
            o.set_capture(Some(Box::new(move |dir, from, to, payload| {
                let frame = underlay_frame(from, to, payload);
                fan_out(&out, capture_line(dir, &frame));
            })));
        } else {
            let handle = self.port(port)?.handle;
            let sink = Box::new(move |_now: Instant, dir: Direction, frame: &[u8]| {
                fan_out(&out, capture_line(dir, frame));
            });
            if !self.call(move |ctl| ctl.dp.set_capture(handle, Some(sink)))? {
                return err(format!("no such port: {port}"));
            }
        }
        self.captures.insert(port.to_string(), fan);
        Ok((id, rx))
    }

    /// Ends one client's capture; the last one unhooks the port.
    pub fn capture_stop(&mut self, port: &str, id: u64) {
        let Some(fan) = self.captures.get(port) else {
            return;
        };
        let left = {
            let mut subs = lock(fan);
            subs.retain(|(i, _)| *i != id);
            subs.len()
        };
        if left > 0 {
            return;
        }
        self.captures.remove(port);
        if port == "vtep" {
            if let Some(o) = &self.overlay {
                o.set_capture(None);
                return;
            }
        }
        if let Some(p) = self.ports.get(port) {
            let handle = p.handle;
            let _ = self.call(move |ctl| ctl.dp.set_capture(handle, None));
        }
    }

    /// `vswitchctl trace`: one frame through the pipeline, no side effects.
    pub(super) fn trace(
        &self,
        in_port: &str,
        frame_hex: Option<&str>,
        flow: Option<&str>,
    ) -> Result<Value, ApiError> {
        let frame = match (frame_hex, flow) {
            (Some(h), None) => switch::trace::flow::parse_hex_frame(h)
                .map_err(|e| ApiError(format!("--frame: {e}")))?,
            (None, Some(f)) => {
                let spec = switch::trace::flow::parse_flow(f)
                    .map_err(|e| ApiError(format!("--flow: {e}")))?;
                spec.build_frame()
            }
            _ => return err("give exactly one of --frame HEX or --flow SPEC"),
        };
        let port = self.port(in_port)?;
        let handle = port.handle;
        let net = self.network(&port.record.network)?;
        let vni = net.record.spec.vni;
        let overlay = self.overlay.clone();
        let data = frame.clone();
        let (trace, decision, outputs) = self
            .call(move |ctl| {
                let (net, local) = ctl.dp.port_location(handle)?;
                let bridge = ctl.dp.bridge(net)?;
                let mut out = Vec::new();
                let mut trace = Trace::new();
                let now = Instant::now();
                let fr = switch::port::FrameRef {
                    meta: VirtioNetHdr::NONE,
                    data: &data,
                };
                let d = bridge.decide(now, local, fr, &mut out, &mut trace);
                let outputs: Vec<(String, Option<u16>)> = out
                    .iter()
                    .map(|p| {
                        let bp = bridge.port(*p).expect("output ports exist");
                        (bp.name.clone(), bp.mode.egress_tag(d.vlan))
                    })
                    .collect();
                Some((trace, d, outputs))
            })?
            .ok_or_else(|| ApiError(format!("port {in_port} vanished")))?;
        let mut trace = trace;
        let mut actions = Vec::new();
        let mut drop = decision.verdict.err().map(|r| r.name().to_string());
        for (name, tag) in outputs {
            if name == "vxlan" {
                let (Some(o), Some(vni)) = (&overlay, vni) else {
                    continue;
                };
                match o.explain(Instant::now(), vni, &frame) {
                    Ok((remotes, src_port)) => {
                        let list: Vec<String> = remotes.iter().map(|r| r.to_string()).collect();
                        trace.stages.push(switch::trace::StageRecord {
                            stage: Stage::Vxlan,
                            result: format!(
                                "encap vni {vni}, udp {src_port} -> {}, to {}",
                                o.udp_port(),
                                list.join(", ")
                            ),
                        });
                        for r in remotes {
                            actions.push(json!({
                                "output": "vxlan",
                                "remote": r.to_string(),
                                "vni": vni,
                                "src_port": src_port,
                            }));
                        }
                    }
                    Err(reason) => {
                        trace.stages.push(switch::trace::StageRecord {
                            stage: Stage::Vxlan,
                            result: format!("drop: {reason}"),
                        });
                        if actions.is_empty() {
                            drop = Some(reason.name().to_string());
                        }
                    }
                }
            } else {
                let mut a = json!({ "output": name });
                if let Some(t) = tag {
                    a["vlan"] = json!(t);
                }
                actions.push(a);
            }
        }
        let summary = switch::trace::summary::summarize(&frame);
        Ok(json!({
            "in_port": in_port,
            "network": port.record.network,
            "frame": summary,
            "summary": summary.to_string(),
            "stages": trace.stages,
            "actions": actions,
            "drop": drop,
        }))
    }
}

/// The clients capturing one port.
pub type CaptureFan = Arc<Mutex<Vec<(u64, mpsc::SyncSender<String>)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands one captured line to every client of the port (never blocking the datapath).
fn fan_out(fan: &Mutex<Vec<(u64, mpsc::SyncSender<String>)>>, line: String) {
    for (_, tx) in lock(fan).iter() {
        let _ = tx.try_send(line.clone());
    }
}

/// One `capture` line: time, direction, frame.
fn capture_line(dir: Direction, frame: &[u8]) -> String {
    json!({
        "ts_ns": switch::trace::pcap::unix_nanos_now(),
        "dir": if dir == Direction::Rx { "rx" } else { "tx" },
        "frame": hex(frame),
    })
    .to_string()
}

/// An Ethernet/IPv4/UDP frame around a VXLAN datagram, for underlay captures (the kernel builds
/// the real headers; these carry the same addresses and ports, UDP checksum zero as RFC 7348
/// allows).
fn underlay_frame(from: std::net::SocketAddr, to: std::net::SocketAddr, payload: &[u8]) -> Vec<u8> {
    let ip = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
    };
    let (l3, l4) = (
        ethernet::HEADER_LEN,
        ethernet::HEADER_LEN + ipv4::HEADER_LEN,
    );
    let udp_len = udp::HEADER_LEN + payload.len();
    let mut f = vec![0u8; l4 + udp_len];
    let mut eth = Frame::new_unchecked(&mut f[..]);
    eth.set_dst(MacAddr([0x02, 0, 0, 0, 0, 0x02]));
    eth.set_src(MacAddr([0x02, 0, 0, 0, 0, 0x01]));
    eth.set_ethertype(EtherType::Ipv4);
    let mut iph = ipv4::Packet::new_unchecked(&mut f[l3..l4]);
    iph.set_version_and_header_len(ipv4::HEADER_LEN);
    iph.set_total_len((ipv4::HEADER_LEN + udp_len) as u16);
    iph.set_dont_frag(true); // VXLAN never fragments
    iph.set_ttl(64);
    iph.set_protocol(IPPROTO_UDP);
    iph.set_src_addr(ip(from));
    iph.set_dst_addr(ip(to));
    iph.fill_checksum();
    let mut udph = udp::Packet::new_unchecked(&mut f[l4..]);
    udph.set_src_port(from.port());
    udph.set_dst_port(to.port());
    udph.set_len(udp_len as u16);
    f[l4 + udp::HEADER_LEN..].copy_from_slice(payload);
    f
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Keeps a shared hub for the daemon.
pub fn new_hub() -> Arc<TraceHub> {
    Arc::new(TraceHub::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_frames_decode_as_vxlan_over_udp() {
        let payload = [0x08, 0, 0, 0, 0, 0, 42, 0, 1, 2, 3];
        let f = underlay_frame(
            "10.0.0.1:61440".parse().unwrap(),
            "10.0.0.2:4789".parse().unwrap(),
            &payload,
        );
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(ip.dont_frag());
        assert_eq!(ip.protocol(), IPPROTO_UDP);
        assert_eq!(ip.src_addr(), std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(usize::from(ip.total_len()), f.len() - 14);
        let udp = udp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (61440, 4789));
        assert_eq!(usize::from(udp.len()), 8 + payload.len());
        assert_eq!(udp.payload(), &payload);
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}
