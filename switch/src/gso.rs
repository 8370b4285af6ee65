//! Software checksum completion and TCP segmentation: the NIC's work, done by the switch.
//!
//! TAP and AF_PACKET ports hand the switch 64 KB TCP super-frames whose checksum is left for the
//! last hop (see [`crate::offload`]). When the egress port can take them as they are, they go
//! out whole. When it cannot, this module is the only place where the switch does what a NIC
//! would: it completes a partial checksum ([`complete_checksum`]), or cuts a super-frame into
//! standalone, fully checksummed segments of at most `gso_size` payload bytes ([`Segmenter`]),
//! the way Linux's `skb_checksum_help` and `tcp_gso_segment` do it in software.
//!
//! The checksum is the Internet checksum of RFC 1071, over the pseudo-headers of RFC 9293 § 3.1
//! (TCP over IPv4) and RFC 8200 § 8.1 (IPv6). Segmentation follows Linux's `tcp_gso_segment`:
//! every segment carries a copy of the headers; the IPv4 identifier grows by one per segment
//! (RFC 6864 § 4.1 lets a sender choose); the sequence number grows by the payload before it
//! (RFC 9293 § 3.4); CWR stays on the first segment only, the one that answers the congestion
//! signal (RFC 3168 § 6.1.2); FIN and PSH stay on the last only, which ends the data they mark.
//!
//! This runs per packet on the hot path: nothing here allocates once the [`Segmenter`]'s scratch
//! buffer has grown to the largest segment, nothing logs, and no input bytes can make it panic.

