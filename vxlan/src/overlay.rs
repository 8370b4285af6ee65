//! The overlay as the datapath sees it: one VTEP socket shared by every overlay network, and one
//! [`VxlanPort`] per network (per VNI) attached to that network's bridge.
//!
//! ```text
//!  bridge (VNI 42) ── port "vxlan" ──send──▶ targets → encap → UDP (sendmmsg / UDP_SEGMENT) ─▶ peers
//!                                 ◀─recv── per-VNI queue ◀── decap ◀── poller ◀── UDP socket (GRO)
//! ```
//!
//! Receiving: the socket is read by a poller the event loop calls when it is readable
//! ([`Overlay::poll`]); each datagram is checked and decapsulated by the [`Vtep`] (sender must be
//! a peer of the VNI, RFC 7348 § 4.1 learning of the inner source MAC), queued for the VNI's
//! port (consecutive TCP segments of a flow coalesced into one super-frame, see
//! [`switch::gro`]), and the datapath drains those ports like any other. The bridge never sends a frame back
//! out of the port it came in on, so what came from the overlay never returns to it (split
//! horizon).
//!
//! Sending: the bridge hands a [`VxlanPort`] whole TCP super-frames (it declares TSO), which are
//! segmented once in software and sent as equal-size datagrams with UDP segmentation offload to
//! each target peer; other frames are batched into one sendmmsg. A frame that would not fit the
//! underlay MTU is dropped and counted: VXLAN never fragments (RFC 7348 § 4.3).
//!
//! Traces: while the datapath traces, each decapsulated frame carries its VXLAN stage (from
//! which peer) into the datapath's trace, and [`VxlanPort`]'s `trace_send` records the encap
//! stage (peers, VNI, UDP ports) through the same plan `send` runs.

use crate::encap::{encap_into, encap_segments};
use crate::socket::{bucket_of, Queued, RecvBatch, VtepSocket};
use crate::tap::{TapCounters, TapDevice, TapFault, TapState};
use crate::vtep::{source_port, RemoteEntry, Vtep, VtepConfig};
use crate::{Error, HEADER_LEN};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use switch::datapath::{Datapath, Direction, PortHandle};
use switch::gro::Coalesced;
use switch::gso::Segmenter;
use switch::port::{Capabilities, FrameRef, Packet, Port, TunnelOutput};
use switch::trace::{NoTrace, Observer, Stage, Trace};
use switch::{DropReason, Instant, MacAddr, Offloads, PortCounters};

/// Most decapsulated frames waiting per VNI before new ones are dropped (`QueueFull`); the
/// datapath drains the queue after every receive batch, so it rarely holds more than a batch.
const QUEUE_LIMIT: usize = 1024;

/// A frame buffer the size of a datapath packet's (untouched pages cost no memory).
fn new_buffer() -> Box<[u8]> {
    vec![0u8; switch::port::MAX_FRAME_LEN].into_boxed_slice()
}
/// Datagrams read per recvmmsg.
const RECV_BATCH: usize = 64;
/// Bytes one receive aims for when messages are large (coalesced by UDP GRO).
const BATCH_BYTES: usize = 256 << 10;

/// One decapsulated frame (or super-frame) waiting for the datapath, with its decap stage
/// while the datapath traces.
#[derive(Debug)]
struct Waiting {
    frame: Inner,
    trace: Option<Trace>,
}

/// A decapsulated frame: one later segments may join, or a whole super-frame (from the TAP)
/// with its own offload metadata.
#[derive(Debug)]
enum Inner {
    Coalescing(Coalesced),
    Whole {
        buf: Box<[u8]>,
        len: usize,
        meta: switch::VirtioNetHdr,
    },
}

/// Frames decapsulated for one VNI, waiting for the datapath, and buffers to reuse.
#[derive(Debug, Default)]
struct VniQueue {
    /// Consecutive TCP segments of one flow are coalesced into super-frames as they arrive.
    frames: VecDeque<Waiting>,
    /// Frame buffers to reuse: they travel to the datapath's packets and back without copies.
    free: Vec<Box<[u8]>>,
    handle: Option<PortHandle>,
    counters: Arc<PortCounters>,
}

struct Shared {
    vtep: Vtep,
    socket: VtepSocket,
    rx: RecvBatch,
    queues: HashMap<u32, VniQueue>,
    segmenter: Segmenter,
    /// Encapsulated datagrams of one send call, back to back.
    tx: Vec<u8>,
    /// Where each datagram of `tx` goes, and where it lies in `tx`.
    tx_index: Vec<Queued>,
    /// The datagram heads of one frame's segments (their payloads stay in the frame).
    seg: Vec<u8>,
    targets: Vec<IpAddr>,
    /// Datagrams refused before any VNI was known (bad header, unknown VNI, not a peer).
    rejected: Arc<PortCounters>,
    /// Where underlay datagrams go while `capture vtep` runs.
    capture: Option<UnderlayCapture>,
    /// The local address, for captures.
    local: SocketAddrV4,
    /// When remote entries were last aged.
    last_aging: Instant,
    /// Ports with decapsulated frames waiting, collected by [`Overlay::poll`] (reused).
    ready: Vec<PortHandle>,
    /// The TAP backend, when the VTEP runs on it (the socket stays bound for the fallback).
    tap: Option<TapState>,
}

/// Receives every VXLAN datagram received or sent (direction, source, destination, UDP
/// payload) while an underlay capture runs.
pub type UnderlayCapture = Box<dyn FnMut(Direction, SocketAddr, SocketAddr, &[u8]) + Send>;

/// The shared VTEP: socket, logic and per-VNI queues. Cloneable handle.
#[derive(Clone)]
pub struct Overlay {
    shared: Arc<Mutex<Shared>>,
    fd: RawFd,
    port: u16,
}

