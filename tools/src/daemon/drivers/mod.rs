//! Network drivers: what makes a bridge, host, none, macvlan or overlay network different.
//!
//! [`Driver`] is an enum because the set is closed and stored by name: matching on it is
//! exhaustive, it is `Copy`, and it serializes as the same string the state files have always
//! held (`"driver": "bridge"`). What each driver does lives in its own file as an implementation
//! of [`NetworkDriver`], reached through [`Driver::ops`] (a trait rather than a `match` per
//! question, so that one driver's knowledge sits in one file). The trait's default methods
//! follow from the driver's [`Kind`] (a bridge with a pool, or only a namespace), so a driver's
//! file holds only what sets it apart: the ports it makes (gateway TAP, VXLAN port, uplink), the
//! options it takes, its scope and MTU, and what connecting a sandbox does.

mod bridge;
mod host;
mod macvlan;
mod none;
pub(super) mod overlay;

pub(super) use overlay::{attach_vxlan_port, detach_vxlan_port, parse_peer};

use super::endpoints::Connect;
use super::undo::Undo;
use super::{ApiError, Daemon, EndpointRecord, NetworkRecord, PortRecord};
use crate::api::NetworkSpec;
use serde::{Deserialize, Serialize};

/// A network driver, stored by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A learning bridge on this host with a gateway TAP, as docker0.
    Bridge,
    /// A bridge stretched across hosts over VXLAN.
    Overlay,
    /// A bridge with a parent interface as its uplink.
    Macvlan,
    /// The daemon's own network namespace.
    Host,
    /// Loopback only.
    None,
}

impl Driver {
    /// Every driver, in the order `network create --help` lists them.
    pub const ALL: [Driver; 5] = [
        Driver::Bridge,
        Driver::Overlay,
        Driver::Macvlan,
        Driver::Host,
        Driver::None,
    ];

    /// The name it is stored and asked for by.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
            Driver::Macvlan => "macvlan",
            Driver::Host => "host",
            Driver::None => "none",
        }
    }

    /// One line on what the driver is for (`network create --help`).
    pub fn about(self) -> &'static str {
        match self {
            Driver::Bridge => "A learning bridge on this host (the default)",
            Driver::Overlay => "A bridge stretched across hosts over VXLAN",
            Driver::Macvlan => "Endpoints with their own MAC on a parent interface",
            Driver::Host => "The host's own network stack",
            Driver::None => "A loopback-only sandbox",
        }
    }

    /// What the driver does.
    pub(super) fn ops(self) -> &'static dyn NetworkDriver {
        match self {
            Driver::Bridge => &bridge::BridgeDriver,
            Driver::Overlay => &overlay::OverlayDriver,
            Driver::Macvlan => &macvlan::MacvlanDriver,
            Driver::Host => &host::HostDriver,
            Driver::None => &none::NoneDriver,
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Driver {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Driver, ApiError> {
        Driver::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Driver::ALL.iter().map(|d| d.name()).collect();
                ApiError::invalid(format!(
                    "unknown driver {s:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// What a driver's networks are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A bridge with an address pool; each endpoint is a veth pair with its host end on the
    /// bridge, and a sandbox may join many such networks.
    Bridged,
    /// Only the sandbox's namespace: no pool, no interface; one such network per daemon, and
    /// a sandbox on it is on no other.
    Namespace,
}

/// What one driver does; the defaults follow from its [`Kind`].
pub(super) trait NetworkDriver: Sync {
    /// What its networks are made of.
    fn kind(&self) -> Kind;

    /// The network has an address pool, and its endpoints a veth pair each on its bridge.
    fn has_pool(&self) -> bool {
        self.kind() == Kind::Bridged
    }

    /// `local`, or `swarm` for a network that spans hosts (as `docker network ls` says).
    fn scope(&self) -> &'static str {
        "local"
    }

    /// At most one network of this driver may exist.
    fn only_one(&self) -> bool {
        self.kind() == Kind::Namespace
    }

    /// A sandbox on such a network may be on no other.
    fn sole_network(&self) -> bool {
        self.kind() == Kind::Namespace
    }

    /// Checks the driver's own options in `spec` (the daemon as it is, for clashes).
    fn check_options(&self, spec: &NetworkSpec, _daemon: &Daemon) -> Result<(), ApiError> {
        refuse_overlay_options(spec)
    }

    /// Opens what the driver needs in the daemon before its first network works (the VXLAN
    /// endpoint); kept open afterwards.
    fn open(&self, _daemon: &mut Daemon) -> Result<(), ApiError> {
        Ok(())
    }

    /// The port the driver puts on a new network's bridge, if any (gateway, VXLAN, uplink).
    fn own_port(&self, _net: &NetworkRecord) -> Option<PortRecord> {
        None
    }

    /// The MTU of the network's endpoints when the network sets none.
    fn default_mtu(&self, _daemon: &Daemon) -> Option<u32> {
        None
    }

    /// The largest super-frame (in segments) the sandbox end of an endpoint may build.
    fn sandbox_gso_max_segs(&self, _mtu: Option<u32>) -> Option<u32> {
        None
    }

    /// Connects a sandbox: makes whatever the endpoint needs (registering its undo) and
    /// returns the endpoint, not yet stored. By default: on a bridged network an address and a
    /// veth pair; on a namespace network, nothing (the endpoint is a record).
    fn connect(
        &self,
        daemon: &mut Daemon,
        c: &Connect<'_>,
        undo: &mut Undo,
    ) -> Result<EndpointRecord, ApiError> {
        match self.kind() {
            Kind::Bridged => daemon.connect_veth(c, undo),
            Kind::Namespace => Ok(c.bare_endpoint()),
        }
    }

    /// What disconnecting a sandbox undoes beyond the endpoint's veth and address.
    fn disconnect(&self, _daemon: &mut Daemon, _sandbox: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

/// `--vni` and `--peer` belong to the overlay driver only.
fn refuse_overlay_options(spec: &NetworkSpec) -> Result<(), ApiError> {
    if spec.vni.is_some() || !spec.peers.is_empty() {
        return Err(ApiError::invalid(
            "--vni and --peer are for the overlay driver",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_are_stored_by_their_old_names() {
        for d in Driver::ALL {
            let s = serde_json::to_string(&d).unwrap();
            assert_eq!(s, format!("\"{}\"", d.name()));
            assert_eq!(serde_json::from_str::<Driver>(&s).unwrap(), d);
            assert_eq!(d.name().parse::<Driver>().unwrap(), d);
        }
        let e = "vlan".parse::<Driver>().unwrap_err();
        assert_eq!(e.kind, crate::api::ErrorKind::Invalid);
        assert!(
            e.message.contains("bridge, overlay, macvlan, host, none"),
            "{e}"
        );
    }

    #[test]
    fn what_differs_lives_with_the_driver() {
        let pools: Vec<Driver> = Driver::ALL
            .into_iter()
            .filter(|d| d.ops().has_pool())
            .collect();
        assert_eq!(pools, [Driver::Bridge, Driver::Overlay, Driver::Macvlan]);
        for d in Driver::ALL {
            let alone = matches!(d, Driver::Host | Driver::None);
            assert_eq!(d.ops().only_one(), alone, "{d}");
            assert_eq!(d.ops().sole_network(), alone, "{d}");
            let scope = if d == Driver::Overlay {
                "swarm"
            } else {
                "local"
            };
            assert_eq!(d.ops().scope(), scope, "{d}");
        }
    }
}