use crate::offload::{
    OffloadError, VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use crate::wire::checksum::{internet_checksum, ones_complement_sum};
use crate::wire::{ipv4, ipv6, tcp, EtherType, L2Header, IPPROTO_TCP};

// ---------------------------------------------------------------------------------------------
// Checksum completion
// ---------------------------------------------------------------------------------------------

/// Completes a partial checksum (`NEEDS_CSUM`, Linux's `CHECKSUM_PARTIAL`): the field at
/// `csum_start + csum_offset` holds the pseudo-header sum; the checksum of everything from
/// `csum_start` to the end is stored there. A frame without `NEEDS_CSUM` is left alone.
pub fn complete_checksum(frame: &mut [u8], hdr: &VirtioNetHdr) -> Result<(), OffloadError> {
    if !hdr.needs_csum() {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > frame.len() {
        return Err(OffloadError::BadOffsets);
    }
    let csum = internet_checksum(&frame[start..], 0);
    // Like skb_checksum_help: 0 goes out as its other one's complement form, 0xffff, which
    // UDP requires (RFC 768) and TCP accepts.
    let csum = if csum == 0 { 0xffff } else { csum };
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Segmentation
// ---------------------------------------------------------------------------------------------

/// Where the headers of a TCP super-frame are, as parsed from its bytes.
#[derive(Debug, Clone, Copy)]
struct TcpLayout {
    /// Start of the IP header.
    l3: usize,
    /// Start of the TCP header.
    l4: usize,
    /// End of the TCP header: the first payload byte.
    payload: usize,
    ipv6: bool,
}

impl TcpLayout {
    /// Parses Ethernet (up to two tags), IPv4 or IPv6, and TCP, checking that they are what the
    /// GSO type says and that they fit in the frame. `hdr_len` is not trusted: devices send 0 or
    /// a wrong value, and the frame itself is the truth.
    fn parse(frame: &[u8], gso_kind: u8) -> Result<TcpLayout, OffloadError> {
        let want = match gso_kind {
            VIRTIO_NET_HDR_GSO_TCPV4 => EtherType::Ipv4,
            VIRTIO_NET_HDR_GSO_TCPV6 => EtherType::Ipv6,
            other => return Err(OffloadError::UnsupportedGso(other)),
        };
        let l2 = L2Header::parse(frame).map_err(|_| OffloadError::BadHeaders)?;
        if l2.ethertype != want {
            return Err(OffloadError::BadHeaders);
        }
        let l3 = l2.payload_offset;
        let ip = &frame[l3..];
        let (ip_len, ipv6) = if want == EtherType::Ipv4 {
            let ip = ipv4::Packet::new_checked(ip).map_err(|_| OffloadError::BadHeaders)?;
            if ip.protocol() != IPPROTO_TCP || ip.is_fragment() {
                return Err(OffloadError::BadHeaders);
            }
            (ip.header_len(), false)
        } else {
            // Extension headers are not supported: TCP must follow the fixed header.
            let ip = ipv6::Packet::new_checked(ip).map_err(|_| OffloadError::BadHeaders)?;
            if ip.next_header() != IPPROTO_TCP {
                return Err(OffloadError::BadHeaders);
            }
            (ipv6::HEADER_LEN, true)
        };
        let l4 = l3 + ip_len;
        let tcp = tcp::Packet::new_checked(&frame[l4..]).map_err(|_| OffloadError::BadHeaders)?;
        Ok(TcpLayout {
            l3,
            l4,
            payload: l4 + tcp.header_len(),
            ipv6,
        })
    }
}

/// Cuts TCP super-frames into standalone segments, reusing one scratch buffer for all of them.
#[derive(Debug, Default)]
pub struct Segmenter {
    /// The segment being built: the copied headers, then one MSS of payload.
    scratch: Vec<u8>,
}

impl Segmenter {
    /// A segmenter with an empty scratch buffer (it grows to the largest segment once).
    pub fn new() -> Segmenter {
        Segmenter::default()
    }

    /// Emits `frame` as frames a port without offloads can take, and returns how many: a
    /// super-frame cut into segments of at most `gso_size` payload bytes, a `NEEDS_CSUM` frame
    /// with its checksum completed, a plain frame unchanged. What `emit` receives is final:
    /// send it with an empty virtio-net header.
    pub fn segment(
        &mut self,
        frame: &[u8],
        hdr: &VirtioNetHdr,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        if hdr.is_gso() {
            return self.segment_tcp(frame, hdr, emit);
        }
        if hdr.needs_csum() {
            self.scratch.clear();
            self.scratch.extend_from_slice(frame);
            complete_checksum(&mut self.scratch, hdr)?;
            emit(&self.scratch);
        } else {
            emit(frame);
        }
        Ok(1)
    }

    /// Like [`Segmenter::segment`] for a super-frame, but lays the segments out back to back
    /// in `out` (cleared first), each after a copy of `prefix` (e.g. a VXLAN header): one copy
    /// of the payload, no scratch. Every unit (prefix and segment) but the last has the same
    /// length, as UDP segmentation offload needs. Returns the number of units and that length.
    pub fn segment_into(
        &mut self,
        frame: &[u8],
        hdr: &VirtioNetHdr,
        prefix: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, usize), OffloadError> {
        out.clear();
        if !hdr.is_gso() {
            out.extend_from_slice(prefix);
            let start = out.len();
            out.extend_from_slice(frame);
            if hdr.needs_csum() {
                complete_checksum(&mut out[start..], hdr)?;
            }
            return Ok((1, out.len()));
        }
        let plan = SegmentPlan::new(frame, hdr)?;
        for i in 0..plan.count {
            out.extend_from_slice(prefix);
            let start = out.len();
            out.extend_from_slice(&frame[..plan.hdrs_end]);
            out.extend_from_slice(plan.chunk(frame, i));
            plan.fix(&mut out[start..], i);
        }
        let unit = prefix.len() + plan.hdrs_end + plan.mss.min(plan.payload_len);
        Ok((plan.count, unit))
    }

    /// Cuts a TCP super-frame without copying its payload: writes each segment's headers,
    /// after a copy of `prefix`, to `out` (cleared first), one [`HeaderUnits::head_len`]-byte
    /// unit per segment. Segment `i` is that unit followed by [`HeaderUnits::payload`]`(frame, i)`,
    /// still in `frame`: a gathering send (an iovec per part) puts them together.
    pub fn segment_headers(
        &mut self,
        frame: &[u8],
        hdr: &VirtioNetHdr,
        prefix: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<HeaderUnits, OffloadError> {
        out.clear();
        if !hdr.is_gso() {
            return Err(OffloadError::BadOffsets);
        }
        let plan = SegmentPlan::new(frame, hdr)?;
        let head_len = prefix.len() + plan.hdrs_end;
        out.reserve(plan.count * head_len);
        for i in 0..plan.count {
            out.extend_from_slice(prefix);
            let start = out.len();
            out.extend_from_slice(&frame[..plan.hdrs_end]);
            plan.fix_split(&mut out[start..], plan.chunk(frame, i), i);
        }
        Ok(HeaderUnits {
            count: plan.count,
            head_len,
            payload_start: plan.hdrs_end,
            mss: plan.mss,
        })
    }

    /// The TSO path: one segment per `gso_size` payload bytes, headers fixed up per segment.
    fn segment_tcp(
        &mut self,
        frame: &[u8],
        hdr: &VirtioNetHdr,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<usize, OffloadError> {
        let plan = SegmentPlan::new(frame, hdr)?;
        let largest = plan.mss.min(frame.len() - plan.hdrs_end);
        if self.scratch.len() < plan.hdrs_end + largest {
            self.scratch.resize(plan.hdrs_end + largest, 0);
        }
        // The headers are copied once; each segment then rewrites only the fields that change.
        self.scratch[..plan.hdrs_end].copy_from_slice(&frame[..plan.hdrs_end]);
        for i in 0..plan.count {
            let chunk = plan.chunk(frame, i);
            let seg = &mut self.scratch[..plan.hdrs_end + chunk.len()];
            seg[plan.hdrs_end..].copy_from_slice(chunk);
            plan.fix(seg, i);
            emit(seg);
        }
        Ok(plan.count)
    }
}

/// The layout [`Segmenter::segment_headers`] made: per segment, a unit of headers in its output
/// and a payload slice of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderUnits {
    /// Number of segments.
    pub count: usize,
    /// Bytes of each header unit (prefix and the frame's headers).
    pub head_len: usize,
    /// Where the payload starts in the frame.
    pub payload_start: usize,
    /// Payload bytes per segment (the last may have fewer).
    pub mss: usize,
}

impl HeaderUnits {
    /// The payload of segment `i`, in `frame`.
    pub fn payload<'a>(&self, frame: &'a [u8], i: usize) -> &'a [u8] {
        let start = (self.payload_start + i * self.mss).min(frame.len());
        &frame[start..(start + self.mss).min(frame.len())]
    }

    /// The size of every segment but the last (header unit and payload).
    pub fn unit_len(&self, frame: &[u8]) -> usize {
        self.head_len + self.mss.min(frame.len() - self.payload_start)
    }
}

/// How a super-frame is cut: its layout, the segment size, and what each segment inherits.
struct SegmentPlan {
    l3: usize,
    l4: usize,
    hdrs_end: usize,
    ipv6: bool,
    mss: usize,
    count: usize,
    payload_len: usize,
    first_seq: u32,
    first_id: u16,
    flags: u8,
    /// The pseudo-header sum without its length, which each segment adds.
    addr_sum: u32,
}

impl SegmentPlan {
    fn new(frame: &[u8], hdr: &VirtioNetHdr) -> Result<SegmentPlan, OffloadError> {
        let layout = TcpLayout::parse(frame, hdr.gso_kind())?;
        let mss = usize::from(hdr.gso_size);
        if mss == 0 {
            return Err(OffloadError::BadOffsets);
        }
        let TcpLayout {
            l3,
            l4,
            payload: hdrs_end,
            ipv6,
        } = layout;
        let payload_len = frame.len() - hdrs_end;
        // The largest segment must still have a representable IP length: IPv4's counts its
        // header, IPv6's only what follows the fixed header.
        let largest = mss.min(payload_len);
        let counted_from = if ipv6 { l4 } else { l3 };
        if hdrs_end - counted_from + largest > usize::from(u16::MAX) {
            return Err(OffloadError::BadOffsets);
        }
        let tcp = tcp::Packet::new_unchecked(&frame[l4..]);
        let (addr_sum, first_id) = if ipv6 {
            let ip = ipv6::Packet::new_unchecked(&frame[l3..]);
            (ip.pseudo_header_sum(IPPROTO_TCP, 0), 0)
        } else {
            let ip = ipv4::Packet::new_unchecked(&frame[l3..]);
            (ip.pseudo_header_sum(0), ip.ident())
        };
        Ok(SegmentPlan {
            l3,
            l4,
            hdrs_end,
            ipv6,
            mss,
            // An empty payload still makes one (header-only) segment.
            count: payload_len.div_ceil(mss).max(1),
            payload_len,
            first_seq: tcp.seq_number(),
            first_id,
            flags: tcp.flags(),
            addr_sum,
        })
    }

    /// The payload of segment `i`.
    fn chunk<'a>(&self, frame: &'a [u8], i: usize) -> &'a [u8] {
        let start = self.hdrs_end + i * self.mss;
        &frame[start..(start + self.mss).min(self.hdrs_end + self.payload_len)]
    }

    /// Rewrites the fields of segment `i` (headers followed by its payload, in `seg`): lengths,
    /// IPv4 id and checksum, sequence number, flags, TCP checksum.
    fn fix(&self, seg: &mut [u8], i: usize) {
        let (hdrs, payload) = seg.split_at_mut(self.hdrs_end);
        self.fix_split(hdrs, payload, i);
    }

    /// [`SegmentPlan::fix`] for a segment whose headers (`hdrs`, `hdrs_end` bytes) and payload
    /// lie apart.
    fn fix_split(&self, hdrs: &mut [u8], payload: &[u8], i: usize) {
        let (l3, l4) = (self.l3, self.l4);
        let (ip, tcp_header) = hdrs[l3..].split_at_mut(l4 - l3);
        // Checked in `new`: every length here fits in 16 bits.
        let tcp_len = (tcp_header.len() + payload.len()) as u16;
        if self.ipv6 {
            ipv6::Packet::new_unchecked(ip).set_payload_len(tcp_len);
        } else {
            let mut ip = ipv4::Packet::new_unchecked(ip);
            ip.set_total_len((l4 - l3) as u16 + tcp_len);
            ip.set_ident(self.first_id.wrapping_add(i as u16));
            ip.fill_checksum();
        }
        let mut seg_flags = self.flags;
        if i > 0 {
            seg_flags &= !tcp::FLAG_CWR;
        }
        if i + 1 < self.count {
            seg_flags &= !(tcp::FLAG_FIN | tcp::FLAG_PSH);
        }
        let mut tcp = tcp::Packet::new_unchecked(tcp_header);
        tcp.set_flags(seg_flags);
        tcp.set_seq_number(self.first_seq.wrapping_add((i * self.mss) as u32));
        tcp.set_checksum(0);
        // The TCP header is a whole number of 32-bit words, so the payload's sum starts on an
        // even offset and the two sums add up.
        let header_sum = ones_complement_sum(tcp.header(), self.addr_sum + u32::from(tcp_len));
        tcp.set_checksum(internet_checksum(payload, u32::from(header_sum)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_GSO_UDP_L4,
    };
    use crate::wire::checksum::tests::naive_sum;
    use crate::wire::udp;
    use etherparse as ep;
    use proptest::prelude::*;

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// ACK | PSH | FIN | ECE | CWR: every flag segmentation must treat specially, plus two that
    /// must be kept on every segment.
    const FLAGS: u8 = 0x10 | tcp::FLAG_PSH | tcp::FLAG_FIN | 0x40 | tcp::FLAG_CWR;
    /// NOP, NOP, timestamps: a 32-byte TCP header, as Linux sends.
    const TCP_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    /// What a super-frame was built from, to check the segments against.
    #[derive(Debug, Clone)]
    struct Spec {
        tags: usize,
        ipv6: bool,
        payload_len: usize,
        ip_id: u16,
        seq: u32,
        flags: u8,
    }

    impl Spec {
        fn v4(tags: usize, payload_len: usize) -> Spec {
            Spec {
                tags,
                ipv6: false,
                payload_len,
                ip_id: 0xfff0,
                seq: 0xffff_0000,
                flags: FLAGS,
            }
        }
        fn v6(tags: usize, payload_len: usize) -> Spec {
            Spec {
                ipv6: true,
                ..Spec::v4(tags, payload_len)
            }
        }
        fn l3(&self) -> usize {
            14 + 4 * self.tags
        }
        fn l4(&self) -> usize {
            self.l3() + if self.ipv6 { 40 } else { 20 }
        }
        fn hdrs_end(&self) -> usize {
            self.l4() + 20 + TCP_OPTIONS.len()
        }
    }

    fn patterned(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    /// Ethernet header with `tags` VLAN tags (QinQ for two), announcing `inner`.
    fn ethernet(tags: usize, inner: ep::EtherType) -> Vec<u8> {
        let first = match tags {
            0 => inner,
            1 => ep::EtherType::VLAN_TAGGED_FRAME,
            _ => ep::EtherType::PROVIDER_BRIDGING,
        };
        let mut out = ep::Ethernet2Header {
            source: [2, 0, 0, 0, 0, 1],
            destination: [2, 0, 0, 0, 0, 2],
            ether_type: first,
        }
        .to_bytes()
        .to_vec();
        for t in 0..tags {
            let next = if t + 1 == tags {
                inner
            } else {
                ep::EtherType::VLAN_TAGGED_FRAME
            };
            let tag = ep::SingleVlanHeader {
                pcp: ep::VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: ep::VlanId::try_new(100 + t as u16).unwrap(),
                ether_type: next,
            };
            out.extend_from_slice(&tag.to_bytes());
        }
        out
    }

    /// A TCP super-frame as Linux hands it over with TSO: headers built by etherparse, the
    /// checksum field holding the folded pseudo-header sum (CHECKSUM_PARTIAL), and the
    /// virtio-net header that goes with it.
    fn super_frame(spec: &Spec, mss: u16) -> (Vec<u8>, VirtioNetHdr, Vec<u8>) {
        let payload = patterned(spec.payload_len);
        let mut tcp_h = ep::TcpHeader::new(40000, 5201, spec.seq, 512);
        tcp_h.acknowledgment_number = 0x1234_5678;
        tcp_h.ack = spec.flags & 0x10 != 0;
        tcp_h.psh = spec.flags & tcp::FLAG_PSH != 0;
        tcp_h.fin = spec.flags & tcp::FLAG_FIN != 0;
        tcp_h.ece = spec.flags & 0x40 != 0;
        tcp_h.cwr = spec.flags & tcp::FLAG_CWR != 0;
        tcp_h.set_options_raw(&TCP_OPTIONS).unwrap();
        let tcp_len = tcp_h.header_len() + payload.len();

        let (mut frame, pseudo) = if spec.ipv6 {
            let mut f = ethernet(spec.tags, ep::EtherType::IPV6);
            ep::Ipv6Header {
                traffic_class: 0,
                flow_label: ep::Ipv6FlowLabel::ZERO,
                payload_length: tcp_len as u16,
                next_header: ep::IpNumber::TCP,
                hop_limit: 64,
                source: SRC6,
                destination: DST6,
            }
            .write(&mut f)
            .unwrap();
            let mut p = [SRC6, DST6].concat();
            p.extend_from_slice(&(tcp_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 6]);
            (f, p)
        } else {
            let mut f = ethernet(spec.tags, ep::EtherType::IPV4);
            let mut ip =
                ep::Ipv4Header::new(tcp_len as u16, 64, ep::IpNumber::TCP, SRC4, DST4).unwrap();
            ip.identification = spec.ip_id;
            ip.dont_fragment = true;
            ip.header_checksum = ip.calc_header_checksum();
            ip.write(&mut f).unwrap();
            let mut p = [SRC4, DST4].concat();
            p.extend_from_slice(&[0, 6]);
            p.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            (f, p)
        };
        tcp_h.checksum = naive_sum(&pseudo, 0);
        tcp_h.write(&mut frame).unwrap();
        frame.extend_from_slice(&payload);

        let kind = if spec.ipv6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        };
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: kind
                | if spec.flags & tcp::FLAG_CWR != 0 {
                    VIRTIO_NET_HDR_GSO_ECN
                } else {
                    0
                },
            hdr_len: spec.hdrs_end() as u16,
            gso_size: mss,
            csum_start: spec.l4() as u16,
            csum_offset: tcp::CHECKSUM_OFFSET as u16,
        };
        (frame, hdr, payload)
    }

    fn collect(seg: &mut Segmenter, frame: &[u8], hdr: &VirtioNetHdr) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = seg.segment(frame, hdr, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(n, out.len());
        out
    }

    /// Checks every segment with etherparse and returns their concatenated payloads.
    fn verify(spec: &Spec, mss: usize, segments: &[Vec<u8>]) -> Vec<u8> {
        let expected_count = spec.payload_len.div_ceil(mss).max(1);
        assert_eq!(segments.len(), expected_count);
        let mut payload = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let p = ep::SlicedPacket::from_ethernet(s).unwrap();
            let vids: Vec<u16> = p.vlan_ids().iter().map(|v| v.value()).collect();
            assert_eq!(
                vids,
                (0..spec.tags as u16).map(|t| 100 + t).collect::<Vec<_>>()
            );

            let Some(ep::TransportSlice::Tcp(t)) = &p.transport else {
                panic!("not TCP")
            };
            let computed = match &p.net {
                Some(ep::NetSlice::Ipv4(ip)) => {
                    assert!(!spec.ipv6);
                    let h = ip.header();
                    assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                    assert_eq!(usize::from(h.total_len()), s.len() - spec.l3());
                    assert_eq!(h.identification(), spec.ip_id.wrapping_add(i as u16));
                    assert!(h.dont_fragment());
                    t.calc_checksum_ipv4(h.source(), h.destination()).unwrap()
                }
                Some(ep::NetSlice::Ipv6(ip)) => {
                    assert!(spec.ipv6);
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), s.len() - spec.l4());
                    t.calc_checksum_ipv6(h.source(), h.destination()).unwrap()
                }
                other => panic!("not IP: {other:?}"),
            };
            assert_eq!(t.checksum(), computed, "TCP checksum of segment {i}");
            assert_eq!(
                t.sequence_number(),
                spec.seq.wrapping_add((i * mss) as u32),
                "sequence number of segment {i}"
            );
            assert!(t.payload().len() <= mss);
            assert_eq!(t.psh(), last && spec.flags & tcp::FLAG_PSH != 0);
            assert_eq!(t.fin(), last && spec.flags & tcp::FLAG_FIN != 0);
            assert_eq!(t.cwr(), i == 0 && spec.flags & tcp::FLAG_CWR != 0);
            assert_eq!(t.ece(), spec.flags & 0x40 != 0);
            assert_eq!(t.ack(), spec.flags & 0x10 != 0);
            assert_eq!((t.source_port(), t.destination_port()), (40000, 5201));
            assert_eq!(t.acknowledgment_number(), 0x1234_5678);
            assert_eq!(t.options(), TCP_OPTIONS);
            payload.extend_from_slice(t.payload());
        }
        payload
    }

    fn check(spec: Spec, mss: u16) {
        let (frame, hdr, payload) = super_frame(&spec, mss);
        let segments = collect(&mut Segmenter::new(), &frame, &hdr);
        assert_eq!(
            verify(&spec, usize::from(mss), &segments),
            payload,
            "{spec:?} mss {mss}"
        );
    }

    #[test]
    fn segments_ipv4_untagged() {
        check(Spec::v4(0, 64000), 1448);
        check(Spec::v4(0, 63999), 1000);
    }

    #[test]
    fn segments_ipv4_tagged() {
        check(Spec::v4(1, 64000), 1448);
        check(Spec::v4(1, 64001), 1000);
        check(Spec::v4(2, 64000), 1448);
    }

    #[test]
    fn segments_ipv6() {
        check(Spec::v6(0, 64000), 1448);
        check(Spec::v6(1, 63999), 1000);
        check(Spec::v6(2, 64000), 1440);
    }

    #[test]
    fn segments_edge_sizes() {
        for (len, mss) in [
            (1, 1448),
            (1448, 1448),
            (1449, 1448),
            (2896 + 7, 1448),
            (0, 1448),
        ] {
            check(Spec::v4(0, len), mss);
            check(Spec::v6(1, len), mss);
        }
        check(Spec::v4(0, 300), 1);
        check(Spec::v4(0, 3000), 65535);
        // Plain flags: ACK only, nothing to move.
        check(
            Spec {
                flags: 0x10,
                ..Spec::v4(0, 5000)
            },
            1448,
        );
    }

    #[test]
    fn ip_id_and_seq_wrap() {
        let spec = Spec {
            ip_id: 0xfffe,
            seq: u32::MAX - 100,
            ..Spec::v4(0, 5000)
        };
        check(spec, 1000);
    }

    #[test]
    fn hdr_len_is_not_trusted() {
        let spec = Spec::v4(1, 10000);
        let (frame, hdr, payload) = super_frame(&spec, 1448);
        for hdr_len in [0, 1, 54, 9999, u16::MAX] {
            let segments = collect(
                &mut Segmenter::new(),
                &frame,
                &VirtioNetHdr { hdr_len, ..hdr },
            );
            assert_eq!(verify(&spec, 1448, &segments), payload);
        }
        // Without NEEDS_CSUM (the field holds garbage) the segments are still right.
        let mut garbage = frame.clone();
        garbage[spec.l4() + 16] ^= 0x5a;
        let flags = 0;
        let segments = collect(
            &mut Segmenter::new(),
            &garbage,
            &VirtioNetHdr { flags, ..hdr },
        );
        assert_eq!(verify(&spec, 1448, &segments), payload);
    }

    #[test]
    fn segment_into_lays_out_what_segment_emits() {
        let prefix = [0x08, 0, 0, 0, 0, 0, 42, 0];
        for (spec, mss) in [(Spec::v4(1, 64001), 1398), (Spec::v6(2, 3000), 1000)] {
            let (frame, hdr, _) = super_frame(&spec, mss);
            let mut want = Vec::new();
            let mut first = None;
            let n = Segmenter::new()
                .segment(&frame, &hdr, |s| {
                    first.get_or_insert(prefix.len() + s.len());
                    want.extend_from_slice(&prefix);
                    want.extend_from_slice(s);
                })
                .unwrap();
            let mut got = vec![1, 2, 3];
            let (m, unit) = Segmenter::new()
                .segment_into(&frame, &hdr, &prefix, &mut got)
                .unwrap();
            assert_eq!((m, got.len()), (n, want.len()));
            assert_eq!(Some(unit), first);
            assert!(got == want, "segment_into differs from segment");
        }
    }

    #[test]
    fn header_units_and_payloads_gather_into_what_segment_emits() {
        let prefix = [0x08, 0, 0, 0, 0, 0, 42, 0];
        for (spec, mss) in [
            (Spec::v4(1, 64001), 1398),
            (Spec::v6(2, 3000), 1000),
            (Spec::v4(0, 1000), 1448),
        ] {
            let (frame, hdr, _) = super_frame(&spec, mss);
            let mut want = Vec::new();
            Segmenter::new()
                .segment(&frame, &hdr, |s| {
                    want.push([&prefix[..], s].concat());
                })
                .unwrap();
            let mut heads = vec![9; 3];
            let units = Segmenter::new()
                .segment_headers(&frame, &hdr, &prefix, &mut heads)
                .unwrap();
            assert_eq!(units.count, want.len());
            assert_eq!(heads.len(), units.count * units.head_len);
            assert_eq!(units.unit_len(&frame), want[0].len());
            for (i, w) in want.iter().enumerate() {
                let head = &heads[i * units.head_len..(i + 1) * units.head_len];
                let got = [head, units.payload(&frame, i)].concat();
                assert!(&got == w, "segment {i} differs");
            }
        }
        // A frame that is not a super-frame has nothing to cut.
        let (frame, _, _) = super_frame(&Spec::v4(0, 100), 1448);
        let r = Segmenter::new().segment_headers(&frame, &VirtioNetHdr::NONE, &[], &mut Vec::new());
        assert_eq!(r, Err(OffloadError::BadOffsets));
    }

    #[test]
    fn scratch_is_reused() {
        let (frame, hdr, _) = super_frame(&Spec::v4(0, 64000), 1448);
        let mut seg = Segmenter::new();
        seg.segment(&frame, &hdr, |_| {}).unwrap();
        let (ptr, cap) = (seg.scratch.as_ptr(), seg.scratch.capacity());
        seg.segment(&frame, &hdr, |_| {}).unwrap();
        let (small, small_hdr, _) = super_frame(&Spec::v6(0, 3000), 1000);
        seg.segment(&small, &small_hdr, |_| {}).unwrap();
        assert_eq!((seg.scratch.as_ptr(), seg.scratch.capacity()), (ptr, cap));
    }

    #[test]
    fn plain_frame_passes_unchanged() {
        let (frame, _, _) = super_frame(&Spec::v4(0, 100), 1448);
        let mut out = Vec::new();
        let n = Segmenter::new().segment(&frame, &VirtioNetHdr::NONE, |s| out.push(s.to_vec()));
        assert_eq!(n, Ok(1));
        assert_eq!(out, [frame]);
    }

    /// A frame with a partial checksum and no GSO, as `NEEDS_CSUM` alone describes it.
    fn partial(spec: &Spec) -> (Vec<u8>, VirtioNetHdr) {
        let (frame, hdr, _) = super_frame(spec, 0);
        (
            frame,
            VirtioNetHdr {
                gso_type: VIRTIO_NET_HDR_GSO_NONE,
                hdr_len: 0,
                ..hdr
            },
        )
    }

    /// The TCP checksum etherparse computes for `frame`, and the one stored in it.
    fn tcp_checksums(frame: &[u8]) -> (u16, u16) {
        let p = ep::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(ep::TransportSlice::Tcp(t)) = &p.transport else {
            panic!("not TCP")
        };
        let computed = match &p.net {
            Some(ep::NetSlice::Ipv4(ip)) => {
                t.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
            }
            Some(ep::NetSlice::Ipv6(ip)) => {
                t.calc_checksum_ipv6(ip.header().source(), ip.header().destination())
            }
            _ => panic!("not IP"),
        };
        (computed.unwrap(), t.checksum())
    }

    #[test]
    fn completes_tcp_checksum() {
        // Odd and even payload lengths, IPv4 and IPv6, with tags.
        for spec in [
            Spec::v4(0, 1000),
            Spec::v4(1, 999),
            Spec::v6(0, 1),
            Spec::v6(2, 1447),
        ] {
            let (mut frame, hdr) = partial(&spec);
            complete_checksum(&mut frame, &hdr).unwrap();
            let (computed, stored) = tcp_checksums(&frame);
            // Zero is sent as 0xffff, its other representation (RFC 1624 § 3).
            assert!(
                stored == computed || (computed == 0 && stored == 0xffff),
                "{spec:?}"
            );

            // The same frame through the segmenter: one frame, completed.
            let (frame2, _) = partial(&spec);
            let segments = collect(&mut Segmenter::new(), &frame2, &hdr);
            assert_eq!(segments, [frame]);
        }
    }

    #[test]
    fn completes_udp_checksum() {
        let payload = patterned(333);
        let udp_len = (8 + payload.len()) as u16;
        let ip = ep::Ipv4Header::new(udp_len, 64, ep::IpNumber::UDP, SRC4, DST4).unwrap();
        let mut udp = ep::UdpHeader {
            source_port: 5353,
            destination_port: 53,
            length: udp_len,
            checksum: 0,
        };
        let expected = udp.calc_checksum_ipv4(&ip, &payload).unwrap();
        let mut p = [SRC4, DST4].concat();
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&udp_len.to_be_bytes());
        udp.checksum = naive_sum(&p, 0);
        let mut frame = ethernet(0, ep::EtherType::IPV4);
        ip.write(&mut frame).unwrap();
        udp.write(&mut frame).unwrap();
        frame.extend_from_slice(&payload);
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VirtioNetHdr::NONE
        };
        complete_checksum(&mut frame, &hdr).unwrap();
        let udp = udp::Packet::new_checked(&frame[34..]).unwrap();
        assert_eq!(udp.checksum(), expected);
    }

    #[test]
    fn without_needs_csum_nothing_changes() {
        let (mut frame, hdr) = partial(&Spec::v4(0, 100));
        let before = frame.clone();
        complete_checksum(&mut frame, &VirtioNetHdr { flags: 0, ..hdr }).unwrap();
        assert_eq!(frame, before);
    }

    #[test]
    fn refuses_bad_checksum_offsets() {
        let (frame, hdr) = partial(&Spec::v4(0, 10));
        let len = frame.len() as u16;
        for (csum_start, csum_offset) in [
            (len, 0),
            (len - 1, 0),
            (len - 2, 1),
            (0, len - 1),
            (u16::MAX, u16::MAX),
            (34, len),
        ] {
            let bad = VirtioNetHdr {
                csum_start,
                csum_offset,
                ..hdr
            };
            let mut f = frame.clone();
            assert_eq!(
                complete_checksum(&mut f, &bad),
                Err(OffloadError::BadOffsets)
            );
            assert_eq!(f, frame, "an error leaves the frame alone");
            let r = Segmenter::new().segment(&frame, &bad, |_| panic!("emitted"));
            assert_eq!(r, Err(OffloadError::BadOffsets));
        }
        // The last two bytes are the smallest field that fits.
        let edge = VirtioNetHdr {
            csum_start: len - 2,
            csum_offset: 0,
            ..hdr
        };
        assert_eq!(complete_checksum(&mut frame.clone(), &edge), Ok(()));
    }

    #[test]
    fn refuses_truncated_headers() {
        for spec in [Spec::v4(0, 3000), Spec::v4(2, 3000), Spec::v6(1, 3000)] {
            let (frame, hdr, _) = super_frame(&spec, 1448);
            let mut seg = Segmenter::new();
            for len in 0..spec.hdrs_end() {
                let r = seg.segment(&frame[..len], &hdr, |_| panic!("emitted"));
                assert_eq!(r, Err(OffloadError::BadHeaders), "{spec:?} cut at {len}");
            }
            // Cut right after the headers, it is a header-only segment.
            assert_eq!(seg.segment(&frame[..spec.hdrs_end()], &hdr, |_| {}), Ok(1));
        }
    }

    #[test]
    fn refuses_gso_size_zero() {
        let (frame, hdr, _) = super_frame(&Spec::v4(0, 3000), 0);
        let r = Segmenter::new().segment(&frame, &hdr, |_| panic!("emitted"));
        assert_eq!(r, Err(OffloadError::BadOffsets));
    }

    #[test]
    fn refuses_headers_that_do_not_match_gso_type() {
        let mut seg = Segmenter::new();
        let mut refuse = |frame: &[u8], hdr: VirtioNetHdr, want: OffloadError| {
            assert_eq!(seg.segment(frame, &hdr, |_| panic!("emitted")), Err(want));
        };
        let spec = Spec::v4(0, 3000);
        let (frame, hdr, _) = super_frame(&spec, 1448);
        let l3 = spec.l3();

        // UDP announced as TCPv4.
        let mut udp = frame.clone();
        udp[l3 + 9] = 17;
        refuse(&udp, hdr, OffloadError::BadHeaders);
        // IPv4 announced as TCPv6, and IPv6 as TCPv4.
        let v6 = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            ..hdr
        };
        refuse(&frame, v6, OffloadError::BadHeaders);
        let (frame6, hdr6, _) = super_frame(&Spec::v6(0, 3000), 1448);
        let v4 = VirtioNetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            ..hdr6
        };
        refuse(&frame6, v4, OffloadError::BadHeaders);
        // An IPv6 extension header (hop-by-hop) before TCP.
        let mut ext = frame6.clone();
        ext[14 + 6] = 0;
        refuse(&ext, hdr6, OffloadError::BadHeaders);
        // An ARP frame.
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        refuse(&arp, hdr, OffloadError::BadHeaders);
        // IP version, IHL and TCP data offset out of range; a fragment.
        for (at, value) in [
            (l3, 0x65),
            (l3, 0x44),
            (spec.l4() + 12, 0x40),
            (l3 + 6, 0x20),
        ] {
            let mut bad = frame.clone();
            bad[at] = value;
            refuse(&bad, hdr, OffloadError::BadHeaders);
        }
        // USO and the old UFO are not ours to do.
        for kind in [VIRTIO_NET_HDR_GSO_UDP_L4, 3] {
            let uso = VirtioNetHdr {
                gso_type: kind,
                ..hdr
            };
            refuse(&frame, uso, OffloadError::UnsupportedGso(kind));
        }
    }

    #[test]
    fn refuses_segments_too_long_for_ip() {
        // 70000 payload bytes and an MSS that would put them all in one IPv4 packet.
        let spec = Spec::v4(0, 70000);
        let (mut frame, hdr, _) = super_frame(&Spec::v4(0, 0), 65535);
        frame.extend_from_slice(&patterned(spec.payload_len));
        let r = Segmenter::new().segment(&frame, &hdr, |_| panic!("emitted"));
        assert_eq!(r, Err(OffloadError::BadOffsets));
        // The largest segment that fits: 65535 - 20 - 32 payload bytes.
        let fits = VirtioNetHdr {
            gso_size: 65535 - 52,
            ..hdr
        };
        assert_eq!(Segmenter::new().segment(&frame, &fits, |_| {}), Ok(2));
        // IPv6's payload length does not count its fixed header.
        let (mut frame6, hdr6, _) = super_frame(&Spec::v6(0, 0), 65535 - 32);
        frame6.extend_from_slice(&patterned(spec.payload_len));
        assert_eq!(Segmenter::new().segment(&frame6, &hdr6, |_| {}), Ok(2));
    }

    fn any_hdr() -> impl Strategy<Value = VirtioNetHdr> {
        let small = prop_oneof![0u16..100, any::<u16>()];
        (
            prop_oneof![Just(VIRTIO_NET_HDR_F_NEEDS_CSUM), any::<u8>()],
            prop_oneof![Just(1u8), Just(4), Just(0x81), Just(0), any::<u8>()],
            any::<u16>(),
            prop_oneof![1u16..2000, any::<u16>()],
            small.clone(),
            small,
        )
            .prop_map(
                |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| VirtioNetHdr {
                    flags,
                    gso_type,
                    hdr_len,
                    gso_size,
                    csum_start,
                    csum_offset,
                },
            )
    }

    fn any_spec() -> impl Strategy<Value = (Spec, u16)> {
        (
            0usize..=2,
            any::<bool>(),
            0usize..5000,
            any::<u16>(),
            any::<u32>(),
            any::<u8>(),
            1u16..2000,
        )
            .prop_map(|(tags, ipv6, payload_len, ip_id, seq, flags, mss)| {
                (
                    Spec {
                        tags,
                        ipv6,
                        payload_len,
                        ip_id,
                        seq,
                        flags,
                    },
                    mss,
                )
            })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600),
                                    hdr in any_hdr()) {
            let mut seg = Segmenter::new();
            let mut emitted = 0;
            if let Ok(n) = seg.segment(&data, &hdr, |_| emitted += 1) {
                prop_assert_eq!(n, emitted);
            }
            let mut copy = data.clone();
            let _ = complete_checksum(&mut copy, &hdr);
        }

        #[test]
        fn mutated_super_frames_never_panic((spec, mss) in any_spec(), hdr in any_hdr(),
                                            edits in proptest::collection::vec((0usize..100, any::<u8>()), 1..4),
                                            cut in any::<prop::sample::Index>()) {
            let (mut frame, good, _) = super_frame(&spec, mss);
            for (at, value) in edits {
                let at = at % spec.hdrs_end();
                frame[at] = value;
            }
            let frame = &frame[..cut.index(frame.len() + 1)];
            let mut seg = Segmenter::new();
            for h in [good, hdr, VirtioNetHdr { gso_type: hdr.gso_type & 0x85, ..good }] {
                let _ = seg.segment(frame, &h, |_| {});
                let _ = complete_checksum(&mut frame.to_vec(), &h);
            }
        }

        #[test]
        fn random_super_frames_segment_right((spec, mss) in any_spec()) {
            let (frame, hdr, payload) = super_frame(&spec, mss);
            let segments = collect(&mut Segmenter::new(), &frame, &hdr);
            prop_assert_eq!(verify(&spec, usize::from(mss), &segments), payload);
        }
    }
}
