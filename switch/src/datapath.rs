//! The datapath: ports, the bridges they belong to, and the loop that moves frames between them.
//!
//! One [`Datapath`] runs on one thread and owns its ports and bridges outright (no locks). For a
//! ready port it drains up to a budget of frames in batches, runs each through the port's bridge,
//! groups the results by egress port, does at each egress port what that port cannot do itself
//! (VLAN tag push/pop, checksum, segmentation), and hands each port its frames in one call.
//!
//! The control plane talks to it with closures sent over a channel ([`Command`]), woken through
//! a `mio::Waker`; counters are atomics it can read at any time.

use crate::bridge::{retag, Bridge, BridgeConfig, BridgePort, Decision, PortMode};
use crate::counters::{DropReason, PortCounters};
use crate::gso::Segmenter;
use crate::port::{Capabilities, FrameRef, Packet, Port, PortId, TunnelOutput};
use crate::time::Instant;
use crate::trace::Trace;
use crate::wire::L2Header;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A network's bridge inside the datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(pub u16);

/// A port inside the datapath (also its `mio::Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortHandle(pub usize);

/// Frames taken from one port per wake-up before the others get their turn.
pub const DEFAULT_BUDGET: usize = 256;
/// Frames per `recv` call.
pub const BURST: usize = 64;
/// The longest a frame should wait in a port's receive queue: ports size their queues to what
/// the datapath drains in this time at its measured cost per frame (no standing queue). Not
/// 1 ms: a ring that holds only 1 ms of draining does not ride out the datapath thread being
/// off its CPU for a few milliseconds on a busy machine (64-byte UDP on 2 shared CPUs: 0.41×
/// the rate the ring without a budget carried in the same run). Not 16 ms either: where the
/// CPUs are busy the ring then stands full, and every frame waits its whole depth (RFC 2544 at
/// 90 % of the carried rate, one-way p99 at the sink's interface: 4–26 ms at 16 ms, about
/// 1 ms at 4 ms and at 2 ms, with the carried rate within the runs' noise).
pub const RX_LATENCY_BUDGET: Duration = Duration::from_millis(4);
/// The cost per frame assumed until enough frames were measured (1 µs: a frame read from a
/// ring, switched and sent with a batched system call).
const ASSUMED_NS_PER_FRAME: u64 = 1_000;
/// Frames a second it takes to measure the cost per frame anew (fewer: the last figure holds).
const COST_SAMPLE_FRAMES: u64 = 10_000;

/// A port's state as the control plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    Up,
    /// The interface failed or vanished; nothing is read from or sent to it.
    Down,
}

/// One frame's path through the datapath, for `vswitchd --trace` and live traces.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    /// When the frame was processed.
    pub now: Instant,
    /// The ingress port's name.
    pub in_port: String,
    /// The network (bridge) it was switched in.
    pub network: NetworkId,
    /// The frame as it came in (at most the first 128 bytes).
    pub head: Vec<u8>,
    /// Its full length.
    pub len: usize,
    /// What each stage decided.
    pub trace: Trace,
    /// Output port names (empty when dropped).
    pub outputs: Vec<String>,
    /// Why it was dropped, if it was.
    pub drop: Option<DropReason>,
    /// Where tunnel ports among the outputs send it (one entry per remote).
    pub tunnels: Vec<TunnelOutput>,
}

/// Receives trace events while tracing is on.
pub type TraceSink = Box<dyn FnMut(&TraceEvent) + Send>;

/// Which way a captured frame went through its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by the switch from the port.
    Rx,
    /// Sent by the switch out of the port.
    Tx,
}

/// Receives the frames a port receives and sends while a capture is on (with their time).
pub type CaptureSink = Box<dyn FnMut(Instant, Direction, &[u8]) + Send>;

/// A port slot: the port, where it is attached, and its counters.
struct PortSlot {
    port: Box<dyn Port>,
    caps: Capabilities,
    network: NetworkId,
    local: PortId,
    counters: Arc<PortCounters>,
    state: PortState,
    /// Set when the last drain stopped at the budget: there may be more to read.
    more: bool,
    /// Where this port's frames go while a capture is on.
    capture: Option<CaptureSink>,
}

struct NetworkSlot {
    bridge: Bridge,
    /// Bridge-local port id → datapath handle.
    handles: Vec<Option<PortHandle>>,
}

/// One pending transmission: frame `pkt` of the current batch to port `out`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    out: PortHandle,
    pkt: u16,
    vlan: u16,
    tagged: bool,
}

/// Where a frame about to be sent lives: in the receive batch, or in the egress arena.
#[derive(Debug, Clone, Copy)]
enum Src {
    Rx(u16),
    Arena { start: usize, len: usize },
}

