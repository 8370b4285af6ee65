//! Software receive coalescing (GRO): consecutive TCP segments of one flow become one
//! super-frame, the reverse of [`crate::gso`].
//!
//! Frames that arrive one MSS at a time (decapsulated from VXLAN, say) would otherwise cross the
//! switch and the receiving host's stack one by one. Coalesced, they travel as one frame with a
//! virtio-net header (`GSO_TCPV4`, `NEEDS_CSUM`), exactly as a TCP sender's super-frame does, and
//! the port or the kernel that takes them splits them again only if it must.
//!
//! The rules follow Linux's `tcp_gro_receive`: same Ethernet header, IPv4 without options or
//! fragmentation, same addresses, TOS, TTL and DF; same ports, ack number and window; TCP options
//! byte for byte identical; the next segment's sequence number follows the last; only ACK (and
//! PSH, which closes the super-frame) set; no segment longer than the first; a shorter segment
//! closes it. A super-frame stays under 64 KB.

use crate::offload::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use crate::wire::checksum::ones_complement_sum;
use crate::wire::{ethernet, ipv4, tcp, EtherType, Frame, IPPROTO_TCP};

const ETH: usize = ethernet::HEADER_LEN;
const IP: usize = ipv4::HEADER_LEN;
/// Largest IPv4 packet a super-frame may hold.
const MAX_IP_LEN: usize = 65535;

/// A coalescable segment: views of its IPv4 header and of the fixed part of its TCP header (over
/// fixed-size arrays, so that reading a field costs no bounds check), its TCP options and payload.
#[derive(Debug, Clone)]
struct Seg<'a> {
    ip: ipv4::Packet<&'a [u8; IP]>,
    tcp: tcp::Packet<&'a [u8; tcp::HEADER_LEN]>,
    /// TCP options, between the fixed header and the payload.
    options: &'a [u8],
    /// The TCP payload: the rest of the frame.
    data: &'a [u8],
    /// Payload bytes, as the IPv4 total length counts them.
    payload: usize,
}

impl Seg<'_> {
    /// TCP header length.
    #[inline]
    fn thl(&self) -> usize {
        tcp::HEADER_LEN + self.options.len()
    }
}

/// Parses a frame as a coalescable IPv4/TCP segment (untagged, no IP options, not a fragment).
#[inline]
fn parse(frame: &[u8]) -> Option<Seg<'_>> {
    let eth = Frame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    // Exactly the 20 bytes of a header without options: one with options does not fit.
    let ip = ipv4::Packet::new_checked(fixed::<IP>(frame, ETH)?).ok()?;
    // TCP, not fragmented, and the frame holds the packet.
    if ip.protocol() != IPPROTO_TCP || ip.is_fragment() {
        return None;
    }
    let total = usize::from(ip.total_len());
    if total < IP + tcp::HEADER_LEN || ETH + total > frame.len() {
        return None;
    }
    let l4 = ETH + IP;
    // The fixed TCP header is within the packet; its options must be too.
    let tcp = tcp::Packet::new_unchecked(fixed::<{ tcp::HEADER_LEN }>(frame, l4)?);
    let thl = tcp.header_len();
    if thl < tcp::HEADER_LEN || IP + thl > total {
        return None;
    }
    Some(Seg {
        ip,
        tcp,
        options: &frame[l4 + tcp::HEADER_LEN..l4 + thl],
        data: &frame[l4 + thl..],
        payload: total - IP - thl,
    })
}

/// The `N` bytes of `frame` at `at`, as an array.
#[inline]
fn fixed<const N: usize>(frame: &[u8], at: usize) -> Option<&[u8; N]> {
    frame.get(at..at + N)?.try_into().ok()
}

