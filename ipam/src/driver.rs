//! The IPAM driver interface, in the shape of Docker's (libnetwork `ipamapi.Ipam`), and the default driver.
//!
//! A network driver asks its IPAM driver for a pool (`request_pool`), then for one address per
//! endpoint (`request_address`), gives them back (`release_address`) and finally drops the pool
//! (`release_pool`). [`DefaultIpam`] keeps its pools in memory. It is serializable as a whole
//! (the daemon's old state file), and it can also say what each operation changed
//! ([`DefaultIpam::track_changes`], [`IpamChange`]) and be rebuilt from its parts
//! ([`DefaultIpam::from_pools`], [`Pool::from_parts`]), so a store can write one record per
//! change instead of the whole driver.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::defaults::choose_default_subnet;
use crate::error::{IpamError, UnusableSubnet};
use crate::pool::{Pool, PoolMeta};

/// The id of a pool: the text of its subnet, e.g. `"172.17.0.0/16"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolId(String);

impl PoolId {
    /// An id from its text, e.g. one read back from saved state.
    pub fn new(id: impl Into<String>) -> PoolId {
        PoolId(id.into())
    }

    /// The id of the pool on `subnet`.
    pub fn from_subnet(subnet: Cidr) -> PoolId {
        PoolId(subnet.to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a network asks of its IPAM driver (Docker's `RequestPool` with `--subnet`, `--ip-range`, `--gateway`, `--aux-address`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRequest {
    /// The subnet; `None` picks the first free default pool.
    pub subnet: Option<Cidr>,
    /// The part of the subnet automatic allocation draws from; needs `subnet`.
    pub ip_range: Option<Cidr>,
    /// The gateway; `None` means the subnet's first usable address. Needs `subnet`.
    pub gateway: Option<Ipv4Addr>,
    /// Addresses never handed out; need `subnet`.
    pub reserved: Vec<Ipv4Addr>,
    /// The host's routes, which a default pool must not overlap; unused when `subnet` is given.
    pub host_routes: Vec<Cidr>,
}

/// An IPAM driver: hands out pools and the addresses in them.
pub trait IpamDriver {
    /// Creates a pool as `req` asks and returns its id.
    fn request_pool(&mut self, req: PoolRequest) -> Result<PoolId, IpamError>;

    /// Drops a pool with all its allocations (the control plane first checks no endpoint is left).
    fn release_pool(&mut self, id: &PoolId) -> Result<(), IpamError>;

    /// Hands out an address of pool `pool` to `owner`: `requested` if given and free, else the next free one.
    fn request_address(
        &mut self,
        pool: &PoolId,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError>;

    /// Gives an allocated address back to pool `pool`.
    fn release_address(&mut self, pool: &PoolId, ip: Ipv4Addr) -> Result<(), IpamError>;

    /// The pool with id `id`, if there is one.
    fn pool(&self, id: &PoolId) -> Option<&Pool>;
}

/// One change an operation made to a [`DefaultIpam`], for a store that writes changes, not snapshots.
///
/// Applying a driver's changes in order to its parts as they were before gives its parts after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpamChange {
    /// A pool was made, or its metadata changed (the round-robin cursor moved): `meta` is now its metadata.
    PoolSet {
        /// The pool.
        id: PoolId,
        /// Its metadata after the change.
        meta: PoolMeta,
    },
    /// A pool was dropped with all its allocations.
    PoolRemoved {
        /// The pool.
        id: PoolId,
    },
    /// An address was handed out.
    Allocated {
        /// The pool it belongs to.
        pool: PoolId,
        /// The address.
        address: Ipv4Addr,
        /// Who holds it.
        owner: String,
    },
    /// An address was given back.
    Released {
        /// The pool it belongs to.
        pool: PoolId,
        /// The address.
        address: Ipv4Addr,
    },
}

/// The built-in driver: local pools whose subnets never overlap, default subnets as Docker picks them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "IpamState")]
pub struct DefaultIpam {
    /// The pools by id.
    pools: BTreeMap<PoolId, Pool>,
    /// The changes made since the last [`DefaultIpam::take_changes`], when tracking is on.
    #[serde(skip)]
    changes: Option<Vec<IpamChange>>,
}

/// Two drivers are equal when their pools are; the change journal is not state.
impl PartialEq for DefaultIpam {
    fn eq(&self, other: &DefaultIpam) -> bool {
        self.pools == other.pools
    }
}

impl Eq for DefaultIpam {}

/// The saved form of a [`DefaultIpam`]: its pools as a list (each id is its subnet).
#[derive(Deserialize)]
struct IpamState {
    pools: Vec<Pool>,
}

/// The borrowed form written by [`DefaultIpam`]'s `Serialize`.
#[derive(Serialize)]
struct IpamStateRef<'a> {
    pools: Vec<&'a Pool>,
}

impl Serialize for DefaultIpam {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        IpamStateRef {
            pools: self.pools.values().collect(),
        }
        .serialize(serializer)
    }
}

impl TryFrom<IpamState> for DefaultIpam {
    type Error = IpamError;

