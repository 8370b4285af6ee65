//! An address pool: one subnet, its gateway and reserved addresses, and who holds which address.
//!
//! The rules, as in Docker's default IPAM and CNI's `host-local` plugin:
//! - the network and broadcast addresses, the gateway and the reserved addresses are never handed out;
//! - an explicitly requested address is honoured when it is inside the subnet and free (it need
//!   not be inside the `ip_range`), or refused with the reason;
//! - otherwise the next free address after the last one handed out is taken, wrapping around, only
//!   inside the `ip_range` when there is one (round-robin: a just-released address does not come
//!   straight back, so a stale peer of the old holder does not reach the new one);
//! - every failing operation leaves the pool as it was.
//!
//! Subnets with a prefix longer than /30 are refused: a /31 or /32 has no room for a gateway and
//! a host once the network and broadcast addresses are set aside.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::error::{IpamError, Unusable};

/// The longest prefix a pool accepts (a /30 holds a gateway and one host).
pub const MAX_POOL_PREFIX_LEN: u8 = 30;

/// One subnet's addresses: gateway, reserved addresses, allocations and the round-robin cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolState")]
pub struct Pool {
    /// The network the addresses come from.
    subnet: Cidr,
    /// The gateway address, never handed out.
    gateway: Option<Ipv4Addr>,
    /// The part of the subnet that automatic allocation draws from.
    ip_range: Option<Cidr>,
    /// Addresses never handed out (Docker's `--aux-address`).
    reserved: BTreeSet<Ipv4Addr>,
    /// The addresses handed out, each with its owner's id.
    allocated: BTreeMap<Ipv4Addr, String>,
    /// The last address handed out automatically; the next search starts after it.
    last_allocated: Option<Ipv4Addr>,
}

/// The serialized form of a [`Pool`], checked by [`Pool::try_from`] when read back.
#[derive(Deserialize)]
struct PoolState {
    subnet: Cidr,
    gateway: Option<Ipv4Addr>,
    ip_range: Option<Cidr>,
    #[serde(default)]
    reserved: BTreeSet<Ipv4Addr>,
    #[serde(default)]
    allocated: BTreeMap<Ipv4Addr, String>,
    #[serde(default)]
    last_allocated: Option<Ipv4Addr>,
}

impl TryFrom<PoolState> for Pool {
    type Error = IpamError;

    /// Rebuilds a saved pool, refusing one whose allocations break the pool's rules.
    fn try_from(state: PoolState) -> Result<Pool, IpamError> {
        let meta = PoolMeta {
            subnet: state.subnet,
            gateway: state.gateway,
            ip_range: state.ip_range,
            reserved: state.reserved,
            last_allocated: state.last_allocated,
        };
        Pool::from_parts(meta, state.allocated)
    }
}

/// A pool without its allocations: what changes only when the pool is made or an address is
/// handed out automatically (the round-robin cursor). A store keeps it as one record and each
/// allocation as a record of its own, so one allocation writes a few bytes, not the whole pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMeta {
    /// The network the addresses come from.
    pub subnet: Cidr,
    /// The gateway address, never handed out.
    pub gateway: Option<Ipv4Addr>,
    /// The part of the subnet that automatic allocation draws from.
    pub ip_range: Option<Cidr>,
    /// Addresses never handed out.
    #[serde(default)]
    pub reserved: BTreeSet<Ipv4Addr>,
    /// The last address handed out automatically: the no-quick-reuse cursor.
    #[serde(default)]
    pub last_allocated: Option<Ipv4Addr>,
}