/// A frame that later segments of its flow may be appended to.
#[derive(Debug, Clone)]
pub struct Coalesced {
    /// The buffer: one segment, or a super-frame once others were appended, in `..len`.
    /// A whole buffer, so it can be handed to a [`crate::port::Packet`] without a copy.
    pub buf: Box<[u8]>,
    /// Bytes of the frame in `buf`.
    pub len: usize,
    /// Its offload metadata: none for one segment, `GSO_TCPV4` + `NEEDS_CSUM` once merged.
    pub meta: VirtioNetHdr,
    /// Payload bytes per segment (the first segment's payload); 0 when nothing may be appended.
    mss: usize,
    /// Segments were appended since the headers were last made whole (see [`Coalesced::finish`]).
    dirty: bool,
    /// TCP header length of the frame.
    thl: usize,
    /// The first segment's payload length: the super-frame's segment size.
    first_payload: usize,
}

impl Coalesced {
    /// Starts with `first`, copied into `buf` (reused; it must hold at least `first`, and a
    /// super-frame grows only as far as `buf` allows).
    pub fn start(first: &[u8], mut buf: Box<[u8]>) -> Coalesced {
        let len = first.len().min(buf.len());
        buf[..len].copy_from_slice(&first[..len]);
        let mss = match parse(first) {
            Some(s)
                if s.tcp.flags() == tcp::FLAG_ACK
                    && s.payload > 0
                    && ETH + IP + s.thl() + s.payload == first.len() =>
            {
                s.payload
            }
            _ => 0,
        };
        Coalesced {
            buf,
            len,
            meta: VirtioNetHdr::NONE,
            mss,
            dirty: false,
            thl: 0,
            first_payload: mss,
        }
    }

    /// Appends `seg`'s payload if it continues this frame's flow (module rules). Returns true if
    /// it did; the frame is then a valid super-frame.
    pub fn try_append(&mut self, seg: &[u8]) -> bool {
        if self.mss == 0 {
            return false;
        }
        let (Some(a), Some(s)) = (parse(self.frame()), parse(seg)) else {
            return false;
        };
        let a_total = usize::from(a.ip.total_len());
        let s_flags = s.tcp.flags();
        let (a_thl, s_payload) = (a.thl(), s.payload);
        let ok = s_flags & !(tcp::FLAG_ACK | tcp::FLAG_PSH) == 0
            && s_flags & tcp::FLAG_ACK != 0
            && s.payload > 0
            && s.payload <= self.mss
            && ETH + IP + s.thl() + s.payload == seg.len()
            && a_thl == s.thl()
            && a_total + s.payload <= MAX_IP_LEN
            && self.len + s.payload <= self.buf.len()
            && a.tcp.seq_number().wrapping_add(a.payload as u32) == s.tcp.seq_number()
            && same_flow(&a, &s)
            && self.frame()[..ETH] == seg[..ETH];
        if !ok {
            return false;
        }
        let add = s.data;
        self.buf[self.len..self.len + add.len()].copy_from_slice(add);
        self.len += add.len();
        let total = a_total + s_payload;
        let (mut ip, mut tcp) = self.headers_mut();
        ip.set_total_len(total as u16);
        let flags = tcp.flags() | (s_flags & tcp::FLAG_PSH);
        tcp.set_flags(flags);
        self.dirty = true;
        self.thl = a_thl;
        // A short segment or PSH closes the super-frame.
        if s_payload < self.mss || s_flags & tcp::FLAG_PSH != 0 {
            self.mss = 0;
        }
        true
    }

    /// Views of the IPv4 and TCP headers of the frame, to change them. Only for a frame that
    /// [`parse`] took (untagged, 20-byte IPv4 header).
    #[inline(always)]
    fn headers_mut(&mut self) -> (ipv4::Packet<&mut [u8]>, tcp::Packet<&mut [u8]>) {
        let (ip, tcp) = self.buf[ETH..self.len].split_at_mut(IP);
        (
            ipv4::Packet::new_unchecked(ip),
            tcp::Packet::new_unchecked(tcp),
        )
    }

    /// Makes the headers whole after appends (once, when the frame is handed on): the IPv4
    /// checksum, the TCP checksum field as the pseudo-header sum for whoever completes it
    /// (Linux's CHECKSUM_PARTIAL), and the offload metadata of a super-frame.
    pub fn finish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let t = ETH + IP;
        let (mut ip, mut tcp) = self.headers_mut();
        ip.fill_checksum();
        let pseudo = ip.pseudo_header_sum(ip.total_len() - IP as u16);
        tcp.set_checksum(ones_complement_sum(&[], pseudo));
        let first_payload = self.gso_size();
        self.meta = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: (t + self.thl) as u16,
            gso_size: first_payload as u16,
            csum_start: t as u16,
            csum_offset: tcp::CHECKSUM_OFFSET as u16,
        };
    }

    /// The frame.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The segment size: the first segment's payload.
    fn gso_size(&self) -> usize {
        self.first_payload
    }
}

