//! TCP headers (RFC 9293 § 3.1): a checked view and the flag bits.
//!
//! ```text
//!  0               16               31
//!  |  source port  |   dest. port   |
//!  |        sequence number         |
//!  |     acknowledgment number      |
//!  | off | rsvd | flags |  window   |
//!  |   checksum    | urgent pointer |
//!  |   options (data offset > 5)    |
//! ```

use super::{be_u16, be_u32, check_header_len, HeaderError};

/// Byte ranges of the TCP header (RFC 9293 § 3.1).
mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;
/// Offset of the checksum field from the start of the header (a virtio-net `csum_offset`).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// FIN: no more data from the sender.
pub const FLAG_FIN: u8 = 0x01;
/// SYN: synchronize sequence numbers.
pub const FLAG_SYN: u8 = 0x02;
/// RST: reset the connection.
pub const FLAG_RST: u8 = 0x04;
/// PSH: push function.
pub const FLAG_PSH: u8 = 0x08;
/// ACK: the acknowledgment field is significant.
pub const FLAG_ACK: u8 = 0x10;
/// URG: the urgent pointer is significant.
pub const FLAG_URG: u8 = 0x20;
/// ECE: ECN echo (RFC 3168 § 6.1).
pub const FLAG_ECE: u8 = 0x40;
/// CWR: congestion window reduced (RFC 3168 § 6.1).
pub const FLAG_CWR: u8 = 0x80;

/// A view of a TCP segment: its header (options included) and payload.
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

    /// Wraps bytes that hold a whole TCP header: a data offset of at least 5 words and no more
    /// than the bytes present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, HeaderError> {
        let p = Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(HeaderError::Truncated("TCP"));
        }
        check_header_len("TCP", p.header_len(), HEADER_LEN, len)?;
        Ok(p)
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The eight flag bits CWR..FIN (`FLAG_*`); NS, in the byte before, is not among them.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Receive window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The options, between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60), clearing NS.
    pub fn set_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((header_len / 4) as u8) << 4;
    }

    /// Sets the eight flag bits CWR..FIN.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the receive window.
    pub fn set_window_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::WIN_SIZE].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 40000 > 5201, seq 1, ack 0x12345678, ACK|PSH, window 512, checksum 0xbeef, a 12-byte
    // timestamps option (NOP, NOP, TS), 2 payload bytes.
    static SEGMENT: [u8; 34] = [
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78, 0x80, 0x18, 0x02, 0x00, 0xbe,
        0xef, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0xaa, 0xbb,
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (40000, 5201));
        assert_eq!((p.seq_number(), p.ack_number()), (1, 0x1234_5678));
        assert_eq!(p.header_len(), 32);
        assert_eq!(p.flags(), FLAG_ACK | FLAG_PSH);
        assert_eq!((p.window_len(), p.checksum()), (512, 0xbeef));
        assert_eq!(p.options(), &SEGMENT[20..32]);
        assert_eq!(p.header(), &SEGMENT[..32]);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct() {
        let mut buf = SEGMENT;
        buf[..20].fill(0xff);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(40000);
        p.set_dst_port(5201);
        p.set_seq_number(1);
        p.set_ack_number(0x1234_5678);
        p.set_header_len(32);
        p.set_flags(FLAG_ACK | FLAG_PSH);
        p.set_window_len(512);
        p.set_checksum(0xbeef);
        buf[18..20].fill(0);
        assert_eq!(buf, SEGMENT);
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        assert_eq!(
            Packet::new_checked(&SEGMENT[..19]).unwrap_err(),
            HeaderError::Truncated("TCP")
        );
        assert_eq!(
            Packet::new_checked(&SEGMENT[..31]).unwrap_err(),
            HeaderError::Truncated("TCP")
        );
        let mut b = SEGMENT;
        b[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            HeaderError::BadHeaderLen("TCP", 16)
        );
    }

    #[test]
    fn any_bytes_give_a_view_or_an_error() {
        for len in 0..70 {
            for off in [0x00, 0x50, 0x80, 0xf0] {
                let mut b = vec![0x5au8; len];
                if let Some(x) = b.get_mut(12) {
                    *x = off;
                }
                if let Ok(p) = Packet::new_checked(&b[..]) {
                    let _ = (p.options(), p.payload(), p.header(), p.flags());
                }
            }
        }
    }
}