impl Overlay {
    /// Binds the VTEP socket (e.g. 0.0.0.0:4789): the UDP-socket backend.
    pub fn bind(addr: SocketAddrV4, config: VtepConfig) -> io::Result<Overlay> {
        Overlay::open(addr, config, None)
    }

    /// The TAP backend: `tap` carries the traffic, sending from `addr` (a concrete address)
    /// and `src_mac` (the underlay interface's); the socket is bound too, to hold the port and
    /// to carry the traffic while the TAP path is off ([`Overlay::set_tap_active`]). Next hops
    /// come from [`Overlay::set_next_hop`].
    pub fn with_tap(
        addr: SocketAddrV4,
        config: VtepConfig,
        tap: TapDevice,
        src_mac: [u8; 6],
    ) -> io::Result<Overlay> {
        let state = TapState::new(tap, *addr.ip(), src_mac);
        Overlay::open(addr, config, Some(state))
    }

    fn open(addr: SocketAddrV4, config: VtepConfig, tap: Option<TapState>) -> io::Result<Overlay> {
        let socket = VtepSocket::bind(addr)?;
        let fd = socket.as_raw_fd();
        let port = config.port;
        let shared = Shared {
            vtep: Vtep::new(config),
            socket,
            rx: RecvBatch::new(RECV_BATCH),
            queues: HashMap::new(),
            segmenter: Segmenter::new(),
            tx: Vec::with_capacity(1 << 17),
            tx_index: Vec::with_capacity(256),
            seg: Vec::with_capacity(1 << 17),
            targets: Vec::new(),
            rejected: Arc::default(),
            capture: None,
            local: addr,
            last_aging: Instant::ZERO,
            ready: Vec::new(),
            tap,
        };
        Ok(Overlay {
            shared: Arc::new(Mutex::new(shared)),
            fd,
            port,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket to poll.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The TAP to poll too, with the TAP backend.
    pub fn tap_fd(&self) -> Option<RawFd> {
        self.lock().tap.as_ref().map(|t| t.dev.as_raw_fd())
    }

    /// The backend: `"tap"` or `"socket"`.
    pub fn backend(&self) -> &'static str {
        if self.lock().tap.is_some() {
            "tap"
        } else {
            "socket"
        }
    }

    /// The TAP device's name, with the TAP backend.
    pub fn tap_name(&self) -> Option<String> {
        self.lock().tap.as_ref().map(|t| t.dev.name().to_string())
    }

    /// Turns the TAP path on or off (off: the socket sends and receives, as the socket backend
    /// does). The daemon turns it off while the TAP or the underlay is gone.
    pub fn set_tap_active(&self, active: bool) {
        if let Some(t) = self.lock().tap.as_mut() {
            t.active = active;
        }
    }

    /// Whether the TAP path carries the traffic now.
    pub fn tap_active(&self) -> bool {
        self.lock().tap.as_ref().is_some_and(|t| t.active)
    }

    /// Sets the outer source MAC (the underlay interface's, which may change).
    pub fn set_underlay_mac(&self, mac: [u8; 6]) {
        if let Some(t) = self.lock().tap.as_mut() {
            t.src_mac = mac;
        }
    }

    /// Sets (or forgets, with `None`) the next-hop MAC towards `peer` (TAP backend).
    pub fn set_next_hop(&self, peer: std::net::Ipv4Addr, mac: Option<[u8; 6]>) {
        if let Some(t) = self.lock().tap.as_mut() {
            t.set_next_hop(peer, mac);
        }
    }

    /// The next-hop MAC towards `peer`, if known (TAP backend).
    pub fn next_hop(&self, peer: std::net::Ipv4Addr) -> Option<[u8; 6]> {
        self.lock().tap.as_ref().and_then(|t| t.next_hop(peer))
    }

    /// Peers that frames wanted while their next hop was unknown (TAP backend), since the
    /// last call: the daemon resolves them.
    pub fn take_wanted_next_hops(&self) -> Vec<std::net::Ipv4Addr> {
        self.lock()
            .tap
            .as_mut()
            .map(TapState::take_wanted)
            .unwrap_or_default()
    }

    /// Every peer of every VNI (the next hops the TAP backend needs).
    pub fn all_peers(&self) -> Vec<IpAddr> {
        let s = self.lock();
        let mut all: Vec<IpAddr> = s
            .vtep
            .vnis()
            .flat_map(|v| s.vtep.peers(v).iter().copied())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Counts a fault of the TAP path (the daemon's watcher saw it).
    pub fn count_tap_fault(&self, fault: TapFault) {
        if let Some(t) = self.lock().tap.as_mut() {
            t.counters.faults[fault as usize] += 1;
        }
    }

    /// The TAP backend's counters (zero with the socket backend).
    pub fn tap_counters(&self) -> TapCounters {
        self.lock()
            .tap
            .as_ref()
            .map(|t| t.counters)
            .unwrap_or_default()
    }

    /// The address the VTEP socket is bound to (with the port the kernel picked, if 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.lock().socket.local_addr()
    }

    /// The local UDP port (peers send to the same port).
    pub fn udp_port(&self) -> u16 {
        self.port
    }

    /// The VTEP's settings.
    pub fn config(&self) -> VtepConfig {
        *self.lock().vtep.config()
    }

    /// Counters of datagrams refused before they reached a network.
    pub fn rejected(&self) -> Arc<PortCounters> {
        self.lock().rejected.clone()
    }

    /// Starts (or with `None` stops) capturing the underlay: every datagram in and out.
    pub fn set_capture(&self, capture: Option<UnderlayCapture>) {
        self.lock().capture = capture;
    }

    /// Datagrams refused by the VTEP, by reason (`not_a_peer`, `unknown_vni`, …).
    pub fn reject_counts(&self) -> Vec<(&'static str, u64)> {
        let s = self.lock();
        crate::RejectReason::ALL
            .iter()
            .map(|r| (r.name(), s.vtep.rejected(*r)))
            .collect()
    }

    /// Remote MACs not learned because a VNI's table was full.
    pub fn learn_refused(&self) -> u64 {
        self.lock().vtep.learn_refused()
    }

    /// Starts carrying `vni` and returns its port (to attach to the network's bridge) and the
    /// counters that port counts into.
    pub fn add_vni(
        &self,
        vni: u32,
        peers: &[IpAddr],
    ) -> Result<(VxlanPort, Arc<PortCounters>), Error> {
        let mut s = self.lock();
        s.vtep.add_vni(vni)?;
        for p in peers {
            if let Err(e) = s.vtep.add_peer(vni, *p) {
                s.vtep.remove_vni(vni);
                return Err(e);
            }
        }
        let counters = Arc::new(PortCounters::default());
        s.queues.insert(
            vni,
            VniQueue {
                counters: counters.clone(),
                ..VniQueue::default()
            },
        );
        let mtu = s
            .vtep
            .config()
            .underlay_mtu
            .saturating_sub(crate::OVERHEAD_V4);
        drop(s);
        let port = VxlanPort {
            vni,
            overlay: self.clone(),
            counters: counters.clone(),
            mtu,
            rx_traces: Vec::new(),
        };
        Ok((port, counters))
    }

    /// Tells the overlay which datapath port carries `vni` (after attaching it).
    pub fn set_handle(&self, vni: u32, handle: PortHandle) {
        if let Some(q) = self.lock().queues.get_mut(&vni) {
            q.handle = Some(handle);
        }
    }

    /// Stops carrying `vni`.
    pub fn remove_vni(&self, vni: u32) {
        let mut s = self.lock();
        s.vtep.remove_vni(vni);
        s.queues.remove(&vni);
    }

    /// Adds a peer to `vni`'s flood list.
    pub fn add_peer(&self, vni: u32, peer: IpAddr) -> Result<bool, Error> {
        self.lock().vtep.add_peer(vni, peer)
    }

    /// Removes a peer (and the MACs learned behind it).
    pub fn remove_peer(&self, vni: u32, peer: IpAddr) -> Result<bool, Error> {
        self.lock().vtep.remove_peer(vni, peer)
    }

    /// Adds (or replaces) a static remote entry: `mac` sits behind `peer`, which must be a peer
    /// of `vni` already. It never ages and learning never moves it (the control plane knows
    /// the station before any traffic, as a cluster's published endpoints).
    pub fn add_static(&self, vni: u32, mac: MacAddr, peer: IpAddr) -> Result<(), Error> {
        self.lock().vtep.add_static(vni, mac, peer)
    }

    /// Removes a remote entry, static or learned; false if it was not there.
    pub fn remove_static(&self, vni: u32, mac: MacAddr) -> Result<bool, Error> {
        self.lock().vtep.remove_entry(vni, mac)
    }

    /// The peer a remote MAC was learned behind, if any.
    pub fn remote_of(&self, now: Instant, vni: u32, mac: MacAddr) -> Option<IpAddr> {
        self.lock().vtep.lookup(now, vni, mac)
    }

    /// Remote entries of `vni`, for `fdb show`.
    pub fn remote_entries(&self, now: Instant, vni: u32) -> Vec<RemoteEntry> {
        self.lock().vtep.remote_entries(vni, now).collect()
    }

    /// The peers of `vni`.
    pub fn peers(&self, vni: u32) -> Vec<IpAddr> {
        self.lock().vtep.peers(vni).to_vec()
    }

    /// The poller: reads every waiting datagram, decapsulating each into its VNI's queue and
    /// running the VNI ports through the datapath after every batch read (so what was just
    /// copied in is still in cache when it is coalesced and sent on). Also ages remote MACs.
    pub fn poll(&self, dp: &mut Datapath, now: Instant) {
        let mut ready = {
            let mut s = self.lock();
            // Aging walks every remote entry: once a second, not on every wake-up.
            if now.saturating_since(s.last_aging) >= std::time::Duration::from_secs(1) {
                s.last_aging = now;
                s.vtep.age(now);
            }
            std::mem::take(&mut s.ready)
        };
        loop {
            let (n, limit) = self.read_tap(dp, now, &mut ready);
            for h in ready.drain(..) {
                dp.poll_port(now, h);
            }
            if n < limit {
                break;
            }
        }
        loop {
            // A failed read ends this round; the next readiness brings us back.
            let (n, limit) = self.read_batch(dp, now, &mut ready);
            for h in ready.drain(..) {
                dp.poll_port(now, h);
            }
            if n < limit {
                break;
            }
        }
        // Give the (empty) list back so its allocation serves the next wake-up.
        self.lock().ready = ready;
    }

    /// Reads what waits on the TAP (TAP backend), up to a batch: each frame is checked (VXLAN
    /// to our address and port), decapsulated by the VTEP like a datagram of the socket, and
    /// queued whole with its inner offload metadata. Returns the frames read and the most one
    /// call reads.
    fn read_tap(&self, dp: &Datapath, now: Instant, ready: &mut Vec<PortHandle>) -> (usize, usize) {
        const LIMIT: usize = 64;
        let mut s = self.lock();
        let shared = &mut *s;
        let Some(tap) = shared.tap.as_mut() else {
            return (0, LIMIT);
        };
        let port = self.port;
        let tracing = dp.tracing();
        let mut n = 0;
        let mut bytes = 0;
        while n < LIMIT && bytes < BATCH_BYTES {
            let len = match tap.read() {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    // The TAP vanished or failed: counted; the daemon notices and reports.
                    tracing::debug!(error = %e, "VTEP TAP read error");
                    tap.counters.read_errors += 1;
                    break;
                }
            };
            n += 1;
            bytes += len;
            let d = match tap.parse(len, port) {
                Ok(d) => d,
                Err(crate::tap::ReadDrop::BadHeader) => {
                    tap.counters.bad_header += 1;
                    shared.rejected.count_drop(DropReason::BadOffload);
                    continue;
                }
                Err(crate::tap::ReadDrop::Short) => {
                    // What the socket counts as a refused datagram.
                    shared.rejected.count_drop(DropReason::OverlayRejected);
                    continue;
                }
                Err(crate::tap::ReadDrop::NotVxlan) => {
                    // The kernel's own traffic on the TAP (none is expected), or a frame tc
                    // should not have sent us.
                    tap.counters.not_vxlan += 1;
                    continue;
                }
            };
            let from = IpAddr::V4(d.from);
            let vxlan_hdr = &tap.head[crate::tap::HEAD_LEN - HEADER_LEN..];
            let inner = &tap.spare[..d.inner_len];
            if let Some(c) = shared.capture.as_mut() {
                let datagram = [vxlan_hdr, inner].concat();
                let src = SocketAddr::new(from, port);
                c(Direction::Rx, src, SocketAddr::V4(shared.local), &datagram);
            }
            // The VTEP's checks and learning read the VXLAN header and the inner Ethernet
            // header only: they get those (and a little more), not a copy of the frame.
            let mut prefix = [0u8; HEADER_LEN + 64];
            let seen = d.inner_len.min(64);
            prefix[..HEADER_LEN].copy_from_slice(vxlan_hdr);
            prefix[HEADER_LEN..HEADER_LEN + seen].copy_from_slice(&inner[..seen]);
            let datagram = &prefix[..HEADER_LEN + seen];
            let mut trace = tracing.then(Trace::new);
            let decapped = decap(
                &mut shared.vtep,
                &shared.queues,
                dp,
                now,
                from,
                datagram,
                trace.as_mut(),
            );
            match decapped {
                Ok((vni, _)) if d.meta == switch::VirtioNetHdr::NONE => queue_inner(
                    &mut shared.queues,
                    &shared.rejected,
                    vni,
                    &tap.spare[..d.inner_len],
                    d.meta,
                    trace,
                ),
                Ok((vni, _)) => {
                    // A super-frame: its buffer goes to the queue as it is, a new one takes
                    // its place.
                    let Some(q) = shared.queues.get_mut(&vni) else {
                        shared.rejected.count_drop(DropReason::OverlayRejected);
                        continue;
                    };
                    if q.frames.len() >= QUEUE_LIMIT {
                        q.counters.count_drop(DropReason::QueueFull);
                        continue;
                    }
                    let fresh = q.free.pop().unwrap_or_else(new_buffer);
                    let buf = std::mem::replace(&mut tap.spare, fresh);
                    let frame = Inner::Whole {
                        buf,
                        len: d.inner_len,
                        meta: d.meta,
                    };
                    q.frames.push_back(Waiting { frame, trace });
                }
                Err(e) => count_decap_error(&shared.queues, &shared.rejected, &e),
            }
        }
        list_ready(&shared.queues, ready);
        (n, LIMIT)
    }

    /// One receive: decapsulates what it read into the VNI queues and lists the ports with
    /// frames waiting in `ready`. Returns the messages read and how many were asked for.
    fn read_batch(
        &self,
        dp: &Datapath,
        now: Instant,
        ready: &mut Vec<PortHandle>,
    ) -> (usize, usize) {
        let mut s = self.lock();
        let shared = &mut *s;
        let limit = shared.rx.limit();
        let read = shared.socket.recv_batch(&mut shared.rx);
        let truncated = shared.socket.take_recv_truncated();
        shared
            .rejected
            .count_drops(DropReason::RecvTruncated, truncated);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                // An ICMP error queued on the socket, or worse: counted, and the next
                // readiness reads on.
                tracing::debug!(error = %e, "VTEP socket receive error");
                shared.rejected.count_drop(DropReason::VtepRecvError);
                0
            }
        };
        if n == 0 {
            return (0, limit);
        }
        if let Some(t) = shared.tap.as_mut().filter(|t| t.active) {
            // The TAP path is on, yet VXLAN reached the socket: the underlay's tc filter is
            // missing (the daemon repairs it). Delivered all the same.
            t.counters.socket_rx += n as u64;
        }
        let local = SocketAddr::V4(shared.local);
        let tracing = dp.tracing();
        let mut bytes = 0;
        for (from, datagram) in shared.rx.datagrams() {
            bytes += datagram.len();
            if let Some(c) = shared.capture.as_mut() {
                // The sender's port is not kept per datagram; the VTEP port stands in.
                c(
                    Direction::Rx,
                    SocketAddr::new(from, local.port()),
                    local,
                    datagram,
                );
            }
            // While the datapath traces, the decap stage is recorded here and heads the
            // frame's trace.
            let mut trace = tracing.then(Trace::new);
            let decapped = decap(
                &mut shared.vtep,
                &shared.queues,
                dp,
                now,
                from,
                datagram,
                trace.as_mut(),
            );
            match decapped {
                Ok((vni, inner)) => queue_inner(
                    &mut shared.queues,
                    &shared.rejected,
                    vni,
                    inner,
                    switch::VirtioNetHdr::NONE,
                    trace,
                ),
                Err(e) => count_decap_error(&shared.queues, &shared.rejected, &e),
            }
        }
        // Small datagrams: many per read. Coalesced 64 KB messages: few, so one batch stays
        // within BATCH_BYTES (and in cache) from the read to the send.
        let per_message = (bytes / n).max(1);
        shared.rx.set_limit(BATCH_BYTES / per_message);
        list_ready(&shared.queues, ready);
        (n, limit)
    }
}

