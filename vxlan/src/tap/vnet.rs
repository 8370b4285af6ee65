//! The 24-byte virtio-net header of a TAP that carries UDP-tunnel GSO, and the outer
//! Ethernet/IPv4/UDP/VXLAN headers written in front of an inner frame (or super-frame).
//!
//! Layout (virtio v1.3 § 5.1.6, `struct virtio_net_hdr_v1_hash_tunnel`; Linux 6.17+
//! `include/uapi/linux/virtio_net.h`), little-endian:
//!
//! ```text
//!  0 flags  1 gso_type  2 hdr_len  4 gso_size  6 csum_start  8 csum_offset  10 num_buffers
//! 12 hash_value (4)  16 hash_report (2)  18 padding (2)  20 outer_th_offset  22 inner_nh_offset
//! ```
//!
//! A super-frame handed to the TAP is the whole encapsulated packet: `gso_type` is the inner
//! type (TCPV4/TCPV6) with `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`, `csum_start`/`csum_offset` name
//! the inner TCP checksum (the kernel relies on it), `outer_th_offset` the outer UDP header and
//! `inner_nh_offset` the inner IP header. The kernel segments it on the wire (or a NIC does):
//! no segmentation and no checksum pass here. On Linux 6.18, bytes 10–23 of a header whose
//! `gso_type` has no tunnel bit may hold anything: [`TunnelHdr::parse`] reads them only when a
//! tunnel bit is set.

use switch::offload::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE};
use switch::wire::{ipv4, udp};

/// Length of the tunnel virtio-net header (`TUNSETVNETHDRSZ`).
pub const TUNNEL_HDR_LEN: usize = 24;
/// `gso_type` bit: the super-frame is inside a UDP tunnel over IPv4.
pub const VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// `gso_type` bit: the super-frame is inside a UDP tunnel over IPv6.
pub const VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6: u8 = 0x40;
/// Both tunnel bits.
pub const VIRTIO_NET_HDR_GSO_UDP_TUNNEL: u8 =
    VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4 | VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6;
/// `flags`: the outer UDP checksum is to be filled too (we never ask: RFC 7348 § 5, zero).
pub const VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM: u8 = 8;
/// Outer headers of VXLAN over IPv4 without options: Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
pub const OUTER_LEN: usize = 14 + ipv4::HEADER_LEN + udp::HEADER_LEN + crate::HEADER_LEN;
/// Offset of the outer UDP header in an encapsulated frame.
pub const OUTER_UDP_OFFSET: usize = 14 + ipv4::HEADER_LEN;
/// Largest outer IPv4 packet (its total length field).
pub const MAX_OUTER_IP_LEN: usize = 65535;
/// Largest inner frame one encapsulated packet can carry: the outer IPv4 length stays
/// within 65 535 bytes.
pub const MAX_INNER_LEN: usize = MAX_OUTER_IP_LEN - (OUTER_LEN - 14);

/// A tunnel virtio-net header: the classic part and the two tunnel offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelHdr {
    /// flags, gso_type (with tunnel bits), hdr_len, gso_size, csum_start, csum_offset.
    pub base: VirtioNetHdr,
    /// Offset of the outer transport (UDP) header; 0 unless a tunnel bit is set.
    pub outer_th_offset: u16,
    /// Offset of the inner network header; 0 unless a tunnel bit is set.
    pub inner_nh_offset: u16,
}

/// Why a header read from the TAP was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HdrError {
    /// Fewer than 24 bytes.
    Truncated,
    /// Both tunnel bits, or offsets that do not fit the outer headers.
    BadTunnel,
}

impl TunnelHdr {
    /// True when `gso_type` carries a tunnel bit: the tunnel offsets are meaningful.
    pub fn is_tunnel(&self) -> bool {
        self.base.gso_type & VIRTIO_NET_HDR_GSO_UDP_TUNNEL != 0
    }

    /// Reads a header; bytes 10–23 only when a tunnel bit is set (they may be garbage
    /// otherwise).
    pub fn parse(b: &[u8]) -> Result<TunnelHdr, HdrError> {
        let b = b
            .first_chunk::<TUNNEL_HDR_LEN>()
            .ok_or(HdrError::Truncated)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let base = VirtioNetHdr::read(b.first_chunk().ok_or(HdrError::Truncated)?);
        let mut h = TunnelHdr {
            base,
            ..TunnelHdr::default()
        };
        if h.is_tunnel() {
            if base.gso_type & VIRTIO_NET_HDR_GSO_UDP_TUNNEL == VIRTIO_NET_HDR_GSO_UDP_TUNNEL {
                return Err(HdrError::BadTunnel);
            }
            h.outer_th_offset = u16_at(20);
            h.inner_nh_offset = u16_at(22);
        }
        Ok(h)
    }