/// Ports, bridges and the buffers to move frames between them.
pub struct Datapath {
    networks: Vec<Option<NetworkSlot>>,
    ports: Vec<Option<PortSlot>>,
    rx: Vec<Packet>,
    pending: Vec<Pending>,
    out: Vec<PortId>,
    /// Frames rewritten at egress (retagged, checksummed, segmented) for the current port.
    arena: Vec<u8>,
    staged: Vec<(crate::offload::VirtioNetHdr, Src)>,
    scratch: Vec<u8>,
    segmenter: Segmenter,
    refs: Vec<FrameRef<'static>>,
    budget: usize,
    trace_sink: Option<TraceSink>,
    last_aging: Instant,
    /// Time spent draining ports (reading, switching, sending) a full burst or more at a
    /// time since the last aging, and the frames it moved: the cost per frame at which a full
    /// queue drains, which the ports' queues are sized by.
    busy_ns: u64,
    busy_frames: u64,
    /// The last measured cost per frame, in nanoseconds.
    ns_per_frame: u64,
}

impl Default for Datapath {
    fn default() -> Self {
        Datapath::new()
    }
}

impl Datapath {
    /// An empty datapath.
    pub fn new() -> Datapath {
        Datapath {
            networks: Vec::new(),
            ports: Vec::new(),
            rx: (0..BURST).map(|_| Packet::new()).collect(),
            pending: Vec::with_capacity(BURST * 8),
            out: Vec::with_capacity(64),
            arena: Vec::with_capacity(1 << 20),
            staged: Vec::with_capacity(BURST * 4),
            scratch: Vec::with_capacity(1 << 16),
            segmenter: Segmenter::new(),
            refs: Vec::with_capacity(BURST * 4),
            budget: DEFAULT_BUDGET,
            trace_sink: None,
            last_aging: Instant::ZERO,
            busy_ns: 0,
            busy_frames: 0,
            ns_per_frame: ASSUMED_NS_PER_FRAME,
        }
    }

    /// Adds a network: its own bridge, MAC table and flood domain.
    pub fn add_network(&mut self, config: BridgeConfig) -> NetworkId {
        let slot = NetworkSlot {
            bridge: Bridge::new(config),
            handles: Vec::new(),
        };
        let i = first_free(&mut self.networks);
        self.networks[i] = Some(slot);
        NetworkId(i as u16)
    }

    /// Removes a network. Refused (returns false) while it still has ports.
    pub fn remove_network(&mut self, id: NetworkId) -> bool {
        match self.networks.get(id.0 as usize) {
            Some(Some(n)) if n.handles.iter().all(Option::is_none) => {
                self.networks[id.0 as usize] = None;
                true
            }
            _ => false,
        }
    }

    /// A network's bridge.
    pub fn bridge(&self, id: NetworkId) -> Option<&Bridge> {
        Some(&self.networks.get(id.0 as usize)?.as_ref()?.bridge)
    }

    /// A network's bridge, to change its table or ports.
    pub fn bridge_mut(&mut self, id: NetworkId) -> Option<&mut Bridge> {
        Some(&mut self.networks.get_mut(id.0 as usize)?.as_mut()?.bridge)
    }

    /// Attaches a port to a network. Returns its handle, or gives the port back if the network
    /// does not exist.
    pub fn add_port(
        &mut self,
        network: NetworkId,
        port: Box<dyn Port>,
        mode: PortMode,
    ) -> Result<PortHandle, Box<dyn Port>> {
        self.add_port_with_counters(network, port, mode, Arc::default())
    }

    /// Like [`Datapath::add_port`], with counters the port itself also holds (a port that
    /// drops frames on its own, like a VXLAN port, counts them there).
    pub fn add_port_with_counters(
        &mut self,
        network: NetworkId,
        port: Box<dyn Port>,
        mode: PortMode,
        counters: Arc<PortCounters>,
    ) -> Result<PortHandle, Box<dyn Port>> {
        let Some(Some(net)) = self.networks.get_mut(network.0 as usize) else {
            return Err(port);
        };
        let caps = port.capabilities();
        let local = net.bridge.add_port(BridgePort {
            name: port.name().to_string(),
            mode,
            max_frame_len: caps.max_frame_len(),
            up: true,
            counters: counters.clone(),
        });
        let i = first_free(&mut self.ports);
        let handle = PortHandle(i);
        if net.handles.len() <= local.index() {
            net.handles.resize(local.index() + 1, None);
        }
        net.handles[local.index()] = Some(handle);
        self.ports[i] = Some(PortSlot {
            port,
            caps,
            network,
            local,
            counters,
            state: PortState::Up,
            more: true,
            capture: None,
        });
        Ok(handle)
    }

