//! IPv6 fixed headers (RFC 8200 § 3): a checked view and the pseudo-header sum.
//!
//! ```text
//!  0       4              12                      31
//!  | ver | traffic class |       flow label        |
//!  |     payload length     | next hdr | hop limit  |
//!  |         source address (16 bytes)             |
//!  |       destination address (16 bytes)          |
//! ```
//!
//! Extension headers are not walked: [`Packet::next_header`] is what follows the fixed header.

use super::checksum::pseudo_header_sum_v6;
use super::{be_u16, HeaderError};
use std::net::Ipv6Addr;

/// Byte ranges of the fixed IPv6 header (RFC 8200 § 3).
mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet: the fixed header and whatever bytes follow.
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

    /// Wraps bytes that hold a whole fixed header of version 6.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, HeaderError> {
        let p = Packet { buffer };
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(HeaderError::Truncated("IPv6"));
        }
        if p.version() != 6 {
            return Err(HeaderError::BadVersion(p.version()));
        }
        Ok(p)
    }

    /// The bytes behind the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field: 6 for a checked view.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Payload length: the bytes after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The header after the fixed one: an extension header or the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr(field::SRC_ADDR))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr(field::DST_ADDR))
    }

    #[inline]
    fn addr(&self, r: std::ops::Range<usize>) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[r]);
        a
    }

    /// Partial sum of the pseudo-header (RFC 8200 § 8.1) of an upper-layer packet of `l4_len`
    /// bytes with protocol `next_header`.
    #[inline]
    pub fn pseudo_header_sum(&self, next_header: u8, l4_len: u32) -> u32 {
        let (src, dst) = (self.addr(field::SRC_ADDR), self.addr(field::DST_ADDR));
        pseudo_header_sum_v6(&src, &dst, next_header, l4_len)
    }

    /// Everything after the fixed header, up to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, traffic class 0 and flow label 0.
    pub fn set_version(&mut self) {
        self.buffer.as_mut()[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets())
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // fd00::1 > fd00::2, UDP, 8 payload bytes, hop limit 64.
    static HEADER: [u8; 40] = [
        0x60, 0, 0, 0, 0x00, 0x08, 17, 64, //
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!(
            (p.version(), p.payload_len(), p.next_header(), p.hop_limit()),
            (6, 8, 17, 64)
        );
        assert_eq!(p.src_addr(), "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert!(p.payload().is_empty());
        assert_eq!(p.pseudo_header_sum(17, 8), 0xfd00 * 2 + 1 + 2 + 8 + 17);
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 40];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version();
        p.set_payload_len(8);
        p.set_next_header(17);
        p.set_hop_limit(64);
        p.set_src_addr("fd00::1".parse().unwrap());
        p.set_dst_addr("fd00::2".parse().unwrap());
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        assert_eq!(
            Packet::new_checked(&HEADER[..39]).unwrap_err(),
            HeaderError::Truncated("IPv6")
        );
        let mut b = HEADER;
        b[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            HeaderError::BadVersion(4)
        );
        assert!(Packet::new_checked(&[][..]).is_err());
    }
}
