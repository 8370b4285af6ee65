//! The options of `docker network create` as `CreateNetwork` carries them, read into vswitch's
//! network settings.
//!
//! Docker puts a few options of its own at the top of `Options` (`--internal`, `--ipv6`) and
//! every `-o KEY=VALUE` in a map under `com.docker.network.generic`. That map holds one value
//! per key, so a list (`vswitch.peer`) is written with commas: `-o vswitch.peer=IP1,IP2`.
//! Unknown `-o` keys are refused with the list of the known ones; unknown top-level keys are
//! Docker's own business and are left alone.

use super::{ipv6_unsupported, parse_ipv4, NetworkDriver, Scope};
use serde_json::{Map, Value};
use std::net::Ipv4Addr;

/// The top-level key holding the `-o` options.
pub const GENERIC: &str = "com.docker.network.generic";
/// The top-level key of `--ipv6`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// The top-level key of `--internal`.
pub const INTERNAL: &str = "com.docker.network.internal";

/// `-o vswitch.driver=bridge|overlay|macvlan`: the vswitch driver (default bridge).
pub const OPT_DRIVER: &str = "vswitch.driver";
/// `-o vswitch.vni=N`: the VXLAN network identifier of an overlay.
pub const OPT_VNI: &str = "vswitch.vni";
/// `-o vswitch.peer=IP[,IP…]`: the VTEPs of the overlay's other hosts.
pub const OPT_PEER: &str = "vswitch.peer";
/// `-o vswitch.scope=local|swarm`: this host, or every host of the cluster.
pub const OPT_SCOPE: &str = "vswitch.scope";
/// `-o vswitch.network=NAME`: the cluster network a swarm-scope Docker network is, the name
/// the hosts meet on (Docker tells a network driver its id, never its name, and each host's
/// dockerd makes up its own id).
pub const OPT_NETWORK: &str = "vswitch.network";
/// `-o parent=IF`: the parent interface of a macvlan network (Docker's macvlan option).
pub const OPT_PARENT: &str = "parent";
/// `-o com.docker.network.driver.mtu=N`: the MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// `-o com.docker.network.bridge.enable_icc=BOOL`: endpoints may talk to each other.
pub const OPT_ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// `-o com.docker.network.bridge.enable_ip_masquerade=BOOL`: masquerade outgoing traffic.
pub const OPT_ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// `-o com.docker.network.bridge.host_binding_ipv4=IP`: the default host address of published
/// ports.
pub const OPT_HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";

/// Every `-o` key the plugin knows.
pub const KNOWN: [&str; 10] = [
    OPT_DRIVER,
    OPT_VNI,
    OPT_PEER,
    OPT_SCOPE,
    OPT_NETWORK,
    OPT_PARENT,
    OPT_MTU,
    OPT_ENABLE_ICC,
    OPT_ENABLE_IP_MASQUERADE,
    OPT_HOST_BINDING_IPV4,
];

/// The network settings read from `CreateNetwork`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkOptions {
    /// The vswitch driver.
    pub driver: NetworkDriver,
    /// The VNI of an overlay.
    pub vni: Option<u32>,
    /// The overlay's peers.
    pub peers: Vec<Ipv4Addr>,
    /// The macvlan parent interface.
    pub parent: Option<String>,
    /// The MTU.
    pub mtu: Option<u32>,
    /// `--internal`.
    pub internal: bool,
    /// `--ipv6`.
    pub ipv6: bool,
    /// ICC on or off; None: the default.
    pub enable_icc: Option<bool>,
    /// Masquerading on or off; None: the default.
    pub enable_ip_masquerade: Option<bool>,
    /// The default host address of published ports.
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// This host or the cluster.
    pub scope: Scope,
    /// The cluster network's name (`vswitch.network`).
    pub network: Option<String>,
}

/// Reads the options of a `CreateNetwork` request.
pub fn parse_network_options(options: &Map<String, Value>) -> Result<NetworkOptions, String> {
    let mut out = NetworkOptions {
        internal: top_level_bool(options, INTERNAL)?,
        ipv6: top_level_bool(options, ENABLE_IPV6)?,
        ..NetworkOptions::default()
    };
    let generic = match options.get(GENERIC) {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(format!("option {GENERIC} must be a map, not {other}")),
    };
    for (key, value) in generic {
        let text = option_text(key, value)?;
        let text = text.trim();
        match key.as_str() {
            OPT_DRIVER => out.driver = parse_driver(text)?,
            OPT_VNI => out.vni = Some(parse_number(key, text)?),
            OPT_PEER => out.peers = parse_peers(text)?,
            OPT_SCOPE => out.scope = parse_scope(text)?,
            OPT_NETWORK => out.network = Some(parse_network_name(text)?),
            OPT_PARENT => out.parent = Some(parse_parent(text)?),
            OPT_MTU => out.mtu = Some(parse_number(key, text)?),
            OPT_ENABLE_ICC => out.enable_icc = Some(parse_bool(key, text)?),
            OPT_ENABLE_IP_MASQUERADE => out.enable_ip_masquerade = Some(parse_bool(key, text)?),
            OPT_HOST_BINDING_IPV4 => out.host_binding_ipv4 = Some(parse_ipv4(key, text)?),
            _ => {
                return Err(format!(
                    "unknown option -o {key}: vswitch knows {}",
                    KNOWN.join(", ")
                ))
            }
        }
    }
    Ok(out)
}

/// A top-level flag Docker sets (`true`/`false`, or absent).
fn top_level_bool(options: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => parse_bool(key, s),
        Some(other) => Err(format!("option {key} must be true or false, not {other}")),
    }
}

/// An `-o` value as text (Docker sends strings; numbers and booleans are taken as written).
fn option_text(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("option -o {key} must be a string, not {other}")),
    }
}

