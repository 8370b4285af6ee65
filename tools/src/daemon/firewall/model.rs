//! The desired state of the L3 edge: networks as the firewall sees them and published ports.
//!
//! The [`Model`] is plain data. The daemon keeps it in step with its own state (network create
//! and rm, connect with `--publish`, disconnect) and hands it to
//! [`Firewall::apply`](super::Firewall::apply), which turns the whole of it into the rules of our
//! table. Every change is validated here first, all or nothing, so that a refused request leaves
//! the model, and hence the kernel, as it was.

use super::FirewallError;
use ipam::Cidr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// A network as the L3 edge sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEdge {
    /// The network's name (rules carry it in their comment).
    pub name: String,
    /// The network's IPv4 subnet.
    pub subnet: Cidr,
    /// The host-side interface that holds the gateway address (the switch's gateway port).
    pub gateway_if: String,
    /// `--internal`: nothing is forwarded in or out, and no port can be published.
    #[serde(default)]
    pub internal: bool,
    /// `com.docker.network.bridge.enable_ip_masquerade` (default on).
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// `com.docker.network.bridge.host_binding_ipv4`: the host address used by bindings that
    /// name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_binding_ipv4: Option<Ipv4Addr>,
}

fn yes() -> bool {
    true
}

impl NetworkEdge {
    /// A non-internal, masquerading network with no default host address.
    pub fn new(name: impl Into<String>, subnet: Cidr, gateway_if: impl Into<String>) -> Self {
        NetworkEdge {
            name: name.into(),
            subnet,
            gateway_if: gateway_if.into(),
            internal: false,
            masquerade: true,
            host_binding_ipv4: None,
        }
    }
}

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default, as in Docker).
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `"tcp"` or `"udp"`, as nftables and Docker write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of ports, `start..=end`, with `1 <= start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// The first port.
    pub start: u16,
    /// The last port (equal to `start` for a single port).
    pub end: u16,
}

impl PortRange {
    /// The range `start..=end`; refuses port 0 and an empty range.
    pub fn new(start: u16, end: u16) -> Result<PortRange, FirewallError> {
        if start == 0 || end == 0 {
            return Err(FirewallError::Invalid("port 0 cannot be published".into()));
        }
        if end < start {
            return Err(FirewallError::Invalid(format!(
                "port range {start}-{end} ends before it starts"
            )));
        }
        Ok(PortRange { start, end })
    }

    /// One port.
    pub fn single(port: u16) -> Result<PortRange, FirewallError> {
        PortRange::new(port, port)
    }

    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Whether the range holds `port`.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// The ports, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.start..=self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A published port (or range): host `host_ip:host_ports/proto` → `sandbox_ip:container_ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    /// The network the sandbox's endpoint is on.
    pub network: String,
    /// The endpoint's address on that network.
    pub sandbox_ip: Ipv4Addr,
    /// TCP or UDP.
    pub proto: Proto,
    /// The host address the port is published on; `None`: every local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// The host port(s).
    pub host_ports: PortRange,
    /// The sandbox's port(s); as many as `host_ports`.
    pub container_ports: PortRange,
}

impl PortBinding {
    /// The host address the binding matches, after the network's `host_binding_ipv4` default.
    pub fn effective_host_ip(&self, net: Option<&NetworkEdge>) -> Option<Ipv4Addr> {
        self.host_ip
            .or_else(|| net.and_then(|n| n.host_binding_ipv4))
            .filter(|ip| !ip.is_unspecified())
    }

    /// Whether this binding and `other` would claim the same host port for the same protocol.
    pub fn clashes_with(
        &self,
        mine: Option<Ipv4Addr>,
        other: &PortBinding,
        theirs: Option<Ipv4Addr>,
    ) -> bool {
        self.proto == other.proto
            && self.host_ports.overlaps(&other.host_ports)
            && match (mine, theirs) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for PortBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:")?,
            None => f.write_str("0.0.0.0:")?,
        }
        write!(
            f,
            "{}->{}:{}/{}",
            self.host_ports, self.sandbox_ip, self.container_ports, self.proto
        )
    }
}

/// Everything the firewall must program: networks by name and the published ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// Networks by name.
    pub networks: BTreeMap<String, NetworkEdge>,
    /// Published ports, in the order they were added.
    pub bindings: Vec<PortBinding>,
}