    /// Rebuilds saved state, refusing pools whose subnets overlap.
    fn try_from(state: IpamState) -> Result<DefaultIpam, IpamError> {
        DefaultIpam::from_pools(state.pools)
    }
}

impl DefaultIpam {
    /// A driver with no pools.
    pub fn new() -> DefaultIpam {
        DefaultIpam::default()
    }

    /// A driver holding `pools` (each one's id is its subnet), refusing pools whose subnets overlap.
    pub fn from_pools(pools: impl IntoIterator<Item = Pool>) -> Result<DefaultIpam, IpamError> {
        let mut ipam = DefaultIpam::new();
        for pool in pools {
            ipam.check_no_overlap(pool.subnet())?;
            ipam.pools.insert(PoolId::from_subnet(pool.subnet()), pool);
        }
        Ok(ipam)
    }

    /// Starts recording every change (see [`IpamChange`]); [`DefaultIpam::take_changes`] hands them over.
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes made since tracking started or since the last call, oldest first; empty when
    /// tracking is off. A failed operation records nothing (it changed nothing).
    pub fn take_changes(&mut self) -> Vec<IpamChange> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Every change that would rebuild this driver from nothing: each pool's metadata, then its allocations.
    pub fn as_changes(&self) -> Vec<IpamChange> {
        let mut out = Vec::new();
        for (id, pool) in &self.pools {
            out.push(IpamChange::PoolSet {
                id: id.clone(),
                meta: pool.meta(),
            });
            out.extend(
                pool.allocated()
                    .map(|(address, owner)| IpamChange::Allocated {
                        pool: id.clone(),
                        address,
                        owner: owner.to_string(),
                    }),
            );
        }
        out
    }

    /// Records `change` if tracking is on.
    fn record(&mut self, change: impl FnOnce() -> IpamChange) {
        if let Some(changes) = self.changes.as_mut() {
            changes.push(change());
        }
    }

    /// All pools with their ids, in id order.
    pub fn pools(&self) -> impl Iterator<Item = (&PoolId, &Pool)> {
        self.pools.iter()
    }

    /// Refuses `subnet` if it overlaps an existing pool's subnet.
    fn check_no_overlap(&self, subnet: Cidr) -> Result<(), IpamError> {
        match self
            .pools
            .values()
            .find(|pool| pool.subnet().overlaps(&subnet))
        {
            Some(pool) => Err(IpamError::OverlappingSubnets {
                requested: subnet,
                existing: pool.subnet(),
            }),
            None => Ok(()),
        }
    }

