//! Ethernet II frames (IEEE 802.3) with optional 802.1Q (TPID 0x8100) and 802.1ad (TPID 0x88a8)
//! tags.
//!
//! ```text
//!  0      6      12          14 (16, 18)
//!  | dst  | src  | [TPID TCI]* | EtherType | payload
//! ```

use super::WireError;
use std::fmt;
use std::str::FromStr;

/// Byte ranges of the untagged Ethernet header (IEEE 802.3 § 3.1).
mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const HEADER_LEN: usize = 14;
    /// One VLAN tag: TPID (2 bytes) + TCI (2 bytes).
    pub const TAG_LEN: usize = 4;
    /// Where the outer VLAN tag of a tagged frame stands: in place of the EtherType.
    pub const TAG: Range<usize> = 12..16;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::HEADER_LEN;
/// Length of one VLAN tag.
pub const TAG_LEN: usize = field::TAG_LEN;
/// The bytes of a tagged frame's outer VLAN tag (IEEE 802.1Q § 9.3: after the two MACs).
pub const TAG: std::ops::Range<usize> = field::TAG;
/// TPID of a customer VLAN tag (IEEE 802.1Q).
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of a service VLAN tag (IEEE 802.1ad, "QinQ").
pub const TPID_8021AD: u16 = 0x88a8;

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Builds an address from the first six bytes of `bytes`. Panics if there are fewer: only
    /// for callers that checked the length.
    pub fn from_bytes(bytes: &[u8]) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&bytes[..6]);
        MacAddr(mac)
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True when the I/G bit is set: multicast, broadcast included.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// A unicast, non-zero address: the only kind a switch may learn as a source.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The address as the low 48 bits of a `u64` (fast keys for the MAC table).
    pub fn to_u64(&self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The inverse of [`MacAddr::to_u64`].
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error for a string that is not `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 02:42:ac:11:00:02")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in mac.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(mac))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The EtherType field. Unknown values are kept, not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Vlan,
    QinQ,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtherType::Ipv4 => f.write_str("ipv4"),
            EtherType::Arp => f.write_str("arp"),
            EtherType::Vlan => f.write_str("802.1q"),
            EtherType::QinQ => f.write_str("802.1ad"),
            EtherType::Ipv6 => f.write_str("ipv6"),
            EtherType::Unknown(v) => write!(f, "0x{v:04x}"),
        }
    }
}

/// One VLAN tag: the TPID that announced it and the TCI fields (IEEE 802.1Q § 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Priority code point, 3 bits.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 12 bits (0 means priority-tagged, no VLAN).
    pub vid: u16,
}

impl VlanTag {
    /// A tag from its 4 bytes on the wire (TPID, then TCI), whatever the TPID says; `None`
    /// when fewer bytes are given.
    pub fn parse(bytes: &[u8]) -> Option<VlanTag> {
        let b = bytes.get(..field::TAG_LEN)?;
        Some(VlanTag::from_bytes(
            u16::from_be_bytes([b[0], b[1]]),
            [b[2], b[3]],
        ))
    }

    fn from_bytes(tpid: u16, tci: [u8; 2]) -> VlanTag {
        let tci = u16::from_be_bytes(tci);
        VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// The 4 bytes of this tag as they stand on the wire.
    pub fn to_bytes(&self) -> [u8; 4] {
        let tci = ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff);
        let [t0, t1] = self.tpid.to_be_bytes();
        let [c0, c1] = tci.to_be_bytes();
        [t0, t1, c0, c1]
    }
}

/// A read-only (or, with `AsMut`, writable) view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps bytes without checking; getters may panic on short buffers. Use [`Frame::new_checked`].
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps bytes that hold at least an untagged Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, WireError> {
        let len = buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(WireError::Runt(len));
        }
        Ok(Frame { buffer })
    }

    /// The bytes behind the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source address.
    pub fn src(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType (or TPID) right after the addresses.
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// What follows the untagged header (for a tagged frame, the tags come first).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }

    /// Parses the header and its tags: see [`L2Header::parse`].
    pub fn header(&self) -> Result<L2Header, WireError> {
        L2Header::parse(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination address.
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0)
    }

    /// Sets the source address.
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0)
    }

    /// Sets the EtherType right after the addresses.
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes())
    }
}

/// The parsed layer-2 header: addresses, up to two tags, the inner EtherType, and where the
/// payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// The outer tag (802.1ad) when the frame is double-tagged.
    pub outer: Option<VlanTag>,
    /// The (inner, or only) VLAN tag.
    pub vlan: Option<VlanTag>,
    /// The EtherType after all tags.
    pub ethertype: EtherType,
    /// Offset of the payload (14, 18 or 22).
    pub payload_offset: usize,
}

impl L2Header {
    /// Parses an Ethernet header with up to two tags. Any bytes give a header or an error.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<L2Header, WireError> {
        if bytes.len() < field::HEADER_LEN {
            return Err(WireError::Runt(bytes.len()));
        }
        let dst = MacAddr::from_bytes(&bytes[field::DESTINATION]);
        let src = MacAddr::from_bytes(&bytes[field::SOURCE]);
        let mut offset = 12;
        let mut tags: [Option<VlanTag>; 2] = [None, None];
        let mut n = 0;
        loop {
            let Some(tpid) = bytes.get(offset..offset + 2) else {
                return Err(WireError::TruncatedTag);
            };
            let tpid = u16::from_be_bytes([tpid[0], tpid[1]]);
            if tpid != TPID_8021Q && tpid != TPID_8021AD {
                offset += 2;
                let (outer, vlan) = match tags {
                    [Some(o), Some(i)] => (Some(o), Some(i)),
                    [t, None] => (None, t),
                    [None, Some(_)] => unreachable!("tags fill in order"),
                };
                return Ok(L2Header {
                    dst,
                    src,
                    outer,
                    vlan,
                    ethertype: EtherType::from(tpid),
                    payload_offset: offset,
                });
            }
            if n == 2 {
                return Err(WireError::TooManyTags);
            }
            let Some(tci) = bytes.get(offset + 2..offset + 4) else {
                return Err(WireError::TruncatedTag);
            };
            tags[n] = Some(VlanTag::from_bytes(tpid, [tci[0], tci[1]]));
            n += 1;
            offset += field::TAG_LEN;
        }
    }

    /// True when the frame carries at least one tag.
    pub fn is_tagged(&self) -> bool {
        self.vlan.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 02:00:00:00:00:01, untagged.
    static UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0xaa,
        0xbb,
    ];

    // The same frame tagged VLAN 10, priority 5.
    static TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0xa0,
        0x0a, 0x08, 0x06, 0xaa, 0xbb,
    ];

    // QinQ: outer S-tag 100, inner C-tag 10, IPv4.
    static QINQ: [u8; 22] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xa8, 0x00,
        0x64, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00,
    ];

    #[test]
    fn deconstruct_untagged() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::Arp);
        let h = f.header().unwrap();
        assert_eq!(h.vlan, None);
        assert_eq!(h.payload_offset, 14);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn deconstruct_tagged() {
        let h = L2Header::parse(&TAGGED).unwrap();
        let tag = h.vlan.unwrap();
        assert_eq!(
            (tag.tpid, tag.pcp, tag.dei, tag.vid),
            (0x8100, 5, false, 10)
        );
        assert_eq!(h.ethertype, EtherType::Arp);
        assert_eq!(h.payload_offset, 18);
        assert_eq!(tag.to_bytes(), TAGGED[12..16]);
        assert_eq!(VlanTag::parse(&TAGGED[12..16]), Some(tag));
        assert_eq!(VlanTag::parse(&TAGGED[12..15]), None);
    }

    #[test]
    fn deconstruct_qinq() {
        let h = L2Header::parse(&QINQ).unwrap();
        assert_eq!(h.outer.unwrap().vid, 100);
        assert_eq!(h.outer.unwrap().tpid, TPID_8021AD);
        assert_eq!(h.vlan.unwrap().vid, 10);
        assert_eq!(h.ethertype, EtherType::Ipv4);
        assert_eq!(h.payload_offset, 22);
    }

    #[test]
    fn construct_round_trip() {
        let mut buf = [0u8; 14];
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(MacAddr([2, 0, 0, 0, 0, 1]));
        f.set_ethertype(EtherType::Arp);
        assert_eq!(buf, UNTAGGED[..14]);
    }

    #[test]
    fn refuses_runts_and_truncated_tags() {
        assert_eq!(L2Header::parse(&[]), Err(WireError::Runt(0)));
        assert_eq!(L2Header::parse(&UNTAGGED[..13]), Err(WireError::Runt(13)));
        assert_eq!(L2Header::parse(&TAGGED[..14]), Err(WireError::TruncatedTag));
        assert_eq!(L2Header::parse(&TAGGED[..17]), Err(WireError::TruncatedTag));
        assert!(Frame::new_checked(&UNTAGGED[..10]).is_err());
    }

    #[test]
    fn refuses_three_tags() {
        let mut f = QINQ[..20].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        assert_eq!(L2Header::parse(&f), Err(WireError::TooManyTags));
    }

    #[test]
    fn unknown_ethertype_is_kept() {
        let mut f = UNTAGGED;
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(
            L2Header::parse(&f).unwrap().ethertype,
            EtherType::Unknown(0x88cc)
        );
    }

    #[test]
    fn mac_text_round_trip() {
        let m: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("zz:42:ac:11:00:02".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::ZERO.is_unicast());
    }
}