impl Model {
    /// An empty model: no network, no binding.
    pub fn new() -> Model {
        Model::default()
    }

    /// Adds (or replaces, after `kill -9` replay) a network; refuses a name, gateway interface
    /// or subnet another network already has.
    pub fn add_network(&mut self, net: NetworkEdge) -> Result<(), FirewallError> {
        if net.name.is_empty() {
            return Err(FirewallError::Invalid("a network needs a name".into()));
        }
        crate::netlink::validate_ifname(&net.gateway_if)
            .map_err(|e| FirewallError::Invalid(format!("network {}: gateway: {e}", net.name)))?;
        for other in self.networks.values().filter(|o| o.name != net.name) {
            if other.gateway_if == net.gateway_if {
                return Err(FirewallError::Conflict(format!(
                    "network {}: gateway interface {} is already network {}'s",
                    net.name, net.gateway_if, other.name
                )));
            }
            if other.subnet.overlaps(&net.subnet) {
                return Err(FirewallError::Conflict(format!(
                    "network {}: subnet {} overlaps network {}'s {}",
                    net.name, net.subnet, other.name, other.subnet
                )));
            }
        }
        if net.internal && self.bindings.iter().any(|b| b.network == net.name) {
            return Err(FirewallError::Invalid(format!(
                "network {} has published ports and cannot become internal",
                net.name
            )));
        }
        self.networks.insert(net.name.clone(), net);
        Ok(())
    }

    /// Removes a network and every binding on it; returns whether it was there.
    pub fn remove_network(&mut self, name: &str) -> bool {
        self.bindings.retain(|b| b.network != name);
        self.networks.remove(name).is_some()
    }

    /// Checks `new` against the model (network known and not internal, sandbox address in its
    /// subnet, equal range lengths, no host port claimed twice) without changing anything.
    pub fn check_bindings(&self, new: &[PortBinding]) -> Result<(), FirewallError> {
        for (i, b) in new.iter().enumerate() {
            let net = self.networks.get(&b.network).ok_or_else(|| {
                FirewallError::NotFound(format!("publish {b}: no network {}", b.network))
            })?;
            if net.internal {
                return Err(FirewallError::Invalid(format!(
                    "publish {b}: network {} is internal; its ports cannot be published",
                    net.name
                )));
            }
            if !net.subnet.contains(b.sandbox_ip) {
                return Err(FirewallError::Invalid(format!(
                    "publish {b}: {} is not in network {}'s subnet {}",
                    b.sandbox_ip, net.name, net.subnet
                )));
            }
            if b.host_ports.len() != b.container_ports.len() {
                return Err(FirewallError::Invalid(format!(
                    "publish {b}: host range {} and container range {} differ in length",
                    b.host_ports, b.container_ports
                )));
            }
            let mine = b.effective_host_ip(Some(net));
            let earlier = self.bindings.iter().chain(new[..i].iter());
            for other in earlier {
                let theirs = other.effective_host_ip(self.networks.get(&other.network));
                if b.clashes_with(mine, other, theirs) {
                    return Err(FirewallError::Conflict(format!(
                        "publish {b}: host port {}/{} is already published by vswitch ({other})",
                        b.host_ports, b.proto
                    )));
                }
            }
        }
        Ok(())
    }

    /// Adds bindings, all or none (see [`Model::check_bindings`]).
    pub fn add_bindings(&mut self, new: &[PortBinding]) -> Result<(), FirewallError> {
        self.check_bindings(new)?;
        self.bindings.extend_from_slice(new);
        Ok(())
    }