impl Pool {
    /// A pool on `subnet` with an optional gateway and ip_range; no gateway if `gateway` is `None`.
    ///
    /// Refuses a prefix longer than /30, a gateway outside the subnet or on its network or
    /// broadcast address, an ip_range not inside the subnet, and a reserved address outside it.
    /// Use [`Pool::default_gateway`] for the usual gateway.
    pub fn new(
        subnet: Cidr,
        gateway: Option<Ipv4Addr>,
        ip_range: Option<Cidr>,
        reserved: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Result<Pool, IpamError> {
        if subnet.prefix_len() > MAX_POOL_PREFIX_LEN {
            return Err(IpamError::SubnetTooSmall { subnet });
        }
        if let Some(gateway) = gateway {
            if !subnet.contains(gateway) {
                return Err(IpamError::GatewayOutsideSubnet { gateway, subnet });
            }
            if let Some(reason) = edge_address(subnet, gateway) {
                return Err(IpamError::GatewayNotUsable {
                    gateway,
                    subnet,
                    reason,
                });
            }
        }
        if let Some(ip_range) = ip_range {
            if !subnet.contains_cidr(&ip_range) {
                return Err(IpamError::IpRangeOutsideSubnet { ip_range, subnet });
            }
        }
        let reserved: BTreeSet<Ipv4Addr> = reserved.into_iter().collect();
        if let Some(&address) = reserved.iter().find(|address| !subnet.contains(**address)) {
            return Err(IpamError::ReservedOutsideSubnet { address, subnet });
        }
        Ok(Pool {
            subnet,
            gateway,
            ip_range,
            reserved,
            allocated: BTreeMap::new(),
            last_allocated: None,
        })
    }

    /// Rebuilds a pool from its parts (as [`Pool::meta`] and [`Pool::allocated`] gave them),
    /// refusing allocations that break the pool's rules (outside the subnet, on the gateway,
    /// a reserved, network or broadcast address).
    pub fn from_parts(
        meta: PoolMeta,
        allocations: impl IntoIterator<Item = (Ipv4Addr, String)>,
    ) -> Result<Pool, IpamError> {
        let mut pool = Pool::new(meta.subnet, meta.gateway, meta.ip_range, meta.reserved)?;
        for (address, owner) in allocations {
            pool.check_requestable(address)?;
            pool.allocated.insert(address, owner);
        }
        pool.last_allocated = meta.last_allocated;
        Ok(pool)
    }

    /// The pool without its allocations.
    pub fn meta(&self) -> PoolMeta {
        PoolMeta {
            subnet: self.subnet,
            gateway: self.gateway,
            ip_range: self.ip_range,
            reserved: self.reserved.clone(),
            last_allocated: self.last_allocated,
        }
    }

    /// How many addresses are allocated.
    pub fn allocated_count(&self) -> usize {
        self.allocated.len()
    }

    /// The gateway a pool on `subnet` gets when none is given: its first usable address.
    pub fn default_gateway(subnet: Cidr) -> Ipv4Addr {
        subnet.first_usable()
    }

    /// The pool's subnet.
    pub fn subnet(&self) -> Cidr {
        self.subnet
    }

    /// The gateway address, if the pool has one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    /// The part of the subnet automatic allocation draws from, if narrowed.
    pub fn ip_range(&self) -> Option<Cidr> {
        self.ip_range
    }

    /// The reserved addresses, in order.
    pub fn reserved(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.reserved.iter().copied()
    }

    /// The last address handed out automatically.
    pub fn last_allocated(&self) -> Option<Ipv4Addr> {
        self.last_allocated
    }

    /// Whether `ip` is currently allocated.
    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.allocated.contains_key(&ip)
    }

    /// The owner id `ip` is allocated to, if it is.
    pub fn owner(&self, ip: Ipv4Addr) -> Option<&str> {
        self.allocated.get(&ip).map(String::as_str)
    }

