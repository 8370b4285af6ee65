//! What `vswitchd` does: keeps networks and ports, answers API requests, remembers its state.
//!
//! The [`Daemon`] is the control plane's single owner of configuration. It never touches frames:
//! everything on the datapath happens on the datapath thread, reached through
//! [`DatapathHandle::call`]. Each request is validated completely before anything changes, and a
//! change is saved to the state directory before the answer goes out.

mod cnm;
pub mod dns;
pub mod server;
pub mod state;
pub mod trace;

use crate::api::{FdbRow, NetworkSpec, PortRow, PortType, Request, Response, StatsRow};
use serde::{Deserialize, Serialize};
use serde_json::json;
use state::StateDir;
use std::collections::BTreeMap;
use std::sync::Arc;
use switch::datapath::{NetworkId, PortHandle, PortState, TraceSink};
use switch::event_loop::DatapathHandle;
use switch::port::afpacket::AfPacketPort;
use switch::port::tap::TapPort;
use switch::{BridgeConfig, Instant, MacAddr, Port, PortCounters, PortMode, VlanSet};

/// The file holding networks and ports.
const STATE_FILE: &str = "switch.json";

/// The drivers `network create --driver` knows.
pub const DRIVERS: [&str; 5] = ["bridge", "overlay", "macvlan", "host", "none"];

/// A failed request: the message the user sees. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ApiError> {
    Err(ApiError(msg.into()))
}

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub spec: NetworkSpec,
    /// The network's address pool, for drivers that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<cnm::NetworkIpam>,
}

/// A port as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub name: String,
    pub network: String,
    #[serde(rename = "type")]
    pub port_type: PortType,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub trunks: Option<Vec<u16>>,
    /// For a gateway port: the address it holds, `IP/PREFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Who made the port, when the daemon did: `endpoint`, `gateway` or `uplink`. Such ports
    /// go away with what made them, not with `port remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Everything in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwitchState {
    pub networks: Vec<NetworkRecord>,
    pub ports: Vec<PortRecord>,
    #[serde(default)]
    pub sandboxes: Vec<cnm::SandboxRecord>,
    #[serde(default)]
    pub endpoints: Vec<cnm::EndpointRecord>,
    #[serde(default)]
    pub ipam: ipam::DefaultIpam,
}

struct NetworkLive {
    record: NetworkRecord,
    id: NetworkId,
}

struct PortLive {
    record: PortRecord,
    handle: PortHandle,
    counters: Arc<PortCounters>,
    mtu: usize,
}

/// The control plane's state and the handle to the datapath thread.
pub struct Daemon {
    dp: DatapathHandle,
    store: StateDir,
    networks: BTreeMap<String, NetworkLive>,
    ports: BTreeMap<String, PortLive>,
    sandboxes: BTreeMap<String, cnm::SandboxRecord>,
    endpoints: Vec<cnm::EndpointRecord>,
    ipam: ipam::DefaultIpam,
    /// Where the VXLAN endpoint binds (`--vtep`), and the endpoint once an overlay needs it.
    vtep_addr: std::net::SocketAddrV4,
    overlay: Option<vxlan::Overlay>,
    /// Listeners of live traces.
    hub: Arc<trace::TraceHub>,
    /// Clients capturing each port.
    captures: BTreeMap<String, trace::CaptureFan>,
}