    /// Removes the bindings of one endpoint (`network disconnect`); returns how many went.
    pub fn remove_bindings(&mut self, network: &str, sandbox_ip: Ipv4Addr) -> usize {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !(b.network == network && b.sandbox_ip == sandbox_ip));
        before - self.bindings.len()
    }

    /// The bindings of one network.
    pub fn bindings_of<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a PortBinding> {
        self.bindings.iter().filter(move |b| b.network == network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn model() -> Model {
        let mut m = Model::new();
        m.add_network(NetworkEdge::new("a", cidr("10.1.0.0/24"), "vsgw-a"))
            .unwrap();
        m.add_network(NetworkEdge::new("b", cidr("10.2.0.0/24"), "vsgw-b"))
            .unwrap();
        m
    }

    fn bind(net: &str, ip: &str, host: Option<&str>, hp: u16, cp: u16) -> PortBinding {
        PortBinding {
            network: net.into(),
            sandbox_ip: ip.parse().unwrap(),
            proto: Proto::Tcp,
            host_ip: host.map(|h| h.parse().unwrap()),
            host_ports: PortRange::single(hp).unwrap(),
            container_ports: PortRange::single(cp).unwrap(),
        }
    }

    #[test]
    fn a_host_port_is_published_once() {
        let mut m = model();
        m.add_bindings(&[bind("a", "10.1.0.2", None, 8080, 80)])
            .unwrap();
        let err = m
            .add_bindings(&[bind("b", "10.2.0.2", None, 8080, 80)])
            .unwrap_err();
        assert!(
            err.to_string().contains("already published by vswitch"),
            "{err}"
        );
        // A specific address clashes with "any", and two different addresses do not clash.
        let err = m
            .add_bindings(&[bind("b", "10.2.0.2", Some("192.0.2.1"), 8080, 80)])
            .unwrap_err();
        assert!(matches!(err, FirewallError::Conflict(_)));
        m.add_bindings(&[bind("b", "10.2.0.2", Some("192.0.2.1"), 9090, 80)])
            .unwrap();
        m.add_bindings(&[bind("b", "10.2.0.3", Some("192.0.2.2"), 9090, 80)])
            .unwrap();
        // UDP is another port space.
        let mut udp = bind("a", "10.1.0.2", None, 8080, 80);
        udp.proto = Proto::Udp;
        m.add_bindings(&[udp]).unwrap();
    }

    #[test]
    fn bindings_are_all_or_nothing() {
        let mut m = model();
        let batch = [
            bind("a", "10.1.0.2", None, 7000, 80),
            bind("a", "10.1.0.3", None, 7000, 80),
        ];
        assert!(m.add_bindings(&batch).is_err());
        assert!(m.bindings.is_empty(), "nothing of a refused batch stays");
    }

    #[test]
    fn bad_bindings_are_refused() {
        let mut m = model();
        let mut internal = NetworkEdge::new("i", cidr("10.3.0.0/24"), "vsgw-i");
        internal.internal = true;
        m.add_network(internal).unwrap();
        assert!(m
            .add_bindings(&[bind("i", "10.3.0.2", None, 80, 80)])
            .is_err());
        assert!(m
            .add_bindings(&[bind("zz", "10.3.0.2", None, 80, 80)])
            .is_err());
        assert!(m
            .add_bindings(&[bind("a", "10.2.0.2", None, 80, 80)])
            .is_err());
        let mut uneven = bind("a", "10.1.0.2", None, 80, 80);
        uneven.host_ports = PortRange::new(8000, 8010).unwrap();
        let err = m.add_bindings(&[uneven]).unwrap_err();
        assert!(err.to_string().contains("differ in length"), "{err}");
        assert!(PortRange::new(0, 3).is_err());
        assert!(PortRange::new(9, 3).is_err());
    }

    #[test]
    fn networks_do_not_share_gateways_or_subnets() {
        let mut m = model();
        assert!(m
            .add_network(NetworkEdge::new("c", cidr("10.1.0.0/16"), "vsgw-c"))
            .is_err());
        assert!(m
            .add_network(NetworkEdge::new("c", cidr("10.9.0.0/16"), "vsgw-a"))
            .is_err());
        // Replacing a network by its own name is a replay, not a conflict.
        m.add_network(NetworkEdge::new("a", cidr("10.1.0.0/24"), "vsgw-a"))
            .unwrap();
    }

    #[test]
    fn removing_a_network_or_endpoint_removes_its_bindings() {
        let mut m = model();
        m.add_bindings(&[
            bind("a", "10.1.0.2", None, 1, 1),
            bind("a", "10.1.0.3", None, 2, 2),
        ])
        .unwrap();
        m.add_bindings(&[bind("b", "10.2.0.2", None, 3, 3)])
            .unwrap();
        assert_eq!(m.remove_bindings("a", "10.1.0.2".parse().unwrap()), 1);
        assert!(m.remove_network("a"));
        assert_eq!(m.bindings, vec![bind("b", "10.2.0.2", None, 3, 3)]);
    }
}
