//! The `port` API group: attaching interfaces to a network's bridge, detaching them, listing
//! them; and the attach/detach that the drivers and endpoints use for the ports they make.

use super::commit::Order;
use super::store::Table;
use super::undo::Undo;
use super::{drivers, ApiError, Daemon, PortLive, PortOwner, PortRecord};
use crate::api::{PortRow, PortType};
use crate::netlink::{validate_ifname, Netlink};
use serde_json::json;
use std::collections::BTreeMap;
use switch::datapath::{PortHandle, PortState};
use switch::port::afpacket::AfPacketPort;
use switch::port::tap::TapPort;
use switch::{Instant, MacAddr, Port, PortMode, VlanSet};

impl Daemon {
    pub(super) fn port_add(&mut self, mut rec: PortRecord) -> Result<serde_json::Value, ApiError> {
        rec.trunks = rec.trunks.map(trunk_set);
        if self.ports.contains_key(&rec.name) {
            return Err(ApiError::conflict(format!(
                "port {} already exists",
                rec.name
            )));
        }
        let name = rec.name.clone();
        self.transaction(|d, undo| {
            d.attach_owned(rec.clone(), undo)?;
            d.commit(Order::SystemFirst, |tx| {
                tx.put(Table::Ports, &rec.name, &rec)
            })
        })?;
        Ok(json!({ "name": name }))
    }

    /// Attaches a port and keeps it, registering its detach as the undo.
    pub(super) fn attach_owned(
        &mut self,
        rec: PortRecord,
        undo: &mut Undo,
    ) -> Result<(), ApiError> {
        let live = self.attach(&rec)?;
        let name = rec.name;
        self.ports.insert(name.clone(), live);
        undo.push(move |d| {
            let _ = d.detach(&name);
        });
        Ok(())
    }

    /// Opens the port's interface and attaches it to its network's bridge.
    pub(super) fn attach(&self, rec: &PortRecord) -> Result<PortLive, ApiError> {
        validate_ifname(&rec.name).map_err(|e| ApiError::invalid(e.to_string()))?;
        let net = self.network(&rec.network)?;
        let mode = port_mode(rec.vlan, rec.trunks.as_deref())?;
        let port: Box<dyn Port> = match rec.port_type {
            PortType::System => Box::new(open_system(&rec.name)?),
            PortType::Vxlan => return drivers::attach_vxlan_port(self, rec, net, mode),
            PortType::Tap | PortType::Internal => {
                if switch::port::afpacket::interface_exists(&rec.name) {
                    return Err(ApiError::conflict(format!(
                        "interface {} already exists (use --type system to attach it)",
                        rec.name
                    )));
                }
                let tap = TapPort::create(&rec.name, net.record.spec.mtu)
                    .map_err(|e| ApiError::internal(format!("creating TAP {}: {e}", rec.name)))?;
                self.mark_tap(&rec.name);
                if let Some(addr) = &rec.address {
                    super::endpoints::set_gateway_address(&rec.name, addr)?;
                }
                Box::new(tap)
            }
        };
        let mtu = port.capabilities().mtu;
        let bridge_name = port.name().to_string();
        let network = net.id;
        let handle = self
            .call(move |ctl| ctl.add_port(network, port, mode))?
            .map_err(|e| ApiError::internal(format!("attaching {}: {e}", rec.name)))?;
        let pinned = self
            .known_stations(rec)
            .and_then(|macs| self.pin_stations(rec, handle, &macs));
        if let Err(e) = pinned {
            // The port is not kept: take it off the datapath again.
            let _ = self.call(move |ctl| {
                ctl.remove_port(handle);
            });
            return Err(e);
        }
        self.attached(rec, handle, mtu, bridge_name)
    }

