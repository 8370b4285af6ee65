//! Encapsulation: laying out VXLAN datagrams, the UDP payloads a VTEP sends (RFC 7348 § 5:
//! the VXLAN header, then the inner Ethernet frame without its FCS).
//!
//! [`encap_into`] wraps one frame. [`encap_segments`] takes a TCP super-frame (virtio GSO, see
//! `switch::offload`) and cuts it into segments in software with `switch::gso::Segmenter`
//! without copying its payload: it writes each datagram's headers (VXLAN header, then the
//! segment's Ethernet, IP and TCP headers) into one buffer and leaves the payloads where they
//! are, in the frame ([`Datagrams`]: a head and a tail per datagram). Every datagram but the last
//! has the same size, which is what UDP segmentation offload (`UDP_SEGMENT`) needs to send them
//! all in one gathering syscall ([`crate::VtepSocket::send_segmented`]). VTEPs never fragment
//! (RFC 7348 § 4.3): the caller checks that the largest datagram, the first, fits the underlay
//! (`Vtep::fits(seg_size - HEADER_LEN)`) and counts `TooBigForOverlay` otherwise.

use crate::header::{Packet, Repr, HEADER_LEN};
use switch::gso::Segmenter;
use switch::{DropReason, VirtioNetHdr};

/// Appends one datagram to `buf`: the VXLAN header for `vni`, then `inner_frame`.
pub fn encap_into(buf: &mut Vec<u8>, vni: u32, inner_frame: &[u8]) {
    let start = buf.len();
    buf.resize(start + HEADER_LEN, 0);
    Repr { vni }.emit(&mut Packet::new_unchecked(&mut buf[start..]));
    buf.extend_from_slice(inner_frame);
}

/// Datagrams laid out as a head (in one buffer, `head_len` bytes apart) followed by a tail (in
/// another, `tail_len` bytes apart), either of which may be empty: what [`encap_segments`]
/// made, and what [`crate::VtepSocket::send_segmented`] gathers and sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagrams<'a> {
    heads: &'a [u8],
    head_len: usize,
    tails: &'a [u8],
    tail_len: usize,
    /// Number of datagrams.
    pub count: usize,
    /// Size of each datagram but the last, which may be shorter (VXLAN header included).
    pub seg_size: u16,
}

impl<'a> Datagrams<'a> {
    /// Datagrams back to back in `data`, all `seg_size` bytes but the last.
    pub fn contiguous(data: &'a [u8], seg_size: u16) -> Datagrams<'a> {
        let seg = usize::from(seg_size).max(1);
        Datagrams {
            heads: data,
            head_len: seg,
            tails: &[],
            tail_len: 0,
            count: data.len().div_ceil(seg),
            seg_size,
        }
    }

    /// Datagram `i` (below `count`): its head and its tail.
    pub fn get(&self, i: usize) -> (&'a [u8], &'a [u8]) {
        let part = |buf: &'a [u8], len: usize| {
            let start = (i * len).min(buf.len());
            &buf[start..(start + len).min(buf.len())]
        };
        (
            part(self.heads, self.head_len),
            part(self.tails, self.tail_len),
        )
    }

    /// Datagram `i` in one piece (for captures and tests; the send path gathers).
    pub fn to_vec(&self, i: usize) -> Vec<u8> {
        let (head, tail) = self.get(i);
        [head, tail].concat()
    }
}

