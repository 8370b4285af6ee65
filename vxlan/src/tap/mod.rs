//! The TAP backend of the VTEP: whole encapsulated super-frames through a TAP with UDP-tunnel
//! GSO, moved between the TAP and the underlay interface by the kernel's traffic control.
//!
//! ```text
//!  send: inner super-frame ─▶ [24-byte tunnel header][Eth/IPv4/UDP/VXLAN][inner] ─▶ TAP fd
//!        ─▶ TAP ingress (tc: mirred redirect) ─▶ underlay egress ─▶ segmented by the kernel/NIC
//!  recv: underlay ingress (tc: UDP to our VTEP address and port) ─▶ redirect ─▶ TAP ─▶ read
//!        ─▶ strip 50 bytes, move the offsets ─▶ the VTEP's decap, learning and peer checks
//! ```
//!
//! This crate holds the data path: the device ([`device`]), the headers ([`vnet`]) and
//! [`TapState`], which the [`crate::Overlay`] drives. The control plane (tc filters, neighbour
//! resolution, watching the underlay) lives with the daemon, which feeds the overlay the
//! underlay's MAC and each peer's next-hop MAC ([`crate::Overlay::set_next_hop`]) and turns the
//! TAP path off ([`crate::Overlay::set_tap_active`]) while it cannot work: the overlay then
//! falls back to its UDP socket, which stays bound in both backends.

pub mod device;
pub mod vnet;

pub use device::{probe, TapDevice};
pub use vnet::{TunnelHdr, MAX_INNER_LEN, OUTER_LEN, TUNNEL_HDR_LEN};

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr};
use switch::port::FrameRef;
use switch::{DropReason, VirtioNetHdr};
use vnet::{write_outer, Outer};

/// The part of a read that goes to [`TapState::head`]: the tunnel header and the outer
/// headers (an outer IPv4 header without options: the underlay's tc filter takes no other).
pub const HEAD_LEN: usize = TUNNEL_HDR_LEN + OUTER_LEN;

/// Counters of the TAP backend (shown with the VTEP's rejects).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapCounters {
    /// Frames not sent: the peer's next hop is not resolved yet.
    pub no_neighbour: u64,
    /// Frames the kernel refused on write (bad metadata), or writes that failed.
    pub write_errors: u64,
    /// Frames read from the TAP that were not VXLAN for us (dropped).
    pub not_vxlan: u64,
    /// Frames read with an unusable virtio-net header (dropped).
    pub bad_header: u64,
    /// Failed reads of the TAP.
    pub read_errors: u64,
    /// Datagrams that arrived on the UDP socket while the TAP path was on: the underlay's tc
    /// filter was missing (still delivered).
    pub socket_rx: u64,
    /// Frames sent through the socket while the TAP path was off.
    pub fallback_tx: u64,
    /// Faults the daemon met and handled, by kind (see [`TapFault`]).
    pub faults: [u64; TapFault::COUNT],
}

/// A fault of the TAP path that the daemon detected (and repaired, or worked around).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapFault {
    /// The underlay interface vanished (the path waits for it; the socket carries on).
    UnderlayMissing = 0,
    /// The underlay interface went down.
    UnderlayDown,
    /// The TAP was deleted (the socket carries the traffic from then on).
    TapLost,
    /// A tc filter (or qdisc) was missing and was put back.
    FilterRepaired,
}

impl TapFault {
    /// Number of kinds.
    pub const COUNT: usize = 4;
}

