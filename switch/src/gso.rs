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
use crate::wire::{EtherType, L2Header};

/// IP protocol number of TCP (RFC 790).
const IPPROTO_TCP: u8 = 6;

/// Byte offsets inside the IPv4 header (RFC 791 § 3.1).
mod ipv4 {
    pub const MIN_LEN: usize = 20;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FRAG: usize = 6;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    /// More-fragments flag and fragment offset, within the 16 bits at `FRAG`.
    pub const MF_AND_OFFSET: u16 = 0x3fff;
}

/// Byte offsets inside the IPv6 header (RFC 8200 § 3).
mod ipv6 {
    pub const LEN: usize = 40;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Byte offsets inside the TCP header (RFC 9293 § 3.1) and its flag bits.
mod tcp {
    pub const MIN_LEN: usize = 20;
    pub const SEQ: usize = 4;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
    pub const FIN: u8 = 0x01;
    pub const PSH: u8 = 0x08;
    pub const CWR: u8 = 0x80;
}

// ---------------------------------------------------------------------------------------------
// RFC 1071 checksums
// ---------------------------------------------------------------------------------------------

/// Adds `w` to `acc` with the end-around carry of one's complement arithmetic.
#[inline(always)]
fn add_carry(acc: u64, w: u64) -> u64 {
    let (sum, carry) = acc.overflowing_add(w);
    sum + u64::from(carry)
}

/// The one's complement sum of `data` in 64-bit native-endian words, not yet folded.
///
/// The sum does not depend on byte order as long as it is swapped back at the end (RFC 1071
/// § 2(B)), and wider words only defer the carries (§ 2(C)), so this reads 8 bytes at a time
/// into four independent accumulators.
#[inline]
fn sum_native(data: &[u8]) -> u64 {
    let word = |b: &[u8]| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        lanes[0] = add_carry(lanes[0], word(&b[0..8]));
        lanes[1] = add_carry(lanes[1], word(&b[8..16]));
        lanes[2] = add_carry(lanes[2], word(&b[16..24]));
        lanes[3] = add_carry(lanes[3], word(&b[24..32]));
    }
    let mut acc = lanes.iter().fold(0, |acc, &l| add_carry(acc, l));
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        acc = add_carry(acc, word(w));
    }
    // The last 0..7 bytes, zero-padded: an odd final byte is the high byte of its word.
    let tail = words.remainder();
    let mut last = [0u8; 8];
    last[..tail.len()].copy_from_slice(tail);
    add_carry(acc, u64::from_ne_bytes(last))
}

/// Folds a one's complement sum of any width to 16 bits.
#[inline]
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One's complement sum of `data` as big-endian 16-bit words, plus `initial`, folded to 16 bits
/// and not complemented (RFC 1071 § 4.1). `data` must start at an even offset of the checksummed
/// region.
#[inline]
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    // Native-endian words give the byte-swapped sum on little-endian hosts: read it back as the
    // big-endian bytes it stands for.
    let native = fold(sum_native(data));
    let sum = u16::from_be_bytes(native.to_ne_bytes());
    fold(u64::from(sum) + u64::from(initial))
}

/// The Internet checksum (RFC 1071): the complement of the one's complement sum of `data`,
/// started from the partial sum `initial` (e.g. a pseudo-header sum).
#[inline]
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    !ones_complement_sum(data, initial)
}

/// The IPv4 header checksum (RFC 791 § 3.1) of `header`, computed as if its checksum field were
/// zero. `header` is the whole header, options included (at least 20 bytes).
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let before = ones_complement_sum(&header[..ipv4::CHECKSUM], 0);
    internet_checksum(&header[ipv4::CHECKSUM + 2..], u32::from(before))
}