    /// The allocated addresses with their owners, in address order.
    pub fn allocated(&self) -> impl Iterator<Item = (Ipv4Addr, &str)> + '_ {
        self.allocated
            .iter()
            .map(|(ip, owner)| (*ip, owner.as_str()))
    }

    /// How many addresses automatic allocation can still hand out (inside the ip_range if set).
    pub fn available_count(&self) -> u64 {
        let Some((low, high)) = self.search_bounds() else {
            return 0;
        };
        let in_bounds = |ip: &Ipv4Addr| (low..=high).contains(&u32::from(*ip));
        // The gateway may also be listed as reserved; count it once. Allocations never
        // include the gateway or a reserved address.
        let mut blocked: BTreeSet<Ipv4Addr> =
            self.reserved.iter().copied().filter(in_bounds).collect();
        blocked.extend(self.gateway.filter(in_bounds));
        let allocated = self.allocated.keys().filter(|ip| in_bounds(ip)).count();
        u64::from(high - low) + 1 - blocked.len() as u64 - allocated as u64
    }

    /// Hands out an address to `owner`: `requested` if it is free, else the next free one.
    ///
    /// A requested address must lie inside the subnet (not necessarily inside the ip_range) and
    /// be neither the network, broadcast or gateway address, nor reserved, nor taken.
    pub fn allocate(
        &mut self,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(address) = requested {
            self.check_requestable(address)?;
            self.allocated.insert(address, owner.to_string());
            return Ok(address);
        }
        let address = self.next_free().ok_or(IpamError::PoolExhausted {
            subnet: self.subnet,
        })?;
        self.allocated.insert(address, owner.to_string());
        self.last_allocated = Some(address);
        Ok(address)
    }

    /// Gives `ip` back to the pool; returns the owner it was allocated to.
    pub fn release(&mut self, ip: Ipv4Addr) -> Result<String, IpamError> {
        self.allocated.remove(&ip).ok_or(IpamError::NotAllocated {
            address: ip,
            subnet: self.subnet,
        })
    }

    /// Why `address` cannot be handed out on request, if it cannot.
    fn check_requestable(&self, address: Ipv4Addr) -> Result<(), IpamError> {
        let subnet = self.subnet;
        if !subnet.contains(address) {
            return Err(IpamError::AddressOutsideSubnet { address, subnet });
        }
        let reason = edge_address(subnet, address).or_else(|| {
            if self.gateway == Some(address) {
                Some(Unusable::Gateway)
            } else if self.reserved.contains(&address) {
                Some(Unusable::Reserved)
            } else {
                None
            }
        });
        if let Some(reason) = reason {
            return Err(IpamError::AddressNotUsable {
                address,
                subnet,
                reason,
            });
        }
        if let Some(owner) = self.allocated.get(&address) {
            return Err(IpamError::AddressInUse {
                address,
                owner: owner.clone(),
            });
        }
        Ok(())
    }

    /// Whether `address` is neither the gateway, nor reserved, nor allocated (the caller checks the bounds).
    fn is_free(&self, address: Ipv4Addr) -> bool {
        self.gateway != Some(address)
            && !self.reserved.contains(&address)
            && !self.allocated.contains_key(&address)
    }

    /// The first and last address automatic allocation considers, as numbers; `None` if none.
    fn search_bounds(&self) -> Option<(u32, u32)> {
        let range = self.ip_range.unwrap_or(self.subnet);
        let low = u32::from(range.network()).max(u32::from(self.subnet.first_usable()));
        let high = u32::from(range.broadcast()).min(u32::from(self.subnet.last_usable()));
        (low <= high).then_some((low, high))
    }

    /// The first free address after `last_allocated`, wrapping around inside the search bounds.
    ///
    /// Not guarded by [`Pool::available_count`], which walks every allocation: from the last
    /// allocated address the next free one is usually the next address, so an allocation costs
    /// the same with 10 as with 10,000 allocated; only a full pool walks its whole range.
    fn next_free(&self) -> Option<Ipv4Addr> {
        let (low, high) = self.search_bounds()?;
        let start = match self.last_allocated.map(u32::from) {
            Some(last) if (low..high).contains(&last) => last + 1,
            _ => low,
        };
        // Ends at the first free address after `start`, wrapping around once.
        (start..=high)
            .chain(low..start)
            .map(Ipv4Addr::from)
            .find(|ip| self.is_free(*ip))
    }
}

