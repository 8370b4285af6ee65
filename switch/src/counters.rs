//! Per-port counters: packets and bytes each way, and one counter per drop reason.
//!
//! The datapath thread bumps them with relaxed atomics (no lock); the control plane reads them
//! for `vswitchctl stats` and `port list`. Every path that drops a frame names its reason here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame was dropped. Each has a counter per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt = 0,
    /// A VLAN tag cut short, or too many tags.
    Malformed,
    /// Longer than any frame the ingress port carries: its MTU plus an Ethernet header and two
    /// VLAN tags (and not a super-frame).
    Oversize,
    /// More than the ingress port's MTU after the Ethernet header and the tags the frame wears
    /// (and not a super-frame): dropped once where it enters, not at every egress port.
    TooBigForIngressPort,
    /// Longer than the egress port's MTU allows, as it would leave (tag included).
    TooBigForPort,
    /// The frame's VLAN is not allowed on the port (or a tagged frame on an access port).
    VlanNotAllowed,
    /// Source MAC is multicast, broadcast or zero.
    InvalidSource,
    /// Source MAC is a static station on another port: it cannot move by learning, and the
    /// frame claiming it is dropped (a spoofed source).
    MacMoveRefused,
    /// The destination sits on the port the frame came in on.
    SamePort,
    /// From an isolated port to another isolated port (a network with ICC off, as the Linux
    /// bridge's `isolated` port flag): sandboxes reach their gateway, not each other.
    Isolated,
    /// Nowhere to send: flooded, but no other port is in the VLAN.
    NoOutput,
    /// The port is down (its interface vanished or was set down).
    PortDown,
    /// A queue inside a port was full: the VTEP's per-VNI queue of decapsulated frames, or
    /// its socket's send buffer.
    QueueFull,
    /// Offload metadata unusable, or software segmentation failed.
    BadOffload,
    /// The port's own kernel interface refused the frame on send (invalid offload metadata, too
    /// big or too short).
    RefusedByPort,
    /// Received from the port's kernel interface unusable: truncated, outside its ring slot, or
    /// with a virtio-net header that cannot be used.
    BadRxFrame,
    /// The port's kernel receive queue or ring was full: the kernel dropped the frame before the
    /// switch saw it.
    RxQueueFull,
    /// Overlay: no peer to send to.
    NoPeer,
    /// Overlay: the underlay refused to send the datagram (no route, unreachable, socket error).
    OverlaySendFailed,
    /// Overlay: reading the VTEP socket failed (the datagrams behind the error are not seen).
    VtepRecvError,
    /// Overlay: a datagram larger than the receive buffer, cut short by the kernel.
    RecvTruncated,
    /// Overlay: frame does not fit the underlay MTU (VXLAN never fragments).
    TooBigForOverlay,
    /// Overlay: malformed VXLAN packet, unknown VNI or sender not a peer.
    OverlayRejected,
    /// The egress port's kernel queue (socket buffer, device queue) could not take the frame
    /// at once: dropped there and then, never held for later (no standing queue).
    TxQueueFull,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 24;
    /// All reasons, in counter order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Runt,
        DropReason::Malformed,
        DropReason::Oversize,
        DropReason::TooBigForIngressPort,
        DropReason::TooBigForPort,
        DropReason::VlanNotAllowed,
        DropReason::InvalidSource,
        DropReason::MacMoveRefused,
        DropReason::SamePort,
        DropReason::Isolated,
        DropReason::NoOutput,
        DropReason::PortDown,
        DropReason::QueueFull,
        DropReason::BadOffload,
        DropReason::RefusedByPort,
        DropReason::BadRxFrame,
        DropReason::RxQueueFull,
        DropReason::NoPeer,
        DropReason::OverlaySendFailed,
        DropReason::VtepRecvError,
        DropReason::RecvTruncated,
        DropReason::TooBigForOverlay,
        DropReason::OverlayRejected,
        DropReason::TxQueueFull,
    ];

    /// The name shown by `vswitchctl stats` and in traces.
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::Malformed => "malformed",
            DropReason::Oversize => "oversize",
            DropReason::TooBigForIngressPort => "too_big_for_ingress_port",
            DropReason::TooBigForPort => "too_big_for_port",
            DropReason::VlanNotAllowed => "vlan_not_allowed",
            DropReason::InvalidSource => "invalid_source_mac",
            DropReason::MacMoveRefused => "mac_move_refused",
            DropReason::SamePort => "same_port",
            DropReason::Isolated => "isolated",
            DropReason::NoOutput => "no_output",
            DropReason::PortDown => "port_down",
            DropReason::QueueFull => "queue_full",
            DropReason::BadOffload => "bad_offload",
            DropReason::RefusedByPort => "refused_by_port",
            DropReason::BadRxFrame => "bad_rx_frame",
            DropReason::RxQueueFull => "rx_queue_full",
            DropReason::NoPeer => "no_peer",
            DropReason::OverlaySendFailed => "overlay_send_failed",
            DropReason::VtepRecvError => "vtep_recv_error",
            DropReason::RecvTruncated => "recv_truncated",
            DropReason::TooBigForOverlay => "too_big_for_overlay",
            DropReason::OverlayRejected => "overlay_rejected",
            DropReason::TxQueueFull => "tx_queue_full",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of one port. Shared between the datapath (writer) and the control plane (reader).
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Source MACs not learned because the port's or the table's limit was reached.
    pub learn_refused: AtomicU64,
    /// The deepest the port's receive queue (its ring, or its socket queue) was seen, in
    /// frames waiting, during the last whole second: 0 when it was read as fast as frames came.
    pub rx_queue_peak: AtomicU64,
    /// The deepest the port's receive queue was seen since the port was attached.
    pub rx_queue_max: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

/// A plain copy of [`PortCounters`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub learn_refused: u64,
    /// See [`PortCounters::rx_queue_peak`].
    pub rx_queue_peak: u64,
    /// See [`PortCounters::rx_queue_max`].
    pub rx_queue_max: u64,
    /// Drops by reason name; reasons with zero drops are left out.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

impl CountersSnapshot {
    /// All drops, every reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

impl PortCounters {
    /// Counts one received frame.
    #[inline]
    pub fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts one sent frame.
    #[inline]
    pub fn tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts one dropped frame.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts `n` dropped frames of one reason.
    #[inline]
    pub fn count_drops(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason as usize].fetch_add(n, Relaxed);
        }
    }

    /// Drops counted for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Relaxed)
    }

    /// Records the deepest receive queue of the second just ended (`frames` waiting): it
    /// replaces [`PortCounters::rx_queue_peak`] and raises [`PortCounters::rx_queue_max`].
    pub fn record_rx_queue_peak(&self, frames: u64) {
        self.rx_queue_peak.store(frames, Relaxed);
        self.rx_queue_max.fetch_max(frames, Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            learn_refused: self.learn_refused.load(Relaxed),
            rx_queue_peak: self.rx_queue_peak.load(Relaxed),
            rx_queue_max: self.rx_queue_max.load(Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name(), self.drops(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let c = PortCounters::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            for _ in 0..=i {
                c.count_drop(*r);
            }
        }
        let s = c.snapshot();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(s.drops[r.name()], i as u64 + 1);
        }
        let names: std::collections::BTreeSet<&str> =
            DropReason::ALL.iter().map(DropReason::name).collect();
        assert_eq!(names.len(), DropReason::COUNT, "two reasons share a name");
    }
}