    /// The stations the control plane knows behind a port it made: the endpoint's MAC on the
    /// host end of its veth, the TAP's own MAC on a gateway port. Empty for other ports.
    fn known_stations(&self, rec: &PortRecord) -> Result<Vec<MacAddr>, ApiError> {
        match rec.owner {
            Some(PortOwner::Endpoint) => self
                .endpoints
                .of_host_interface(&rec.name)
                .and_then(|e| e.mac.as_deref())
                .into_iter()
                .map(|m| {
                    m.parse().map_err(|e| {
                        ApiError::internal(format!("the MAC {m} of endpoint {}: {e}", rec.name))
                    })
                })
                .collect(),
            Some(PortOwner::Gateway) => {
                let info = Netlink::new()
                    .and_then(|mut nl| nl.link_info(&rec.name))
                    .map_err(|e| {
                        ApiError::internal(format!("reading the MAC of {}: {e}", rec.name))
                    })?
                    .ok_or_else(|| ApiError::internal(format!("gateway {} vanished", rec.name)))?;
                Ok(vec![MacAddr(info.mac)])
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Installs `macs` as static entries on the port (in its access or native VLAN), so no
    /// frame arriving elsewhere can move them: the bridge drops it as `mac_move_refused`. The
    /// entries go with the port (the bridge flushes a removed port's entries).
    pub(super) fn pin_stations(
        &self,
        rec: &PortRecord,
        handle: PortHandle,
        macs: &[MacAddr],
    ) -> Result<(), ApiError> {
        let Some(vlan) = station_vlan(rec) else {
            return Ok(());
        };
        let macs: Vec<MacAddr> = macs.iter().copied().filter(|m| m.is_unicast()).collect();
        if macs.is_empty() {
            return Ok(());
        }
        let name = rec.name.clone();
        self.call(move |ctl| {
            let (net, local) = ctl
                .dp
                .port_location(handle)
                .ok_or_else(|| ApiError::internal(format!("port {name} vanished")))?;
            let fdb = ctl
                .dp
                .bridge_mut(net)
                .ok_or_else(|| ApiError::internal(format!("the network of {name} vanished")))?
                .fdb_mut();
            let now = Instant::now();
            for mac in macs {
                fdb.add_static(now, vlan, mac, local)
                    .map_err(|e| ApiError::internal(format!("fixing {mac} on {name}: {e}")))?;
            }
            Ok(())
        })?
    }

    /// A port the datapath has just taken, with its counters.
    pub(super) fn attached(
        &self,
        rec: &PortRecord,
        handle: PortHandle,
        mtu: usize,
        bridge_name: String,
    ) -> Result<PortLive, ApiError> {
        let counters = self
            .call(move |ctl| ctl.dp.counters(handle))?
            .ok_or_else(|| ApiError::internal("port vanished while attaching"))?;
        Ok(PortLive {
            record: rec.clone(),
            handle,
            counters,
            mtu,
            bridge_name,
        })
    }

    pub(super) fn detach(&mut self, name: &str) -> Result<PortLive, ApiError> {
        let live = self
            .ports
            .remove(name)
            .ok_or_else(|| ApiError::not_found(format!("no such port: {name}")))?;
        let handle = live.handle;
        // Captures of the port end with it.
        self.captures.remove(name);
        if live.record.port_type == PortType::Vxlan {
            drivers::detach_vxlan_port(self, &live);
        }
        // Dropping the port on the datapath thread closes it (a TAP vanishes).
        self.call(move |ctl| {
            ctl.remove_port(handle);
        })?;
        Ok(live)
    }

    pub(super) fn port_remove(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        let rec = &self.port(name)?.record;
        if let Some(owner) = rec.owner {
            return Err(ApiError::conflict(format!(
                "port {name} is the {owner} port of network {}; it goes away with it",
                rec.network
            )));
        }
        // The store first: when it refuses, the port stays attached.
        self.commit(Order::StoreFirst, |tx| {
            tx.delete(Table::Ports, name).map(drop)
        })?;
        let problems: Vec<String> = self
            .detach(name)
            .err()
            .map(|e| e.message)
            .into_iter()
            .collect();
        let what = format!("port {name} removed");
        ApiError::unless_problems(&problems, &what, json!({ "removed": name }))
    }

    /// Each port's state and current MTU, from the datapath.
    fn port_states(&self) -> Result<BTreeMap<String, (PortState, usize)>, ApiError> {
        let handles: Vec<(String, PortHandle)> = self
            .ports
            .iter()
            .map(|(n, p)| (n.clone(), p.handle))
            .collect();
        self.call(move |ctl| {
            handles
                .into_iter()
                .filter_map(|(n, h)| {
                    let state = ctl.dp.port_state(h)?;
                    let mtu = ctl.dp.capabilities(h)?.mtu;
                    Some((n, (state, mtu)))
                })
                .collect()
        })
    }

    pub(super) fn port_list(&self) -> Result<serde_json::Value, ApiError> {
        let states = self.port_states()?;
        let rows: Vec<PortRow> = self
            .ports
            .values()
            .map(|p| {
                let c = p.counters.snapshot();
                PortRow {
                    name: p.record.name.clone(),
                    port_type: p.record.port_type,
                    network: p.record.network.clone(),
                    state: match states.get(&p.record.name) {
                        Some((PortState::Up, _)) => "up".into(),
                        _ => "down".into(),
                    },
                    mtu: states.get(&p.record.name).map_or(p.mtu, |(_, mtu)| *mtu),
                    vlan: vlan_text(p.record.vlan, p.record.trunks.as_deref()),
                    rx_packets: c.rx_packets,
                    tx_packets: c.tx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_bytes: c.tx_bytes,
                    drops: c.total_drops(),
                }
            })
            .collect();
        super::rows(rows)
    }
}

/// Brings an existing interface up (as Open vSwitch does when it joins) and opens it.
fn open_system(name: &str) -> Result<AfPacketPort, ApiError> {
    if !switch::port::afpacket::interface_exists(name) {
        return Err(ApiError::not_found(format!("no such interface: {name}")));
    }
    Netlink::new()
        .and_then(|mut nl| nl.set_up(name))
        .map_err(|e| ApiError::internal(format!("bringing up {name}: {e}")))?;
    AfPacketPort::open(name).map_err(|e| ApiError::internal(format!("opening {name}: {e}")))
}

/// A VLAN id the request gave, checked.
pub(super) fn check_vlan(v: u16) -> Result<u16, ApiError> {
    crate::api::check_vlan(v.into()).map_err(ApiError::invalid)
}

fn port_mode(vlan: Option<u16>, trunks: Option<&[u16]>) -> Result<PortMode, ApiError> {
    match trunks {
        None => Ok(PortMode::Access(check_vlan(vlan.unwrap_or(1))?)),
        Some(list) => {
            let mut set = VlanSet::empty();
            for v in list {
                set.insert(check_vlan(*v)?);
            }
            let native = vlan.map(check_vlan).transpose()?;
            Ok(PortMode::Trunk {
                native,
                allowed: set,
            })
        }
    }
}

/// The VLAN of the stations behind a port: its access VLAN, or a trunk's native VLAN.
fn station_vlan(rec: &PortRecord) -> Option<u16> {
    match rec.trunks {
        None => Some(rec.vlan.unwrap_or(1)),
        Some(_) => rec.vlan,
    }
}

/// A trunk's VLAN list as stored and shown: sorted, each VLAN once.
fn trunk_set(mut list: Vec<u16>) -> Vec<u16> {
    list.sort_unstable();
    list.dedup();
    list
}

fn vlan_text(vlan: Option<u16>, trunks: Option<&[u16]>) -> String {
    match trunks {
        None => vlan.unwrap_or(1).to_string(),
        Some(t) => {
            let list: Vec<String> = trunk_set(t.to_vec()).iter().map(u16::to_string).collect();
            format!("trunk:{}", list.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlans_and_modes_are_checked() {
        assert!(check_vlan(0).is_err() && check_vlan(4095).is_err() && check_vlan(10).is_ok());
        assert_eq!(
            check_vlan(0).unwrap_err().kind,
            crate::api::ErrorKind::Invalid
        );
        assert_eq!(port_mode(None, None).unwrap(), PortMode::Access(1));
        let trunk = port_mode(Some(5), Some(&[10, 20])).unwrap();
        assert!(trunk.carries(10) && trunk.carries(20) && trunk.carries(5) && !trunk.carries(30));
        assert!(port_mode(None, Some(&[0])).is_err());
        assert_eq!(vlan_text(None, None), "1");
        assert_eq!(vlan_text(Some(5), Some(&[10, 20])), "trunk:10,20");
    }

    #[test]
    fn trunk_lists_are_sorted_and_deduplicated() {
        assert_eq!(trunk_set(vec![30, 10, 30, 20, 10]), vec![10, 20, 30]);
        assert_eq!(trunk_set(Vec::new()), Vec::<u16>::new());
        // Also when a stored list (from an older daemon) still has duplicates.
        assert_eq!(vlan_text(None, Some(&[20, 10, 20])), "trunk:10,20");
    }
}