/// Whether `address` is the network or broadcast address of `subnet` (a pool is at most a /30).
fn edge_address(subnet: Cidr, address: Ipv4Addr) -> Option<Unusable> {
    if address == subnet.network() {
        Some(Unusable::NetworkAddress)
    } else if address == subnet.broadcast() {
        Some(Unusable::BroadcastAddress)
    } else {
        None
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

    /// 10.0.0.0/29 with gateway 10.0.0.1: the usable non-gateway addresses are .2 to .6.
    fn small_pool() -> Pool {
        let subnet = cidr("10.0.0.0/29");
        Pool::new(subnet, Some(Pool::default_gateway(subnet)), None, []).unwrap()
    }

    #[test]
    fn default_gateway_is_first_usable() {
        assert_eq!(
            Pool::default_gateway(cidr("172.17.0.0/16")),
            ip("172.17.0.1")
        );
        let pool = small_pool();
        assert_eq!(pool.gateway(), Some(ip("10.0.0.1")));
        assert_eq!(pool.available_count(), 5);
    }

    #[test]
    fn refuses_bad_gateway() {
        let subnet = cidr("10.0.0.0/24");
        let err = Pool::new(subnet, Some(ip("10.0.1.1")), None, []).unwrap_err();
        assert_eq!(
            err,
            IpamError::GatewayOutsideSubnet {
                gateway: ip("10.0.1.1"),
                subnet
            }
        );
        assert_eq!(
            err.to_string(),
            "gateway 10.0.1.1 is outside the subnet 10.0.0.0/24"
        );
        let err = Pool::new(subnet, Some(ip("10.0.0.0")), None, []).unwrap_err();
        assert!(matches!(
            err,
            IpamError::GatewayNotUsable {
                reason: Unusable::NetworkAddress,
                ..
            }
        ));
        let err = Pool::new(subnet, Some(ip("10.0.0.255")), None, []).unwrap_err();
        assert!(err.to_string().contains("broadcast address"), "{err}");
    }

    #[test]
    fn refuses_ip_range_outside_subnet() {
        let subnet = cidr("10.0.0.0/24");
        for range in ["10.0.1.0/25", "10.0.0.0/23", "192.168.0.0/24"] {
            let err = Pool::new(subnet, None, Some(cidr(range)), []).unwrap_err();
            assert_eq!(
                err,
                IpamError::IpRangeOutsideSubnet {
                    ip_range: cidr(range),
                    subnet
                }
            );
        }
        assert!(Pool::new(subnet, None, Some(subnet), []).is_ok());
    }

    #[test]
    fn refuses_reserved_outside_subnet() {
        let subnet = cidr("10.0.0.0/24");
        let err = Pool::new(subnet, None, None, [ip("10.0.0.9"), ip("10.9.0.9")]).unwrap_err();
        assert_eq!(
            err,
            IpamError::ReservedOutsideSubnet {
                address: ip("10.9.0.9"),
                subnet
            }
        );
    }

    #[test]
    fn refuses_too_small_subnets() {
        for text in ["10.0.0.0/31", "10.0.0.0/32"] {
            let err = Pool::new(cidr(text), None, None, []).unwrap_err();
            assert_eq!(err, IpamError::SubnetTooSmall { subnet: cidr(text) });
            assert!(err.to_string().contains("30 or less"), "{err}");
        }
        // A /30 holds a gateway and one host.
        let subnet = cidr("10.0.0.0/30");
        let mut pool = Pool::new(subnet, Some(Pool::default_gateway(subnet)), None, []).unwrap();
        assert_eq!(pool.allocate("a", None), Ok(ip("10.0.0.2")));
        assert_eq!(
            pool.allocate("b", None),
            Err(IpamError::PoolExhausted { subnet })
        );
    }

    #[test]
    fn exhausting_a_29_never_gives_network_broadcast_or_gateway() {
        let mut pool = small_pool();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(pool.allocate(&format!("c{i}"), None).unwrap());
        }
        let expected: Vec<Ipv4Addr> = ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
            .map(ip)
            .to_vec();
        assert_eq!(got, expected);
        assert_eq!(pool.available_count(), 0);

        let before = pool.clone();
        let err = pool.allocate("c5", None).unwrap_err();
        assert_eq!(
            err,
            IpamError::PoolExhausted {
                subnet: cidr("10.0.0.0/29")
            }
        );
        assert_eq!(err.to_string(), "no free address left in 10.0.0.0/29");
        assert_eq!(pool, before);
    }

    #[test]
    fn round_robin_does_not_hand_back_a_just_released_address() {
        let mut pool = small_pool();
        let a = pool.allocate("a", None).unwrap();
        let b = pool.allocate("b", None).unwrap();
        assert_eq!(pool.release(a), Ok("a".to_string()));
        let c = pool.allocate("c", None).unwrap();
        assert_ne!(c, a);
        assert_eq!((a, b, c), (ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")));
    }

    #[test]
    fn round_robin_wraps_around() {
        let mut pool = small_pool();
        for i in 0..5 {
            pool.allocate(&format!("c{i}"), None).unwrap();
        }
        pool.release(ip("10.0.0.3")).unwrap();
        pool.release(ip("10.0.0.5")).unwrap();
        assert_eq!(pool.allocate("x", None), Ok(ip("10.0.0.3")));
        assert_eq!(pool.allocate("y", None), Ok(ip("10.0.0.5")));
        assert_eq!(pool.last_allocated(), Some(ip("10.0.0.5")));
    }

    #[test]
    fn requested_address_honoured_or_refused_with_reason() {
        let subnet = cidr("10.0.0.0/24");
        let mut pool = Pool::new(
            subnet,
            Some(ip("10.0.0.1")),
            Some(cidr("10.0.0.128/25")),
            [ip("10.0.0.200")],
        )
        .unwrap();

        // Outside the ip_range is fine for an explicit request.
        assert_eq!(
            pool.allocate("a", Some(ip("10.0.0.10"))),
            Ok(ip("10.0.0.10"))
        );
        assert_eq!(pool.owner(ip("10.0.0.10")), Some("a"));
        // An explicit request does not move the round-robin cursor.
        assert_eq!(pool.last_allocated(), None);

        let before = pool.clone();
        let refusals = [
            (
                "10.0.0.10",
                IpamError::AddressInUse {
                    address: ip("10.0.0.10"),
                    owner: "a".into(),
                },
            ),
            (
                "10.0.1.10",
                IpamError::AddressOutsideSubnet {
                    address: ip("10.0.1.10"),
                    subnet,
                },
            ),
            (
                "10.0.0.0",
                IpamError::AddressNotUsable {
                    address: ip("10.0.0.0"),
                    subnet,
                    reason: Unusable::NetworkAddress,
                },
            ),
            (
                "10.0.0.255",
                IpamError::AddressNotUsable {
                    address: ip("10.0.0.255"),
                    subnet,
                    reason: Unusable::BroadcastAddress,
                },
            ),
            (
                "10.0.0.1",
                IpamError::AddressNotUsable {
                    address: ip("10.0.0.1"),
                    subnet,
                    reason: Unusable::Gateway,
                },
            ),
            (
                "10.0.0.200",
                IpamError::AddressNotUsable {
                    address: ip("10.0.0.200"),
                    subnet,
                    reason: Unusable::Reserved,
                },
            ),
        ];
        for (address, expected) in refusals {
            assert_eq!(
                pool.allocate("b", Some(ip(address))),
                Err(expected),
                "{address}"
            );
            assert_eq!(pool, before);
        }
        let err = pool.allocate("b", Some(ip("10.0.0.1"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.0.0.1 cannot be allocated in 10.0.0.0/24: it is the gateway"
        );
        let err = pool.allocate("b", Some(ip("10.0.0.10"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.0.0.10 is already allocated to \"a\""
        );
    }

    #[test]
    fn automatic_allocation_stays_inside_ip_range() {
        let subnet = cidr("10.0.0.0/24");
        let mut pool = Pool::new(
            subnet,
            Some(ip("10.0.0.1")),
            Some(cidr("10.0.0.248/30")),
            [],
        )
        .unwrap();
        // .248 to .251: all four are hosts of the subnet.
        assert_eq!(pool.available_count(), 4);
        let got: Vec<Ipv4Addr> = (0..4)
            .map(|i| pool.allocate(&i.to_string(), None).unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.248", "10.0.0.249", "10.0.0.250", "10.0.0.251"].map(ip)
        );
        assert_eq!(
            pool.allocate("x", None),
            Err(IpamError::PoolExhausted { subnet })
        );
        // The rest of the subnet is still open to explicit requests.
        assert_eq!(pool.allocate("y", Some(ip("10.0.0.7"))), Ok(ip("10.0.0.7")));
    }

    #[test]
    fn ip_range_at_the_subnet_edge_skips_broadcast() {
        let subnet = cidr("10.0.0.0/24");
        let mut pool = Pool::new(subnet, None, Some(cidr("10.0.0.254/31")), []).unwrap();
        assert_eq!(pool.available_count(), 1);
        assert_eq!(pool.allocate("a", None), Ok(ip("10.0.0.254")));
        assert_eq!(
            pool.allocate("b", None),
            Err(IpamError::PoolExhausted { subnet })
        );
        let mut pool = Pool::new(subnet, None, Some(cidr("10.0.0.0/32")), []).unwrap();
        assert_eq!(pool.available_count(), 0);
        assert_eq!(
            pool.allocate("a", None),
            Err(IpamError::PoolExhausted { subnet })
        );
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let subnet = cidr("10.0.0.0/29");
        let mut pool = Pool::new(
            subnet,
            Some(ip("10.0.0.1")),
            None,
            [ip("10.0.0.2"), ip("10.0.0.4"), ip("10.0.0.1")],
        )
        .unwrap();
        assert_eq!(pool.available_count(), 3);
        let got: Vec<Ipv4Addr> = (0..3)
            .map(|i| pool.allocate(&i.to_string(), None).unwrap())
            .collect();
        assert_eq!(got, ["10.0.0.3", "10.0.0.5", "10.0.0.6"].map(ip));
        assert!(pool.allocate("x", None).is_err());
    }

    #[test]
    fn no_gateway_means_first_usable_is_handed_out() {
        let mut pool = Pool::new(cidr("10.0.0.0/29"), None, None, []).unwrap();
        assert_eq!(pool.available_count(), 6);
        assert_eq!(pool.allocate("a", None), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn release_errors_when_not_allocated() {
        let mut pool = small_pool();
        let before = pool.clone();
        let err = pool.release(ip("10.0.0.3")).unwrap_err();
        assert_eq!(
            err,
            IpamError::NotAllocated {
                address: ip("10.0.0.3"),
                subnet: cidr("10.0.0.0/29")
            }
        );
        assert_eq!(pool, before);
        let a = pool.allocate("a", None).unwrap();
        assert!(pool.is_allocated(a));
        pool.release(a).unwrap();
        assert!(!pool.is_allocated(a));
        assert!(pool.release(a).is_err());
    }

    #[test]
    fn allocated_iterates_in_order() {
        let mut pool = small_pool();
        pool.allocate("b", Some(ip("10.0.0.5"))).unwrap();
        pool.allocate("a", None).unwrap();
        let all: Vec<(Ipv4Addr, &str)> = pool.allocated().collect();
        assert_eq!(all, vec![(ip("10.0.0.2"), "a"), (ip("10.0.0.5"), "b")]);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut pool = Pool::new(
            cidr("10.0.0.0/24"),
            Some(ip("10.0.0.1")),
            Some(cidr("10.0.0.0/25")),
            [ip("10.0.0.9")],
        )
        .unwrap();
        pool.allocate("a", None).unwrap();
        pool.allocate("b", Some(ip("10.0.0.200"))).unwrap();
        let json = serde_json::to_string(&pool).unwrap();
        assert!(json.contains("\"subnet\":\"10.0.0.0/24\""), "{json}");
        assert!(json.contains("\"10.0.0.200\":\"b\""), "{json}");
        let back: Pool = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pool);

        // A saved allocation that breaks the rules is refused on load.
        let bad = json.replace("\"10.0.0.200\":\"b\"", "\"10.0.0.1\":\"b\"");
        let err = serde_json::from_str::<Pool>(&bad).unwrap_err();
        assert!(err.to_string().contains("it is the gateway"), "{err}");
        let bad = json.replace("\"10.0.0.200\":\"b\"", "\"10.1.0.1\":\"b\"");
        assert!(serde_json::from_str::<Pool>(&bad).is_err());
    }
}
