//! The crate's one error type.
//!
//! Every failing operation of this crate returns an [`IpamError`] and leaves its state as it was.
//! Each variant carries the addresses and subnets involved, so the message can be shown to a
//! user as it is.

use std::fmt;
use std::net::Ipv4Addr;

use crate::cidr::Cidr;
use crate::driver::PoolId;

/// Why an address inside a subnet can never be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The subnet's network address (all host bits zero).
    NetworkAddress,
    /// The subnet's broadcast address (all host bits one).
    BroadcastAddress,
    /// The pool's gateway address.
    Gateway,
    /// One of the pool's reserved addresses.
    Reserved,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Unusable::NetworkAddress => "the network address",
            Unusable::BroadcastAddress => "the broadcast address",
            Unusable::Gateway => "the gateway",
            Unusable::Reserved => "a reserved address",
        };
        f.write_str(text)
    }
}

/// Why a subnet can never be a network's pool: it overlaps a special-purpose block of
/// RFC 6890 § 2.2.2 whose addresses no interface may hold as an ordinary unicast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnusableSubnet {
    /// 0.0.0.0/8, "this host on this network" (RFC 1122 § 3.2.1.3 (a)).
    ThisNetwork,
    /// 127.0.0.0/8, loopback (RFC 1122 § 3.2.1.3 (g)).
    Loopback,
    /// 169.254.0.0/16, link-local (RFC 3927 § 2.1).
    LinkLocal,
    /// 224.0.0.0/4, multicast (RFC 5771 § 3).
    Multicast,
    /// 240.0.0.0/4, reserved for future use (RFC 1112 § 4), with the limited broadcast
    /// address 255.255.255.255 (RFC 919 § 7).
    Reserved,
}

impl UnusableSubnet {
    /// Every special-purpose block with its reason.
    pub const BLOCKS: [(Ipv4Addr, u8, UnusableSubnet); 5] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8, UnusableSubnet::ThisNetwork),
        (Ipv4Addr::new(127, 0, 0, 0), 8, UnusableSubnet::Loopback),
        (Ipv4Addr::new(169, 254, 0, 0), 16, UnusableSubnet::LinkLocal),
        (Ipv4Addr::new(224, 0, 0, 0), 4, UnusableSubnet::Multicast),
        (Ipv4Addr::new(240, 0, 0, 0), 4, UnusableSubnet::Reserved),
    ];
}

impl fmt::Display for UnusableSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            UnusableSubnet::ThisNetwork => "\"this network\" addresses",
            UnusableSubnet::Loopback => "loopback addresses",
            UnusableSubnet::LinkLocal => "link-local addresses",
            UnusableSubnet::Multicast => "multicast addresses",
            UnusableSubnet::Reserved => "reserved (class E) and broadcast addresses",
        };
        f.write_str(text)
    }
}