    /// Writes the 24 bytes (hash fields and `num_buffers` zero).
    pub fn emit(&self, out: &mut [u8; TUNNEL_HDR_LEN]) {
        out.fill(0);
        self.base.emit(&mut out[..10]);
        out[20..22].copy_from_slice(&self.outer_th_offset.to_le_bytes());
        out[22..24].copy_from_slice(&self.inner_nh_offset.to_le_bytes());
    }

    /// The header for an inner frame whose metadata is `inner` and whose link-layer header
    /// is `inner_l2_len` bytes, sent behind [`OUTER_LEN`] bytes of outer headers.
    ///
    /// A super-frame keeps its inner GSO type with the IPv4 tunnel bit, its checksum offsets
    /// moved by the outer headers; anything else goes as a plain frame (the caller completes a
    /// partial checksum first).
    pub fn for_inner(inner: &VirtioNetHdr, inner_l2_len: usize) -> TunnelHdr {
        if !inner.is_gso() {
            return TunnelHdr::default();
        }
        let shift = OUTER_LEN as u16;
        TunnelHdr {
            base: VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: inner.gso_type | VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4,
                hdr_len: inner.hdr_len.saturating_add(shift),
                gso_size: inner.gso_size,
                csum_start: inner.csum_start.saturating_add(shift),
                csum_offset: inner.csum_offset,
            },
            outer_th_offset: OUTER_UDP_OFFSET as u16,
            inner_nh_offset: (OUTER_LEN + inner_l2_len) as u16,
        }
    }

    /// The metadata of the inner frame once `outer_len` bytes of outer headers are stripped:
    /// tunnel bits gone, offsets moved back. A checksum that starts inside the outer headers
    /// (the outer UDP one) does not concern the inner frame: it is dropped.
    pub fn inner_meta(&self, outer_len: usize) -> VirtioNetHdr {
        let shift = outer_len as u16;
        let b = &self.base;
        let gso_type = b.gso_type & !VIRTIO_NET_HDR_GSO_UDP_TUNNEL;
        let csum_inside = b.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && b.csum_start >= shift;
        if gso_type & !switch::offload::VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE {
            if !csum_inside || b.hdr_len < shift {
                // A super-frame must carry its inner checksum offsets; refused by the caller.
                return VirtioNetHdr {
                    gso_type,
                    ..VirtioNetHdr::NONE
                };
            }
            return VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type,
                hdr_len: b.hdr_len - shift,
                gso_size: b.gso_size,
                csum_start: b.csum_start - shift,
                csum_offset: b.csum_offset,
            };
        }
        if csum_inside {
            return VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                csum_start: b.csum_start - shift,
                csum_offset: b.csum_offset,
                ..VirtioNetHdr::NONE
            };
        }
        VirtioNetHdr::NONE
    }
}

/// The outer headers of one encapsulated frame, as [`write_outer`] lays them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// Underlay source MAC (our underlay interface's).
    pub src_mac: [u8; 6],
    /// Next hop towards the peer (from the neighbour table).
    pub dst_mac: [u8; 6],
    /// Our VTEP address.
    pub src_ip: std::net::Ipv4Addr,
    /// The peer's VTEP address.
    pub dst_ip: std::net::Ipv4Addr,
    /// Per-flow UDP source port (RFC 7348 § 5).
    pub src_port: u16,
    /// The VXLAN port (RFC 7348 § 5: 4789).
    pub dst_port: u16,
    /// The VNI.
    pub vni: u32,
    /// IPv4 identification.
    pub ident: u16,
}

