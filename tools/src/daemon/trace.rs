//! Seeing what the switch does: one-shot traces (`vswitchctl trace`), live traces streamed to
//! clients (`trace --live`, `vswitchd --trace`) and captures (`vswitchctl capture`).
//!
//! A one-shot trace runs the frame through [`switch::Bridge::decide`], which changes nothing: no
//! learning, no counters, nothing sent. Live traces and captures hook the datapath only while
//! somebody listens: with no listener the datapath has no sink and pays nothing.

use super::fdb::VTEP_PORT;
use super::{ApiError, Daemon};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use switch::datapath::{Direction, TraceEvent};
use switch::trace::Trace;
use switch::wire::{ethernet, ipv4, udp, EtherType, Frame, MacAddr, IPPROTO_UDP};
use switch::{Instant, VirtioNetHdr};

/// Lines a slow listener may fall behind before lines are dropped for it.
const BACKLOG: usize = 4096;

struct Sub {
    id: u64,
    tx: mpsc::SyncSender<String>,
    /// Only frames in or out of this port (bridge name) …
    port: Option<String>,
    /// … of this network (for a VXLAN port, whose name on its bridge all VXLAN ports share).
    network: Option<switch::datapath::NetworkId>,
    human: bool,
}

/// The listeners of live traces.
#[derive(Default)]
pub struct TraceHub {
    subs: Mutex<Vec<Sub>>,
    next: AtomicU64,
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

    /// Hands one frame's trace to every listener that wants it (never blocks the datapath).
    pub fn publish(&self, ev: &TraceEvent) {
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
                    .get_or_insert_with(|| live_record(ev).to_string())
                    .clone()
            };
            let _ = s.tx.try_send(line);
        }
    }
}

/// A live trace record, in the shape of a one-shot trace (DESIGN.md): an output to the overlay
/// is one action per remote peer, with its VNI and UDP source port.
fn live_record(ev: &TraceEvent) -> Value {
    let summary = switch::trace::summary::summarize(&ev.head);
    let mut actions = Vec::new();
    for o in &ev.outputs {
        if o == vxlan::PORT_NAME && !ev.tunnels.is_empty() {
            actions.extend(ev.tunnels.iter().map(tunnel_action));
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

/// An output to the overlay, one per remote peer: `{"output": "vxlan", "remote", "vni",
/// "src_port"}` (DESIGN.md).
fn tunnel_action(t: &switch::port::TunnelOutput) -> Value {
    json!({
        "output": vxlan::PORT_NAME,
        "remote": t.remote.to_string(),
        "vni": t.vni,
        "src_port": t.src_port,
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
        // A VXLAN port is listed as `vxlanVNI` but known on its bridge by the name all VXLAN
        // ports share: by that name, the listener gets every overlay's VXLAN port.
        let (port, network) = match port {
            None => (None, None),
            Some(p) => match self.ports.get(&p) {
                Some(live) if live.record.port_type == crate::api::PortType::Vxlan => {
                    let net = self.network(&live.record.network)?.id;
                    (Some(live.bridge_name.clone()), Some(net))
                }
                Some(_) => (Some(p), None),
                None if self.ports.values().any(|l| l.bridge_name == p) => (Some(p), None),
                None => return Err(ApiError::not_found(format!("no such port: {p}"))),
            },
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
        let underlay = port == VTEP_PORT && self.overlay.is_some();
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
            let o = self
                .overlay
                .as_ref()
                .ok_or_else(|| ApiError::internal("the VXLAN endpoint closed"))?;
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
                return Err(ApiError::not_found(format!("no such port: {port}")));
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
        if port == VTEP_PORT {
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
                .map_err(|e| ApiError::invalid(format!("--frame: {e}")))?,
            (None, Some(f)) => {
                let spec = switch::trace::flow::parse_flow(f)
                    .map_err(|e| ApiError::invalid(format!("--flow: {e}")))?;
                spec.build_frame()
            }
            _ => {
                return Err(ApiError::invalid(
                    "give exactly one of --frame HEX or --flow SPEC",
                ))
            }
        };
        let port = self.port(in_port)?;
        let handle = port.handle;
        let vxlan = self.vxlan_port(&port.record.network).map(|p| p.handle);
        let data = frame.clone();
        let (trace, decision, outputs, tunnels) = self
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
                let vxlan_local = vxlan.and_then(|h| ctl.dp.port_location(h)).map(|(_, l)| l);
                // Each output: its name, its VLAN tag, whether it is the VXLAN port.
                let outputs: Vec<(String, Option<u16>, bool)> = out
                    .iter()
                    .filter_map(|p| {
                        let bp = bridge.port(*p)?;
                        Some((
                            bp.name.clone(),
                            bp.mode.egress_tag(d.vlan),
                            Some(*p) == vxlan_local,
                        ))
                    })
                    .collect();
                // The overlay records its own stage, as the live trace does.
                let tunnels = ctl.dp.trace_egress(now, net, &out, fr, &mut trace);
                Some((trace, d, outputs, tunnels))
            })?
            .ok_or_else(|| ApiError::internal(format!("port {in_port} vanished")))?;
        let mut actions = Vec::new();
        let mut drop = decision.verdict.err().map(|r| r.name().to_string());
        for (name, tag, is_vxlan) in outputs {
            if is_vxlan {
                match &tunnels {
                    Ok(remotes) => actions.extend(remotes.iter().map(tunnel_action)),
                    Err(reason) if actions.is_empty() => drop = Some(reason.name().to_string()),
                    Err(_) => {}
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
        let mut stages = serde_json::to_value(&trace.stages)
            .map_err(|e| ApiError::internal(format!("encoding the trace: {e}")))?;
        if let (Some(gw), Value::Array(list)) = (
            self.gateway_stage(&port.record.network, &frame),
            &mut stages,
        ) {
            list.push(gw);
        }
        Ok(json!({
            "in_port": in_port,
            "network": port.record.network,
            "frame": summary,
            "summary": summary.to_string(),
            "stages": stages,
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
