//! The VXLAN header (RFC 7348 § 5): eight bytes between the outer UDP header and the inner
//! Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag says the VNI is valid and "MUST be set to 1"; the other flag bits and both
//! reserved fields "MUST be set to zero on transmission and ignored on receipt" (RFC 7348 § 5).
//! So [`Repr::parse`] refuses a header without the I flag and ignores every reserved bit, and
//! [`Repr::emit`] writes zeroes into them.
//!
//! As in smoltcp's `wire` module: [`Packet`] is a view over bytes with getters (and, on mutable
//! bytes, setters), [`Packet::new_checked`] refuses bytes too short for a header instead of
//! panicking later, and [`Repr`] is the parsed, high-level form.

use crate::Error;

/// Byte ranges of the header fields (RFC 7348 § 5).
mod field {
    use std::ops::Range;
    /// Flags: `RRRRIRRR`.
    pub const FLAGS: usize = 0;
    /// 24 reserved bits after the flags.
    pub const RESERVED1: Range<usize> = 1..4;
    /// The 24-bit VXLAN Network Identifier.
    pub const VNI: Range<usize> = 4..7;
    /// 8 reserved bits after the VNI.
    pub const RESERVED2: usize = 7;
    /// Where the inner Ethernet frame starts.
    pub const PAYLOAD: usize = 8;
}

/// Length of the VXLAN header (RFC 7348 § 5).
pub const HEADER_LEN: usize = field::PAYLOAD;
/// The IANA-assigned VXLAN UDP port (RFC 7348 § 5, "Destination Port").
pub const DEFAULT_PORT: u16 = 4789;
/// Bytes VXLAN adds over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (RFC 7348 § 5).
pub const OVERHEAD_V4: usize = 14 + 20 + 8 + HEADER_LEN;
/// The I flag: the VNI is valid (RFC 7348 § 5).
pub const FLAG_I: u8 = 0x08;
/// The largest VNI: 24 bits.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A view of a VXLAN header and the inner frame after it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps bytes without checking; getters panic on fewer than 8 bytes. Prefer
    /// [`Packet::new_checked`].
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps bytes that hold at least a whole header, or says how short they are.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated(len));
        }
        Ok(Packet { buffer })
    }

    /// The bytes behind the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte (`RRRRIRRR`).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True when the I flag (valid VNI) is set.
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24 reserved bits after the flags.
    pub fn reserved1(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::RESERVED1];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The VXLAN Network Identifier (24 bits).
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The 8 reserved bits after the VNI.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED2]
    }

    /// The inner Ethernet frame: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the 24 reserved bits after the flags (the top 8 bits of `value` are dropped).
    pub fn set_reserved1(&mut self, value: u32) {
        let b = value.to_be_bytes();
        self.buffer.as_mut()[field::RESERVED1].copy_from_slice(&b[1..]);
    }

    /// Sets the VNI (the top 8 bits of `vni` are dropped).
    pub fn set_vni(&mut self, vni: u32) {
        let b = vni.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&b[1..]);
    }

    /// Sets the 8 reserved bits after the VNI.
    pub fn set_reserved2(&mut self, value: u8) {
        self.buffer.as_mut()[field::RESERVED2] = value;
    }

    /// The inner frame, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A parsed VXLAN header: all it carries is the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The VXLAN Network Identifier (24 bits).
    pub vni: u32,
}

impl Repr {
    /// Reads a header: the I flag must be set; reserved bits are ignored (RFC 7348 § 5).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        if !packet.has_vni() {
            return Err(Error::BadFlags(packet.flags()));
        }
        Ok(Repr { vni: packet.vni() })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: the I flag, the VNI, and zero in every reserved bit.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags(FLAG_I);
        packet.set_reserved1(0);
        packet.set_vni(self.vni);
        packet.set_reserved2(0);
    }

    /// The header as 8 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A VXLAN header from a capture of Linux's vxlan driver: I flag, VNI 42.
    static VNI_42: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];

    /// The largest VNI, with every reserved bit set (a sender breaking the MUST).
    static RESERVED_SET: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&VNI_42[..]).unwrap();
        assert_eq!(p.flags(), FLAG_I);
        assert!(p.has_vni());
        assert_eq!(p.vni(), 42);
        assert_eq!((p.reserved1(), p.reserved2()), (0, 0));
        assert!(p.payload().is_empty());
        assert_eq!(Repr::parse(&p), Ok(Repr { vni: 42 }));
    }

    #[test]
    fn construct() {
        let mut buf = [0xeeu8; 8];
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        Repr { vni: 42 }.emit(&mut p);
        assert_eq!(buf, VNI_42);
        assert_eq!(Repr { vni: 42 }.to_bytes(), VNI_42);
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 10];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_flags(0x88);
        p.set_reserved1(0x0012_3456);
        p.set_vni(0x00ab_cdef);
        p.set_reserved2(0x77);
        p.payload_mut().copy_from_slice(&[1, 2]);
        assert_eq!(buf, [0x88, 0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 0x77, 1, 2]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            (p.flags(), p.reserved1(), p.vni(), p.reserved2()),
            (0x88, 0x12_3456, 0xab_cdef, 0x77)
        );
        assert_eq!(p.payload(), [1, 2]);
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let p = Packet::new_checked(&RESERVED_SET[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(Repr { vni: MAX_VNI }));
    }

    #[test]
    fn refuses_missing_i_flag() {
        let mut b = VNI_42;
        b[0] = 0x00;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::BadFlags(0)));
        b[0] = 0xf7; // every bit but I
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::BadFlags(0xf7)));
    }

    #[test]
    fn refuses_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&VNI_42[..len]).unwrap_err(),
                Error::Truncated(len)
            );
        }
    }

    #[test]
    fn constants() {
        assert_eq!(HEADER_LEN, 8);
        assert_eq!(OVERHEAD_V4, 50);
        assert_eq!(DEFAULT_PORT, 4789);
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.flags(), p.reserved1(), p.vni(), p.reserved2(), p.payload().len());
                if let Ok(r) = Repr::parse(&p) {
                    prop_assert_eq!(r.vni, p.vni());
                    prop_assert!(r.vni <= MAX_VNI);
                }
            } else {
                prop_assert!(bytes.len() < HEADER_LEN);
            }
        }

        #[test]
        fn emit_parse_round_trip(vni in 0..=MAX_VNI) {
            let bytes = Repr { vni }.to_bytes();
            let p = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p), Ok(Repr { vni }));
            prop_assert_eq!((p.reserved1(), p.reserved2(), p.flags()), (0, 0, FLAG_I));
        }
    }
}