impl Daemon {
    /// Restores the saved networks and ports (or creates the default network) and returns the
    /// daemon with a list of what it had to repair.
    pub fn start(
        dp: DatapathHandle,
        store: StateDir,
        vtep_addr: std::net::SocketAddrV4,
    ) -> std::io::Result<(Daemon, Vec<String>)> {
        let saved: SwitchState = store.load(STATE_FILE)?.unwrap_or_default();
        let mut d = Daemon {
            dp,
            store,
            vtep_addr,
            overlay: None,
            hub: trace::new_hub(),
            captures: BTreeMap::new(),
            networks: BTreeMap::new(),
            ports: BTreeMap::new(),
            sandboxes: saved
                .sandboxes
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            endpoints: saved.endpoints,
            ipam: saved.ipam,
        };
        let mut repairs = Vec::new();
        let fresh = saved.networks.is_empty();
        for rec in saved.networks {
            let id = d.new_bridge().map_err(std::io::Error::other)?;
            d.networks
                .insert(rec.name.clone(), NetworkLive { record: rec, id });
        }
        if fresh {
            for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "none")] {
                let spec = NetworkSpec {
                    name: name.into(),
                    driver: Some(driver.into()),
                    ..NetworkSpec::default()
                };
                d.create_network(spec).map_err(std::io::Error::other)?;
            }
        }
        if d.networks.values().any(|n| n.record.driver == "overlay") {
            d.ensure_overlay().map_err(std::io::Error::other)?;
        }
        repairs.extend(d.reconcile_endpoints());
        for rec in saved.ports {
            let name = rec.name.clone();
            if d.ports.contains_key(&name) {
                continue;
            }
            match d.attach(&rec) {
                Ok(live) => {
                    d.ports.insert(name, live);
                }
                Err(e) => repairs.push(format!("port {name} not restored: {e}")),
            }
        }
        repairs.extend(d.remove_orphan_veths());
        d.save().map_err(std::io::Error::other)?;
        Ok((d, repairs))
    }

    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> Response {
        let result = match req {
            Request::PortAdd {
                name,
                network,
                port_type,
                vlan,
                trunks,
            } => self.port_add(PortRecord {
                name,
                network: network.unwrap_or_else(|| "bridge".into()),
                port_type,
                vlan,
                trunks,
                address: None,
                owner: None,
            }),
            Request::PortRemove { name } => self.port_remove(&name),
            Request::PortList => self.port_list(),
            Request::FdbShow { network } => self.fdb_show(network.as_deref()),
            Request::FdbAdd { mac, port, vlan } => self.fdb_add(&mac, &port, vlan),
            Request::FdbDel { mac, network } => self.fdb_del(&mac, network.as_deref()),
            Request::FdbFlush { network } => self.fdb_flush(network.as_deref()),
            Request::Stats { port } => self.stats(port.as_deref()),
            Request::NetworkCreate(spec) => self.create_network(spec),
            Request::NetworkRm { name } => self.network_rm(&name),
            Request::NetworkLs => self.network_ls(),
            Request::NetworkInspect { name } => self.network_inspect(&name),
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
            } => self.network_connect(&network, &sandbox, ip.as_deref()),
            Request::NetworkDisconnect { network, sandbox } => {
                self.network_disconnect(&network, &sandbox)
            }
            Request::NetworkPeerAdd { network, ip } => self.network_peer(&network, &ip, true),
            Request::NetworkPeerRm { network, ip } => self.network_peer(&network, &ip, false),
            Request::SandboxCreate { name, netns } => self.sandbox_create(&name, netns.as_deref()),
            Request::SandboxRm { name } => self.sandbox_rm(&name),
            Request::SandboxLs => self.sandbox_ls(),
            Request::Trace {
                in_port,
                frame,
                flow,
            } => self.trace(&in_port, frame.as_deref(), flow.as_deref()),
            Request::TraceLive { .. } | Request::Capture { .. } => {
                err("streaming requests are served by the API server")
            }
        };
        match result {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e.0),
        }
    }

    /// Sends every frame's trace to `sink` (or stops tracing).
    pub fn set_trace(&self, sink: Option<TraceSink>) -> Result<(), ApiError> {
        self.call(move |ctl| ctl.dp.set_trace_sink(sink))
    }

    /// Stops the datapath thread; every port is closed (TAPs it made vanish).
    pub fn shutdown(&self) {
        let _ = self.dp.call(|ctl| ctl.stop());
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut switch::event_loop::Ctl<'_>) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        self.dp
            .call(f)
            .map_err(|_| ApiError("the datapath thread has stopped".into()))
    }

    fn save(&self) -> Result<(), ApiError> {
        let state = SwitchState {
            networks: self.networks.values().map(|n| n.record.clone()).collect(),
            ports: self.ports.values().map(|p| p.record.clone()).collect(),
            sandboxes: self.sandboxes.values().cloned().collect(),
            endpoints: self.endpoints.clone(),
            ipam: self.ipam.clone(),
        };
        self.store
            .save(STATE_FILE, &state)
            .map_err(|e| ApiError(format!("saving state: {e}")))
    }

    fn new_bridge(&self) -> Result<NetworkId, ApiError> {
        self.call(|ctl| ctl.dp.add_network(BridgeConfig::default()))
    }

    fn network(&self, name: &str) -> Result<&NetworkLive, ApiError> {
        self.networks
            .get(name)
            .ok_or_else(|| ApiError(format!("no such network: {name}")))
    }

    fn port(&self, name: &str) -> Result<&PortLive, ApiError> {
        self.ports
            .get(name)
            .ok_or_else(|| ApiError(format!("no such port: {name}")))
    }

    // ---- ports ----

    fn port_add(&mut self, rec: PortRecord) -> Result<serde_json::Value, ApiError> {
        if self.ports.contains_key(&rec.name) {
            return err(format!("port {} already exists", rec.name));
        }
        let live = self.attach(&rec)?;
        let name = rec.name.clone();
        self.ports.insert(name.clone(), live);
        if let Err(e) = self.save() {
            let _ = self.detach(&name);
            return Err(e);
        }
        Ok(json!({ "name": name }))
    }

    /// Opens the port's interface and attaches it to its network's bridge.
    fn attach(&self, rec: &PortRecord) -> Result<PortLive, ApiError> {
        validate_ifname(&rec.name)?;
        let net = self.network(&rec.network)?;
        let mode = port_mode(rec.vlan, rec.trunks.as_deref())?;
        let port: Box<dyn Port> = match rec.port_type {
            PortType::System => {
                if !switch::port::afpacket::interface_exists(&rec.name) {
                    return err(format!("no such interface: {}", rec.name));
                }
                // As Open vSwitch does, a port's interface is brought up when it joins.
                crate::netlink::Netlink::new()
                    .and_then(|mut nl| nl.set_up(&rec.name))
                    .map_err(|e| ApiError(format!("bringing up {}: {e}", rec.name)))?;
                Box::new(
                    AfPacketPort::open(&rec.name)
                        .map_err(|e| ApiError(format!("opening {}: {e}", rec.name)))?,
                )
            }
            PortType::Vxlan => {
                let overlay = self
                    .overlay
                    .as_ref()
                    .ok_or_else(|| ApiError("the VXLAN endpoint is not open".into()))?;
                let vni = net
                    .record
                    .spec
                    .vni
                    .ok_or_else(|| ApiError(format!("network {} has no VNI", rec.network)))?;
                let peers: Vec<std::net::IpAddr> = net
                    .record
                    .spec
                    .peers
                    .iter()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                let (port, counters) = overlay
                    .add_vni(vni, &peers)
                    .map_err(|e| ApiError(format!("VNI {vni}: {e}")))?;
                let mtu = port.capabilities().mtu;
                let network = net.id;
                let handle = self
                    .call(move |ctl| {
                        ctl.add_port_with_counters(network, Box::new(port), mode, counters)
                    })?
                    .map_err(|e| ApiError(format!("attaching {}: {e}", rec.name)));
                let handle = match handle {
                    Ok(h) => h,
                    Err(e) => {
                        overlay.remove_vni(vni);
                        return Err(e);
                    }
                };
                overlay.set_handle(vni, handle);
                self.hub.add_overlay(network, vni, overlay.clone());
                let counters = self
                    .call(move |ctl| ctl.dp.counters(handle))?
                    .ok_or_else(|| ApiError("port vanished while attaching".into()))?;
                return Ok(PortLive {
                    record: rec.clone(),
                    handle,
                    counters,
                    mtu,
                });
            }
            PortType::Tap | PortType::Internal => {
                if switch::port::afpacket::interface_exists(&rec.name) {
                    return err(format!(
                        "interface {} already exists (use --type system to attach it)",
                        rec.name
                    ));
                }
                let mtu = net.record.spec.mtu;
                let tap = TapPort::create(&rec.name, mtu)
                    .map_err(|e| ApiError(format!("creating TAP {}: {e}", rec.name)))?;
                if let Some(addr) = &rec.address {
                    cnm::set_gateway_address(&rec.name, addr)?;
                }
                Box::new(tap)
            }
        };
        let mtu = port.capabilities().mtu;
        let network = net.id;
        let handle = self
            .call(move |ctl| ctl.add_port(network, port, mode))?
            .map_err(|e| ApiError(format!("attaching {}: {e}", rec.name)))?;
        let counters = self
            .call(move |ctl| ctl.dp.counters(handle))?
            .ok_or_else(|| ApiError("port vanished while attaching".into()))?;
        Ok(PortLive {
            record: rec.clone(),
            handle,
            counters,
            mtu,
        })
    }

    fn detach(&mut self, name: &str) -> Result<PortLive, ApiError> {
        let live = self
            .ports
            .remove(name)
            .ok_or_else(|| ApiError(format!("no such port: {name}")))?;
        let handle = live.handle;
        // Captures of the port end with it.
        self.captures.remove(name);
        if live.record.port_type == PortType::Vxlan {
            let vni = self
                .networks
                .get(&live.record.network)
                .and_then(|n| n.record.spec.vni);
            if let (Some(o), Some(vni)) = (&self.overlay, vni) {
                o.remove_vni(vni);
            }
        }
        // Dropping the port on the datapath thread closes it (a TAP vanishes).
        self.call(move |ctl| {
            ctl.remove_port(handle);
        })?;
        Ok(live)
    }

    fn port_remove(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        if let Some(owner) = &self.port(name)?.record.owner {
            return err(format!(
                "port {name} is the {owner} port of network {}; it goes away with it",
                self.ports[name].record.network
            ));
        }
        let live = self.detach(name)?;
        if let Err(e) = self.save() {
            // The port is gone from the datapath; try to put it back so state and reality agree.
            if let Ok(back) = self.attach(&live.record) {
                self.ports.insert(name.to_string(), back);
            }
            return Err(e);
        }
        Ok(json!({ "removed": name }))
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

    fn port_list(&self) -> Result<serde_json::Value, ApiError> {
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
        Ok(serde_json::to_value(rows).expect("rows serialize"))
    }

    fn stats(&self, port: Option<&str>) -> Result<serde_json::Value, ApiError> {
        if let Some(p) = port.filter(|p| !(*p == "vtep" && self.overlay.is_some())) {
            self.port(p)?;
        }
        let rows: Vec<StatsRow> = self
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
                    drops: c
                        .drops
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                }
            })
            .collect();
        // The VXLAN endpoint's own refusals: datagrams that reached no network.
        let mut rows = rows;
        if let (Some(o), true) = (&self.overlay, port.is_none_or(|p| p == "vtep")) {
            let c = o.rejected().snapshot();
            let mut drops: BTreeMap<String, u64> = o
                .reject_counts()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, v)| (format!("overlay_{k}"), v))
                .collect();
            drops.extend(c.drops.into_iter().map(|(k, v)| (k.to_string(), v)));
            rows.push(StatsRow {
                port: "vtep".into(),
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
                learn_refused: o.learn_refused(),
                drops,
            });
        }
        Ok(serde_json::to_value(rows).expect("rows serialize"))
    }

    // ---- MAC table ----

    fn fdb_show(&self, network: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let nets: Vec<(String, NetworkId, Option<u32>)> = match network {
            Some(n) => {
                let live = self.network(n)?;
                vec![(n.to_string(), live.id, live.record.spec.vni)]
            }
            None => self
                .networks
                .values()
                .map(|n| (n.record.name.clone(), n.id, n.record.spec.vni))
                .collect(),
        };
        let overlay = self.overlay.clone();
        let rows = self.call(move |ctl| {
            let now = Instant::now();
            let mut rows = Vec::new();
            for (name, id, vni) in nets {
                let Some(bridge) = ctl.dp.bridge(id) else {
                    continue;
                };
                for (vlan, mac, e) in bridge.fdb().iter(now) {
                    let port = bridge.port_name(e.port).to_string();
                    let remote = match (&overlay, vni) {
                        (Some(o), Some(vni)) if port == "vxlan" => {
                            o.remote_of(now, vni, mac).map(|ip| ip.to_string())
                        }
                        _ => None,
                    };
                    rows.push(FdbRow {
                        mac: mac.to_string(),
                        port,
                        vlan,
                        age_s: now.saturating_since(e.last_seen).as_secs(),
                        is_static: e.is_static,
                        network: name.clone(),
                        remote,
                    });
                }
            }
            rows.sort_by(|a, b| {
                (&a.network, &a.port, a.vlan, &a.mac).cmp(&(&b.network, &b.port, b.vlan, &b.mac))
            });
            rows
        })?;
        Ok(serde_json::to_value(rows).expect("rows serialize"))
    }

    fn fdb_add(
        &self,
        mac: &str,
        port: &str,
        vlan: Option<u16>,
    ) -> Result<serde_json::Value, ApiError> {
        let mac: MacAddr = mac.parse().map_err(|e| ApiError(format!("{e}")))?;
        if !mac.is_unicast() {
            return err(format!("{mac} is not a unicast address"));
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
                .ok_or_else(|| ApiError("port vanished".into()))?;
            let bridge = ctl.dp.bridge_mut(net).expect("port's network exists");
            bridge
                .fdb_mut()
                .add_static(Instant::now(), vlan, mac, local)
                .map_err(|e| ApiError(format!("{e}")))
        })??;
        Ok(json!({ "mac": mac.to_string(), "port": port, "vlan": vlan }))
    }

    fn fdb_del(&self, mac: &str, network: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let mac: MacAddr = mac.parse().map_err(|e| ApiError(format!("{e}")))?;
        let ids = self.network_ids(network)?;
        let n = self.call(move |ctl| {
            let mut n = 0;
            for id in ids {
                if let Some(b) = ctl.dp.bridge_mut(id) {
                    n += b.fdb_mut().remove_mac(mac);
                }
            }
            n
        })?;
        if n == 0 {
            return err(format!("{mac} is not in the MAC table"));
        }
        Ok(json!({ "removed": n }))
    }

    fn fdb_flush(&self, network: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let ids = self.network_ids(network)?;
        let n = self.call(move |ctl| {
            let mut n = 0;
            for id in ids {
                if let Some(b) = ctl.dp.bridge_mut(id) {
                    n += b.fdb_mut().flush_learned();
                }
            }
            n
        })?;
        Ok(json!({ "flushed": n }))
    }

    fn network_ids(&self, network: Option<&str>) -> Result<Vec<NetworkId>, ApiError> {
        Ok(match network {
            Some(n) => vec![self.network(n)?.id],
            None => self.networks.values().map(|n| n.id).collect(),
        })
    }
}

