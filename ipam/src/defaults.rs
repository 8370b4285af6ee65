//! Docker's default address pools and the choice of a subnet when none is given.
//!
//! Docker's `bridge` driver takes, in order, 172.17.0.0/16 to 172.31.0.0/16, then
//! 192.168.0.0/20, 192.168.16.0/20, … 192.168.240.0/20 (libnetwork `ipamutils`), and skips
//! every candidate that overlaps an existing network or a route of the host, so that a new
//! network never hides a destination the host already reaches.

use std::net::Ipv4Addr;

use crate::cidr::Cidr;
use crate::error::IpamError;

/// The default subnets in the order they are tried: 15 `/16`s in 172.16.0.0/12, then 16 `/20`s in 192.168.0.0/16.
pub fn default_pool_candidates() -> impl Iterator<Item = Cidr> {
    let big = (17..=31u8)
        .map(|second| Ipv4Addr::new(172, second, 0, 0))
        .map(|addr| (addr, 16));
    let small = (0..16u8)
        .map(|i| Ipv4Addr::new(192, 168, i * 16, 0))
        .map(|addr| (addr, 20));
    big.chain(small).map(|(addr, prefix_len)| {
        Cidr::new(addr, prefix_len).expect("default pools are valid networks")
    })
}

/// The first default subnet that overlaps neither a `taken` subnet nor a host route (a default route `/0` is ignored).
pub fn choose_default_subnet(taken: &[Cidr], host_routes: &[Cidr]) -> Result<Cidr, IpamError> {
    // Every destination overlaps a default route, so Docker leaves it out of the check.
    let routes = host_routes.iter().filter(|route| route.prefix_len() != 0);
    let blocked: Vec<&Cidr> = taken.iter().chain(routes).collect();
    default_pool_candidates()
        .find(|candidate| !blocked.iter().any(|used| used.overlaps(candidate)))
        .ok_or(IpamError::NoDefaultSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn candidates_in_docker_order() {
        let all: Vec<String> = default_pool_candidates().map(|c| c.to_string()).collect();
        assert_eq!(all.len(), 31);
        assert_eq!(all[0], "172.17.0.0/16");
        assert_eq!(all[1], "172.18.0.0/16");
        assert_eq!(all[14], "172.31.0.0/16");
        assert_eq!(all[15], "192.168.0.0/20");
        assert_eq!(all[16], "192.168.16.0/20");
        assert_eq!(all[30], "192.168.240.0/20");
        // No two candidates overlap.
        let nets: Vec<Cidr> = default_pool_candidates().collect();
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                assert!(!a.overlaps(b), "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn first_candidate_when_nothing_is_used() {
        assert_eq!(
            choose_default_subnet(&[], &[]).unwrap(),
            cidr("172.17.0.0/16")
        );
    }

    #[test]
    fn skips_a_host_route() {
        let routes = [cidr("172.17.0.0/16")];
        assert_eq!(
            choose_default_subnet(&[], &routes).unwrap(),
            cidr("172.18.0.0/16")
        );
        // A narrower route inside a candidate also blocks it.
        let routes = [cidr("172.17.5.0/24")];
        assert_eq!(
            choose_default_subnet(&[], &routes).unwrap(),
            cidr("172.18.0.0/16")
        );
    }

    #[test]
    fn ignores_the_default_route() {
        let routes = [cidr("0.0.0.0/0"), cidr("10.0.0.0/8")];
        assert_eq!(
            choose_default_subnet(&[], &routes).unwrap(),
            cidr("172.17.0.0/16")
        );
    }

    #[test]
    fn skips_taken_subnets_and_routes_together() {
        let taken = [cidr("172.17.0.0/16"), cidr("172.19.0.0/16")];
        let routes = [cidr("172.18.0.0/16")];
        assert_eq!(
            choose_default_subnet(&taken, &routes).unwrap(),
            cidr("172.20.0.0/16")
        );
    }

    #[test]
    fn all_172_taken_gives_192_168() {
        let taken: Vec<Cidr> = (17..=31)
            .map(|i| cidr(&format!("172.{i}.0.0/16")))
            .collect();
        assert_eq!(
            choose_default_subnet(&taken, &[]).unwrap(),
            cidr("192.168.0.0/20")
        );
        // One wide route covers them all just the same.
        let routes = [cidr("172.16.0.0/12"), cidr("192.168.0.0/24")];
        assert_eq!(
            choose_default_subnet(&[], &routes).unwrap(),
            cidr("192.168.16.0/20")
        );
    }

    #[test]
    fn none_left() {
        let routes = [cidr("172.16.0.0/12"), cidr("192.168.0.0/16")];
        assert_eq!(
            choose_default_subnet(&[], &routes),
            Err(IpamError::NoDefaultSubnet)
        );
    }
}
