//! VXLAN (RFC 7348): the overlay that joins the bridges of several hosts into one layer-2
//! network over UDP.
//!
//! A VXLAN Tunnel End Point (VTEP, RFC 7348 § 4) wraps each Ethernet frame bound for another
//! host in an 8-byte VXLAN header and a UDP datagram, and unwraps what arrives. The layers, bottom
//! up, as in the `switch` crate:
//! - [`header`]: the VXLAN header as a view over bytes (RFC 7348 § 5); never panics.
//! - [`encap`]: laying out datagrams (header + inner frame), and TCP super-frames as equal-size
//!   datagrams ready for UDP segmentation offload.
//! - [`vtep`]: the sans-IO VTEP logic: VNIs, peers (flood lists), remote MAC → peer learning
//!   (RFC 7348 § 4.1), where an inner frame goes (RFC 7348 § 4.2), what an arriving datagram
//!   carries, and whether a frame fits the underlay (RFC 7348 § 4.3). No socket, no clock.
//! - [`socket`]: the I/O side: one UDP socket for receiving (recvmmsg, UDP GRO) and a small pool
//!   for sending from per-flow source ports (sendmmsg, UDP GSO).
//! - [`tap`]: the other I/O side (Linux 6.17+): a TAP with UDP-tunnel GSO that takes and gives
//!   whole encapsulated super-frames, moved to and from the underlay by tc; nothing is
//!   segmented in user space.
//!
//! Errors are one enum, [`Error`]; a datagram refused on receive also has a [`RejectReason`],
//! counted by the [`Vtep`], and maps to [`switch::DropReason::OverlayRejected`] on the port.

pub mod encap;
pub mod header;
pub mod overlay;
pub mod socket;
pub mod tap;
pub mod vtep;

pub use encap::{encap_into, encap_segments, Datagrams};
pub use header::{Packet, Repr, DEFAULT_PORT, HEADER_LEN, MAX_VNI, OVERHEAD_V4};
pub use overlay::{Overlay, VxlanPort, PORT_NAME};
pub use socket::{
    bucket_of, bucket_port, segments_per_send, Datagram, Queued, Received, RecvBatch, SendOutcome,
    VtepSocket, SOURCE_PORT_BUCKETS,
};
pub use vtep::{
    source_port, EncapKind, RemoteEntry, Vtep, VtepConfig, SOURCE_PORT_MAX, SOURCE_PORT_MIN,
};

use std::net::IpAddr;
use switch::{DropReason, MacAddr};

/// Everything that can go wrong in this crate, short of socket I/O (which is `io::Error`).
///
/// The first five are why a received datagram is refused (see [`RejectReason`]); the rest answer
/// control-plane requests. Small and `Copy`: the datapath returns these per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than a VXLAN header.
    #[error("VXLAN header truncated: {0} bytes, it needs 8")]
    Truncated(usize),
    /// The I flag is clear (RFC 7348 § 5).
    #[error("VXLAN flags 0x{0:02x} lack the I flag")]
    BadFlags(u8),
    /// No network with this VNI here.
    #[error("unknown VNI {0}")]
    UnknownVni(u32),
    /// The sender is not in the VNI's peer list.
    #[error("{0} is not a peer of VNI {1}")]
    NotAPeer(IpAddr, u32),
    /// The inner frame is shorter than an Ethernet header.
    #[error("inner frame of {0} bytes is shorter than an Ethernet header")]
    RuntInner(usize),
    /// A VNI that does not fit in 24 bits.
    #[error("VNI {0} is out of range: VNIs have 24 bits (0 to 16777215)")]
    InvalidVni(u32),
    /// An address that cannot be a peer (unspecified or multicast).
    #[error("{0} cannot be a VXLAN peer: it must be a unicast address")]
    InvalidPeer(IpAddr),
    /// A MAC address that cannot be a station (multicast or zero).
    #[error("{0} cannot be a remote station: it must be a unicast MAC address")]
    InvalidMac(MacAddr),
    /// The VNI's remote MAC table is at its limit.
    #[error("VNI {0}: remote MAC table full ({1} entries)")]
    TableFull(u32, usize),
    /// A received inner frame claims a source MAC fixed elsewhere (a static entry behind
    /// another peer, or a station on a local port): it is dropped and nothing is learned.
    #[error("VNI {0}: source {1} is a static station elsewhere: it cannot move by learning")]
    MacMoveRefused(u32, MacAddr),
}

/// The error [`Vtep::decap`] returns: one of the first five variants of [`Error`], or
/// [`Error::MacMoveRefused`].
pub type DecapError = Error;

impl Error {
    /// Why a received datagram was refused, for the refusals [`Vtep::decap`] makes.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            Error::Truncated(_) => Some(RejectReason::Truncated),
            Error::BadFlags(_) => Some(RejectReason::BadFlags),
            Error::UnknownVni(_) => Some(RejectReason::UnknownVni),
            Error::NotAPeer(..) => Some(RejectReason::NotAPeer),
            Error::RuntInner(_) => Some(RejectReason::RuntInner),
            _ => None,
        }
    }
}

/// Why a received datagram was refused: one counter each (finer than the port's drop reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// Shorter than a VXLAN header.
    Truncated = 0,
    /// I flag clear.
    BadFlags,
    /// VNI not configured here.
    UnknownVni,
    /// Sender not in the VNI's peer list.
    NotAPeer,
    /// Inner frame shorter than an Ethernet header.
    RuntInner,
}

impl RejectReason {
    /// Number of reasons.
    pub const COUNT: usize = 5;
    /// All reasons, in counter order.
    pub const ALL: [RejectReason; Self::COUNT] = [
        RejectReason::Truncated,
        RejectReason::BadFlags,
        RejectReason::UnknownVni,
        RejectReason::NotAPeer,
        RejectReason::RuntInner,
    ];

    /// The name shown in stats and traces.
    pub fn name(&self) -> &'static str {
        match self {
            RejectReason::Truncated => "truncated",
            RejectReason::BadFlags => "bad_flags",
            RejectReason::UnknownVni => "unknown_vni",
            RejectReason::NotAPeer => "not_a_peer",
            RejectReason::RuntInner => "runt_inner",
        }
    }

    /// The port-level drop reason: always [`DropReason::OverlayRejected`].
    pub fn drop_reason(&self) -> DropReason {
        DropReason::OverlayRejected
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
