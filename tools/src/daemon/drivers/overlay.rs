//! The `overlay` driver: a bridge stretched across hosts over VXLAN (RFC 7348). The network has
//! a VNI, a flood list of peers and a VXLAN port on its bridge; the daemon's one VXLAN endpoint
//! (`--vtep`) is opened with the first overlay network. Endpoints default to the underlay MTU
//! less the VXLAN overhead.

use super::super::{ApiError, Daemon, NetworkLive, NetworkRecord, PortLive, PortOwner, PortRecord};
use super::{Kind, NetworkDriver};
use crate::api::{NetworkSpec, PortType};
use crate::netlink::Netlink;
use std::net::{IpAddr, Ipv4Addr};
use switch::{Port, PortMode};

/// The `overlay` driver.
pub(super) struct OverlayDriver;

impl NetworkDriver for OverlayDriver {
    fn kind(&self) -> Kind {
        Kind::Bridged
    }

    fn scope(&self) -> &'static str {
        "swarm"
    }

    /// `--vni N` (unused by other overlays) and `--peer IP`s.
    fn check_options(&self, spec: &NetworkSpec, daemon: &Daemon) -> Result<(), ApiError> {
        let vni = spec
            .vni
            .ok_or_else(|| ApiError::invalid("the overlay driver needs --vni"))?;
        crate::api::check_vni(vni.into()).map_err(ApiError::invalid)?;
        if let Some(other) = daemon
            .networks
            .values()
            .find(|n| n.record.driver == super::Driver::Overlay && n.record.spec.vni == Some(vni))
        {
            return Err(ApiError::conflict(format!(
                "VNI {vni} is already used by network {}",
                other.record.name
            )));
        }
        for p in &spec.peers {
            parse_peer(p)?;
        }
        Ok(())
    }

    fn open(&self, daemon: &mut Daemon) -> Result<(), ApiError> {
        open_vtep(daemon)
    }

    /// The VXLAN port, `vxlanVNI`.
    fn own_port(&self, net: &NetworkRecord) -> Option<PortRecord> {
        let vni = net.spec.vni?;
        Some(PortRecord::owned(
            format!("vxlan{vni}"),
            net,
            PortType::Vxlan,
            PortOwner::Overlay,
        ))
    }

    /// The underlay MTU less the VXLAN overhead.
    fn default_mtu(&self, daemon: &Daemon) -> Option<u32> {
        let o = daemon.overlay.as_ref()?;
        Some(o.config().underlay_mtu.saturating_sub(vxlan::OVERHEAD_V4) as u32)
    }

    /// The sandbox builds TCP super-frames no bigger than one UDP_SEGMENT send of the VTEP (see
    /// `vxlan::segments_per_send`). Only its end: the host end must still take whatever the far
    /// VTEP rebuilt.
    fn sandbox_gso_max_segs(&self, mtu: Option<u32>) -> Option<u32> {
        mtu.map(|mtu| vxlan::segments_per_send(mtu as usize) as u32)
    }
}

/// A peer's address, as given to `--peer` or `network peer add`.
pub(in crate::daemon) fn parse_peer(text: &str) -> Result<IpAddr, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(format!("invalid peer address {text:?}")))
}

/// Opens the VXLAN endpoint (`--vtep`) the first time an overlay network needs it, and has the
/// datapath poll its socket.
fn open_vtep(d: &mut Daemon) -> Result<(), ApiError> {
    if d.overlay.is_some() {
        return Ok(());
    }
    let addr = d.vtep_addr;
    let config = vxlan::VtepConfig {
        port: addr.port(),
        underlay_mtu: underlay_mtu(*addr.ip()),
        ..vxlan::VtepConfig::default()
    };
    let overlay = vxlan::Overlay::bind(addr, config)
        .map_err(|e| ApiError::internal(format!("opening the VXLAN endpoint on {addr}: {e}")))?;
    let poller = overlay.clone();
    let fd = overlay.fd();
    d.call(move |ctl| ctl.add_poller(fd, Box::new(move |dp, now| poller.poll(dp, now))))?
        .map_err(|e| ApiError::internal(format!("polling the VXLAN socket: {e}")))?;
    tracing::info!(%addr, mtu = config.underlay_mtu, "VXLAN endpoint open");
    d.overlay = Some(overlay);
    Ok(())
}

/// Attaches an overlay network's VXLAN port: the VNI on the endpoint, the port on the bridge,
/// and the network registered with the trace hub.
pub(in crate::daemon) fn attach_vxlan_port(
    d: &Daemon,
    rec: &PortRecord,
    net: &NetworkLive,
    mode: PortMode,
) -> Result<PortLive, ApiError> {
    let overlay = d
        .overlay
        .as_ref()
        .ok_or_else(|| ApiError::internal("the VXLAN endpoint is not open"))?;
    let vni = net
        .record
        .spec
        .vni
        .ok_or_else(|| ApiError::invalid(format!("network {} has no VNI", rec.network)))?;
    let peers: Vec<IpAddr> = net
        .record
        .spec
        .peers
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let (port, counters) = overlay
        .add_vni(vni, &peers)
        .map_err(|e| ApiError::internal(format!("VNI {vni}: {e}")))?;
    let mtu = port.capabilities().mtu;
    let bridge_name = port.name().to_string();
    let network = net.id;
    let attached = d
        .call(move |ctl| ctl.add_port_with_counters(network, Box::new(port), mode, counters))
        .and_then(|r| r.map_err(|e| ApiError::internal(format!("attaching {}: {e}", rec.name))));
    let handle = match attached {
        Ok(h) => h,
        Err(e) => {
            overlay.remove_vni(vni);
            return Err(e);
        }
    };
    overlay.set_handle(vni, handle);
    d.attached(rec, handle, mtu, bridge_name)
}

/// Takes a VXLAN port's VNI off the endpoint (the port leaves the bridge with the caller).
pub(in crate::daemon) fn detach_vxlan_port(d: &Daemon, live: &PortLive) {
    let vni = d
        .networks
        .get(&live.record.network)
        .and_then(|n| n.record.spec.vni);
    if let (Some(o), Some(vni)) = (&d.overlay, vni) {
        o.remove_vni(vni);
    }
}

/// The MTU of the underlay: that of the interface holding `local`, or, for 0.0.0.0, the
/// smallest of the up interfaces with an IPv4 address (1500 if none is found).
fn underlay_mtu(local: Ipv4Addr) -> usize {
    let Ok(mut nl) = Netlink::new() else {
        return 1500;
    };
    let links = nl.list_links().unwrap_or_default();
    let mut best: Option<u32> = None;
    for l in links.iter().filter(|l| l.name != "lo" && l.up) {
        let addrs = nl.list_addresses(&l.name).unwrap_or_default();
        if local.is_unspecified() {
            if !addrs.is_empty() {
                best = Some(best.map_or(l.mtu, |b| b.min(l.mtu)));
            }
        } else if addrs.iter().any(|(a, _)| *a == local) {
            return l.mtu as usize;
        }
    }
    best.map_or(1500, |m| m as usize)
}