/// Writes Ethernet, IPv4 (DF set, RFC 7348 § 4.3; header checksum filled), UDP (checksum 0,
/// RFC 7348 § 5) and VXLAN (I flag, RFC 7348 § 5) in front of an inner frame of `inner_len`
/// bytes. `inner_len` must be at most [`MAX_INNER_LEN`].
pub fn write_outer(out: &mut [u8; OUTER_LEN], o: &Outer, inner_len: usize) {
    out[0..6].copy_from_slice(&o.dst_mac);
    out[6..12].copy_from_slice(&o.src_mac);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let udp_len = (udp::HEADER_LEN + crate::HEADER_LEN + inner_len) as u16;
    let ip_len = udp_len + ipv4::HEADER_LEN as u16;
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut out[14..14 + ipv4::HEADER_LEN]);
        ip.set_version_and_header_len(ipv4::HEADER_LEN);
        ip.set_dscp_ecn(0);
        ip.set_total_len(ip_len);
        ip.set_ident(o.ident);
        ip.set_dont_frag(true);
        ip.set_ttl(64);
        ip.set_protocol(17);
        ip.set_src_addr(o.src_ip);
        ip.set_dst_addr(o.dst_ip);
        ip.fill_checksum();
    }
    let u = OUTER_UDP_OFFSET;
    out[u..u + 2].copy_from_slice(&o.src_port.to_be_bytes());
    out[u + 2..u + 4].copy_from_slice(&o.dst_port.to_be_bytes());
    out[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
    out[u + 6..u + 8].copy_from_slice(&[0, 0]);
    let v = u + udp::HEADER_LEN;
    out[v..v + 8].copy_from_slice(&[crate::header::FLAG_I, 0, 0, 0, 0, 0, 0, 0]);
    out[v + 4..v + 7].copy_from_slice(&o.vni.to_be_bytes()[1..]);
}

/// What [`parse_outer`] found in a frame read from the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrived {
    /// The outer source address: the sender, checked against the VNI's peers.
    pub from: std::net::Ipv4Addr,
    /// The outer source UDP port.
    pub src_port: u16,
    /// Where the UDP payload (VXLAN header and inner frame) starts.
    pub payload: usize,
    /// Where the UDP payload ends (the UDP length, never past the frame).
    pub end: usize,
}

/// Checks that `frame` is IPv4/UDP to `local`:`port` (untagged outer Ethernet, any IPv4
/// options, not a fragment) and says where its VXLAN datagram lies. `None` for anything else.
pub fn parse_outer(frame: &[u8], local: std::net::Ipv4Addr, port: u16) -> Option<Arrived> {
    parse_outer_prefix(frame, frame.len(), local, port)
}