/// Partial sum of the IPv4 pseudo-header of TCP and UDP (RFC 9293 § 3.1, RFC 768): addresses,
/// protocol and the length of the L4 header plus payload. Feed it to [`internet_checksum`].
pub fn pseudo_header_sum_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u32 {
    let be = |hi: u8, lo: u8| u32::from(u16::from_be_bytes([hi, lo]));
    be(src[0], src[1])
        + be(src[2], src[3])
        + be(dst[0], dst[1])
        + be(dst[2], dst[3])
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// Partial sum of the IPv6 pseudo-header of TCP and UDP (RFC 8200 § 8.1): addresses, the
/// upper-layer packet length and the next header. Feed it to [`internet_checksum`].
pub fn pseudo_header_sum_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u32 {
    let addrs = src
        .chunks_exact(2)
        .chain(dst.chunks_exact(2))
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    addrs + (l4_len >> 16) + (l4_len & 0xffff) + u32::from(next_header)
}

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
        let (l4, ipv6) = if want == EtherType::Ipv4 {
            if ip.len() < ipv4::MIN_LEN || ip[0] >> 4 != 4 {
                return Err(OffloadError::BadHeaders);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let frag = read_u16(ip, ipv4::FRAG);
            if ihl < ipv4::MIN_LEN
                || ip.len() < ihl
                || ip[ipv4::PROTOCOL] != IPPROTO_TCP
                || frag & ipv4::MF_AND_OFFSET != 0
            {
                return Err(OffloadError::BadHeaders);
            }
            (l3 + ihl, false)
        } else {
            // Extension headers are not supported: TCP must follow the fixed header.
            if ip.len() < ipv6::LEN || ip[0] >> 4 != 6 || ip[ipv6::NEXT_HEADER] != IPPROTO_TCP {
                return Err(OffloadError::BadHeaders);
            }
            (l3 + ipv6::LEN, true)
        };
        let tcp = &frame[l4..];
        if tcp.len() < tcp::MIN_LEN {
            return Err(OffloadError::BadHeaders);
        }
        let doff = usize::from(tcp[tcp::DATA_OFFSET] >> 4) * 4;
        if doff < tcp::MIN_LEN || tcp.len() < doff {
            return Err(OffloadError::BadHeaders);
        }
        Ok(TcpLayout {
            l3,
            l4,
            payload: l4 + doff,
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
        let addr_sum = if ipv6 {
            let (src, dst) = (l3 + ipv6::SRC, l3 + ipv6::DST);
            pseudo_header_sum_v6(&array(frame, src), &array(frame, dst), IPPROTO_TCP, 0)
        } else {
            let (src, dst) = (l3 + ipv4::SRC, l3 + ipv4::DST);
            pseudo_header_sum_v4(array(frame, src), array(frame, dst), IPPROTO_TCP, 0)
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
            first_seq: read_u32(frame, l4 + tcp::SEQ),
            first_id: if ipv6 {
                0
            } else {
                read_u16(frame, l3 + ipv4::IDENT)
            },
            flags: frame[l4 + tcp::FLAGS],
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
        // Checked in `new`: every length here fits in 16 bits.
        let tcp_len = (hdrs.len() - l4 + payload.len()) as u16;
        if self.ipv6 {
            write_u16(hdrs, l3 + ipv6::PAYLOAD_LEN, tcp_len);
        } else {
            write_u16(hdrs, l3 + ipv4::TOTAL_LEN, (l4 - l3) as u16 + tcp_len);
            write_u16(hdrs, l3 + ipv4::IDENT, self.first_id.wrapping_add(i as u16));
            let csum = ipv4_header_checksum(&hdrs[l3..l4]);
            write_u16(hdrs, l3 + ipv4::CHECKSUM, csum);
        }
        let mut seg_flags = self.flags;
        if i > 0 {
            seg_flags &= !tcp::CWR;
        }
        if i + 1 < self.count {
            seg_flags &= !(tcp::FIN | tcp::PSH);
        }
        hdrs[l4 + tcp::FLAGS] = seg_flags;
        write_u32(
            hdrs,
            l4 + tcp::SEQ,
            self.first_seq.wrapping_add((i * self.mss) as u32),
        );
        write_u16(hdrs, l4 + tcp::CHECKSUM, 0);
        // The TCP header is a whole number of 32-bit words, so the payload's sum starts on an
        // even offset and the two sums add up.
        let header_sum = ones_complement_sum(&hdrs[l4..], self.addr_sum + u32::from(tcp_len));
        let csum = internet_checksum(payload, u32::from(header_sum));
        write_u16(hdrs, l4 + tcp::CHECKSUM, csum);
    }
}

/// `N` bytes at `at` (callers checked the bounds).
fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
        VIRTIO_NET_HDR_GSO_UDP_L4,
    };
    use etherparse as ep;
    use proptest::prelude::*;

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// ACK | PSH | FIN | ECE | CWR: every flag segmentation must treat specially, plus two that
    /// must be kept on every segment.
    const FLAGS: u8 = 0x10 | tcp::PSH | tcp::FIN | 0x40 | tcp::CWR;
    /// NOP, NOP, timestamps: a 32-byte TCP header, as Linux sends.
    const TCP_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    /// The RFC 1071 sum done the obvious way: 16-bit big-endian words, folded at each step.
    /// Independent of the code under test.
    fn naive_sum(data: &[u8], initial: u32) -> u16 {
        let mut sum = u64::from(initial);
        for w in data.chunks(2) {
            sum += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

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
        tcp_h.psh = spec.flags & tcp::PSH != 0;
        tcp_h.fin = spec.flags & tcp::FIN != 0;
        tcp_h.ece = spec.flags & 0x40 != 0;
        tcp_h.cwr = spec.flags & tcp::CWR != 0;
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
                | if spec.flags & tcp::CWR != 0 {
                    VIRTIO_NET_HDR_GSO_ECN
                } else {
                    0
                },
            hdr_len: spec.hdrs_end() as u16,
            gso_size: mss,
            csum_start: spec.l4() as u16,
            csum_offset: tcp::CHECKSUM as u16,
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
            assert_eq!(t.psh(), last && spec.flags & tcp::PSH != 0);
            assert_eq!(t.fin(), last && spec.flags & tcp::FIN != 0);
            assert_eq!(t.cwr(), i == 0 && spec.flags & tcp::CWR != 0);
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
    fn checksum_rfc1071_example() {
        // RFC 1071 § 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is dd f2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
        assert_eq!(internet_checksum(&data, 0), !0xddf2);
        assert_eq!(ones_complement_sum(&[], 0), 0);
        assert_eq!(ones_complement_sum(&[0xab], 0), 0xab00);
    }

    #[test]
    fn ipv4_header_checksum_matches_etherparse() {
        let mut ip = ep::Ipv4Header::new(1000, 64, ep::IpNumber::TCP, SRC4, DST4).unwrap();
        ip.identification = 0xbeef;
        ip.options = [1, 1, 1, 0].into();
        let mut bytes = ip.to_bytes().to_vec();
        bytes[10] = 0x5a; // garbage in the field must be ignored
        assert_eq!(ipv4_header_checksum(&bytes), ip.calc_header_checksum());
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
        assert_eq!(u16::from_be_bytes([frame[40], frame[41]]), expected);
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
        fn checksum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300),
                                  initial in any::<u32>(), split in 0usize..150) {
            prop_assert_eq!(ones_complement_sum(&data, initial), naive_sum(&data, initial));
            // Chaining at an even offset gives the same sum.
            let split = (split * 2).min(data.len() & !1);
            let head = u32::from(ones_complement_sum(&data[..split], initial));
            prop_assert_eq!(ones_complement_sum(&data[split..], head), naive_sum(&data, initial));
        }

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
