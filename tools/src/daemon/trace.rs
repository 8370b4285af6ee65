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
use switch::{Instant, VirtioNetHdr};

/// Lines a slow listener may fall behind before lines are dropped for it.
const BACKLOG: usize = 4096;

struct Sub {
    id: u64,
    tx: mpsc::SyncSender<String>,
    port: Option<String>,
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
    pub fn subscribe(&self, port: Option<String>, human: bool) -> (u64, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::sync_channel(BACKLOG);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push(Sub {
            id,
            tx,
            port,
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

/// A live trace record, in the shape of a one-shot trace (DESIGN.md).
fn live_record(ev: &TraceEvent) -> Value {
    let summary = switch::summary::summarize(&ev.head);
    json!({
        "in_port": ev.in_port,
        "len": ev.len,
        "frame": summary,
        "summary": summary.to_string(),
        "stages": ev.trace.stages,
        "actions": ev.outputs.iter().map(|o| json!({ "output": o })).collect::<Vec<_>>(),
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
        switch::summary::summarize(&ev.head),
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
        if let Some(p) = &port {
            self.port(p)?;
        }
        let (id, rx) = self.hub.subscribe(port, human);
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
    pub fn capture_start(&mut self, port: &str) -> Result<mpsc::Receiver<String>, ApiError> {
        let handle = self.port(port)?.handle;
        let (tx, rx) = mpsc::sync_channel::<String>(BACKLOG);
        let sink = Box::new(move |_now: Instant, dir: Direction, frame: &[u8]| {
            let ts_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let line = json!({
                "ts_ns": ts_ns,
                "dir": if dir == Direction::Rx { "rx" } else { "tx" },
                "frame": hex(frame),
            });
            let _ = tx.try_send(line.to_string());
        });
        if !self.call(move |ctl| ctl.dp.set_capture(handle, Some(sink)))? {
            return err(format!("no such port: {port}"));
        }
        Ok(rx)
    }

    /// Stops a capture.
    pub fn capture_stop(&mut self, port: &str) {
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
            (Some(h), None) => {
                switch::flow::parse_hex_frame(h).map_err(|e| ApiError(format!("--frame: {e}")))?
            }
            (None, Some(f)) => {
                let spec =
                    switch::flow::parse_flow(f).map_err(|e| ApiError(format!("--flow: {e}")))?;
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
        let summary = switch::summary::summarize(&frame);
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