    /// The pool with id `id`, for changing it.
    fn pool_mut(&mut self, id: &PoolId) -> Result<&mut Pool, IpamError> {
        self.pools
            .get_mut(id)
            .ok_or_else(|| IpamError::UnknownPool { id: id.clone() })
    }
}

/// Refuses a subnet that overlaps a special-purpose block ([`UnusableSubnet::BLOCKS`]): its
/// gateway would hold a loopback, multicast or link-local address.
pub fn check_usable_subnet(subnet: Cidr) -> Result<(), IpamError> {
    for (addr, len, reason) in UnusableSubnet::BLOCKS {
        let block = Cidr::containing(addr, len)?;
        if block.overlaps(&subnet) {
            return Err(IpamError::SubnetNotUsable {
                subnet,
                block,
                reason,
            });
        }
    }
    Ok(())
}

impl IpamDriver for DefaultIpam {
    fn request_pool(&mut self, req: PoolRequest) -> Result<PoolId, IpamError> {
        let subnet = match req.subnet {
            Some(subnet) => {
                check_usable_subnet(subnet)?;
                self.check_no_overlap(subnet)?;
                subnet
            }
            None => {
                // As Docker: "every ip-range or gateway must have a corresponding subnet".
                if req.ip_range.is_some() {
                    return Err(IpamError::SubnetRequired { field: "ip range" });
                }
                if req.gateway.is_some() {
                    return Err(IpamError::SubnetRequired { field: "gateway" });
                }
                if !req.reserved.is_empty() {
                    return Err(IpamError::SubnetRequired {
                        field: "reserved address",
                    });
                }
                let taken: Vec<Cidr> = self.pools.values().map(Pool::subnet).collect();
                choose_default_subnet(&taken, &req.host_routes)?
            }
        };
        let gateway = req.gateway.unwrap_or(Pool::default_gateway(subnet));
        let pool = Pool::new(subnet, Some(gateway), req.ip_range, req.reserved)?;
        let id = PoolId::from_subnet(subnet);
        self.record(|| IpamChange::PoolSet {
            id: id.clone(),
            meta: pool.meta(),
        });
        self.pools.insert(id.clone(), pool);
        Ok(id)
    }

    fn release_pool(&mut self, id: &PoolId) -> Result<(), IpamError> {
        self.pools
            .remove(id)
            .ok_or_else(|| IpamError::UnknownPool { id: id.clone() })?;
        self.record(|| IpamChange::PoolRemoved { id: id.clone() });
        Ok(())
    }

    fn request_address(
        &mut self,
        pool: &PoolId,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        let tracking = self.changes.is_some();
        let p = self.pool_mut(pool)?;
        let cursor = p.last_allocated();
        let address = p.allocate(owner, requested)?;
        // The cursor moves on automatic allocation: the pool's metadata changed too.
        let meta = (tracking && p.last_allocated() != cursor).then(|| p.meta());
        self.record(|| IpamChange::Allocated {
            pool: pool.clone(),
            address,
            owner: owner.to_string(),
        });
        if let Some(meta) = meta {
            self.record(|| IpamChange::PoolSet {
                id: pool.clone(),
                meta,
            });
        }
        Ok(address)
    }

    fn release_address(&mut self, pool: &PoolId, ip: Ipv4Addr) -> Result<(), IpamError> {
        self.pool_mut(pool)?.release(ip)?;
        self.record(|| IpamChange::Released {
            pool: pool.clone(),
            address: ip,
        });
        Ok(())
    }