impl TapCounters {
    /// Name and value of each counter.
    pub fn named(&self) -> [(&'static str, u64); 11] {
        [
            (
                "tap_underlay_missing",
                self.faults[TapFault::UnderlayMissing as usize],
            ),
            (
                "tap_underlay_down",
                self.faults[TapFault::UnderlayDown as usize],
            ),
            ("tap_lost", self.faults[TapFault::TapLost as usize]),
            (
                "tap_filter_repaired",
                self.faults[TapFault::FilterRepaired as usize],
            ),
            ("tap_no_neighbour", self.no_neighbour),
            ("tap_write_errors", self.write_errors),
            ("tap_not_vxlan", self.not_vxlan),
            ("tap_bad_header", self.bad_header),
            ("tap_read_errors", self.read_errors),
            ("tap_socket_rx", self.socket_rx),
            ("tap_fallback_tx", self.fallback_tx),
        ]
    }
}

/// The TAP backend's per-VTEP state: the device, the underlay's addresses, next hops.
pub struct TapState {
    /// The device.
    pub dev: TapDevice,
    /// False while the daemon says the path cannot work (the socket carries the traffic).
    pub active: bool,
    /// The underlay interface's MAC: the outer source.
    pub src_mac: [u8; 6],
    /// Our VTEP address: the outer source, and the destination we accept.
    pub local: Ipv4Addr,
    /// Peer → next-hop MAC (the peer's, or its gateway's), from the kernel's neighbour table.
    next_hops: HashMap<Ipv4Addr, [u8; 6]>,
    /// Peers a frame wanted while their next hop was unknown (the daemon resolves them).
    wanted: Vec<Ipv4Addr>,
    ident: u16,
    /// Read buffer: the header and the outer headers of a frame read from the TAP.
    pub head: [u8; HEAD_LEN],
    /// Read buffer: the inner frame, which lands at its start (no copy to move it there);
    /// handed to the VNI's queue whole, and replaced.
    pub spare: Box<[u8]>,
    /// Where a small frame's partial checksum is completed before it goes.
    scratch: Vec<u8>,
    /// Counters.
    pub counters: TapCounters,
}

impl std::fmt::Debug for TapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapState")
            .field("dev", &self.dev)
            .field("active", &self.active)
            .field("local", &self.local)
            .field("next_hops", &self.next_hops.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl TapState {
    /// The state of a TAP backend on `dev`, sending from `local` and `src_mac`.
    pub fn new(dev: TapDevice, local: Ipv4Addr, src_mac: [u8; 6]) -> TapState {
        TapState {
            dev,
            active: true,
            src_mac,
            local,
            next_hops: HashMap::new(),
            wanted: Vec::new(),
            ident: 0,
            head: [0; HEAD_LEN],
            spare: vec![0u8; switch::port::MAX_FRAME_LEN].into_boxed_slice(),
            scratch: Vec::with_capacity(switch::port::MAX_FRAME_LEN),
            counters: TapCounters::default(),
        }
    }

    /// Sets (or with `None` forgets) the next-hop MAC of `peer`.
    pub fn set_next_hop(&mut self, peer: Ipv4Addr, mac: Option<[u8; 6]>) {
        match mac {
            Some(m) => {
                self.next_hops.insert(peer, m);
            }
            None => {
                self.next_hops.remove(&peer);
            }
        }
    }

    /// The next-hop MAC of `peer`, if known.
    pub fn next_hop(&self, peer: Ipv4Addr) -> Option<[u8; 6]> {
        self.next_hops.get(&peer).copied()
    }

    /// Peers frames wanted to reach while their next hop was unknown, since the last call.
    pub fn take_wanted(&mut self) -> Vec<Ipv4Addr> {
        std::mem::take(&mut self.wanted)
    }

    /// Encapsulates `frame` for `peer` and writes it to the TAP: one write whatever its size
    /// (a super-frame goes whole, with the tunnel GSO header). `inner_fits` says whether one
    /// inner frame (or segment) of that length fits the underlay MTU.
    pub fn send(
        &mut self,
        frame: &FrameRef<'_>,
        peer: IpAddr,
        vni: u32,
        ports: (u16, u16),
        inner_fits: impl Fn(usize) -> bool,
    ) -> Result<(), DropReason> {
        let IpAddr::V4(dst) = peer else {
            return Err(DropReason::OverlaySendFailed);
        };
        let Some(dst_mac) = self.next_hops.get(&dst).copied() else {
            self.counters.no_neighbour += 1;
            if self.wanted.len() < 64 && !self.wanted.contains(&dst) {
                self.wanted.push(dst);
            }
            return Err(DropReason::OverlaySendFailed);
        };
        let data = frame.data;
        let meta = &frame.meta;
        if data.len() > MAX_INNER_LEN {
            return Err(DropReason::TooBigForOverlay);
        }
        let seg_len = if meta.is_gso() {
            usize::from(meta.hdr_len) + usize::from(meta.gso_size)
        } else {
            data.len()
        };
        if !inner_fits(seg_len) {
            return Err(DropReason::TooBigForOverlay);
        }
        let l2 = if data.get(12..14) == Some(&[0x81, 0x00]) {
            18
        } else {
            14
        };
        let hdr = TunnelHdr::for_inner(meta, l2);
        let inner: &[u8] = if !meta.is_gso() && meta.needs_csum() {
            // A small frame with a partial checksum: completed here (a NIC would look for it
            // in the outer headers).
            self.scratch.clear();
            self.scratch.extend_from_slice(data);
            if switch::gso::complete_checksum(&mut self.scratch, meta).is_err() {
                return Err(DropReason::BadOffload);
            }
            &self.scratch
        } else {
            data
        };
        let mut head = [0u8; TUNNEL_HDR_LEN];
        hdr.emit(&mut head);
        let mut outer = [0u8; OUTER_LEN];
        self.ident = self.ident.wrapping_add(1);
        let o = Outer {
            src_mac: self.src_mac,
            dst_mac,
            src_ip: self.local,
            dst_ip: dst,
            src_port: ports.0,
            dst_port: ports.1,
            vni,
            ident: self.ident,
        };
        write_outer(&mut outer, &o, inner.len());
        let parts = [
            IoSlice::new(&head),
            IoSlice::new(&outer),
            IoSlice::new(inner),
        ];
        match self.dev.write(&parts) {
            Ok(_) => Ok(()),
            Err(_) => {
                self.counters.write_errors += 1;
                Err(DropReason::OverlaySendFailed)
            }
        }
    }

    /// Reads one frame: the header and outer headers into `head`, the inner frame into
    /// `spare`. Returns the bytes read (header included); `Ok(None)` when nothing waits.
    pub fn read(&mut self) -> io::Result<Option<usize>> {
        self.dev.read_split(&mut self.head, &mut self.spare)
    }

    /// Where a frame of `n` bytes just read lies: see [`parse_split`].
    pub fn parse(&self, n: usize, port: u16) -> Result<Decapped, ReadDrop> {
        parse_split(&self.head, n, self.local, port)
    }
}

/// Where the VXLAN datagram and the inner frame of a frame read from the TAP lie, and the inner
/// frame's offload metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// The outer source address.
    pub from: Ipv4Addr,
    /// Length of the inner frame (behind the outer headers, at the start of the spare buffer).
    pub inner_len: usize,
    /// The inner frame's metadata (offsets relative to the inner frame).
    pub meta: VirtioNetHdr,
}

/// Why a frame read from the TAP was dropped before the VTEP saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDrop {
    /// The virtio-net header could not be used.
    BadHeader,
    /// Not IPv4/UDP to our address and port.
    NotVxlan,
    /// UDP to our address and port, shorter than the VXLAN header: a malformed datagram.
    Short,
}

