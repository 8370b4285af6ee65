//! The `bridge` driver: a learning bridge on this host, an address pool, and a gateway TAP in
//! the daemon's namespace holding the pool's gateway address (as docker0 holds 172.17.0.1).

use super::super::{NetworkRecord, PortOwner, PortRecord, DEFAULT_NETWORK};
use super::{Kind, NetworkDriver};
use crate::api::PortType;

/// The gateway port of the default `bridge` network (the docker0 of vswitch).
const DEFAULT_GATEWAY_PORT: &str = "vswitch0";
/// Prefix of the other bridge networks' gateway ports, followed by 12 digits of the id.
const GATEWAY_PREFIX: &str = "vsg";

/// The `bridge` driver.
pub(super) struct BridgeDriver;

impl NetworkDriver for BridgeDriver {
    fn kind(&self) -> Kind {
        Kind::Bridged
    }

    /// The gateway TAP, when the pool has a gateway.
    fn own_port(&self, net: &NetworkRecord) -> Option<PortRecord> {
        let ipam = net.ipam.as_ref()?;
        let gateway = ipam.gateway?;
        let name = if net.name == DEFAULT_NETWORK {
            DEFAULT_GATEWAY_PORT.to_string()
        } else {
            format!("{GATEWAY_PREFIX}{}", net.short_id())
        };
        let mut port = PortRecord::owned(name, net, PortType::Internal, PortOwner::Gateway);
        port.address = Some(format!("{gateway}/{}", ipam.subnet.prefix_len()));
        Some(port)
    }
}
