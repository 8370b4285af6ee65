//! Ports: where frames enter and leave the switch.
//!
//! A [`Port`] moves frames in batches and declares what it can take ([`Capabilities`]): its MTU,
//! which offloads (partial checksums, TCP super-frames) and how many frames per call. What a port
//! cannot take is done in software by the datapath before the frame is handed to it.
//!
//! Backends: [`memory`] (in-process queues, for tests and benches without root), [`tap`] (a TAP
//! device with a virtio-net header) and [`afpacket`] (an existing interface through AF_PACKET);
//! [`sockopt`] holds the socket options and error context every socket of the datapath shares.

pub mod afpacket;
pub mod memory;
pub mod sockopt;
pub mod tap;

use crate::offload::{Offloads, VirtioNetHdr};
use std::io;
use std::os::fd::RawFd;

/// A port's number inside one bridge: an index, small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u16);

impl PortId {
    /// The id as an index into per-port tables.
    #[inline]
    pub fn index(&self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a port can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// Largest IP packet (L3 MTU); frames may be up to MTU + Ethernet header + tags.
    pub mtu: usize,
    /// Offloads the port accepts on egress (and may hand over on ingress).
    pub offloads: Offloads,
    /// Most frames the port moves in one call.
    pub max_burst: usize,
}

impl Capabilities {
    /// Largest frame the port takes that is not a super-frame: MTU plus an Ethernet header
    /// with two VLAN tags.
    pub fn max_frame_len(&self) -> usize {
        self.mtu + MAX_L2_HEADER_LEN
    }
}

/// The longest link header a frame carries on top of its MTU: Ethernet with two VLAN tags.
pub const MAX_L2_HEADER_LEN: usize = 14 + 8;

/// Largest frame any port hands over: a 64 KB super-frame plus its link headers.
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 8;

/// One frame and its offload metadata, in a buffer the datapath reuses.
#[derive(Clone)]
pub struct Packet {
    /// Offload metadata that came with the frame.
    pub meta: VirtioNetHdr,
    /// Frame bytes; `len` of them are valid.
    pub buf: Box<[u8]>,
    /// Length of the frame in `buf`.
    pub len: usize,
}

impl Packet {
    /// An empty packet with room for the largest frame.
    pub fn new() -> Packet {
        Packet::with_capacity(MAX_FRAME_LEN)
    }

    /// An empty packet with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Packet {
        Packet {
            meta: VirtioNetHdr::NONE,
            buf: vec![0u8; cap].into_boxed_slice(),
            len: 0,
        }
    }

    /// The frame bytes.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Copies `frame` in (truncating to the capacity) with no offload metadata.
    pub fn set(&mut self, frame: &[u8]) {
        let n = frame.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&frame[..n]);
        self.len = n;
        self.meta = VirtioNetHdr::NONE;
    }

    /// A borrowed view of the frame and its metadata.
    #[inline]
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            meta: self.meta,
            data: self.frame(),
        }
    }
}

impl Default for Packet {
    fn default() -> Self {
        Packet::new()
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("meta", &self.meta)
            .field("len", &self.len)
            .finish()
    }
}

/// Where a tunnel port (the VXLAN port) sends a frame: one remote endpoint, for traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelOutput {
    /// The remote endpoint's address.
    pub remote: std::net::IpAddr,
    /// The tunnel's network identifier (VXLAN's VNI, RFC 7348 § 5).
    pub vni: u32,
    /// The outer UDP source port.
    pub src_port: u16,
}

/// A count a port keeps by itself and hands to the datapath piecemeal: the total so far, and
/// how much of it the datapath already took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    total: u64,
    taken: u64,
}

impl Tally {
    /// Counts one.
    #[inline]
    pub fn add(&mut self) {
        self.total += 1;
    }

    /// Everything counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// What was counted since the last call.
    pub fn take_new(&mut self) -> u64 {
        let new = self.total - self.taken;
        self.taken = self.total;
        new
    }
}

/// A frame on its way out: metadata plus borrowed bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    /// Offload metadata; the egress port must accept it (the datapath made sure).
    pub meta: VirtioNetHdr,
    /// Frame bytes.
    pub data: &'a [u8],
}

/// A place frames enter and leave the switch.
pub trait Port: Send {
    /// The interface name (e.g. `veth1a`, `tap0`).
    fn name(&self) -> &str;

    /// What the port can do.
    fn capabilities(&self) -> Capabilities;

    /// Receives up to `pkts.len()` frames into `pkts`; returns how many. `Ok(0)` when nothing is
    /// waiting. An error means the port itself failed (e.g. its interface vanished).
    fn recv(&mut self, pkts: &mut [Packet]) -> io::Result<usize>;

    /// Sends frames in order without waiting; returns how many the port took. Fewer than all
    /// means the port is full right now; the caller drops the rest at once (`tx_queue_full`)
    /// rather than holding them.
    fn send(&mut self, frames: &[FrameRef<'_>]) -> io::Result<usize>;

    /// The descriptor to poll for readability, if the port has one.
    fn raw_fd(&self) -> Option<RawFd>;

    /// Re-reads what may have changed under the port (its interface's MTU), about once a
    /// second; the datapath then takes [`Port::capabilities`] again.
    fn refresh(&mut self) {}

    /// Frames the port's kernel refused on send since the last call. The datapath counts them
    /// as `refused_by_port`, about once a second.
    fn take_tx_refused(&mut self) -> u64 {
        0
    }

    /// Frames the port received unusable (truncated, bad offsets or offload metadata) and
    /// dropped since the last call. The datapath counts them as `bad_rx_frame`, about once a
    /// second.
    fn take_rx_bad(&mut self) -> u64 {
        0
    }

    /// Frames the port's kernel dropped before the switch could read them (its receive queue
    /// or ring was full) since the last call. The datapath counts them as `rx_queue_full`,
    /// about once a second.
    fn take_rx_overruns(&mut self) -> u64 {
        0
    }

    /// The deepest the port's receive queue was seen (frames waiting for the switch) since
    /// the last call. The datapath records it as `rx_queue_peak`, about once a second.
    fn take_rx_queue_peak(&mut self) -> u64 {
        0
    }

    /// How many frames the datapath drains within its latency budget, from its measured cost
    /// per frame (about once a second): a port with a queue of its own sizes it by this, so a
    /// frame waits there no longer than the budget.
    fn set_rx_queue_budget(&mut self, _frames: usize) {}

    /// The drop reason counted when a frame is too big for this port at egress.
    fn oversize_reason(&self) -> crate::counters::DropReason {
        crate::counters::DropReason::TooBigForPort
    }

    /// The stages this port recorded for frame `i` of its last `recv` batch while the
    /// datapath traces (an overlay's decap: from which peer), to head that frame's trace.
    fn take_rx_trace(&mut self, _i: usize) -> Option<crate::trace::Trace> {
        None
    }

    /// Records in `trace` what sending `frame` would do beyond handing it over (an overlay's
    /// encap: to which peers, VNI, source port), by the same code `send` runs, sending
    /// nothing; returns where a tunnel port sends it, one entry per remote, or why it would
    /// drop it. Plain ports record nothing.
    fn trace_send(
        &self,
        _now: crate::time::Instant,
        _frame: FrameRef<'_>,
        _trace: &mut crate::trace::Trace,
    ) -> Result<Vec<TunnelOutput>, crate::counters::DropReason> {
        Ok(Vec::new())
    }

    /// After a failure: is the port's link usable again (its interface back up)? Asked about
    /// once a second for a port that is down.
    fn link_up(&self) -> bool {
        true
    }
}