/// Encapsulates a (super-)frame for `vni`, segmenting it in software.
///
/// A super-frame is cut without copying its payload: the datagrams' heads (VXLAN header and the
/// segment's headers, checksums done) go to `heads` (cleared first), their tails are slices of
/// `frame`. A plain frame needing its checksum completed is copied into `heads`, whole.
/// Errors: unusable offload metadata is `BadOffload`; a datagram over 65535 bytes is
/// `TooBigForOverlay`.
pub fn encap_segments<'a>(
    segmenter: &mut Segmenter,
    vni: u32,
    frame: &'a [u8],
    hdr: &VirtioNetHdr,
    heads: &'a mut Vec<u8>,
) -> Result<Datagrams<'a>, DropReason> {
    let header = Repr { vni }.to_bytes();
    if !hdr.is_gso() {
        let (_, len) = segmenter
            .segment_into(frame, hdr, &header, heads)
            .map_err(|_| DropReason::BadOffload)?;
        let seg_size = u16::try_from(len).map_err(|_| DropReason::TooBigForOverlay)?;
        return Ok(Datagrams::contiguous(heads, seg_size));
    }
    let units = segmenter
        .segment_headers(frame, hdr, &header, heads)
        .map_err(|_| DropReason::BadOffload)?;
    let seg_size =
        u16::try_from(units.unit_len(frame)).map_err(|_| DropReason::TooBigForOverlay)?;
    Ok(Datagrams {
        heads,
        head_len: units.head_len,
        tails: &frame[units.payload_start..],
        tail_len: units.mss,
        count: units.count,
        seg_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Vtep, VtepConfig};
    use switch::offload::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
    use switch::wire::{ipv4, tcp, EtherType, Frame, MacAddr, IPPROTO_TCP};

    /// A TCPv4 super-frame of `payload` bytes with a 20-byte TCP header, and its GSO header.
    fn tcp_super_frame(payload: usize, mss: u16) -> (Vec<u8>, VirtioNetHdr) {
        let mut f = vec![0u8; 14 + 20 + 20];
        let mut eth = Frame::new_unchecked(&mut f[..]);
        eth.set_dst(MacAddr([2, 0, 0, 0, 0, 2]));
        eth.set_src(MacAddr([2, 0, 0, 0, 0, 1]));
        eth.set_ethertype(EtherType::Ipv4);
        let mut ip = ipv4::Packet::new_unchecked(&mut f[14..34]);
        ip.set_version_and_header_len(ipv4::HEADER_LEN);
        ip.set_total_len((40 + payload) as u16);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_TCP);
        ip.set_src_addr([10, 0, 0, 1].into());
        ip.set_dst_addr([10, 0, 0, 2].into());
        let mut tcp = tcp::Packet::new_unchecked(&mut f[34..]);
        tcp.set_src_port(40000);
        tcp.set_dst_port(5201);
        tcp.set_header_len(tcp::HEADER_LEN);
        tcp.set_flags(tcp::FLAG_ACK);
        f.extend((0..payload).map(|i| i as u8));
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        };
        (f, hdr)
    }

    #[test]
    fn encap_into_appends_header_then_frame() {
        let mut buf = vec![0xaa];
        encap_into(&mut buf, 42, &[1, 2, 3]);
        assert_eq!(buf, [0xaa, 0x08, 0, 0, 0, 0, 0, 0x2a, 0, 1, 2, 3]);
    }

    #[test]
    fn super_frame_becomes_equal_datagrams() {
        let (frame, hdr) = tcp_super_frame(10_000, 1398);
        let mut out = Vec::new();
        let s = encap_segments(&mut Segmenter::new(), 42, &frame, &hdr, &mut out).unwrap();
        // 10000 = 7 * 1398 + 214.
        assert_eq!(s.count, 8);
        assert_eq!(usize::from(s.seg_size), 8 + 54 + 1398);
        let datagrams: Vec<Vec<u8>> = (0..s.count).map(|i| s.to_vec(i)).collect();
        let lens: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        assert_eq!(lens[..7], [usize::from(s.seg_size); 7]);
        assert_eq!(lens[7], 8 + 54 + 214);
        // Only the headers were written; the payloads stay in the frame.
        let (head, tail) = s.get(1);
        assert_eq!(head.len(), 8 + 54);
        assert!(std::ptr::eq(tail.as_ptr(), frame[54 + 1398..].as_ptr()));
        let mut payload = Vec::new();
        for d in &datagrams {
            let p = Packet::new_checked(&d[..]).unwrap();
            assert_eq!(Repr::parse(&p), Ok(Repr { vni: 42 }));
            let inner = p.payload();
            assert_eq!(&inner[..12], &frame[..12]);
            payload.extend_from_slice(&inner[54..]);
        }
        assert_eq!(payload, frame[54..]);
        // MSS 1398 is what an overlay of a 1500 underlay carries: it fits exactly.
        let vtep = Vtep::new(VtepConfig::default());
        assert!(vtep.fits(usize::from(s.seg_size) - HEADER_LEN));
        // MSS 1448 (a 1500-byte inner MTU) does not.
        let (frame, hdr) = tcp_super_frame(10_000, 1448);
        let s = encap_segments(&mut Segmenter::new(), 42, &frame, &hdr, &mut out).unwrap();
        assert!(!vtep.fits(usize::from(s.seg_size) - HEADER_LEN));
    }

    #[test]
    fn plain_frame_is_one_datagram() {
        let frame = [7u8; 60];
        let mut out = vec![1, 2, 3];
        let s = encap_segments(
            &mut Segmenter::new(),
            5,
            &frame,
            &VirtioNetHdr::NONE,
            &mut out,
        )
        .unwrap();
        assert_eq!((s.count, s.seg_size), (1, 68));
        let (head, tail) = s.get(0);
        assert_eq!((head.len(), tail), (68, &[][..]));
        assert_eq!(&head[8..], frame);
    }

    #[test]
    fn bad_offload_and_oversize() {
        let (frame, mut hdr) = tcp_super_frame(3000, 1000);
        hdr.gso_size = 0;
        let mut out = Vec::new();
        let mut seg = Segmenter::new();
        assert_eq!(
            encap_segments(&mut seg, 5, &frame, &hdr, &mut out),
            Err(DropReason::BadOffload)
        );
        let huge = vec![0u8; 65_530];
        assert_eq!(
            encap_segments(&mut seg, 5, &huge, &VirtioNetHdr::NONE, &mut out),
            Err(DropReason::TooBigForOverlay)
        );
    }

    #[test]
    fn contiguous_datagrams_split_at_the_segment_size() {
        let data: Vec<u8> = (0..25).collect();
        let d = Datagrams::contiguous(&data, 10);
        assert_eq!(d.count, 3);
        assert_eq!(d.get(0), (&data[..10], &[][..]));
        assert_eq!(d.get(2), (&data[20..], &[][..]));
        assert_eq!(Datagrams::contiguous(&[], 10).count, 0);
    }
}