/// Parses a frame of `n` bytes (header included) read from the TAP whose first [`HEAD_LEN`]
/// bytes are `head`: checks it is VXLAN to `local`:`port` with 50 bytes of outer headers, and
/// works out the inner frame's length and metadata. The inner frame starts right after
/// `head`; `inner_len` says how long it is.
pub fn parse_split(
    head: &[u8; HEAD_LEN],
    n: usize,
    local: Ipv4Addr,
    port: u16,
) -> Result<Decapped, ReadDrop> {
    if n < TUNNEL_HDR_LEN {
        return Err(ReadDrop::BadHeader);
    }
    let hdr = TunnelHdr::parse(head).map_err(|_| ReadDrop::BadHeader)?;
    let frame_len = n - TUNNEL_HDR_LEN;
    // Only what this read filled: a short frame leaves the rest of `head` as it was.
    let outer = &head[TUNNEL_HDR_LEN..TUNNEL_HDR_LEN + frame_len.min(OUTER_LEN)];
    let a = vnet::parse_outer_prefix(outer, frame_len, local, port).ok_or(ReadDrop::NotVxlan)?;
    if a.payload + crate::HEADER_LEN != OUTER_LEN {
        // IPv4 options: not what the underlay's filter sends us.
        return Err(ReadDrop::NotVxlan);
    }
    if a.end < OUTER_LEN {
        return Err(ReadDrop::Short);
    }
    let meta = hdr.inner_meta(OUTER_LEN);
    if meta.is_gso() && !meta.needs_csum() {
        return Err(ReadDrop::BadHeader);
    }
    Ok(Decapped {
        from: a.from,
        inner_len: a.end - OUTER_LEN,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::offload::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};

    #[test]
    fn a_received_super_frame_gives_its_inner_metadata() {
        let local = Ipv4Addr::new(10, 0, 0, 2);
        let inner_meta = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut head = [0u8; TUNNEL_HDR_LEN];
        TunnelHdr::for_inner(&inner_meta, 14).emit(&mut head);
        let mut outer = [0u8; OUTER_LEN];
        let o = Outer {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: local,
            src_port: 50000,
            dst_port: 4789,
            vni: 42,
            ident: 1,
        };
        write_outer(&mut outer, &o, 3000);
        let mut buf = [0u8; HEAD_LEN];
        buf[..24].copy_from_slice(&head);
        buf[24..].copy_from_slice(&outer);
        let n = HEAD_LEN + 3000;
        let d = parse_split(&buf, n, local, 4789).unwrap();
        assert_eq!(d.from, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(d.inner_len, 3000);
        assert_eq!(d.meta, inner_meta);
        // A read cut short: the inner frame is what arrived.
        assert_eq!(
            parse_split(&buf, HEAD_LEN + 10, local, 4789)
                .unwrap()
                .inner_len,
            10
        );
        // Not for us: dropped as not VXLAN.
        assert_eq!(
            parse_split(&buf, n, Ipv4Addr::new(10, 0, 0, 9), 4789),
            Err(ReadDrop::NotVxlan)
        );
        assert_eq!(parse_split(&buf, 20, local, 4789), Err(ReadDrop::BadHeader));
        // A UDP datagram of 4 bytes to our port: malformed VXLAN, not someone else's traffic.
        assert_eq!(
            parse_split(&buf, HEAD_LEN - 4, local, 4789),
            Err(ReadDrop::Short)
        );
        // Shorter than the outer headers themselves: not VXLAN (and nothing stale is read).
        assert_eq!(
            parse_split(&buf, TUNNEL_HDR_LEN + 30, local, 4789),
            Err(ReadDrop::NotVxlan)
        );
        // Options in the outer IPv4 header: not what tc sends us.
        buf[24 + 14] = 0x46;
        assert_eq!(parse_split(&buf, n, local, 4789), Err(ReadDrop::NotVxlan));
    }
}
