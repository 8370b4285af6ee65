//! Value parsers shared by the subcommands: the cheap checks done before anything is sent, so a
//! typo gets a clear message (and exit status 2) instead of a round trip to the daemon. The
//! rules are the daemon's own (`tools::api`'s limits, `tools::netlink::validate_ifname`): the
//! CLI only parses the text first.

use std::net::IpAddr;
use switch::MacAddr;
use tools::api::{self, MTUS, VLAN_IDS, VNIS};

/// A number for `what`, or a message saying which numbers it takes.
fn number(s: &str, what: &str, range: std::fmt::Arguments<'_>) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("not {what}: {s:?} (expected a number {range})"))
}

/// An IEEE 802.1Q VLAN id, 1-4094 (0 and 4095 are reserved).
pub fn vlan(s: &str) -> Result<u16, String> {
    let range = format_args!("{}-{}", VLAN_IDS.start(), VLAN_IDS.end());
    api::check_vlan(number(s, "a VLAN id", range)?)
}

/// A MAC address such as `02:42:ac:11:00:02` (or with dashes).
pub fn mac(s: &str) -> Result<MacAddr, String> {
    s.parse::<MacAddr>().map_err(|e| e.to_string())
}

/// A VXLAN network identifier, 1-16777215 (24 bits, RFC 7348 § 5).
pub fn vni(s: &str) -> Result<u32, String> {
    let range = format_args!("{}-{}", VNIS.start(), VNIS.end());
    api::check_vni(number(s, "a VNI", range)?)
}

/// An IPv4 or IPv6 address.
pub fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("not an IP address: {s:?} (expected e.g. 10.0.0.1)"))
}

/// A prefix in CIDR notation such as `172.18.0.0/16`; returned as written.
pub fn cidr(s: &str) -> Result<String, String> {
    let bad = || format!("not a CIDR prefix: {s:?} (expected e.g. 172.18.0.0/16)");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!(
            "prefix length {len} is too long for {addr} (at most {max})"
        ));
    }
    Ok(s.to_string())
}

/// A DNS alias (`network connect --alias`): DNS labels joined by `.`.
pub fn alias(s: &str) -> Result<String, String> {
    api::check_alias(s)?;
    Ok(s.to_string())
}

/// A Linux interface name: 1-15 bytes, no `/`, `:`, NUL or whitespace, not `.` or `..`.
pub fn ifname(s: &str) -> Result<String, String> {
    tools::netlink::validate_ifname(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// An interface MTU, 68-65535 (the IPv4 minimum to the largest IP packet).
pub fn mtu(s: &str) -> Result<u32, String> {
    let range = format_args!("{}-{}", MTUS.start(), MTUS.end());
    api::check_mtu(number(s, "an MTU", range)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_range() {
        assert_eq!(vlan("1"), Ok(1));
        assert_eq!(vlan("4094"), Ok(4094));
        for bad in ["0", "4095", "65536", "99999999999", "-1", "", "x"] {
            assert!(vlan(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vni_range() {
        assert_eq!(vni("1"), Ok(1));
        assert_eq!(vni("16777215"), Ok(16_777_215));
        for bad in ["0", "16777216", "4294967296", "", "x"] {
            assert!(vni(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert!(cidr("10.0.0.0/8").is_ok());
        assert!(cidr("0.0.0.0/0").is_ok());
        assert!(cidr("fd00::/64").is_ok());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "/8",
            "fd00::/129",
            "x/8",
        ] {
            assert!(cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ifnames() {
        assert!(ifname("veth1").is_ok());
        assert!(ifname("a23456789012345").is_ok());
        for bad in [
            "",
            "a234567890123456",
            "a/b",
            "a b",
            ".",
            "..",
            "eth0:1",
            "a\tb",
        ] {
            assert!(ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs_and_mtus() {
        assert_eq!(
            mac("02:42:AC:11:00:02").unwrap().to_string(),
            "02:42:ac:11:00:02"
        );
        assert!(mac("02:42:ac:11:00").is_err());
        assert_eq!(mtu("1500"), Ok(1500));
        assert!(mtu("67").is_err() && mtu("65536").is_err());
    }
}