    fn pool(&self, id: &PoolId) -> Option<&Pool> {
        self.pools.get(id)
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

    fn request(subnet: &str) -> PoolRequest {
        PoolRequest {
            subnet: Some(cidr(subnet)),
            ..PoolRequest::default()
        }
    }

    #[test]
    fn explicit_subnet_gets_default_gateway() {
        let mut ipam = DefaultIpam::new();
        let id = ipam.request_pool(request("10.1.0.0/24")).unwrap();
        assert_eq!(id.as_str(), "10.1.0.0/24");
        let pool = ipam.pool(&id).unwrap();
        assert_eq!(pool.subnet(), cidr("10.1.0.0/24"));
        assert_eq!(pool.gateway(), Some(ip("10.1.0.1")));
        assert_eq!(ipam.request_address(&id, "ep1", None), Ok(ip("10.1.0.2")));
    }

    #[test]
    fn default_subnets_skip_pools_and_routes() {
        let mut ipam = DefaultIpam::new();
        let routes = vec![cidr("0.0.0.0/0"), cidr("172.17.0.0/16")];
        let first = ipam
            .request_pool(PoolRequest {
                host_routes: routes.clone(),
                ..PoolRequest::default()
            })
            .unwrap();
        assert_eq!(first.as_str(), "172.18.0.0/16");
        let second = ipam
            .request_pool(PoolRequest {
                host_routes: routes,
                ..PoolRequest::default()
            })
            .unwrap();
        assert_eq!(second.as_str(), "172.19.0.0/16");
        assert_eq!(
            ipam.pool(&second).unwrap().gateway(),
            Some(ip("172.19.0.1"))
        );
    }

    #[test]
    fn refuses_overlapping_subnets_and_changes_nothing() {
        let mut ipam = DefaultIpam::new();
        let id = ipam.request_pool(request("10.0.0.0/16")).unwrap();
        ipam.request_address(&id, "a", None).unwrap();
        let before = ipam.clone();
        let err = ipam.request_pool(request("10.0.5.0/24")).unwrap_err();
        assert_eq!(
            err,
            IpamError::OverlappingSubnets {
                requested: cidr("10.0.5.0/24"),
                existing: cidr("10.0.0.0/16")
            }
        );
        assert_eq!(
            err.to_string(),
            "overlapping subnets: 10.0.5.0/24 overlaps the existing pool 10.0.0.0/16"
        );
        assert_eq!(
            ipam.request_pool(request("10.0.0.0/8"))
                .unwrap_err()
                .to_string(),
            "overlapping subnets: 10.0.0.0/8 overlaps the existing pool 10.0.0.0/16"
        );
        assert_eq!(ipam, before);
    }

    #[test]
    fn refuses_special_purpose_subnets() {
        let mut ipam = DefaultIpam::new();
        for (subnet, block, reason) in [
            ("127.0.0.0/8", "127.0.0.0/8", UnusableSubnet::Loopback),
            ("127.1.0.0/16", "127.0.0.0/8", UnusableSubnet::Loopback),
            ("96.0.0.0/3", "127.0.0.0/8", UnusableSubnet::Loopback),
            ("0.0.0.0/0", "0.0.0.0/8", UnusableSubnet::ThisNetwork),
            ("0.0.0.0/24", "0.0.0.0/8", UnusableSubnet::ThisNetwork),
            (
                "169.254.0.0/16",
                "169.254.0.0/16",
                UnusableSubnet::LinkLocal,
            ),
            (
                "169.254.7.0/24",
                "169.254.0.0/16",
                UnusableSubnet::LinkLocal,
            ),
            ("169.0.0.0/8", "169.254.0.0/16", UnusableSubnet::LinkLocal),
            ("224.0.0.0/24", "224.0.0.0/4", UnusableSubnet::Multicast),
            ("239.1.0.0/16", "224.0.0.0/4", UnusableSubnet::Multicast),
            ("240.0.0.0/24", "240.0.0.0/4", UnusableSubnet::Reserved),
            ("255.255.255.0/24", "240.0.0.0/4", UnusableSubnet::Reserved),
        ] {
            let err = ipam.request_pool(request(subnet)).unwrap_err();
            assert_eq!(
                err,
                IpamError::SubnetNotUsable {
                    subnet: cidr(subnet),
                    block: cidr(block),
                    reason
                },
                "{subnet}"
            );
            assert!(err.to_string().contains(&reason.to_string()), "{err}");
        }
        assert_eq!(
            ipam,
            DefaultIpam::new(),
            "a refused request changed nothing"
        );
        // The blocks' neighbours are fine.
        for subnet in [
            "1.0.0.0/24",
            "126.255.255.0/24",
            "128.0.0.0/16",
            "169.253.0.0/16",
        ] {
            ipam.request_pool(request(subnet))
                .unwrap_or_else(|e| panic!("{subnet}: {e}"));
        }
        ipam.request_pool(request("223.255.255.0/24")).unwrap();
    }

    #[test]
    fn refuses_bad_requests_and_changes_nothing() {
        let mut ipam = DefaultIpam::new();
        let gateway_outside = PoolRequest {
            gateway: Some(ip("10.0.1.1")),
            ..request("10.0.0.0/24")
        };
        assert!(matches!(
            ipam.request_pool(gateway_outside),
            Err(IpamError::GatewayOutsideSubnet { .. })
        ));
        let range_outside = PoolRequest {
            ip_range: Some(cidr("10.0.1.0/25")),
            ..request("10.0.0.0/24")
        };
        assert!(matches!(
            ipam.request_pool(range_outside),
            Err(IpamError::IpRangeOutsideSubnet { .. })
        ));
        assert!(matches!(
            ipam.request_pool(request("10.0.0.0/31")),
            Err(IpamError::SubnetTooSmall { .. })
        ));
        let gateway_without_subnet = PoolRequest {
            gateway: Some(ip("10.0.0.1")),
            ..PoolRequest::default()
        };
        assert_eq!(
            ipam.request_pool(gateway_without_subnet),
            Err(IpamError::SubnetRequired { field: "gateway" })
        );
        let range_without_subnet = PoolRequest {
            ip_range: Some(cidr("10.0.0.0/25")),
            ..PoolRequest::default()
        };
        assert_eq!(
            ipam.request_pool(range_without_subnet),
            Err(IpamError::SubnetRequired { field: "ip range" })
        );
        assert_eq!(ipam, DefaultIpam::new());
    }

    #[test]
    fn unknown_pool() {
        let mut ipam = DefaultIpam::new();
        let id = PoolId::new("10.9.0.0/16");
        assert_eq!(
            ipam.request_address(&id, "a", None),
            Err(IpamError::UnknownPool { id: id.clone() })
        );
        assert_eq!(
            ipam.release_address(&id, ip("10.9.0.2")),
            Err(IpamError::UnknownPool { id: id.clone() })
        );
        assert_eq!(
            ipam.release_pool(&id),
            Err(IpamError::UnknownPool { id: id.clone() })
        );
        assert!(ipam.pool(&id).is_none());
    }

    #[test]
    fn release_pool_frees_its_subnet() {
        let mut ipam = DefaultIpam::new();
        let id = ipam.request_pool(PoolRequest::default()).unwrap();
        ipam.request_address(&id, "a", None).unwrap();
        ipam.release_pool(&id).unwrap();
        assert!(ipam.pool(&id).is_none());
        assert_eq!(ipam.request_pool(PoolRequest::default()), Ok(id));
    }

    #[test]
    fn address_requests_go_to_their_pool() {
        let mut ipam = DefaultIpam::new();
        let id = ipam.request_pool(request("10.0.0.0/29")).unwrap();
        let a = ipam.request_address(&id, "a", None).unwrap();
        assert_eq!(
            ipam.request_address(&id, "b", Some(ip("10.0.0.6"))),
            Ok(ip("10.0.0.6"))
        );
        assert!(matches!(
            ipam.request_address(&id, "c", Some(ip("10.0.0.6"))),
            Err(IpamError::AddressInUse { .. })
        ));
        ipam.release_address(&id, a).unwrap();
        assert!(matches!(
            ipam.release_address(&id, a),
            Err(IpamError::NotAllocated { .. })
        ));
        assert!(!ipam.pool(&id).unwrap().is_allocated(a));
    }

    #[test]
    fn serde_round_trip_keeps_allocations_and_cursor() {
        let mut ipam = DefaultIpam::new();
        let first = ipam.request_pool(PoolRequest::default()).unwrap();
        let second = ipam
            .request_pool(PoolRequest {
                ip_range: Some(cidr("10.0.0.128/25")),
                gateway: Some(ip("10.0.0.254")),
                reserved: vec![ip("10.0.0.130")],
                ..request("10.0.0.0/24")
            })
            .unwrap();
        ipam.request_address(&first, "a", None).unwrap();
        let b = ipam.request_address(&first, "b", None).unwrap();
        ipam.request_address(&second, "c", None).unwrap();
        ipam.request_address(&second, "d", Some(ip("10.0.0.5")))
            .unwrap();
        ipam.release_address(&first, b).unwrap();

        let json = serde_json::to_string_pretty(&ipam).unwrap();
        let mut back: DefaultIpam = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ipam);
        let pool = back.pool(&second).unwrap();
        assert_eq!(pool.owner(ip("10.0.0.5")), Some("d"));
        assert_eq!(pool.reserved().collect::<Vec<_>>(), vec![ip("10.0.0.130")]);
        assert_eq!(back.pool(&first).unwrap().last_allocated(), Some(b));
        // The restored cursor still skips the address released before the save.
        assert_eq!(
            back.request_address(&first, "e", None),
            Ok(ip("172.17.0.4"))
        );
    }

