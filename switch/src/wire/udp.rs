//! UDP headers (RFC 768): a checked view.
//!
//! ```text
//!  0               16               31
//!  |  source port  |   dest. port   |
//!  |    length     |    checksum    |
//! ```

use super::{be_u16, HeaderError};

/// Byte ranges of the UDP header (RFC 768).
mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram: its header and payload.
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

    /// Wraps bytes that hold a whole UDP header. The length field is not checked against them.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, HeaderError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(HeaderError::Truncated("UDP"));
        }
        Ok(Packet { buffer })
    }

    /// The bytes behind the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header and payload.
    #[inline]
    pub fn len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// True when the length field says zero (never valid: the header alone is 8 bytes).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The checksum field (0: none, over IPv4).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
}

/// The source and destination ports of a TCP or UDP header: both begin with them (RFC 9293
/// § 3.1, RFC 768), so four bytes are enough. `None` for other protocols or fewer bytes.
#[inline]
pub fn transport_ports(protocol: u8, l4: &[u8]) -> Option<(u16, u16)> {
    if protocol != super::IPPROTO_TCP && protocol != super::IPPROTO_UDP {
        return None;
    }
    let b = l4.get(field::SRC_PORT.start..field::DST_PORT.end)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 61440 > 4789 (VXLAN), 12 bytes, no checksum, 4 payload bytes.
    static DATAGRAM: [u8; 12] = [0xf0, 0x00, 0x12, 0xb5, 0x00, 0x0c, 0, 0, 1, 2, 3, 4];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (61440, 4789, 12, 0)
        );
        assert!(!p.is_empty());
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 12];
        buf[8..].copy_from_slice(&[1, 2, 3, 4]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(61440);
        p.set_dst_port(4789);
        p.set_len(12);
        p.set_checksum(0);
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn refuses_runts() {
        assert_eq!(
            Packet::new_checked(&DATAGRAM[..7]).unwrap_err(),
            HeaderError::Truncated("UDP")
        );
        assert!(Packet::new_checked(&DATAGRAM[..8])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn ports_of_tcp_and_udp_only() {
        assert_eq!(transport_ports(17, &DATAGRAM), Some((61440, 4789)));
        assert_eq!(transport_ports(6, &DATAGRAM[..4]), Some((61440, 4789)));
        assert_eq!(transport_ports(6, &DATAGRAM[..3]), None);
        assert_eq!(transport_ports(1, &DATAGRAM), None);
    }
}