/// Decapsulates `datagram` from `from` (the decap stage recorded in `trace` when there is
/// one). A station fixed on a local port of the VNI's bridge is never learned behind a peer:
/// the bridge's own rule, asked before the VTEP learns.
fn decap<'a>(
    vtep: &mut Vtep,
    queues: &HashMap<u32, VniQueue>,
    dp: &Datapath,
    now: Instant,
    from: IpAddr,
    datagram: &'a [u8],
    trace: Option<&mut Trace>,
) -> Result<(u32, &'a [u8]), Error> {
    let is_local = |vni: u32, inner: &[u8]| {
        let frame = FrameRef {
            meta: switch::VirtioNetHdr::NONE,
            data: inner,
        };
        queues
            .get(&vni)
            .and_then(|q| q.handle)
            .is_some_and(|h| dp.refuses_source(now, h, frame))
    };
    match trace {
        Some(tr) => vtep.decap_guarded(now, from, datagram, is_local, tr),
        None => vtep.decap_guarded(now, from, datagram, is_local, &mut NoTrace),
    }
}

/// Counts a datagram the VTEP refused: a refused MAC move on its VNI's port, anything else
/// as rejected.
fn count_decap_error(queues: &HashMap<u32, VniQueue>, rejected: &PortCounters, e: &Error) {
    match e {
        Error::MacMoveRefused(vni, _) => match queues.get(vni) {
            Some(q) => q.counters.count_drop(DropReason::MacMoveRefused),
            None => rejected.count_drop(DropReason::MacMoveRefused),
        },
        _ => rejected.count_drop(DropReason::OverlayRejected),
    }
}