    /// Detaches a port and returns it (its MACs are forgotten).
    pub fn remove_port(&mut self, handle: PortHandle) -> Option<Box<dyn Port>> {
        let slot = self.ports.get_mut(handle.0)?.take()?;
        if let Some(Some(net)) = self.networks.get_mut(slot.network.0 as usize) {
            net.bridge.remove_port(slot.local);
            net.handles[slot.local.index()] = None;
        }
        Some(slot.port)
    }

    /// The port behind a handle.
    pub fn port(&self, handle: PortHandle) -> Option<&dyn Port> {
        Some(self.ports.get(handle.0)?.as_ref()?.port.as_ref())
    }

    /// The network and bridge-local id of a port.
    pub fn port_location(&self, handle: PortHandle) -> Option<(NetworkId, PortId)> {
        let s = self.ports.get(handle.0)?.as_ref()?;
        Some((s.network, s.local))
    }

    /// A port's counters.
    pub fn counters(&self, handle: PortHandle) -> Option<Arc<PortCounters>> {
        Some(self.ports.get(handle.0)?.as_ref()?.counters.clone())
    }

    /// What a port can do now (its MTU is re-read about once a second).
    pub fn capabilities(&self, handle: PortHandle) -> Option<Capabilities> {
        Some(self.ports.get(handle.0)?.as_ref()?.caps)
    }

    /// Whether a port is up.
    pub fn port_state(&self, handle: PortHandle) -> Option<PortState> {
        Some(self.ports.get(handle.0)?.as_ref()?.state)
    }