fn parse_driver(text: &str) -> Result<NetworkDriver, String> {
    match text {
        "bridge" => Ok(NetworkDriver::Bridge),
        "overlay" => Ok(NetworkDriver::Overlay),
        "macvlan" => Ok(NetworkDriver::Macvlan),
        other => Err(format!(
            "invalid -o {OPT_DRIVER}={other}: the vswitch drivers for Docker networks are bridge, overlay and macvlan"
        )),
    }
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    match text {
        "local" => Ok(Scope::Local),
        "swarm" => Ok(Scope::Swarm),
        other => Err(format!(
            "invalid -o {OPT_SCOPE}={other}: expected local or swarm"
        )),
    }
}

/// A cluster network's name: what `vswitchctl network create` accepts.
fn parse_network_name(text: &str) -> Result<String, String> {
    crate::api::check_name("network", text)
        .map(|()| text.to_string())
        .map_err(|e| format!("-o {OPT_NETWORK}: {e}"))
}

/// A decimal number that fits a u32.
fn parse_number(key: &str, text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("invalid -o {key}={text}: expected a whole number"))
}

/// A boolean as Go's `strconv.ParseBool` reads it (Docker's own drivers use it).
fn parse_bool(key: &str, text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid -o {key}={text}: expected true or false")),
    }
}

/// A comma-separated list of IPv4 addresses, without duplicates.
fn parse_peers(text: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut peers = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.contains(':') {
            return Err(ipv6_unsupported(&format!("-o {OPT_PEER}={part}")));
        }
        let ip = parse_ipv4(&format!("-o {OPT_PEER}"), part)?;
        if !peers.contains(&ip) {
            peers.push(ip);
        }
    }
    if peers.is_empty() {
        return Err(format!(
            "invalid -o {OPT_PEER}={text}: expected IP[,IP…] (one -o per key; separate peers with commas)"
        ));
    }
    Ok(peers)
}

/// An interface name (checked here only for shape; the daemon checks it exists).
fn parse_parent(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() < 16
        && !text.contains(['/', ' ', ':'])
        && text != "."
        && text != "..";
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid -o {OPT_PARENT}={text}: an interface name has 1-15 characters, no '/', ':' or spaces"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetworkOptions, String> {
        match v {
            Value::Object(m) => parse_network_options(&m),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn no_options_is_a_plain_bridge() {
        let o = parse(json!({})).unwrap();
        assert_eq!(o, NetworkOptions::default());
        let o = parse(json!({ GENERIC: null, ENABLE_IPV6: false })).unwrap();
        assert_eq!(o.driver, NetworkDriver::Bridge);
        assert!(!o.ipv6);
    }

    #[test]
    fn every_known_option_is_read() {
        let o = parse(json!({
            INTERNAL: true,
            "com.docker.network.something_docker_adds": "x",
            GENERIC: {
                "vswitch.driver": "overlay",
                "vswitch.vni": "42",
                "vswitch.peer": "192.0.2.2, 192.0.2.3,192.0.2.2",
                "vswitch.scope": "swarm",
                "com.docker.network.driver.mtu": "1400",
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "1",
                "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1",
            }
        }))
        .unwrap();
        assert_eq!(o.driver, NetworkDriver::Overlay);
        assert_eq!(o.vni, Some(42));
        assert_eq!(
            o.peers,
            vec![
                "192.0.2.2".parse::<Ipv4Addr>().unwrap(),
                "192.0.2.3".parse().unwrap()
            ]
        );
        assert_eq!(o.scope, Scope::Swarm);
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.enable_icc, Some(false));
        assert_eq!(o.enable_ip_masquerade, Some(true));
        assert_eq!(o.host_binding_ipv4, Some(Ipv4Addr::LOCALHOST));
        assert!(o.internal);

        let o =
            parse(json!({ GENERIC: { "vswitch.driver": "macvlan", "parent": "eth1" } })).unwrap();
        assert_eq!(o.driver, NetworkDriver::Macvlan);
        assert_eq!(o.parent.as_deref(), Some("eth1"));
    }

    #[test]
    fn bad_options_are_refused_clearly() {
        let cases = [
            (
                json!({ GENERIC: { "vswitch.drvier": "overlay" } }),
                "unknown option -o vswitch.drvier",
            ),
            (
                json!({ GENERIC: { "vswitch.driver": "host" } }),
                "bridge, overlay and macvlan",
            ),
            (
                json!({ GENERIC: { "vswitch.vni": "forty" } }),
                "whole number",
            ),
            (json!({ GENERIC: { "vswitch.vni": "-1" } }), "whole number"),
            (json!({ GENERIC: { "vswitch.peer": "" } }), "IP[,IP…]"),
            (
                json!({ GENERIC: { "vswitch.peer": "192.0.2.300" } }),
                "not an IPv4 address",
            ),
            (
                json!({ GENERIC: { "vswitch.peer": "2001:db8::1" } }),
                "IPv6 is not supported",
            ),
            (
                json!({ GENERIC: { "vswitch.scope": "global" } }),
                "local or swarm",
            ),
            (json!({ GENERIC: { "parent": "a/b" } }), "interface name"),
            (
                json!({ GENERIC: { "com.docker.network.bridge.enable_icc": "maybe" } }),
                "true or false",
            ),
            (
                json!({ GENERIC: { "com.docker.network.driver.mtu": {"x": 1} } }),
                "must be a string",
            ),
            (
                json!({ GENERIC: ["vswitch.driver=overlay"] }),
                "must be a map",
            ),
            (json!({ INTERNAL: 3 }), "true or false"),
        ];
        for (options, want) in cases {
            let e = parse(options.clone()).unwrap_err();
            assert!(e.contains(want), "{options}: {e:?} lacks {want:?}");
        }
    }
}