/// Lists in `ready` the VNI ports with frames waiting.
fn list_ready(queues: &HashMap<u32, VniQueue>, ready: &mut Vec<PortHandle>) {
    for q in queues.values() {
        if let (Some(h), false) = (q.handle, q.frames.is_empty()) {
            ready.push(h);
        }
    }
}

/// Queues a decapsulated frame for its VNI's port: appended to the last frame when it
/// continues its TCP flow (plain frames only), else queued on its own (dropped and counted
/// when the queue is full).
fn queue_inner(
    queues: &mut HashMap<u32, VniQueue>,
    rejected: &PortCounters,
    vni: u32,
    inner: &[u8],
    meta: switch::VirtioNetHdr,
    trace: Option<Trace>,
) {
    let Some(q) = queues.get_mut(&vni) else {
        rejected.count_drop(DropReason::OverlayRejected);
        return;
    };
    let plain = meta == switch::VirtioNetHdr::NONE;
    if plain {
        if let Some(Waiting {
            frame: Inner::Coalescing(last),
            ..
        }) = q.frames.back_mut()
        {
            if last.try_append(inner) {
                return;
            }
        }
    }
    if q.frames.len() >= QUEUE_LIMIT {
        q.counters.count_drop(DropReason::QueueFull);
        return;
    }
    let mut buf = q.free.pop().unwrap_or_else(new_buffer);
    let frame = if plain {
        Inner::Coalescing(Coalesced::start(inner, buf))
    } else {
        if inner.len() > buf.len() {
            q.counters.count_drop(DropReason::RecvTruncated);
            q.free.push(buf);
            return;
        }
        buf[..inner.len()].copy_from_slice(inner);
        Inner::Whole {
            buf,
            len: inner.len(),
            meta,
        }
    };
    q.frames.push_back(Waiting { frame, trace });
}

