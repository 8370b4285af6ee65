//! The `macvlan` driver: a bridge with a parent interface attached as its uplink port, so the
//! endpoints appear on the parent's segment with MACs of their own.

use super::super::{ApiError, Daemon, NetworkRecord, PortOwner, PortRecord};
use super::{refuse_overlay_options, Kind, NetworkDriver};
use crate::api::{NetworkSpec, PortType};

/// The `macvlan` driver.
pub(super) struct MacvlanDriver;

impl NetworkDriver for MacvlanDriver {
    fn kind(&self) -> Kind {
        Kind::Bridged
    }

    /// `--parent IF`: an existing interface that is no port yet.
    fn check_options(&self, spec: &NetworkSpec, daemon: &Daemon) -> Result<(), ApiError> {
        let parent = spec
            .parent
            .as_deref()
            .ok_or_else(|| ApiError::invalid("the macvlan driver needs --parent IF"))?;
        crate::netlink::validate_ifname(parent).map_err(|e| ApiError::invalid(e.to_string()))?;
        if !switch::port::afpacket::interface_exists(parent) {
            return Err(ApiError::not_found(format!(
                "no such interface: {parent} (the macvlan parent)"
            )));
        }
        if daemon.ports.contains_key(parent) {
            return Err(ApiError::conflict(format!(
                "interface {parent} is already a port"
            )));
        }
        refuse_overlay_options(spec)
    }

    /// The parent, as the uplink.
    fn own_port(&self, net: &NetworkRecord) -> Option<PortRecord> {
        let parent = net.spec.parent.clone()?;
        Some(PortRecord::owned(
            parent,
            net,
            PortType::System,
            PortOwner::Uplink,
        ))
    }
}
