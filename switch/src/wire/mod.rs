//! Wire formats the switch reads: Ethernet II with 802.1Q / 802.1ad tags, ARP, IPv4, IPv6, TCP
//! and UDP headers, and the Internet checksum.
//!
//! Views borrow the bytes; they never copy and never panic. A view over bytes that are too short
//! for what it claims to hold is refused with a [`WireError`] by its `new_checked` constructor.
//! Every header offset the switch, the VTEP and the daemon use is written here, once.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use ethernet::{EtherType, Frame, L2Header, MacAddr, VlanTag};

/// IP protocol number of TCP (RFC 790, IANA "Assigned Internet Protocol Numbers").
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// The big-endian number in the two bytes of a field (`b` is the field's range of the buffer).
#[inline(always)]
fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The big-endian number in the four bytes of a field.
#[inline(always)]
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks the length field of a header whose fixed part (`min` bytes) is known to be there: no
/// less than `min`, and no more than the `len` bytes present (IPv4's IHL, TCP's data offset).
#[inline]
fn check_header_len(
    proto: &'static str,
    header_len: usize,
    min: usize,
    len: usize,
) -> Result<(), HeaderError> {
    if header_len < min {
        return Err(HeaderError::BadHeaderLen(proto, header_len));
    }
    if header_len > len {
        return Err(HeaderError::Truncated(proto));
    }
    Ok(())
}

/// Why bytes were refused as a frame or header. Small and `Copy`: the datapath counts these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than 14 bytes: not even an Ethernet header.
    #[error("runt frame: {0} bytes, an Ethernet header needs 14")]
    Runt(usize),
    /// A VLAN TPID promised a tag, but the frame ends inside it.
    #[error("truncated VLAN tag")]
    TruncatedTag,
    /// More than two stacked tags (802.1ad outer + 802.1Q inner is the most we accept).
    #[error("too many stacked VLAN tags")]
    TooManyTags,
}

/// Why bytes were refused as an IPv4, IPv6, TCP or UDP header. Small and `Copy`, like
/// [`WireError`]; kept apart from it because the datapath maps every [`WireError`] to a drop
/// counter, and these headers are read only where a frame is looked into (offloads, the VTEP's
/// flow hash, traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes end inside a header of this protocol (or the options it announces).
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// An IP header whose version field is not the one its EtherType promised.
    #[error("IP version {0} where another was expected")]
    BadVersion(u8),
    /// A header-length field below the protocol's minimum (in bytes).
    #[error("{0} header length {1} is below the minimum")]
    BadHeaderLen(&'static str, usize),
}