fn check_vlan(v: u16) -> Result<u16, ApiError> {
    if (1..=4094).contains(&v) {
        Ok(v)
    } else {
        err(format!("invalid VLAN {v}: expected 1 to 4094"))
    }
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

fn vlan_text(vlan: Option<u16>, trunks: Option<&[u16]>) -> String {
    match trunks {
        None => vlan.unwrap_or(1).to_string(),
        Some(t) => {
            let list: Vec<String> = t.iter().map(u16::to_string).collect();
            format!("trunk:{}", list.join(","))
        }
    }
}

fn validate_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        err(format!(
            "invalid {what} name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        ))
    }
}

fn validate_ifname(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && !name.contains(['/', ' ', ':'])
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        err(format!(
            "invalid interface name {name:?}: 1-15 characters, no '/', ':' or spaces"
        ))
    }
}

/// A 64-hex-digit id, like Docker's network ids.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Fall back on time and pid; ids need to be unique, not secret.
        let seed = Instant::now().as_nanos() ^ ((std::process::id() as u64) << 32);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed.rotate_left(i as u32 * 7) >> (i % 8)) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_vlans_are_checked() {
        assert!(validate_name("network", "blue-1").is_ok());
        assert!(validate_name("network", "").is_err());
        assert!(validate_name("network", "a/b").is_err());
        assert!(validate_ifname("veth0").is_ok());
        assert!(validate_ifname("a-very-long-interface").is_err());
        assert!(check_vlan(0).is_err() && check_vlan(4095).is_err() && check_vlan(10).is_ok());
        assert_eq!(port_mode(None, None).unwrap(), PortMode::Access(1));
        let trunk = port_mode(Some(5), Some(&[10, 20])).unwrap();
        assert!(trunk.carries(10) && trunk.carries(20) && trunk.carries(5) && !trunk.carries(30));
        assert!(port_mode(None, Some(&[0])).is_err());
        assert_eq!(random_id().len(), 64);
        assert_ne!(random_id(), random_id());
    }
}
