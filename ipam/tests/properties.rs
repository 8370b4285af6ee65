//! Property tests: random sequences of operations never break the allocation rules.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipam::{Cidr, DefaultIpam, IpamDriver, IpamError, Pool, PoolRequest};
use proptest::prelude::*;

/// One step of a random run against a pool.
#[derive(Debug, Clone)]
enum Op {
    /// Allocate the next free address.
    Allocate,
    /// Allocate this offset from the subnet's network address (may be anything, even outside).
    Request(u32),
    /// Release the n-th allocated address (modulo their number), or a free one if none.
    Release(usize),
    /// Release this offset from the network address, allocated or not.
    ReleaseAny(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Allocate),
        2 => (0u32..80).prop_map(Op::Request),
        3 => any::<usize>().prop_map(Op::Release),
        1 => (0u32..80).prop_map(Op::ReleaseAny),
    ]
}

/// A pool on 10.0.0.0/26 to /30 with a random gateway, ip_range and reserved addresses.
fn pool() -> impl Strategy<Value = Pool> {
    (
        26u8..=30,
        any::<u32>(),
        any::<bool>(),
        0u8..=6,
        any::<u32>(),
        proptest::collection::vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(prefix_len, gateway_pick, has_gateway, range_extra, range_pick, reserved_picks)| {
                let subnet = Cidr::new(Ipv4Addr::new(10, 0, 0, 0), prefix_len).unwrap();
                let size = subnet.size() as u32;
                let at = |offset: u32| Ipv4Addr::from(u32::from(subnet.network()) + offset);
                let gateway = has_gateway.then(|| at(1 + gateway_pick % (size - 2)));
                let ip_range = (range_extra > 0).then(|| {
                    let range_len = (prefix_len + range_extra).min(32);
                    Cidr::containing(at(range_pick % size), range_len).unwrap()
                });
                let reserved: Vec<Ipv4Addr> =
                    reserved_picks.iter().map(|pick| at(pick % size)).collect();
                Pool::new(subnet, gateway, ip_range, reserved).unwrap()
            },
        )
}

/// Counts by brute force the addresses automatic allocation may still hand out.
fn brute_force_available(pool: &Pool) -> u64 {
    let subnet = pool.subnet();
    let range = pool.ip_range().unwrap_or(subnet);
    let reserved: Vec<Ipv4Addr> = pool.reserved().collect();
    (u32::from(range.network())..=u32::from(range.broadcast()))
        .map(Ipv4Addr::from)
        .filter(|ip| *ip != subnet.network() && *ip != subnet.broadcast())
        .filter(|ip| {
            Some(*ip) != pool.gateway() && !reserved.contains(ip) && !pool.is_allocated(*ip)
        })
        .count() as u64
}

proptest! {
    #[test]
    fn random_runs_keep_the_rules(mut pool in pool(), ops in proptest::collection::vec(op(), 1..120)) {
        let subnet = pool.subnet();
        let reserved: Vec<Ipv4Addr> = pool.reserved().collect();
        let at = |offset: u32| Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(offset));
        let mut model: BTreeMap<Ipv4Addr, String> = BTreeMap::new();

        for (step, op) in ops.into_iter().enumerate() {
            let before = pool.clone();
            let available = pool.available_count();
            prop_assert_eq!(available, brute_force_available(&pool));
            let owner = format!("owner-{step}");
            match op {
                Op::Allocate | Op::Request(_) => {
                    let requested = match op {
                        Op::Request(offset) => Some(at(offset)),
                        _ => None,
                    };
                    match pool.allocate(&owner, requested) {
                        Ok(ip) => {
                            prop_assert!(!model.contains_key(&ip), "{} handed out twice", ip);
                            prop_assert!(subnet.contains(ip));
                            prop_assert_ne!(ip, subnet.network());
                            prop_assert_ne!(ip, subnet.broadcast());
                            prop_assert_ne!(Some(ip), pool.gateway());
                            prop_assert!(!reserved.contains(&ip));
                            if let Some(wanted) = requested {
                                prop_assert_eq!(ip, wanted);
                            } else if let Some(range) = pool.ip_range() {
                                prop_assert!(range.contains(ip));
                            }
                            model.insert(ip, owner);
                        }
                        Err(err) => {
                            prop_assert_eq!(&pool, &before);
                            if requested.is_none() {
                                prop_assert_eq!(err, IpamError::PoolExhausted { subnet });
                                prop_assert_eq!(available, 0);
                            }
                        }
                    }
                    if requested.is_none() && available > 0 {
                        prop_assert_eq!(pool.available_count(), available - 1);
                    }
                }
                Op::Release(n) => {
                    let target = model.keys().nth(n % model.len().max(1)).copied().unwrap_or(at(2));
                    let result = pool.release(target);
                    match model.remove(&target) {
                        Some(owner) => prop_assert_eq!(result, Ok(owner)),
                        None => {
                            prop_assert!(result.is_err());
                            prop_assert_eq!(&pool, &before);
                        }
                    }
                }
                Op::ReleaseAny(offset) => {
                    let target = at(offset);
                    let result = pool.release(target);
                    prop_assert_eq!(result.is_ok(), model.remove(&target).is_some());
                    if result.is_err() {
                        prop_assert_eq!(&pool, &before);
                    }
                }
            }
            let actual: BTreeMap<Ipv4Addr, String> = pool.allocated().map(|(ip, owner)| (ip, owner.to_string())).collect();
            prop_assert_eq!(&actual, &model);
        }

        // What is saved is what comes back.
        let json = serde_json::to_string(&pool).unwrap();
        let back: Pool = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, pool);
    }

    #[test]
    fn requested_pools_never_overlap(requests in proptest::collection::vec((any::<u32>(), 8u8..=30, any::<bool>()), 1..20)) {
        let mut ipam = DefaultIpam::new();
        for (addr, prefix_len, explicit) in requests {
            let subnet = explicit.then(|| Cidr::containing(Ipv4Addr::from(addr), prefix_len).unwrap());
            let before = ipam.clone();
            if ipam.request_pool(PoolRequest { subnet, ..PoolRequest::default() }).is_err() {
                prop_assert_eq!(&ipam, &before);
            }
            let subnets: Vec<Cidr> = ipam.pools().map(|(_, pool)| pool.subnet()).collect();
            for (i, a) in subnets.iter().enumerate() {
                for b in &subnets[i + 1..] {
                    prop_assert!(!a.overlaps(b), "{} overlaps {}", a, b);
                }
            }
        }
    }

    #[test]
    fn cidr_text_round_trips(addr in any::<u32>(), prefix_len in 0u8..=32) {
        let cidr = Cidr::containing(Ipv4Addr::from(addr), prefix_len).unwrap();
        prop_assert_eq!(cidr.to_string().parse::<Cidr>(), Ok(cidr));
        prop_assert!(cidr.contains(Ipv4Addr::from(addr)));
        prop_assert!(cidr.contains(cidr.broadcast()));
        prop_assert_eq!(u64::from(u32::from(cidr.broadcast()) - u32::from(cidr.network())) + 1, cidr.size());
    }

    #[test]
    fn cidr_parsing_never_panics(text in "\\PC{0,24}", dotted in "[0-9./]{0,20}") {
        let _ = text.parse::<Cidr>();
        let _ = dotted.parse::<Cidr>();
    }
}