/// Everything that can go wrong in address management.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The CIDR text has no `/PREFIX` part.
    #[error(
        "invalid CIDR {input:?}: missing prefix length (expected ADDRESS/PREFIX, e.g. 10.0.0.0/24)"
    )]
    MissingPrefix {
        /// The text as given.
        input: String,
    },

    /// The address part of the CIDR text is not an IPv4 address.
    #[error("invalid CIDR {input:?}: {address:?} is not a valid IPv4 address")]
    InvalidAddress {
        /// The text as given.
        input: String,
        /// The part before the `/`.
        address: String,
    },

    /// The prefix length is not a number from 0 to 32.
    #[error("invalid CIDR {input:?}: prefix length must be a number from 0 to 32")]
    InvalidPrefix {
        /// The text as given.
        input: String,
    },

    /// The address has bits set beyond the prefix length.
    #[error("invalid CIDR {input:?}: host bits are set; did you mean {suggestion}?")]
    HostBitsSet {
        /// The text as given.
        input: String,
        /// The same network with the host bits cleared.
        suggestion: Cidr,
    },

    /// The subnet is too small to be a pool (prefix longer than /30).
    #[error(
        "subnet {subnet} is too small for an address pool: the prefix length must be 30 or less"
    )]
    SubnetTooSmall {
        /// The subnet asked for.
        subnet: Cidr,
    },

    /// The subnet overlaps a special-purpose block (loopback, multicast, link-local…).
    #[error("subnet {subnet} cannot be a network's subnet: it overlaps {block}, {reason}")]
    SubnetNotUsable {
        /// The subnet asked for.
        subnet: Cidr,
        /// The special-purpose block it overlaps.
        block: Cidr,
        /// What the block is.
        reason: UnusableSubnet,
    },

    /// The gateway does not lie inside the subnet.
    #[error("gateway {gateway} is outside the subnet {subnet}")]
    GatewayOutsideSubnet {
        /// The gateway asked for.
        gateway: Ipv4Addr,
        /// The pool's subnet.
        subnet: Cidr,
    },

    /// The gateway is the network or the broadcast address of the subnet.
    #[error("gateway {gateway} cannot be used in {subnet}: it is {reason}")]
    GatewayNotUsable {
        /// The gateway asked for.
        gateway: Ipv4Addr,
        /// The pool's subnet.
        subnet: Cidr,
        /// What the address is.
        reason: Unusable,
    },

    /// The ip_range does not lie inside the subnet.
    #[error("ip range {ip_range} is not inside the subnet {subnet}")]
    IpRangeOutsideSubnet {
        /// The range asked for.
        ip_range: Cidr,
        /// The pool's subnet.
        subnet: Cidr,
    },

    /// A reserved address does not lie inside the subnet.
    #[error("reserved address {address} is outside the subnet {subnet}")]
    ReservedOutsideSubnet {
        /// The reserved address asked for.
        address: Ipv4Addr,
        /// The pool's subnet.
        subnet: Cidr,
    },

    /// An ip_range, gateway or reserved address was given without a subnet.
    #[error("{field} given without a subnet: every ip range, gateway or reserved address needs an explicit subnet")]
    SubnetRequired {
        /// Which part of the request needs the subnet.
        field: &'static str,
    },

    /// A requested address does not lie inside the pool's subnet.
    #[error("address {address} is outside the subnet {subnet}")]
    AddressOutsideSubnet {
        /// The address asked for.
        address: Ipv4Addr,
        /// The pool's subnet.
        subnet: Cidr,
    },

    /// A requested address is one that is never handed out.
    #[error("address {address} cannot be allocated in {subnet}: it is {reason}")]
    AddressNotUsable {
        /// The address asked for.
        address: Ipv4Addr,
        /// The pool's subnet.
        subnet: Cidr,
        /// What the address is.
        reason: Unusable,
    },

    /// A requested address is already allocated.
    #[error("address {address} is already allocated to {owner:?}")]
    AddressInUse {
        /// The address asked for.
        address: Ipv4Addr,
        /// Who holds it.
        owner: String,
    },

    /// An address to release is not allocated.
    #[error("address {address} is not allocated in {subnet}")]
    NotAllocated {
        /// The address to release.
        address: Ipv4Addr,
        /// The pool's subnet.
        subnet: Cidr,
    },

    /// No free address is left to hand out.
    #[error("no free address left in {subnet}")]
    PoolExhausted {
        /// The pool's subnet.
        subnet: Cidr,
    },

    /// Every default pool overlaps an existing network or a host route.
    #[error("all default address pools (172.17.0.0/16 to 172.31.0.0/16, 192.168.0.0/20 to 192.168.240.0/20) overlap existing networks or host routes; give a subnet explicitly")]
    NoDefaultSubnet,

    /// A requested subnet overlaps the subnet of an existing pool.
    #[error("overlapping subnets: {requested} overlaps the existing pool {existing}")]
    OverlappingSubnets {
        /// The subnet asked for.
        requested: Cidr,
        /// The existing pool's subnet.
        existing: Cidr,
    },

    /// No pool has this id.
    #[error("no address pool with id {id}")]
    UnknownPool {
        /// The id asked for.
        id: PoolId,
    },
}