    #[test]
    fn refuses_saved_state_with_overlapping_pools() {
        let json = r#"{"pools": [
            {"subnet": "10.0.0.0/16", "gateway": "10.0.0.1", "ip_range": null},
            {"subnet": "10.0.1.0/24", "gateway": "10.0.1.1", "ip_range": null}
        ]}"#;
        let err = serde_json::from_str::<DefaultIpam>(json).unwrap_err();
        assert!(err.to_string().contains("overlapping subnets"), "{err}");
    }

    /// A driver's parts as a store keeps them: each pool's metadata, each allocation.
    type Parts = (
        BTreeMap<PoolId, PoolMeta>,
        BTreeMap<(PoolId, Ipv4Addr), String>,
    );

    fn apply(parts: &mut Parts, changes: &[IpamChange]) {
        for change in changes {
            match change.clone() {
                IpamChange::PoolSet { id, meta } => {
                    parts.0.insert(id, meta);
                }
                IpamChange::PoolRemoved { id } => {
                    parts.0.remove(&id);
                    parts.1.retain(|(pool, _), _| *pool != id);
                }
                IpamChange::Allocated {
                    pool,
                    address,
                    owner,
                } => {
                    parts.1.insert((pool, address), owner);
                }
                IpamChange::Released { pool, address } => {
                    parts.1.remove(&(pool, address));
                }
            }
        }
    }

    fn rebuild(parts: &Parts) -> DefaultIpam {
        let pools = parts.0.iter().map(|(id, meta)| {
            let allocations = parts
                .1
                .iter()
                .filter(|((pool, _), _)| pool == id)
                .map(|((_, address), owner)| (*address, owner.clone()));
            Pool::from_parts(meta.clone(), allocations).unwrap()
        });
        DefaultIpam::from_pools(pools.collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn changes_replayed_on_parts_rebuild_the_driver() {
        let mut ipam = DefaultIpam::new();
        assert!(ipam.take_changes().is_empty());
        let untracked = ipam.request_pool(request("10.5.0.0/24")).unwrap();
        ipam.request_address(&untracked, "old", None).unwrap();
        assert!(ipam.take_changes().is_empty(), "tracking is off by default");

        let mut parts: Parts = Default::default();
        apply(&mut parts, &ipam.as_changes());
        assert_eq!(rebuild(&parts), ipam);

        ipam.track_changes();
        let a = ipam.request_pool(request("10.0.0.0/29")).unwrap();
        let b = ipam.request_pool(PoolRequest::default()).unwrap();
        let first = ipam.request_address(&a, "x", None).unwrap();
        ipam.request_address(&a, "y", Some(ip("10.0.0.6"))).unwrap();
        ipam.request_address(&b, "z", None).unwrap();
        ipam.release_address(&a, first).unwrap();
        // A failed operation records nothing.
        assert!(ipam.request_address(&a, "w", Some(ip("10.0.0.6"))).is_err());
        assert!(ipam.release_address(&a, first).is_err());
        ipam.release_pool(&untracked).unwrap();
        let changes = ipam.take_changes();
        assert_eq!(
            changes[2],
            IpamChange::Allocated {
                pool: a.clone(),
                address: first,
                owner: "x".into()
            }
        );
        // The automatic allocation moved the cursor: the pool's metadata follows it.
        assert!(matches!(&changes[3], IpamChange::PoolSet { id, meta }
            if *id == a && meta.last_allocated == Some(first)));
        // An explicit address does not move the cursor: no metadata change.
        assert!(matches!(&changes[4], IpamChange::Allocated { .. }));
        assert!(matches!(&changes[5], IpamChange::Allocated { .. }));
        assert_eq!(changes.len(), 9, "{changes:?}");
        apply(&mut parts, &changes);
        let rebuilt = rebuild(&parts);
        assert_eq!(rebuilt, ipam);
        // The cursor survived: the next automatic address is the same in both.
        let mut rebuilt = rebuilt;
        assert_eq!(
            rebuilt.request_address(&a, "n", None),
            ipam.request_address(&a, "n", None)
        );
        assert!(ipam.take_changes().len() == 2 && ipam.take_changes().is_empty());
    }

    #[test]
    fn from_pools_refuses_overlap_and_from_parts_bad_allocations() {
        let subnet = cidr("10.0.0.0/24");
        let pool = Pool::new(subnet, Some(ip("10.0.0.1")), None, []).unwrap();
        let inner = Pool::new(cidr("10.0.0.128/25"), None, None, []).unwrap();
        assert!(matches!(
            DefaultIpam::from_pools([pool.clone(), inner]),
            Err(IpamError::OverlappingSubnets { .. })
        ));
        let meta = pool.meta();
        assert!(matches!(
            Pool::from_parts(meta.clone(), [(ip("10.0.0.1"), "a".to_string())]),
            Err(IpamError::AddressNotUsable { .. })
        ));
        assert!(matches!(
            Pool::from_parts(meta, [(ip("10.0.1.1"), "a".to_string())]),
            Err(IpamError::AddressOutsideSubnet { .. })
        ));
    }
}