/// [`parse_outer`] of a frame of `frame_len` bytes of which `frame` holds the first ones (at
/// least the outer headers).
pub fn parse_outer_prefix(
    frame: &[u8],
    frame_len: usize,
    local: std::net::Ipv4Addr,
    port: u16,
) -> Option<Arrived> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = ipv4::Packet::new_checked(frame.get(14..)?).ok()?;
    if ip.version() != 4 || ip.protocol() != 17 || ip.is_fragment() || ip.dst_addr() != local {
        return None;
    }
    let ihl = ip.header_len();
    let total = usize::from(ip.total_len());
    let u = 14 + ihl;
    let udp = frame.get(u..u + udp::HEADER_LEN)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // A super-frame's IPv4 and UDP lengths describe the whole of it; trust the shortest.
    let end = (u + udp_len.max(udp::HEADER_LEN))
        .min(14 + total.max(ihl))
        .min(frame_len);
    Some(Arrived {
        from: ip.src_addr(),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        payload: (u + udp::HEADER_LEN).min(end),
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use switch::offload::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6};

    fn outer() -> Outer {
        Outer {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 0xc123,
            dst_port: 4789,
            vni: 0x0a0b0c,
            ident: 0x1234,
        }
    }

    #[test]
    fn the_tunnel_header_of_a_tcpv4_super_frame_is_byte_exact() {
        // A 64 KB inner super-frame: Ethernet 14 + IPv4 20 + TCP 32, MSS 1398.
        let inner = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        let h = TunnelHdr::for_inner(&inner, 14);
        let mut b = [0xeeu8; TUNNEL_HDR_LEN];
        h.emit(&mut b);
        #[rustfmt::skip]
        let want: [u8; 24] = [
            0x01, 0x21, 116, 0, 0x76, 0x05, 84, 0, 16, 0, // flags, type, hdr_len, gso_size, csum
            0, 0,                                       // num_buffers
            0, 0, 0, 0, 0, 0, 0, 0,                     // hash value, report, padding
            34, 0,                                      // outer_th_offset: the outer UDP
            64, 0,                                      // inner_nh_offset: 50 + 14
        ];
        assert_eq!(b, want);
        assert_eq!(TunnelHdr::parse(&b), Ok(h));
        // And back: stripping 50 bytes gives the inner metadata again.
        assert_eq!(h.inner_meta(OUTER_LEN), inner);
    }

    #[test]
    fn tcpv6_inside_and_plain_frames() {
        let inner = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            hdr_len: 14 + 40 + 20,
            gso_size: 1000,
            csum_start: 54,
            csum_offset: 16,
        };
        let h = TunnelHdr::for_inner(&inner, 18);
        assert_eq!(h.base.gso_type, 0x24);
        assert_eq!(h.inner_nh_offset, 68, "behind a VLAN tag");
        // A plain frame: an all-zero header, no tunnel.
        let plain = TunnelHdr::for_inner(&VirtioNetHdr::NONE, 14);
        let mut b = [0xffu8; 24];
        plain.emit(&mut b);
        assert_eq!(b, [0; 24]);
    }

    #[test]
    fn garbage_past_byte_10_is_ignored_without_the_tunnel_bits() {
        let mut b = [0xa5u8; 24];
        b[..10].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let h = TunnelHdr::parse(&b).unwrap();
        assert!(!h.is_tunnel());
        assert_eq!((h.outer_th_offset, h.inner_nh_offset), (0, 0));
        assert_eq!(h.inner_meta(OUTER_LEN), VirtioNetHdr::NONE);
        // Both tunnel bits: refused. Short: refused.
        b[1] = 0x61;
        assert_eq!(TunnelHdr::parse(&b), Err(HdrError::BadTunnel));
        assert_eq!(TunnelHdr::parse(&b[..23]), Err(HdrError::Truncated));
    }

    #[test]
    fn a_partial_checksum_inside_moves_back_and_one_outside_is_dropped() {
        let mut h = TunnelHdr::default();
        h.base.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h.base.csum_start = 50 + 34;
        h.base.csum_offset = 6;
        let m = h.inner_meta(OUTER_LEN);
        assert_eq!((m.flags, m.csum_start, m.csum_offset), (1, 34, 6));
        h.base.csum_start = 34; // the outer UDP checksum
        assert_eq!(h.inner_meta(OUTER_LEN), VirtioNetHdr::NONE);
        // A super-frame whose checksum is not inside keeps its type (the caller refuses it).
        h.base.gso_type = 0x21;
        assert!(h.inner_meta(OUTER_LEN).is_gso());
        assert!(!h.inner_meta(OUTER_LEN).needs_csum());
    }

    #[test]
    fn outer_headers_are_byte_exact() {
        let mut b = [0u8; OUTER_LEN];
        write_outer(&mut b, &outer(), 100);
        #[rustfmt::skip]
        let want: [u8; OUTER_LEN] = [
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
            0x45, 0, 0, 136, 0x12, 0x34, 0x40, 0, 64, 17, 0x14, 0x2f, 10, 0, 0, 1, 10, 0, 0, 2,
            0xc1, 0x23, 0x12, 0xb5, 0, 116, 0, 0,
            0x08, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0,
        ];
        assert_eq!(b, want);
        let ip = ipv4::Packet::new_checked(&b[14..34]).unwrap();
        assert!(ip.verify_checksum());
        // It parses back, for the peer that receives it.
        let mut frame = b.to_vec();
        frame.resize(OUTER_LEN + 100, 0);
        let got = parse_outer(&frame, Ipv4Addr::new(10, 0, 0, 2), 4789).unwrap();
        assert_eq!(
            got,
            Arrived {
                from: Ipv4Addr::new(10, 0, 0, 1),
                src_port: 0xc123,
                payload: 42,
                end: OUTER_LEN + 100
            }
        );
        // Not ours: another address, another port, not UDP, short.
        assert_eq!(parse_outer(&frame, Ipv4Addr::new(10, 0, 0, 3), 4789), None);
        assert_eq!(parse_outer(&frame, Ipv4Addr::new(10, 0, 0, 2), 4790), None);
        let mut tcp = frame.clone();
        tcp[23] = 6;
        assert_eq!(parse_outer(&tcp, Ipv4Addr::new(10, 0, 0, 2), 4789), None);
        assert_eq!(
            parse_outer(&frame[..30], Ipv4Addr::new(10, 0, 0, 2), 4789),
            None
        );
        // A UDP length past the frame is cut to the frame.
        let got = parse_outer(&frame[..OUTER_LEN + 10], Ipv4Addr::new(10, 0, 0, 2), 4789);
        assert_eq!(got.unwrap().end, OUTER_LEN + 10);
    }

    #[test]
    fn the_largest_inner_frame_keeps_the_outer_length_in_16_bits() {
        let mut b = [0u8; OUTER_LEN];
        write_outer(&mut b, &outer(), MAX_INNER_LEN);
        let ip = ipv4::Packet::new_checked(&b[14..34]).unwrap();
        assert_eq!(usize::from(ip.total_len()), MAX_OUTER_IP_LEN);
    }
}
