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

use crate::gso::{ipv4_header_checksum, ones_complement_sum, pseudo_header_sum_v4};
use crate::offload::{VirtioNetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};

const ETH: usize = 14;
const IP: usize = 20;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Largest IPv4 packet a super-frame may hold.
const MAX_IP_LEN: usize = 65535;

/// Where the TCP segment in an untagged IPv4 frame starts and what it carries.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// TCP header length.
    thl: usize,
    /// Payload bytes.
    payload: usize,
    seq: u32,
    flags: u8,
}

/// Parses a frame as a coalescable IPv4/TCP segment (untagged, no IP options, not a fragment).
fn parse(frame: &[u8]) -> Option<Seg> {
    if frame.len() < ETH + IP + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // No options, TCP, not fragmented (MF clear, offset zero), and the frame holds the packet.
    if ip[0] != 0x45 || ip[9] != 6 || ip[6] & 0x3f != 0 || ip[7] != 0 {
        return None;
    }
    if total < IP + 20 || ETH + total > frame.len() {
        return None;
    }
    let tcp = &ip[IP..];
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || IP + thl > total {
        return None;
    }
    Some(Seg {
        thl,
        payload: total - IP - thl,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags: tcp[13],
    })
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
                if s.flags == TCP_ACK
                    && s.payload > 0
                    && ETH + IP + s.thl + s.payload == first.len() =>
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
        let acc = self.frame();
        let a_total = usize::from(u16::from_be_bytes([acc[ETH + 2], acc[ETH + 3]]));
        let t = ETH + IP;
        let ok = s.flags & !(TCP_ACK | TCP_PSH) == 0
            && s.flags & TCP_ACK != 0
            && s.payload > 0
            && s.payload <= self.mss
            && ETH + IP + s.thl + s.payload == seg.len()
            && a.thl == s.thl
            && a_total + s.payload <= MAX_IP_LEN
            && self.len + s.payload <= self.buf.len()
            && a.seq.wrapping_add(a.payload as u32) == s.seq
            // Same Ethernet header; same TOS, DF, TTL, protocol and addresses.
            && acc[..ETH] == seg[..ETH]
            && acc[ETH + 1] == seg[ETH + 1]
            && acc[ETH + 6] & 0x40 == seg[ETH + 6] & 0x40
            && acc[ETH + 8..ETH + 10] == seg[ETH + 8..ETH + 10]
            && acc[ETH + 12..ETH + 20] == seg[ETH + 12..ETH + 20]
            // Same ports, ack number and window; options byte for byte.
            && acc[t..t + 4] == seg[t..t + 4]
            && acc[t + 8..t + 12] == seg[t + 8..t + 12]
            && acc[t + 14..t + 16] == seg[t + 14..t + 16]
            && acc[t + 20..t + a.thl] == seg[t + 20..t + s.thl];
        if !ok {
            return false;
        }
        let add = &seg[t + s.thl..];
        self.buf[self.len..self.len + add.len()].copy_from_slice(add);
        self.len += add.len();
        let acc = &mut self.buf[..self.len];
        acc[t + 13] |= s.flags & TCP_PSH;
        let total = a_total + s.payload;
        acc[ETH + 2..ETH + 4].copy_from_slice(&(total as u16).to_be_bytes());
        self.dirty = true;
        self.thl = a.thl;
        // A short segment or PSH closes the super-frame.
        if s.payload < self.mss || s.flags & TCP_PSH != 0 {
            self.mss = 0;
        }
        true
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
        let acc = &mut self.buf[..self.len];
        let total = usize::from(u16::from_be_bytes([acc[ETH + 2], acc[ETH + 3]]));
        acc[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        let csum = ipv4_header_checksum(&acc[ETH..t]);
        acc[ETH + 10..ETH + 12].copy_from_slice(&csum.to_be_bytes());
        let ip = &acc[ETH + 12..ETH + 20];
        let pseudo = pseudo_header_sum_v4(
            [ip[0], ip[1], ip[2], ip[3]],
            [ip[4], ip[5], ip[6], ip[7]],
            6,
            (total - IP) as u16,
        );
        let partial = ones_complement_sum(&[], pseudo);
        acc[t + 16..t + 18].copy_from_slice(&partial.to_be_bytes());
        let first_payload = self.gso_size();
        self.meta = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: (t + self.thl) as u16,
            gso_size: first_payload as u16,
            csum_start: t as u16,
            csum_offset: 16,
        };
    }

    /// The frame.
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The segment size: the first segment's payload.
    fn gso_size(&self) -> usize {
        self.first_payload
    }
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