/// True when `s` may follow `a` in one super-frame (Linux's `tcp_gro_receive`): same TOS, DF,
/// TTL, protocol and addresses; same ports, ack number and window; options byte for byte.
#[inline(always)]
fn same_flow(a: &Seg<'_>, s: &Seg<'_>) -> bool {
    let (ai, si, at, st) = (&a.ip, &s.ip, &a.tcp, &s.tcp);
    ai.dscp_ecn() == si.dscp_ecn()
        && ai.dont_frag() == si.dont_frag()
        && ai.ttl() == si.ttl()
        && ai.protocol() == si.protocol()
        && ai.src_addr() == si.src_addr()
        && ai.dst_addr() == si.dst_addr()
        && at.src_port() == st.src_port()
        && at.dst_port() == st.dst_port()
        && at.ack_number() == st.ack_number()
        && at.window_len() == st.window_len()
        && a.options == s.options
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso::Segmenter;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn buffer() -> Box<[u8]> {
        vec![0u8; 65_600].into_boxed_slice()
    }

    fn segment(seq: u32, payload: &[u8], psh: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, seq, 512)
            .ack(777);
        if psh {
            b = b.psh();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn merges_a_run_and_segments_back_to_the_same_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let segs: Vec<Vec<u8>> = data
            .chunks(1000)
            .enumerate()
            .map(|(i, c)| segment(1000 + i as u32 * 1000, c, i == 9))
            .collect();
        let mut c = Coalesced::start(&segs[0], buffer());
        for s in &segs[1..] {
            assert!(c.try_append(s));
        }
        c.finish();
        assert!(c.meta.is_gso() && c.meta.needs_csum());
        assert_eq!(c.meta.gso_size, 1000);
        // PSH closed it.
        assert!(!c.try_append(&segment(11_000, &[1; 10], false)));
        // Segmenting it again gives valid frames carrying the same bytes.
        let mut got = Vec::new();
        let n = Segmenter::new()
            .segment(c.frame(), &c.meta, |f| {
                let p = SlicedPacket::from_ethernet(f).unwrap();
                let Some(TransportSlice::Tcp(t)) = p.transport else {
                    panic!("not tcp")
                };
                let ip = match p.net {
                    Some(etherparse::NetSlice::Ipv4(ip)) => ip,
                    _ => panic!("not ipv4"),
                };
                let want = t
                    .to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
                    .unwrap();
                assert_eq!(t.checksum(), want);
                got.extend_from_slice(t.payload());
            })
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(got, data);
    }

    #[test]
    fn refuses_what_linux_refuses() {
        let a = segment(1, &[1; 100], false);
        let mut c = Coalesced::start(&a, buffer());
        assert!(
            !c.try_append(&segment(50, &[1; 100], false)),
            "gap in sequence"
        );
        assert!(
            !c.try_append(&segment(101, &[1; 200], false)),
            "longer than the first"
        );
        let mut other_port = segment(101, &[1; 100], false);
        other_port[14 + 20] ^= 1;
        assert!(!c.try_append(&other_port), "another flow");
        assert!(!c.try_append(&a[..40]), "runt");
        assert!(
            c.try_append(&segment(101, &[1; 50], false)),
            "a short last segment"
        );
        assert!(
            !c.try_append(&segment(151, &[1; 50], false)),
            "closed after a short one"
        );
        let syn = {
            let mut out = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 1, 512)
                .syn()
                .write(&mut out, &[])
                .unwrap();
            out
        };
        let mut c = Coalesced::start(&syn, buffer());
        assert!(
            !c.try_append(&segment(2, &[1; 10], false)),
            "SYN starts nothing"
        );
        assert_eq!(c.meta, VirtioNetHdr::NONE);
    }
}
