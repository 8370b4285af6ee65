//! IPv4 headers (RFC 791 § 3.1): a checked view, the header checksum and the pseudo-header sum.
//!
//! ```text
//!  0       4       8              16      19             31
//!  | ver | IHL | DSCP/ECN |      total length             |
//!  |       identification         | flags | fragment off  |
//!  |  TTL  | protocol |        header checksum            |
//!  |                 source address                       |
//!  |              destination address                     |
//!  |                 options (IHL > 5)                    |
//! ```

use super::checksum::{internet_checksum, ones_complement_sum, pseudo_header_sum_v4};
use super::{be_u16, check_header_len, HeaderError};
use std::net::Ipv4Addr;

/// Byte ranges of the fixed IPv4 header (RFC 791 § 3.1).
mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    /// Don't-fragment bit, in the 16 bits at `FLG_OFF`.
    pub const DF: u16 = 0x4000;
    /// More-fragments bit and fragment offset, in the 16 bits at `FLG_OFF`.
    pub const MF_AND_OFFSET: u16 = 0x3fff;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// A view of an IPv4 packet: its header (options included) and whatever bytes follow.
///
/// [`Packet::new_checked`] makes sure the fixed header and the options the IHL announces are
/// there, so no getter can panic. The total-length field is not trusted: what follows the header
/// is the rest of the buffer, as the frame on the wire is the truth.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps bytes without checking; getters may panic on short buffers. Use
    /// [`Packet::new_checked`] for bytes that were not checked before.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps bytes that hold a whole IPv4 header: version 4, IHL of at least 5 words and no
    /// more than the bytes present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, HeaderError> {
        let p = Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(HeaderError::Truncated("IPv4"));
        }
        if p.version() != 4 {
            return Err(HeaderError::BadVersion(p.version()));
        }
        check_header_len("IPv4", p.header_len(), HEADER_LEN, len)?;
        Ok(p)
    }

    /// The bytes behind the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field: 4 for a checked view.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN bits (the former type-of-service byte, RFC 2474 § 3, RFC 3168 § 5).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length: header and payload, as the header says.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::IDENT])
    }

    /// The don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be_u16(&self.buffer.as_ref()[field::FLG_OFF]) & field::DF != 0
    }

    /// True for any fragment: more-fragments set, or a non-zero fragment offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be_u16(&self.buffer.as_ref()[field::FLG_OFF]) & field::MF_AND_OFFSET != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (IANA protocol numbers).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The header checksum the header should carry, computed as if its checksum field were
    /// zero (RFC 791 § 3.1).
    #[inline]
    pub fn compute_checksum(&self) -> u16 {
        let header = &self.buffer.as_ref()[..self.header_len()];
        let before = ones_complement_sum(&header[..field::CHECKSUM.start], 0);
        internet_checksum(&header[field::CHECKSUM.end..], u32::from(before))
    }

    /// True when the checksum field holds the header's checksum.
    pub fn verify_checksum(&self) -> bool {
        internet_checksum(&self.buffer.as_ref()[..self.header_len()], 0) == 0
    }

    /// Partial sum of the pseudo-header of this packet's TCP or UDP payload (RFC 9293 § 3.1)
    /// of `l4_len` bytes.
    #[inline]
    pub fn pseudo_header_sum(&self, l4_len: u16) -> u32 {
        let (src, dst) = (self.src_addr().octets(), self.dst_addr().octets());
        pseudo_header_sum_v4(src, dst, self.protocol(), l4_len)
    }

    /// The options, between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Everything after the header, up to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_u16_at(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets version 4 and the header length in bytes (a multiple of 4, at most 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP and ECN bits.
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.set_u16_at(field::LENGTH, v)
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.set_u16_at(field::IDENT, v)
    }

    /// Sets the flags and fragment offset to "don't fragment" (or nothing), offset zero.
    pub fn set_dont_frag(&mut self, df: bool) {
        self.set_u16_at(field::FLG_OFF, if df { field::DF } else { 0 })
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM, v)
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets())
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets())
    }

    /// Computes the header checksum and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = self.compute_checksum();
        self.set_checksum(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 > 10.0.0.2, TCP, DF, TTL 64, id 0x1c46, total 60 (20 + a 40-byte TCP segment).
    static HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x0a, 0x74, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!((p.version(), p.header_len()), (4, 20));
        assert_eq!(
            (p.total_len(), p.ident(), p.ttl(), p.protocol()),
            (60, 0x1c46, 64, 6)
        );
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.checksum(), 0x0a74);
        assert_eq!(p.compute_checksum(), 0x0a74);
        assert!(p.verify_checksum());
        assert!(p.options().is_empty() && p.payload().is_empty());
        assert_eq!(
            p.pseudo_header_sum(40),
            0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 40
        );
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 20];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(20);
        p.set_total_len(60);
        p.set_ident(0x1c46);
        p.set_dont_frag(true);
        p.set_ttl(64);
        p.set_protocol(6);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.set_checksum(0xffff); // garbage in the field must be ignored
        p.fill_checksum();
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn options_and_fragments() {
        let mut b = HEADER.to_vec();
        b[0] = 0x46;
        b.extend_from_slice(&[1, 1, 1, 0, 0xaa]);
        b[6] = 0x20; // more fragments
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xaa]);
        assert!(p.is_fragment() && !p.dont_frag());
        b[6] = 0;
        b[7] = 1; // offset 8
        assert!(Packet::new_checked(&b[..]).unwrap().is_fragment());
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        assert_eq!(
            Packet::new_checked(&HEADER[..19]).unwrap_err(),
            HeaderError::Truncated("IPv4")
        );
        let mut b = HEADER;
        b[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            HeaderError::BadVersion(6)
        );
        b[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            HeaderError::BadHeaderLen("IPv4", 16)
        );
        b[0] = 0x46; // options announced but absent
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            HeaderError::Truncated("IPv4")
        );
    }

    #[test]
    fn any_bytes_give_a_view_or_an_error() {
        for len in 0..64 {
            for first in [0x00, 0x45, 0x4f, 0x60, 0xff] {
                let mut b = vec![0xa5u8; len];
                if let Some(x) = b.first_mut() {
                    *x = first;
                }
                if let Ok(p) = Packet::new_checked(&b[..]) {
                    let _ = (
                        p.options(),
                        p.payload(),
                        p.compute_checksum(),
                        p.pseudo_header_sum(0),
                    );
                }
            }
        }
    }
}
