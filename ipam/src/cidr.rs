//! IPv4 networks in CIDR notation (RFC 4632 § 3.1): an address and a prefix length.
//!
//! A [`Cidr`] is always a network: the bits of its address past the prefix are zero, so
//! `"172.17.0.1/16"` is refused with a hint to write `172.17.0.0/16`. It is written and read as
//! the text `"172.17.0.0/16"`, also by serde. Only IPv4 exists for now; the fields are private so
//! that an IPv6 variant can be added behind the same type later.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::IpamError;

/// An IPv4 network: a network address and a prefix length from 0 to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address, host bits all zero.
    addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    prefix_len: u8,
}

/// The netmask for a prefix length as a number (`/24` → `0xffff_ff00`).
fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl Cidr {
    /// The network `addr/prefix_len`; refuses a prefix over 32 or an address with host bits set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Cidr, IpamError> {
        if prefix_len > 32 {
            return Err(IpamError::InvalidPrefix {
                input: format!("{addr}/{prefix_len}"),
            });
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        if network != addr {
            return Err(IpamError::HostBitsSet {
                input: format!("{addr}/{prefix_len}"),
                suggestion: Cidr {
                    addr: network,
                    prefix_len,
                },
            });
        }
        Ok(Cidr { addr, prefix_len })
    }

    /// The network that contains `addr`, its host bits cleared; refuses a prefix over 32.
    pub fn containing(addr: Ipv4Addr, prefix_len: u8) -> Result<Cidr, IpamError> {
        if prefix_len > 32 {
            return Err(IpamError::InvalidPrefix {
                input: format!("{addr}/{prefix_len}"),
            });
        }
        let addr = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        Ok(Cidr { addr, prefix_len })
    }

    /// The prefix length (the `16` of `172.17.0.0/16`).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask (`255.255.0.0` for a `/16`).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix_len))
    }

    /// The network address: the first address, host bits all zero.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The broadcast address: the last address, host bits all one (the network itself for a `/32`).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix_len))
    }

    /// The first address a host may use: network + 1, or the network itself for `/31` (RFC 3021) and `/32`.
    pub fn first_usable(&self) -> Ipv4Addr {
        if self.prefix_len >= 31 {
            self.network()
        } else {
            Ipv4Addr::from(u32::from(self.network()) + 1)
        }
    }

    /// The last address a host may use: broadcast - 1, or the broadcast itself for `/31` (RFC 3021) and `/32`.
    pub fn last_usable(&self) -> Ipv4Addr {
        if self.prefix_len >= 31 {
            self.broadcast()
        } else {
            Ipv4Addr::from(u32::from(self.broadcast()) - 1)
        }
    }

    /// The number of addresses in the network, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.addr)
    }

    /// Whether every address of `other` lies inside this network.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }

    /// Whether the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = IpamError;

    /// Parses `ADDRESS/PREFIX`, e.g. `"172.17.0.0/16"`; no spaces, host bits must be zero.
    fn from_str(input: &str) -> Result<Cidr, IpamError> {
        let Some((address, prefix)) = input.split_once('/') else {
            // "10.0.0.0" lacks only its prefix; "abc" is not an address at all.
            return Err(match input.parse::<Ipv4Addr>() {
                Ok(_) => IpamError::MissingPrefix {
                    input: input.to_string(),
                },
                Err(_) => IpamError::InvalidAddress {
                    input: input.to_string(),
                    address: input.to_string(),
                },
            });
        };
        let addr: Ipv4Addr = address.parse().map_err(|_| IpamError::InvalidAddress {
            input: input.to_string(),
            address: address.to_string(),
        })?;
        // Digits only: `u8::from_str` would also take "+16".
        let prefix_len = if !prefix.is_empty()
            && prefix.len() <= 2
            && prefix.bytes().all(|b| b.is_ascii_digit())
        {
            prefix.parse::<u8>().ok().filter(|len| *len <= 32)
        } else {
            None
        };
        let Some(prefix_len) = prefix_len else {
            return Err(IpamError::InvalidPrefix {
                input: input.to_string(),
            });
        };
        Cidr::new(addr, prefix_len).map_err(|err| match err {
            IpamError::HostBitsSet { suggestion, .. } => IpamError::HostBitsSet {
                input: input.to_string(),
                suggestion,
            },
            other => other,
        })
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        let net = cidr("172.17.0.0/16");
        assert_eq!(net.network(), ip("172.17.0.0"));
        assert_eq!(net.prefix_len(), 16);
        assert_eq!(net.to_string(), "172.17.0.0/16");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("10.1.2.3/32").to_string(), "10.1.2.3/32");
    }

    #[test]
    fn address_arithmetic() {
        let net = cidr("172.17.0.0/16");
        assert_eq!(net.netmask(), ip("255.255.0.0"));
        assert_eq!(net.broadcast(), ip("172.17.255.255"));
        assert_eq!(net.first_usable(), ip("172.17.0.1"));
        assert_eq!(net.last_usable(), ip("172.17.255.254"));
        assert_eq!(net.size(), 65536);

        let p2p = cidr("10.0.0.0/31");
        assert_eq!(p2p.first_usable(), ip("10.0.0.0"));
        assert_eq!(p2p.last_usable(), ip("10.0.0.1"));
        assert_eq!(p2p.size(), 2);

        let host = cidr("10.0.0.7/32");
        assert_eq!(host.broadcast(), ip("10.0.0.7"));
        assert_eq!(host.first_usable(), ip("10.0.0.7"));
        assert_eq!(host.last_usable(), ip("10.0.0.7"));
        assert_eq!(host.size(), 1);

        let all = cidr("0.0.0.0/0");
        assert_eq!(all.broadcast(), ip("255.255.255.255"));
        assert_eq!(all.size(), 1 << 32);
        assert!(all.contains(ip("1.2.3.4")));
    }

    #[test]
    fn containment_and_overlap() {
        let big = cidr("10.0.0.0/8");
        let small = cidr("10.1.0.0/16");
        let other = cidr("192.168.0.0/20");
        assert!(big.contains(ip("10.255.255.255")));
        assert!(!big.contains(ip("11.0.0.0")));
        assert!(big.contains_cidr(&small));
        assert!(!small.contains_cidr(&big));
        assert!(big.contains_cidr(&big));
        assert!(big.overlaps(&small));
        assert!(small.overlaps(&big));
        assert!(!big.overlaps(&other));
        assert!(!cidr("192.168.0.0/20").overlaps(&cidr("192.168.16.0/20")));
        assert!(cidr("0.0.0.0/0").overlaps(&other));
    }

    #[test]
    fn new_checks_prefix_and_host_bits() {
        assert_eq!(Cidr::new(ip("10.0.0.0"), 24).unwrap(), cidr("10.0.0.0/24"));
        assert!(matches!(
            Cidr::new(ip("10.0.0.0"), 33),
            Err(IpamError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            Cidr::new(ip("10.0.0.1"), 24),
            Err(IpamError::HostBitsSet { .. })
        ));
        assert_eq!(
            Cidr::containing(ip("10.0.0.1"), 24).unwrap(),
            cidr("10.0.0.0/24")
        );
    }

    #[test]
    fn refuses_bad_address() {
        let err = "300.1.1.0/24".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err,
            IpamError::InvalidAddress {
                input: "300.1.1.0/24".into(),
                address: "300.1.1.0".into()
            }
        );
        assert!(
            err.to_string().contains("not a valid IPv4 address"),
            "{err}"
        );
        assert!(matches!(
            "/24".parse::<Cidr>(),
            Err(IpamError::InvalidAddress { .. })
        ));
        assert!(matches!(
            "fd00::/64".parse::<Cidr>(),
            Err(IpamError::InvalidAddress { .. })
        ));
        assert!(matches!(
            " 10.0.0.0/24".parse::<Cidr>(),
            Err(IpamError::InvalidAddress { .. })
        ));
    }

    #[test]
    fn refuses_bad_prefix() {
        for text in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/abc",
            "10.0.0.0/008",
            "10.0.0.0/24/1",
        ] {
            let err = text.parse::<Cidr>().unwrap_err();
            assert_eq!(
                err,
                IpamError::InvalidPrefix { input: text.into() },
                "{text}"
            );
        }
        let err = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(err.to_string().contains("from 0 to 32"), "{err}");
    }

    #[test]
    fn refuses_host_bits_with_suggestion() {
        let err = "172.17.0.1/16".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err,
            IpamError::HostBitsSet {
                input: "172.17.0.1/16".into(),
                suggestion: cidr("172.17.0.0/16")
            }
        );
        let message = err.to_string();
        assert!(message.contains("host bits are set"), "{message}");
        assert!(message.contains("172.17.0.0/16"), "{message}");

        let err = "10.0.0.1/24".parse::<Cidr>().unwrap_err();
        assert!(
            err.to_string().contains("did you mean 10.0.0.0/24"),
            "{err}"
        );
    }

    #[test]
    fn refuses_missing_prefix_and_garbage() {
        let err = "10.0.0.0".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err,
            IpamError::MissingPrefix {
                input: "10.0.0.0".into()
            }
        );
        assert!(err.to_string().contains("missing prefix length"), "{err}");
        for text in ["abc", ""] {
            let err = text.parse::<Cidr>().unwrap_err();
            assert_eq!(
                err,
                IpamError::InvalidAddress {
                    input: text.into(),
                    address: text.into()
                },
                "{text}"
            );
        }
    }

    #[test]
    fn serde_as_string() {
        let net = cidr("192.168.16.0/20");
        let json = serde_json::to_string(&net).unwrap();
        assert_eq!(json, "\"192.168.16.0/20\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), net);
        let err = serde_json::from_str::<Cidr>("\"10.0.0.1/24\"").unwrap_err();
        assert!(err.to_string().contains("host bits are set"), "{err}");
        assert!(serde_json::from_str::<Cidr>("42").is_err());
    }
}
