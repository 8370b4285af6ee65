//! Wire formats the switch reads: Ethernet II with 802.1Q / 802.1ad tags.
//!
//! Views borrow the bytes; they never copy and never panic. A view over bytes that are too short
//! for what it claims to hold is refused with a [`WireError`] by its `new_checked` constructor.

pub mod ethernet;

pub use ethernet::{EtherType, Frame, L2Header, MacAddr, VlanTag};

/// Why bytes were refused as a frame. Small and `Copy`: the datapath counts these.
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