/// One overlay network's port on its bridge: frames in are encapsulated to peers, frames out
/// come from the shared socket's queue for this VNI.
pub struct VxlanPort {
    vni: u32,
    overlay: Overlay,
    counters: Arc<PortCounters>,
    mtu: usize,
    /// The decap stage of each frame of the last `recv` batch (`None` unless tracing).
    rx_traces: Vec<Option<Trace>>,
}

impl VxlanPort {
    /// The VNI this port carries.
    pub fn vni(&self) -> u32 {
        self.vni
    }
}

/// The name every VXLAN port has on its bridge, and the `output` of its actions in traces and
/// `fdb show` (DESIGN.md fixes `"port": "vxlan"`).
pub const PORT_NAME: &str = "vxlan";

impl Port for VxlanPort {
    fn name(&self) -> &str {
        PORT_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mtu: self.mtu,
            // Super-frames are welcome: they are segmented once here and sent with UDP GSO.
            offloads: Offloads::ALL,
            max_burst: 64,
        }
    }

    fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize> {
        let mut s = self.overlay.lock();
        let Some(q) = s.queues.get_mut(&self.vni) else {
            return Ok(0);
        };
        let mut n = 0;
        self.rx_traces.clear();
        while n < pkts.len() {
            let Some(Waiting { frame: c, trace }) = q.frames.pop_front() else {
                break;
            };
            self.rx_traces.push(trace);
            let (mut buf, len, meta) = match c {
                Inner::Coalescing(mut c) => {
                    c.finish();
                    (c.buf, c.len, c.meta)
                }
                Inner::Whole { buf, len, meta } => (buf, len, meta),
            };
            // Hand the buffer over and keep the packet's old one: no copy.
            if buf.len() == pkts[n].buf.len() {
                std::mem::swap(&mut pkts[n].buf, &mut buf);
                pkts[n].len = len;
            } else {
                pkts[n].set(&buf[..len]);
            }
            pkts[n].meta = meta;
            q.free.push(buf);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize> {
        let now = Instant::now();
        let vni = self.vni;
        let port = self.overlay.port;
        let mut guard = self.overlay.lock();
        let s = &mut *guard;
        s.tx.clear();
        s.tx_index.clear();
        for f in frames {
            let mut targets = std::mem::take(&mut s.targets);
            let bucket =
                match encap_plan(&s.vtep, now, vni, port, f.data, &mut targets, &mut NoTrace) {
                    Ok(bucket) => bucket,
                    Err(reason) => {
                        self.counters.count_drop(reason);
                        s.targets = targets;
                        continue;
                    }
                };
            if let Some(tap) = s.tap.as_mut().filter(|t| t.active) {
                // The TAP backend: the frame goes whole to each peer, the kernel segments.
                let src_port = crate::socket::bucket_port(bucket);
                let vtep = &s.vtep;
                for peer in &targets {
                    let sent = tap.send(f, *peer, vni, (src_port, port), |len| vtep.fits(len));
                    match sent {
                        Err(reason) => self.counters.count_drop(reason),
                        Ok(()) => {
                            if let Some(c) = s.capture.as_mut() {
                                let mut d = Vec::with_capacity(HEADER_LEN + f.data.len());
                                encap_into(&mut d, vni, f.data);
                                let from = SocketAddr::new(IpAddr::V4(*s.local.ip()), src_port);
                                c(Direction::Tx, from, SocketAddr::new(*peer, port), &d);
                            }
                        }
                    }
                }
            } else if f.meta.is_gso() || f.meta.needs_csum() {
                if let Some(t) = s.tap.as_mut() {
                    t.counters.fallback_tx += 1;
                }
                // Segment (or complete the checksum) once, then one UDP_SEGMENT send per peer.
                match encap_segments(&mut s.segmenter, vni, f.data, &f.meta, &mut s.seg) {
                    Ok(segs) if !s.vtep.fits(usize::from(segs.seg_size) - HEADER_LEN) => {
                        self.counters.count_drop(DropReason::TooBigForOverlay);
                    }
                    Ok(segs) => {
                        for peer in &targets {
                            let to = SocketAddr::new(*peer, port);
                            let out = s.socket.send_segmented(to, bucket, &segs);
                            count_outcome(&self.counters, out.too_big, out.queue_full, out.failed);
                            if let Some(c) = s.capture.as_mut() {
                                let from = SocketAddr::new(
                                    IpAddr::V4(*s.local.ip()),
                                    crate::socket::bucket_port(bucket),
                                );
                                for i in 0..segs.count {
                                    c(Direction::Tx, from, to, &segs.to_vec(i));
                                }
                            }
                        }
                    }
                    Err(reason) => self.counters.count_drop(reason),
                }
            } else if !s.vtep.fits(f.data.len()) {
                self.counters.count_drop(DropReason::TooBigForOverlay);
            } else {
                let start = s.tx.len();
                encap_into(&mut s.tx, vni, f.data);
                let len = s.tx.len() - start;
                for peer in &targets {
                    s.tx_index.push(Queued {
                        to: SocketAddr::new(*peer, port),
                        bucket,
                        range: start..start + len,
                    });
                }
            }
            s.targets = targets;
        }
        if !s.tx_index.is_empty() {
            let out = s.socket.send_queued(&s.tx, &s.tx_index);
            count_outcome(&self.counters, out.too_big, out.queue_full, out.failed);
            if let Some(c) = s.capture.as_mut() {
                for q in &s.tx_index {
                    let from = SocketAddr::new(
                        IpAddr::V4(*s.local.ip()),
                        crate::socket::bucket_port(q.bucket),
                    );
                    c(Direction::Tx, from, q.to, &s.tx[q.range.clone()]);
                }
            }
        }
        // Every frame was taken: sent, or dropped and counted here.
        Ok(frames.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        // Driven by the overlay's poller, not by a descriptor of its own.
        None
    }

    fn oversize_reason(&self) -> DropReason {
        DropReason::TooBigForOverlay
    }

    fn take_rx_trace(&mut self, i: usize) -> Option<Trace> {
        self.rx_traces.get_mut(i)?.take()
    }

    fn trace_send(
        &self,
        now: Instant,
        frame: FrameRef<'_>,
        trace: &mut Trace,
    ) -> Result<Vec<TunnelOutput>, DropReason> {
        let s = self.overlay.lock();
        let mut targets = Vec::new();
        let port = self.overlay.port;
        let bucket = encap_plan(
            &s.vtep,
            now,
            self.vni,
            port,
            frame.data,
            &mut targets,
            trace,
        )?;
        let src_port = crate::socket::bucket_port(bucket);
        let tunnel = |remote| TunnelOutput {
            remote,
            vni: self.vni,
            src_port,
        };
        Ok(targets.into_iter().map(tunnel).collect())
    }
}

/// Where an inner frame of `vni` goes and from which source-port bucket: fills `targets` with
/// the peers (RFC 7348 § 4.2) and records the frame's VXLAN stage in `obs` (encap to which
/// peers, VNI, UDP ports). The send path runs it with [`NoTrace`], traces with a [`Trace`].
fn encap_plan<O: Observer>(
    vtep: &Vtep,
    now: Instant,
    vni: u32,
    dst_port: u16,
    frame: &[u8],
    targets: &mut Vec<IpAddr>,
    obs: &mut O,
) -> Result<usize, DropReason> {
    let result = vtep.targets(now, vni, frame, targets);
    let bucket = bucket_of(source_port(frame));
    if O::ON {
        match result {
            Ok(_) => {
                let list: Vec<String> = targets.iter().map(IpAddr::to_string).collect();
                obs.record(
                    Stage::Vxlan,
                    format_args!(
                        "encap vni {vni}, udp {} -> {dst_port}, to {}",
                        crate::socket::bucket_port(bucket),
                        list.join(", ")
                    ),
                );
            }
            Err(reason) => obs.record(Stage::Vxlan, format_args!("drop: {reason}")),
        }
    }
    result.map(|_| bucket)
}

fn count_outcome(c: &PortCounters, too_big: usize, queue_full: usize, failed: usize) {
    c.count_drops(DropReason::TooBigForOverlay, too_big as u64);
    c.count_drops(DropReason::QueueFull, queue_full as u64);
    c.count_drops(DropReason::OverlaySendFailed, failed as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encap_into;
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::Duration;
    use switch::datapath::Datapath;
    use switch::port::memory::{self, MemoryPeer};
    use switch::{BridgeConfig, PortMode};

    const VNI: u32 = 42;
    /// A sandbox on a local port, fixed there by a static entry.
    const LOCAL: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    /// A station behind the peer.
    const REMOTE: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);
    const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    fn datagram(src: MacAddr) -> Vec<u8> {
        let mut inner = MacAddr::BROADCAST.0.to_vec();
        inner.extend_from_slice(&src.0);
        inner.extend_from_slice(&[0x88, 0xb5]);
        inner.resize(60, 0);
        let mut d = Vec::new();
        encap_into(&mut d, VNI, &inner);
        d
    }

    /// A datapath with one network: the VNI's VXLAN port and a local port `sb` holding LOCAL
    /// as a static entry. Returns the datapath, the overlay, the VXLAN port's counters and
    /// the far end of `sb`.
    fn overlay_with_a_local_station() -> (Datapath, Overlay, Arc<PortCounters>, MemoryPeer) {
        let mut dp = Datapath::new();
        let net = dp.add_network(BridgeConfig::default());
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let overlay = Overlay::bind(local, VtepConfig::default()).unwrap();
        let (port, counters) = overlay.add_vni(VNI, &[IpAddr::V4(PEER)]).unwrap();
        let vx = dp
            .add_port_with_counters(net, Box::new(port), PortMode::DEFAULT, counters.clone())
            .ok()
            .unwrap();
        overlay.set_handle(VNI, vx);
        let (sb, sb_peer) = memory::wire("sb", memory::plain_caps());
        let hsb = dp
            .add_port(net, Box::new(sb), PortMode::DEFAULT)
            .ok()
            .unwrap();
        let (_, at) = dp.port_location(hsb).unwrap();
        let fdb = dp.bridge_mut(net).unwrap().fdb_mut();
        fdb.add_static(Instant::ZERO, 1, LOCAL, at).unwrap();
        (dp, overlay, counters, sb_peer)
    }

    #[test]
    fn a_static_remote_entry_is_known_before_traffic_and_goes_with_its_peer() {
        let (_dp, overlay, _, _) = overlay_with_a_local_station();
        let peer = IpAddr::V4(PEER);
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        // Only behind a peer of the VNI.
        assert!(overlay.add_static(VNI, REMOTE, other).is_err());
        overlay.add_static(VNI, REMOTE, peer).unwrap();
        let now = Instant::from_nanos(3_600_000_000_000);
        assert_eq!(
            overlay.remote_of(now, VNI, REMOTE),
            Some(peer),
            "never ages"
        );
        let entries = overlay.remote_entries(now, VNI);
        assert!(entries.iter().any(|e| e.mac == REMOTE && e.is_static));
        assert!(overlay.remove_static(VNI, REMOTE).unwrap());
        assert!(!overlay.remove_static(VNI, REMOTE).unwrap());
        overlay.add_static(VNI, REMOTE, peer).unwrap();
        overlay.remove_peer(VNI, peer).unwrap();
        assert_eq!(overlay.remote_of(now, VNI, REMOTE), None);
    }

    /// Sends `datagrams` from the peer's address to the overlay.
    fn send_from_peer(overlay: &Overlay, datagrams: &[Vec<u8>]) {
        let sender = UdpSocket::bind((PEER, 0)).unwrap();
        for d in datagrams {
            sender.send_to(d, overlay.local_addr()).unwrap();
        }
    }

    /// Polls the overlay until `done` or 5 s passed.
    fn poll_until(dp: &mut Datapath, overlay: &Overlay, done: impl Fn(&mut Datapath) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done(dp) {
            assert!(std::time::Instant::now() < deadline, "timed out");
            let mut pfd = libc::pollfd {
                fd: overlay.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            overlay.poll(dp, Instant::now());
        }
    }

    #[test]
    fn a_spoofed_datagram_cannot_move_a_local_station() {
        let (mut dp, overlay, counters, sb) = overlay_with_a_local_station();
        // A peer's address with the local sandbox's MAC, then an honest frame behind it.
        send_from_peer(&overlay, &[datagram(LOCAL), datagram(REMOTE)]);
        poll_until(&mut dp, &overlay, |_| sb.pending() > 0);

        let got = sb.drain();
        assert_eq!(got.len(), 1, "only the honest frame reached the sandbox");
        assert_eq!(got[0][6..12], REMOTE.0);
        assert_eq!(counters.drops(DropReason::MacMoveRefused), 1);
        assert_eq!(counters.snapshot().drops["mac_move_refused"], 1);
        let now = Instant::now();
        assert_eq!(
            overlay.remote_of(now, VNI, LOCAL),
            None,
            "not learned remote"
        );
        assert_eq!(overlay.remote_of(now, VNI, REMOTE), Some(IpAddr::V4(PEER)));
        let (net, _) = dp.port_location(PortHandle(1)).unwrap();
        let entry = dp.bridge(net).unwrap().fdb().get(now, 1, LOCAL).unwrap();
        assert!(entry.is_static);
        assert_eq!(dp.bridge(net).unwrap().port_name(entry.port), "sb");
    }

    #[test]
    fn the_overlay_records_its_own_stage_in_live_and_one_shot_traces() {
        let (mut dp, overlay, _, sb) = overlay_with_a_local_station();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        dp.set_trace_sink(Some(Box::new(move |ev: &switch::datapath::TraceEvent| {
            sink.lock().unwrap().push(ev.clone());
        })));

        // In from the peer: the decap stage heads the frame's trace.
        send_from_peer(&overlay, &[datagram(REMOTE)]);
        poll_until(&mut dp, &overlay, |_| sb.pending() > 0);
        let ev = events.lock().unwrap().pop().expect("a trace event");
        assert_eq!(ev.in_port, "vxlan");
        let first = &ev.trace.stages[0];
        assert_eq!(first.stage, Stage::Vxlan);
        assert_eq!(
            first.result,
            format!("decap vni {VNI} from {PEER}; learned {REMOTE} behind {PEER}")
        );

        // Out to the peer: the encap stage, and where it goes, from the port itself.
        let mut out = MacAddr::BROADCAST.0.to_vec();
        out.extend_from_slice(&LOCAL.0);
        out.extend_from_slice(&[0x88, 0xb5]);
        out.resize(60, 0);
        sb.inject(&out);
        dp.poll_all(Instant::now());
        let ev = events.lock().unwrap().pop().expect("a trace event");
        assert_eq!(
            (ev.in_port.as_str(), &ev.outputs[..]),
            ("sb", &["vxlan".to_string()][..])
        );
        let sport = crate::socket::bucket_port(bucket_of(source_port(&out)));
        let want = TunnelOutput {
            remote: IpAddr::V4(PEER),
            vni: VNI,
            src_port: sport,
        };
        assert_eq!(ev.tunnels, [want]);
        let port = overlay.udp_port();
        assert_eq!(
            ev.trace.result(Stage::Vxlan),
            Some(format!("encap vni {VNI}, udp {sport} -> {port}, to {PEER}").as_str())
        );

        // A one-shot trace of the same frame: the same stage, through the same code.
        let (net, local) = dp.port_location(PortHandle(1)).unwrap();
        let frame = FrameRef {
            meta: switch::VirtioNetHdr::NONE,
            data: &out,
        };
        let mut outs = Vec::new();
        let mut trace = Trace::new();
        let bridge = dp.bridge(net).unwrap();
        bridge.decide(Instant::now(), local, frame, &mut outs, &mut trace);
        let tunnels = dp.trace_egress(Instant::now(), net, &outs, frame, &mut trace);
        assert_eq!(tunnels, Ok(vec![want]));
        assert_eq!(trace.result(Stage::Vxlan), ev.trace.result(Stage::Vxlan));

        // A VNI without peers: the stage says why it would drop.
        overlay.remove_peer(VNI, IpAddr::V4(PEER)).unwrap();
        let mut trace = Trace::new();
        let tunnels = dp.trace_egress(Instant::now(), net, &outs, frame, &mut trace);
        assert_eq!(tunnels, Err(DropReason::NoPeer));
        assert_eq!(trace.result(Stage::Vxlan), Some("drop: no_peer"));
    }

    #[test]
    fn datagrams_cut_short_on_receive_are_counted() {
        let (mut dp, overlay, _, _) = overlay_with_a_local_station();
        overlay.lock().rx = RecvBatch::with_buffers(4, 32);
        send_from_peer(&overlay, &[datagram(REMOTE)]);
        let rejected = overlay.rejected();
        poll_until(&mut dp, &overlay, |_| {
            rejected.drops(DropReason::RecvTruncated) > 0
        });
        assert_eq!(rejected.snapshot().drops["recv_truncated"], 1);
        assert_eq!(overlay.remote_of(Instant::now(), VNI, REMOTE), None);
    }

    #[test]
    fn a_failed_read_of_the_vtep_socket_is_counted() {
        let (mut dp, overlay, _, _) = overlay_with_a_local_station();
        // The VTEP's descriptor now names a file, not a socket: recvmmsg fails (ENOTSOCK).
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: both descriptors are open; dup2 only replaces what the overlay's number
        // names, which the overlay closes when it goes.
        assert!(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), overlay.fd()) } >= 0);
        overlay.poll(&mut dp, Instant::now());
        let rejected = overlay.rejected();
        assert_eq!(rejected.drops(DropReason::VtepRecvError), 1);
        assert_eq!(rejected.snapshot().drops["vtep_recv_error"], 1);
    }

    #[test]
    fn a_send_the_underlay_refuses_is_not_a_missing_peer() {
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let overlay = Overlay::bind(local, VtepConfig::default()).unwrap();
        // An IPv6 peer: the IPv4 VTEP socket cannot send to it.
        let (mut port, counters) = overlay.add_vni(VNI, &["::1".parse().unwrap()]).unwrap();
        let d = datagram(LOCAL);
        let frame = FrameRef {
            meta: switch::VirtioNetHdr::NONE,
            data: &d[HEADER_LEN..],
        };
        assert_eq!(port.send(&[frame]).unwrap(), 1);
        assert_eq!(counters.drops(DropReason::OverlaySendFailed), 1);
        assert_eq!(counters.drops(DropReason::NoPeer), 0);
        assert_eq!(counters.snapshot().drops["overlay_send_failed"], 1);
    }
}