    /// Every port handle.
    pub fn handles(&self) -> impl Iterator<Item = PortHandle> + '_ {
        (0..self.ports.len())
            .filter(|i| self.ports[*i].is_some())
            .map(PortHandle)
    }

    /// The handle of the port called `name`.
    pub fn find_port(&self, name: &str) -> Option<PortHandle> {
        self.handles()
            .find(|h| self.port(*h).map(|p| p.name()) == Some(name))
    }

    /// True when a frame entering at `handle` claims a source MAC that is a static station on
    /// another port of its network: the bridge would drop it (`mac_move_refused`). Lets a port
    /// that learns on its own (the VTEP) refuse the same frames, by the bridge's rule.
    pub fn refuses_source(&self, now: Instant, handle: PortHandle, frame: FrameRef<'_>) -> bool {
        let Some((network, local)) = self.port_location(handle) else {
            return false;
        };
        self.bridge(network)
            .is_some_and(|b| b.refuses_source(now, local, frame))
    }

    /// Starts (or with `None` stops) capturing a port's frames. Returns false for an unknown
    /// port.
    pub fn set_capture(&mut self, handle: PortHandle, sink: Option<CaptureSink>) -> bool {
        match self.ports.get_mut(handle.0) {
            Some(Some(slot)) => {
                slot.capture = sink;
                true
            }
            _ => false,
        }
    }

    /// Records in `trace` what each of `outputs` (ports of `network`'s bridge) would do with
    /// `frame` beyond sending it (an overlay's encap), without sending anything; returns where
    /// tunnel ports would send it. For one-shot traces, after [`Bridge::decide`]; the live
    /// trace does the same for every frame.
    pub fn trace_egress(
        &self,
        now: Instant,
        network: NetworkId,
        outputs: &[PortId],
        frame: FrameRef<'_>,
        trace: &mut Trace,
    ) -> Result<Vec<TunnelOutput>, DropReason> {
        let Some(Some(net)) = self.networks.get(network.0 as usize) else {
            return Ok(Vec::new());
        };
        let mut tunnels = Vec::new();
        let mut refused = None;
        for p in outputs {
            let egress = net.handles.get(p.index()).copied().flatten();
            let Some(Some(slot)) = egress.and_then(|h| self.ports.get(h.0)) else {
                continue;
            };
            match slot.port.trace_send(now, frame, trace) {
                Ok(t) => tunnels.extend(t),
                Err(reason) => refused = Some(reason),
            }
        }
        match refused {
            Some(reason) if tunnels.is_empty() => Err(reason),
            _ => Ok(tunnels),
        }
    }

    /// Turns tracing on (every frame's path goes to `sink`) or off.
    pub fn set_trace_sink(&mut self, sink: Option<TraceSink>) {
        self.trace_sink = sink;
    }

    /// True while a trace sink is set.
    pub fn tracing(&self) -> bool {
        self.trace_sink.is_some()
    }

    /// Marks a port down: it is neither read nor sent to, and its MACs are forgotten.
    pub fn set_port_down(&mut self, handle: PortHandle) {
        let Some(Some(slot)) = self.ports.get_mut(handle.0) else {
            return;
        };
        slot.state = PortState::Down;
        slot.more = false;
        if let Some(Some(net)) = self.networks.get_mut(slot.network.0 as usize) {
            net.bridge.set_port_up(slot.local, false);
        }
    }

    /// Housekeeping, at most once a second: ages every MAC table and brings back ports whose
    /// link is up again (an interface that was set down and up).
    pub fn age(&mut self, now: Instant) {
        if now.saturating_since(self.last_aging) < Duration::from_secs(1) {
            return;
        }
        self.last_aging = now;
        for net in self.networks.iter_mut().flatten() {
            net.bridge.fdb_mut().age(now);
        }
        if self.busy_frames >= COST_SAMPLE_FRAMES {
            self.ns_per_frame = (self.busy_ns / self.busy_frames).max(1);
        }
        (self.busy_ns, self.busy_frames) = (0, 0);
        let queue_budget = self.rx_queue_budget();
        for slot in self.ports.iter_mut().flatten() {
            slot.counters
                .record_rx_queue_peak(slot.port.take_rx_queue_peak());
            slot.port.set_rx_queue_budget(queue_budget);
            let refused = slot.port.take_tx_refused();
            slot.counters
                .count_drops(DropReason::RefusedByPort, refused);
            let bad = slot.port.take_rx_bad();
            slot.counters.count_drops(DropReason::BadRxFrame, bad);
            let overruns = slot.port.take_rx_overruns();
            slot.counters.count_drops(DropReason::RxQueueFull, overruns);
            // The interface's MTU may have changed (`ip link set … mtu …`).
            slot.port.refresh();
            let caps = slot.port.capabilities();
            if caps.mtu != slot.caps.mtu {
                slot.caps = caps;
                if let Some(Some(net)) = self.networks.get_mut(slot.network.0 as usize) {
                    if let Some(bp) = net.bridge.port_mut(slot.local) {
                        bp.max_frame_len = caps.max_frame_len();
                    }
                }
            }
            if slot.state == PortState::Down && slot.port.link_up() {
                slot.state = PortState::Up;
                slot.more = true;
                if let Some(Some(net)) = self.networks.get_mut(slot.network.0 as usize) {
                    net.bridge.set_port_up(slot.local, true);
                }
                tracing::info!(port = slot.port.name(), "port up again");
            } else if slot.state == PortState::Up {
                // Read every port once a second even without a wake-up. Readiness is
                // edge-triggered: a socket error that came with frames still to read (an
                // AF_PACKET ring reports it only once it is empty) would otherwise wait for a
                // wake-up that never comes.
                slot.more = true;
            }
        }
    }

    /// True if some port stopped at its budget last time and may have more to read.
    pub fn has_more(&self) -> bool {
        self.ports.iter().flatten().any(|p| p.more)
    }

    /// Gives every port that stopped at its budget another turn.
    pub fn poll_unfinished(&mut self, now: Instant) {
        for i in 0..self.ports.len() {
            if matches!(&self.ports[i], Some(slot) if slot.more) {
                self.poll_port(now, PortHandle(i));
            }
        }
    }

    /// Drains every port with something to read once (up to the budget each). Returns the
    /// number of frames taken. For ports without a descriptor (in-memory) and for tests.
    pub fn poll_all(&mut self, now: Instant) -> usize {
        let mut total = 0;
        for i in 0..self.ports.len() {
            if self.ports[i].is_some() {
                total += self.poll_port(now, PortHandle(i));
            }
        }
        total
    }

    /// Drains one port: up to the budget, in batches, each switched and sent before the next.
    /// Returns the number of frames taken.
    pub fn poll_port(&mut self, now: Instant, handle: PortHandle) -> usize {
        let start = Instant::now();
        let taken = self.drain_port(now, handle);
        // Only a drain of at least one full burst measures what a full queue costs to drain:
        // a frame or two per wake-up costs a system call each, which a backlog shares among
        // a burst, and would make the budget (and the ring) too small to ride out a pause.
        if taken >= BURST {
            self.busy_ns += Instant::now().saturating_since(start).as_nanos() as u64;
            self.busy_frames += taken as u64;
        }
        taken
    }

    /// The datapath's measured cost per frame (reading, switching and sending), in
    /// nanoseconds: re-measured every second that moved enough frames.
    pub fn ns_per_frame(&self) -> u64 {
        self.ns_per_frame
    }

    /// The frames the datapath drains within [`RX_LATENCY_BUDGET`] at its measured cost: what
    /// the ports are told to size their receive queues by.
    pub fn rx_queue_budget(&self) -> usize {
        let budget = RX_LATENCY_BUDGET.as_nanos() as u64;
        (budget / self.ns_per_frame.max(1)) as usize
    }

    /// The body of [`Datapath::poll_port`].
    fn drain_port(&mut self, now: Instant, handle: PortHandle) -> usize {
        let mut taken = 0;
        loop {
            let Some(Some(slot)) = self.ports.get_mut(handle.0) else {
                return taken;
            };
            if slot.state == PortState::Down {
                return taken;
            }
            let burst = BURST.min(slot.caps.max_burst.max(1));
            let n = match slot.port.recv(&mut self.rx[..burst]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(port = slot.port.name(), error = %e, "port down");
                    self.set_port_down(handle);
                    return taken;
                }
            };
            if n == 0 {
                slot.more = false;
                return taken;
            }
            if let Some(capture) = slot.capture.as_mut() {
                for p in &self.rx[..n] {
                    capture(now, Direction::Rx, p.frame());
                }
            }
            let bytes: usize = self.rx[..n].iter().map(|p| p.len).sum();
            slot.counters.rx_packets.fetch_add(n as u64, Relaxed);
            slot.counters.rx_bytes.fetch_add(bytes as u64, Relaxed);
            self.switch_batch(now, handle, n);
            self.transmit_pending();
            taken += n;
            if n < burst {
                if let Some(Some(slot)) = self.ports.get_mut(handle.0) {
                    slot.more = false;
                }
                return taken;
            }
            if taken >= self.budget {
                if let Some(Some(slot)) = self.ports.get_mut(handle.0) {
                    slot.more = true;
                }
                return taken;
            }
        }
    }

    /// Runs frames `rx[..n]` from `handle` through its bridge; fills `pending`.
    fn switch_batch(&mut self, now: Instant, handle: PortHandle, n: usize) {
        let Some(Some(slot)) = self.ports.get(handle.0) else {
            return;
        };
        let (network, local, counters) = (slot.network, slot.local, slot.counters.clone());
        let Some(Some(net)) = self.networks.get_mut(network.0 as usize) else {
            return;
        };
        for i in 0..n {
            let frame = self.rx[i].as_ref();
            let d: Decision = match self.trace_sink.as_mut() {
                None => net.bridge.process(now, local, frame, &mut self.out),
                Some(sink) => {
                    // What the ingress port did before the bridge (an overlay's decap) comes
                    // first; then the bridge's stages; then what each egress port will do
                    // beyond sending (an overlay's encap), recorded by the ports themselves.
                    let mut trace = match self.ports.get_mut(handle.0) {
                        Some(Some(slot)) => slot.port.take_rx_trace(i).unwrap_or_default(),
                        _ => Trace::new(),
                    };
                    let d = net
                        .bridge
                        .process_traced(now, local, frame, &mut self.out, &mut trace);
                    let mut tunnels = Vec::new();
                    for p in &self.out {
                        let egress = net.handles.get(p.index()).copied().flatten();
                        let Some(Some(slot)) = egress.and_then(|h| self.ports.get(h.0)) else {
                            continue;
                        };
                        if let Ok(t) = slot.port.trace_send(now, frame, &mut trace) {
                            tunnels.extend(t);
                        }
                    }
                    let event = TraceEvent {
                        now,
                        in_port: net.bridge.port_name(local).to_string(),
                        network,
                        head: frame.data[..frame.data.len().min(128)].to_vec(),
                        len: frame.data.len(),
                        trace,
                        outputs: self
                            .out
                            .iter()
                            .map(|p| net.bridge.port_name(*p).to_string())
                            .collect(),
                        drop: d.verdict.err(),
                        tunnels,
                    };
                    sink(&event);
                    d
                }
            };
            if let Some(mac) = d.arp_reply {
                // Answered by ARP suppression: the request becomes the reply, back out of the
                // ingress port (the one port in `out`).
                let pkt = &mut self.rx[i];
                let len = pkt.len;
                if let Some(bytes) = pkt.buf.get_mut(..len) {
                    crate::wire::arp::arp_reply_in_place(bytes, mac);
                }
            }
            match d.verdict {
                Err(reason) => counters.count_drop(reason),
                Ok(_) => {
                    for p in &self.out {
                        if let Some(Some(out)) = net.handles.get(p.index()) {
                            self.pending.push(Pending {
                                out: *out,
                                pkt: i as u16,
                                vlan: d.vlan,
                                tagged: d.ingress_tagged,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Sends every pending frame, one `send` call per egress port.
    fn transmit_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Group by egress port; keep arrival order within a port.
        self.pending.sort_by_key(|p| p.out);
        let mut start = 0;
        while start < self.pending.len() {
            let out = self.pending[start].out;
            let end = start
                + self.pending[start..]
                    .iter()
                    .take_while(|p| p.out == out)
                    .count();
            self.transmit_to(out, start, end);
            start = end;
        }
        self.pending.clear();
    }

    /// Sends `pending[start..end]` (all for `out`): stage each frame as the port needs it, then
    /// one `send`.
    fn transmit_to(&mut self, out: PortHandle, start: usize, end: usize) {
        let Some(Some(slot)) = self.ports.get(out.0) else {
            return;
        };
        let bport = self
            .networks
            .get(slot.network.0 as usize)
            .and_then(Option::as_ref)
            .and_then(|net| net.bridge.port(slot.local));
        let Some(bport) = bport.filter(|_| slot.state == PortState::Up) else {
            slot.counters
                .count_drops(DropReason::PortDown, (end - start) as u64);
            return;
        };
        let (caps, counters) = (slot.caps, slot.counters.clone());
        let oversize = slot.port.oversize_reason();
        self.arena.clear();
        self.staged.clear();
        for p in &self.pending[start..end] {
            let pkt = &self.rx[p.pkt as usize];
            let frame = pkt.as_ref();
            let want = bport.mode.egress_tag(p.vlan);
            let tag_ok = match (p.tagged, want) {
                (false, None) => true,
                (true, Some(vid)) => tag_vid(frame.data) == Some(vid),
                _ => false,
            };
            // The length as it leaves: a pushed tag adds 4 bytes, a popped one removes 4.
            let egress_len = match (p.tagged, want) {
                (false, Some(_)) => frame.data.len() + 4,
                (true, None) => frame.data.len() - 4,
                _ => frame.data.len(),
            };
            let fits = frame.meta.is_gso() || egress_len <= caps.max_frame_len();
            if !fits {
                counters.count_drop(oversize);
                continue;
            }
            if tag_ok && caps.offloads.accepts(&frame.meta) {
                self.staged.push((frame.meta, Src::Rx(p.pkt)));
                continue;
            }
            let frame = if tag_ok {
                frame
            } else {
                retag(frame, p.tagged, want, &mut self.scratch)
            };
            if caps.offloads.accepts(&frame.meta) {
                let s = self.arena.len();
                self.arena.extend_from_slice(frame.data);
                let len = frame.data.len();
                self.staged.push((frame.meta, Src::Arena { start: s, len }));
                continue;
            }
            let (arena, staged) = (&mut self.arena, &mut self.staged);
            let res = self.segmenter.segment(frame.data, &frame.meta, |seg| {
                let s = arena.len();
                arena.extend_from_slice(seg);
                let src = Src::Arena {
                    start: s,
                    len: seg.len(),
                };
                staged.push((crate::offload::VirtioNetHdr::NONE, src));
            });
            if res.is_err() {
                counters.count_drop(DropReason::BadOffload);
            }
        }
        // Build the borrowed views (reusing the vector's allocation across calls).
        let mut refs: Vec<FrameRef<'_>> = recycle(std::mem::take(&mut self.refs));
        for (meta, src) in &self.staged {
            let data = match *src {
                Src::Rx(i) => self.rx[i as usize].frame(),
                Src::Arena { start, len } => &self.arena[start..start + len],
            };
            refs.push(FrameRef { meta: *meta, data });
        }
        let Some(Some(slot)) = self.ports.get_mut(out.0) else {
            return;
        };
        let result = send_all(slot.port.as_mut(), &refs);
        if let Some(capture) = slot.capture.as_mut() {
            let sent = *result.as_ref().unwrap_or_else(|n| n);
            let now = Instant::now();
            for f in &refs[..sent] {
                capture(now, Direction::Tx, f.data);
            }
        }
        let (sent, failed) = match result {
            Ok(n) => (n, false),
            Err(n) => (n, true),
        };
        let bytes: usize = refs[..sent].iter().map(|f| f.data.len()).sum();
        counters.tx_packets.fetch_add(sent as u64, Relaxed);
        counters.tx_bytes.fetch_add(bytes as u64, Relaxed);
        // A frame the port cannot take now is dropped now: a queue held here would only
        // add delay in front of every later frame.
        let reason = if failed {
            DropReason::PortDown
        } else {
            DropReason::TxQueueFull
        };
        counters.count_drops(reason, (refs.len() - sent) as u64);
        self.refs = recycle(refs);
        if failed {
            self.set_port_down(out);
        }
    }
}

/// Sends all frames, retrying while the port takes some. `Err(sent)` when the port failed.
fn send_all(port: &mut dyn Port, frames: &[FrameRef<'_>]) -> Result<usize, usize> {
    let mut sent = 0;
    while sent < frames.len() {
        match port.send(&frames[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(sent),
        }
    }
    Ok(sent)
}

/// The VLAN id of the outermost tag, if the frame has one.
fn tag_vid(frame: &[u8]) -> Option<u16> {
    let h = L2Header::parse(frame).ok()?;
    h.outer.or(h.vlan).map(|t| t.vid)
}

/// Empties a vector of borrowed frames and gives it back with a new lifetime, keeping its
/// allocation (an in-place collect), so the hot path does not allocate per batch.
fn recycle<'a>(mut v: Vec<FrameRef<'_>>) -> Vec<FrameRef<'a>> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

/// Index of the first empty slot, growing the vector if there is none.
fn first_free<T>(v: &mut Vec<Option<T>>) -> usize {
    match v.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            v.push(None);
            v.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::memory;

    /// A port that reports frames its kernel refused, frames its kernel lost before they
    /// could be read, and frames it received bad.
    struct Refusing(memory::MemoryPort, u64, u64, u64);

    impl Port for Refusing {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
            self.0.recv(pkts)
        }
        fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
            self.0.send(frames)
        }
        fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn take_tx_refused(&mut self) -> u64 {
            std::mem::take(&mut self.1)
        }
        fn take_rx_bad(&mut self) -> u64 {
            std::mem::take(&mut self.3)
        }
        fn take_rx_overruns(&mut self) -> u64 {
            std::mem::take(&mut self.2)
        }
    }

    /// A port whose socket fails after it handed over its frames, reporting the error only on
    /// the read after that (like an AF_PACKET ring that must run dry first).
    struct FailsAfterFrames(memory::MemoryPort);

    impl Port for FailsAfterFrames {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
            let n = self.0.recv(pkts)?;
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENETDOWN));
            }
            Ok(n)
        }
        fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
            self.0.send(frames)
        }
        fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
    }

    #[test]
    fn drops_a_port_made_itself_are_counted_once() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (port, _peer) = memory::wire("r0", memory::plain_caps());
        let h = dp
            .add_port(net, Box::new(Refusing(port, 3, 5, 7)), PortMode::DEFAULT)
            .map_err(|_| ())
            .unwrap();
        dp.age(Instant::from_secs(10));
        dp.age(Instant::from_secs(20));
        let c = dp.counters(h).unwrap();
        assert_eq!(c.drops(DropReason::RefusedByPort), 3);
        assert_eq!(c.drops(DropReason::RxQueueFull), 5);
        assert_eq!(c.snapshot().drops["refused_by_port"], 3);
        assert_eq!(c.snapshot().drops["rx_queue_full"], 5);
        assert_eq!(c.drops(DropReason::BadRxFrame), 7);
        assert_eq!(c.snapshot().drops["bad_rx_frame"], 7);
    }

    /// A port that reports the receive-queue depths it is given, one a call, and remembers
    /// the queue budget the datapath gave it.
    struct Queued(
        memory::MemoryPort,
        std::collections::VecDeque<u64>,
        Arc<std::sync::atomic::AtomicUsize>,
    );

    impl Port for Queued {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
            self.0.recv(pkts)
        }
        fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
            self.0.send(frames)
        }
        fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn take_rx_queue_peak(&mut self) -> u64 {
            self.1.pop_front().unwrap_or(0)
        }
        fn set_rx_queue_budget(&mut self, frames: usize) {
            self.2.store(frames, Relaxed);
        }
    }

    /// A broadcast frame from station `src`.
    fn broadcast_from(src: u8, seq: u16) -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, src, 0x88, 0xb5]);
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.resize(60, 0);
        frame
    }

    #[test]
    fn frames_a_port_cannot_take_are_dropped_at_once_as_tx_queue_full() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (in_port, in_peer) = memory::wire("in", memory::plain_caps());
        let (out_port, out_peer) = memory::wire("stuck", memory::plain_caps());
        // The peer never reads: its wire takes 8 frames and then reports itself full.
        out_peer.set_limit(8);
        dp.add_port(net, Box::new(in_port), PortMode::DEFAULT)
            .map_err(|_| ())
            .unwrap();
        let out = dp
            .add_port(net, Box::new(out_port), PortMode::DEFAULT)
            .map_err(|_| ())
            .unwrap();
        for seq in 0..20 {
            in_peer.inject(&broadcast_from(1, seq));
        }
        let t = Instant::from_secs(10);
        assert_eq!(dp.poll_all(t), 20);
        let c = dp.counters(out).unwrap();
        assert_eq!(c.tx_packets.load(Relaxed), 8);
        assert_eq!(c.drops(DropReason::TxQueueFull), 12);
        assert_eq!(c.snapshot().drops["tx_queue_full"], 12);
        // Nothing was held back for later: another pass sends nothing more.
        assert_eq!(dp.poll_all(t), 0);
        assert_eq!(out_peer.pending(), 8);
        assert_eq!(c.tx_packets.load(Relaxed), 8);
        // Once the peer reads, new frames go through again; the dropped ones stay dropped.
        assert_eq!(out_peer.drain().len(), 8);
        in_peer.inject(&broadcast_from(1, 20));
        assert_eq!(dp.poll_all(t), 1);
        let got = out_peer.drain();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][14..16], 20u16.to_be_bytes());
        assert_eq!(c.drops(DropReason::TxQueueFull), 12);
        assert_eq!(c.drops(DropReason::QueueFull), 0);
    }

    #[test]
    fn the_deepest_receive_queue_is_kept_per_second_and_since_attach() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (port, _peer) = memory::wire("q0", memory::plain_caps());
        let budget = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peaks = [40, 7, 0].into_iter().collect();
        let h = dp
            .add_port(
                net,
                Box::new(Queued(port, peaks, budget.clone())),
                PortMode::DEFAULT,
            )
            .map_err(|_| ())
            .unwrap();
        let c = dp.counters(h).unwrap();
        assert_eq!(
            (c.snapshot().rx_queue_peak, c.snapshot().rx_queue_max),
            (0, 0)
        );
        let seen: Vec<(u64, u64)> = (1..=4)
            .map(|s| {
                dp.age(Instant::from_secs(10 * s));
                let snap = c.snapshot();
                (snap.rx_queue_peak, snap.rx_queue_max)
            })
            .collect();
        // The peak is the last second's (it falls back), the max the deepest since attach.
        assert_eq!(seen, [(40, 40), (7, 40), (0, 40), (0, 40)]);
        // The port was told what the datapath drains within its latency budget at the cost
        // assumed before any measurement.
        assert_eq!(budget.load(Relaxed), dp.rx_queue_budget());
        assert_eq!(
            dp.rx_queue_budget() as u64,
            RX_LATENCY_BUDGET.as_nanos() as u64 / ASSUMED_NS_PER_FRAME
        );
    }

    #[test]
    fn the_queue_budget_follows_the_measured_cost_per_frame() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (a, a_peer) = memory::wire("a", memory::plain_caps());
        let (b, b_peer) = memory::wire("b", memory::plain_caps());
        dp.add_port(net, Box::new(a), PortMode::DEFAULT)
            .map_err(|_| ())
            .unwrap();
        dp.add_port(net, Box::new(b), PortMode::DEFAULT)
            .map_err(|_| ())
            .unwrap();
        let mut t = 10;
        // Too few frames to measure: the assumed cost holds.
        a_peer.inject(&broadcast_from(1, 0));
        dp.poll_all(Instant::from_secs(t));
        dp.age(Instant::from_secs(t));
        assert_eq!(dp.ns_per_frame(), ASSUMED_NS_PER_FRAME);
        // Frames drained a few at a time (a system call each) do not measure the cost of
        // draining a full queue: not counted, however many.
        for seq in 0..(2 * COST_SAMPLE_FRAMES as u16) {
            a_peer.inject(&broadcast_from(1, seq));
            assert_eq!(dp.poll_all(Instant::from_secs(t)), 1);
            b_peer.drain();
        }
        assert_eq!((dp.busy_ns, dp.busy_frames), (0, 0));
        // Enough frames in a second: the cost is what they took, and the budget follows.
        let mut moved = 0;
        while moved < COST_SAMPLE_FRAMES {
            for seq in 0..256 {
                a_peer.inject(&broadcast_from(1, seq));
            }
            moved += dp.poll_all(Instant::from_secs(t)) as u64;
            b_peer.drain();
        }
        let (busy_ns, frames) = (dp.busy_ns, dp.busy_frames);
        assert_eq!(frames, moved);
        assert!(busy_ns > 0);
        t += 10;
        dp.age(Instant::from_secs(t));
        let cost = dp.ns_per_frame();
        assert_eq!(cost, (busy_ns / frames).max(1));
        // The sums start again for the next second.
        assert_eq!((dp.busy_ns, dp.busy_frames), (0, 0));
        assert_eq!(
            dp.rx_queue_budget() as u64,
            RX_LATENCY_BUDGET.as_nanos() as u64 / cost
        );
    }

    #[test]
    fn an_error_behind_the_last_frames_is_found_within_a_second() {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let (port, peer) = memory::wire("f0", memory::plain_caps());
        let h = dp
            .add_port(net, Box::new(FailsAfterFrames(port)), PortMode::DEFAULT)
            .map_err(|_| ())
            .unwrap();
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        frame.resize(60, 0);
        peer.inject(&frame);
        // One wake-up: the frame is read, fewer than a burst, so the port is not read again.
        let t = Instant::from_secs(10);
        assert_eq!(dp.poll_port(t, h), 1);
        assert_eq!(dp.port_state(h), Some(PortState::Up));
        assert!(!dp.has_more());
        // No wake-up follows; the once-a-second pass reads the port and finds the error.
        dp.age(t);
        assert!(dp.has_more());
        dp.poll_unfinished(t);
        assert_eq!(dp.port_state(h), Some(PortState::Down));
        assert!(!dp.has_more());
    }
}
