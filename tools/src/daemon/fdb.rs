//! The `fdb` API group (the MAC tables of the networks' bridges) and `stats` (per-port
//! counters and drops by reason, with the VXLAN endpoint's own refusals as port `vtep`).

use super::ports::check_vlan;
use super::{ApiError, Daemon};
use crate::api::{FdbRow, StatsRow};
use serde_json::json;
use std::collections::BTreeMap;
use switch::datapath::{NetworkId, PortHandle};
use switch::{Instant, MacAddr};

/// The pseudo-port `stats` and `capture` know the VXLAN endpoint by.
pub(super) const VTEP_PORT: &str = "vtep";

/// What `fdb show` needs of one network.
struct FdbNet {
    name: String,
    id: NetworkId,
    vni: Option<u32>,
    /// The network's VXLAN port, whose entries have a remote VTEP.
    vxlan: Option<PortHandle>,
}

impl Daemon {
    pub(super) fn fdb_show(&self, network: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let names: Vec<&str> = match network {
            Some(n) => vec![self.network(n)?.record.name.as_str()],
            None => self.networks.keys().map(String::as_str).collect(),
        };
        let nets: Vec<FdbNet> = names
            .into_iter()
            .map(|n| {
                let live = &self.networks[n];
                FdbNet {
                    name: n.to_string(),
                    id: live.id,
                    vni: live.record.spec.vni,
                    vxlan: self.vxlan_port(n).map(|p| p.handle),
                }
            })
            .collect();
        let overlay = self.overlay.clone();
        let rows = self.call(move |ctl| {
            let now = Instant::now();
            let mut rows = Vec::new();
            for net in nets {
                let Some(bridge) = ctl.dp.bridge(net.id) else {
                    continue;
                };
                let vxlan_local = net
                    .vxlan
                    .and_then(|h| ctl.dp.port_location(h))
                    .map(|(_, local)| local);
                for (vlan, mac, e) in bridge.fdb().iter(now) {
                    let remote = match (&overlay, net.vni) {
                        (Some(o), Some(vni)) if Some(e.port) == vxlan_local => {
                            o.remote_of(now, vni, mac).map(|ip| ip.to_string())
                        }
                        _ => None,
                    };
                    rows.push(FdbRow {
                        mac: mac.to_string(),
                        port: bridge.port_name(e.port).to_string(),
                        vlan,
                        age_s: now.saturating_since(e.last_seen).as_secs(),
                        is_static: e.is_static,
                        network: net.name.clone(),
                        remote,
                    });
                }
            }
            rows.sort_by(|a, b| {
                (&a.network, &a.port, a.vlan, &a.mac).cmp(&(&b.network, &b.port, b.vlan, &b.mac))
            });
            rows
        })?;
        super::rows(rows)
    }

    pub(super) fn fdb_add(
        &self,
        mac: &str,
        port: &str,
        vlan: Option<u16>,
    ) -> Result<serde_json::Value, ApiError> {
        let mac = parse_mac(mac)?;
        if !mac.is_unicast() {
            return Err(ApiError::invalid(format!("{mac} is not a unicast address")));
        }
        let p = self.port(port)?;
        let vlan = match vlan {
            Some(v) => check_vlan(v)?,
            None => p.record.vlan.unwrap_or(1),
        };
        let handle = p.handle;
        self.call(move |ctl| {
            let (net, local) = ctl
                .dp
                .port_location(handle)
                .ok_or_else(|| ApiError::internal("port vanished"))?;
            let bridge = ctl
                .dp
                .bridge_mut(net)
                .ok_or_else(|| ApiError::internal("the port's network vanished"))?;
            bridge
                .fdb_mut()
                .add_static(Instant::now(), vlan, mac, local)
                .map_err(|e| ApiError::conflict(format!("{e}")))
        })??;
        Ok(json!({ "mac": mac.to_string(), "port": port, "vlan": vlan }))
    }

    pub(super) fn fdb_del(
        &self,
        mac: &str,
        network: Option<&str>,
    ) -> Result<serde_json::Value, ApiError> {
        let mac = parse_mac(mac)?;
        let n = self.on_bridges(network, move |fdb| fdb.remove_mac(mac))?;
        if n == 0 {
            return Err(ApiError::not_found(format!(
                "{mac} is not in the MAC table"
            )));
        }
        Ok(json!({ "removed": n }))
    }

    pub(super) fn fdb_flush(&self, network: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let n = self.on_bridges(network, |fdb| fdb.flush_learned())?;
        Ok(json!({ "flushed": n }))
    }

    /// Runs `f` on the MAC table of one network's bridge, or of all; returns the sum.
    fn on_bridges(
        &self,
        network: Option<&str>,
        f: impl Fn(&mut switch::Fdb) -> usize + Send + 'static,
    ) -> Result<usize, ApiError> {
        let ids: Vec<NetworkId> = match network {
            Some(n) => vec![self.network(n)?.id],
            None => self.networks.values().map(|n| n.id).collect(),
        };
        self.call(move |ctl| {
            ids.into_iter()
                .filter_map(|id| ctl.dp.bridge_mut(id).map(|b| f(b.fdb_mut())))
                .sum()
        })
    }

    pub(super) fn stats(&self, port: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let vtep = self.overlay.as_ref();
        if let Some(p) = port.filter(|p| !(*p == VTEP_PORT && vtep.is_some())) {
            self.port(p)?;
        }
        let mut rows: Vec<StatsRow> = self
            .ports
            .values()
            .filter(|p| port.is_none_or(|n| n == p.record.name))
            .map(|p| {
                let c = p.counters.snapshot();
                StatsRow {
                    port: p.record.name.clone(),
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    learn_refused: c.learn_refused,
                    rx_queue_peak: c.rx_queue_peak,
                    rx_queue_max: c.rx_queue_max,
                    drops: c
                        .drops
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                }
            })
            .collect();
        // The VXLAN endpoint's own refusals: datagrams that reached no network.
        if let (Some(o), true) = (vtep, port.is_none_or(|p| p == VTEP_PORT)) {
            let c = o.rejected().snapshot();
            let mut drops: BTreeMap<String, u64> = o
                .reject_counts()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, v)| (format!("overlay_{k}"), v))
                .collect();
            drops.extend(c.drops.into_iter().map(|(k, v)| (k.to_string(), v)));
            // The TAP backend's own counts: what it could not send or read, the faults it met.
            drops.extend(
                o.tap_counters()
                    .named()
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, v)| (k.to_string(), v)),
            );
            rows.push(StatsRow {
                port: VTEP_PORT.into(),
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
                learn_refused: o.learn_refused(),
                rx_queue_peak: 0,
                rx_queue_max: 0,
                drops,
            });
        }
        super::rows(rows)
    }
}

fn parse_mac(text: &str) -> Result<MacAddr, ApiError> {
    text.parse().map_err(|e| ApiError::invalid(format!("{e}")))
}
