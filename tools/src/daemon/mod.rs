//! What `vswitchd` does: keeps networks and ports, answers API requests, remembers its state.
//!
//! The [`Daemon`] is the control plane's single owner of configuration. It never touches frames:
//! everything on the datapath happens on the datapath thread, reached through
//! [`DatapathHandle::call`]. Each request is validated completely before anything changes, then
//! runs as named steps that undo themselves on failure (`undo.rs`), and a change is one
//! transaction of the [`store`] before the answer goes out. A refusal is an [`ApiError`] with a
//! kind.
//!
//! Every change is intent-first, one of two ways, and its error says which: a change that makes
//! something (create, connect, add) changes the system first and commits the records it made;
//! when the commit fails, what it made is undone. A change that removes something (rm,
//! disconnect, remove) commits first and then changes the system; when the commit fails,
//! nothing was touched, and a failure on the system afterwards is reported as a problem (what
//! is left is ours, marked, and removed at the next start). Either way, after a failed commit
//! memory equals the store.
//!
//! Layout: this file holds the [`Daemon`], what it stores, start and restore, and the dispatch
//! of requests; each API group has its own file (`networks.rs`, `sandboxes.rs`, `endpoints.rs`,
//! `ports.rs`, `fdb.rs` with `stats`, [`trace`] for traces and captures); each network driver
//! has its own file under `drivers/` (whose `mod.rs` says why a driver is an enum with a trait
//! behind it); [`server`] is the socket, [`store`] the state store, [`state`] the state dir's
//! lock and ID, `index.rs` the endpoints' indexes and `commit.rs` how a change is written. The services to come get a folder
//! each beside them: `docker/` (the libnetwork remote driver and IPAM plugin), `firewall/` (the
//! L3 edge on nftables), `dns/` (the embedded resolver) and `cluster/` (the etcd client), each
//! calling into the [`Daemon`] as the API does. `edge.rs` hooks the firewall into the daemon
//! (the model derived from the stored state, ICC off) and `publish.rs` holds the one function
//! that publishes an endpoint's ports, [`Daemon::publish_ports`]; `names.rs` wires in the
//! embedded resolver.

pub mod cluster;
mod commit;
pub mod dns;
pub mod docker;
mod drivers;
pub use drivers::overlay::VtepBackend;
mod edge;
mod endpoints;
mod error;
mod fdb;
pub mod firewall;
mod index;
mod names;
mod networks;
mod ports;
mod publish;
mod sandboxes;
pub mod server;
pub mod state;
pub mod store;
pub mod swarm;
pub mod trace;
mod undo;

pub use drivers::Driver;
pub use endpoints::{DockerEndpoint, EndpointRecord, NetworkIpam};
pub use error::ApiError;
pub use sandboxes::SandboxRecord;

use crate::api::{NetworkSpec, PortType, Request, Response};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use switch::datapath::{NetworkId, PortHandle, TraceSink};
use switch::event_loop::DatapathHandle;
use switch::{BridgeConfig, Instant, PortCounters};

/// The default network (its gateway port is `vswitch0`), and what `port add` joins unless told.
const DEFAULT_NETWORK: &str = "bridge";

/// The networks a fresh daemon makes, which cannot be removed: name and driver.
const DEFAULT_NETWORKS: [(&str, Driver); 3] = [
    (DEFAULT_NETWORK, Driver::Bridge),
    ("host", Driver::Host),
    ("none", Driver::None),
];

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    #[serde(default)]
    pub spec: NetworkSpec,
    /// The network's address pool, for drivers that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<NetworkIpam>,
    /// Docker's full network id, for a network made through the Docker plugin (its `id` is
    /// the same, and its name `docker-` and the first 12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
}

impl NetworkRecord {
    /// The first 12 digits of the id, as `docker network ls` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Who made a port, when the daemon did. Such ports go away with what made them, not with
/// `port remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortOwner {
    /// The host end of an endpoint's veth.
    Endpoint,
    /// A bridge network's gateway TAP.
    Gateway,
    /// A macvlan network's parent.
    Uplink,
    /// An overlay network's VXLAN port.
    Overlay,
}

impl std::fmt::Display for PortOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortOwner::Endpoint => "endpoint",
            PortOwner::Gateway => "gateway",
            PortOwner::Uplink => "uplink",
            PortOwner::Overlay => "overlay",
        })
    }
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
    /// Who made the port, when the daemon did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<PortOwner>,
}

impl PortRecord {
    /// A port the daemon makes for `owner` on `net`, access VLAN 1.
    pub fn owned(
        name: String,
        net: &NetworkRecord,
        port_type: PortType,
        owner: PortOwner,
    ) -> PortRecord {
        PortRecord {
            name,
            network: net.name.clone(),
            port_type,
            vlan: None,
            trunks: None,
            address: None,
            owner: Some(owner),
        }
    }
}

/// Everything in the state file of vswitchd before the store (`switch.json`), as the store's
/// migration and the store bench read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwitchState {
    pub networks: Vec<NetworkRecord>,
    pub ports: Vec<PortRecord>,
    #[serde(default)]
    pub sandboxes: Vec<SandboxRecord>,
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
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
    /// The port's name on its bridge (in traces and `fdb show`): its own name, except for a
    /// VXLAN port, which its bridge knows by the name the overlay gives it.
    bridge_name: String,
}

/// The control plane's state and the handle to the datapath thread.
pub struct Daemon {
    dp: DatapathHandle,
    store: store::Store,
    networks: BTreeMap<String, NetworkLive>,
    ports: BTreeMap<String, PortLive>,
    sandboxes: BTreeMap<String, SandboxRecord>,
    endpoints: index::Endpoints,
    ipam: ipam::DefaultIpam,
    /// Where the VXLAN endpoint binds (`--vtep`), and the endpoint once an overlay needs it.
    vtep_addr: std::net::SocketAddrV4,
    /// Which VTEP backend `--vtep-backend` asked for.
    vtep_backend: VtepBackend,
    overlay: Option<vxlan::Overlay>,
    /// The TAP backend's watcher, when the endpoint runs on it.
    vtep_keeper: Option<drivers::overlay::TapKeeper>,
    /// Listeners of live traces.
    hub: Arc<trace::TraceHub>,
    /// Clients capturing each port.
    captures: BTreeMap<String, trace::CaptureFan>,
    /// The state dir's ID ([`state::instance_id`]): the interfaces we make carry it.
    instance_id: String,
    /// The L3 edge (NAT, published ports, isolation between networks): `edge.rs`.
    firewall: firewall::Firewall,
    /// The cluster, with `--cluster` ([`swarm::join`]).
    swarm: Option<swarm::Swarm>,
    /// The embedded DNS server, once [`Daemon::enable_dns`] started it (`names.rs`).
    dns: Option<names::Names>,
}

impl Daemon {
    /// Opens the state store in `state_dir` (importing an old `switch.json`), restores the
    /// saved networks, sandboxes, endpoints and ports (or creates the default networks),
    /// cross-checks them against IPAM and the system, and writes what it repaired in one
    /// transaction. Returns the daemon, the store's notes and the list of repairs.
    pub fn start(
        dp: DatapathHandle,
        state_dir: &Path,
        vtep_addr: std::net::SocketAddrV4,
        vtep_backend: VtepBackend,
    ) -> std::io::Result<(Daemon, Vec<String>, Vec<String>)> {
        let instance_id = state::instance_id(state_dir)?;
        let (mut store, notes) = store::Store::start(state_dir).map_err(std::io::Error::other)?;
        let saved: commit::Saved = store.load_all().map_err(std::io::Error::other)?;
        let mut ipam = saved.ipam.clone();
        ipam.track_changes();
        let mut endpoints = index::Endpoints::default();
        let mut repairs = Vec::new();
        for (_, ep) in &saved.endpoints {
            if let Some(old) = endpoints.insert(ep.clone()) {
                // Keys are ids: two ids for one (network, sandbox) pair. Keep the first.
                repairs.push(format!(
                    "endpoint {}/{}: stored twice (ids {} and {}); kept {} and dropped the other",
                    ep.network, ep.sandbox, old.id, ep.id, old.id
                ));
                endpoints.insert(old);
            }
        }
        let mut d = Daemon {
            instance_id,
            dp,
            store,
            vtep_addr,
            vtep_backend,
            overlay: None,
            vtep_keeper: None,
            swarm: None,
            hub: trace::new_hub(),
            captures: BTreeMap::new(),
            networks: BTreeMap::new(),
            ports: BTreeMap::new(),
            sandboxes: saved
                .sandboxes
                .iter()
                .map(|(_, s)| (s.name.clone(), s.clone()))
                .collect(),
            endpoints,
            ipam,
            firewall: edge::detect(),
            dns: None,
        };
        let fresh = saved.networks.is_empty();
        d.restore_networks(saved.networks.iter().map(|(_, n)| n.clone()).collect())
            .map_err(std::io::Error::other)?;
        if fresh {
            d.create_default_networks().map_err(std::io::Error::other)?;
        }
        repairs.extend(d.cross_check_addresses());
        repairs.extend(d.reconcile_endpoints());
        repairs.extend(d.reconcile_docker_endpoints());
        repairs.extend(d.restore_ports(saved.ports.iter().map(|(_, p)| p.clone()).collect()));
        repairs.extend(d.remove_orphan_veths());
        repairs.extend(d.start_edge());
        d.write_repairs(&saved).map_err(std::io::Error::other)?;
        Ok((d, notes, repairs))
    }

    /// Makes the bridges of the saved networks, and opens what their drivers need.
    fn restore_networks(&mut self, saved: Vec<NetworkRecord>) -> Result<(), ApiError> {
        let drivers: BTreeSet<Driver> = saved.iter().map(|n| n.driver).collect();
        for rec in saved {
            let id = self.new_bridge()?;
            self.networks
                .insert(rec.name.clone(), NetworkLive { record: rec, id });
        }
        for driver in drivers {
            driver.ops().open(self)?;
        }
        Ok(())
    }

    /// The networks of a fresh daemon: `bridge`, `host` and `none`, as Docker has.
    fn create_default_networks(&mut self) -> Result<(), ApiError> {
        for (name, driver) in DEFAULT_NETWORKS {
            let spec = NetworkSpec {
                name: name.into(),
                driver: Some(driver.name().into()),
                ..NetworkSpec::default()
            };
            self.create_network(spec)?;
        }
        Ok(())
    }

    /// Attaches the saved ports the networks did not make again (not those of endpoints that
    /// start-up removed); returns those that failed.
    fn restore_ports(&mut self, saved: Vec<PortRecord>) -> Vec<String> {
        let mut repairs = Vec::new();
        let endpoint_ports: std::collections::HashSet<&str> = self
            .endpoints
            .iter()
            .map(|e| e.host_interface.as_str())
            .collect();
        let saved: Vec<PortRecord> = saved
            .into_iter()
            .filter(|p| {
                p.owner != Some(PortOwner::Endpoint) || endpoint_ports.contains(p.name.as_str())
            })
            .collect();
        for rec in saved {
            let name = rec.name.clone();
            if self.ports.contains_key(&name) {
                continue;
            }
            let endpoint_gone = rec.owner == Some(PortOwner::Endpoint)
                && self.endpoints.of_host_interface(&name).is_none();
            if endpoint_gone {
                repairs.push(format!("port {name} dropped: its endpoint is gone"));
                continue;
            }
            match self.attach(&rec) {
                Ok(live) => {
                    self.ports.insert(name, live);
                }
                Err(e) => repairs.push(format!("port {name} not restored: {e}")),
            }
        }
        repairs
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
                network: network.unwrap_or_else(|| DEFAULT_NETWORK.into()),
                port_type,
                vlan,
                trunks,
                address: None,
                owner: None,
            }),
            Request::PortRemove { name } => self.port_remove(&name),
            Request::PortList {} => self.port_list(),
            Request::FdbShow { network } => self.fdb_show(network.as_deref()),
            Request::FdbAdd { mac, port, vlan } => self.fdb_add(&mac, &port, vlan),
            Request::FdbDel { mac, network } => self.fdb_del(&mac, network.as_deref()),
            Request::FdbFlush { network } => self.fdb_flush(network.as_deref()),
            Request::Stats { port } => self.stats(port.as_deref()),
            Request::NetworkCreate(spec) => self.create_network(spec),
            Request::NetworkRm { name } => self.network_rm_api(&name),
            Request::NetworkLs {} => self.network_ls(),
            Request::NetworkInspect { name } => self.network_inspect(&name),
            Request::NetworkConnect {
                network,
                sandbox,
                ip,
                publish,
                aliases,
            } => self.network_connect(&network, &sandbox, ip.as_deref(), &publish, &aliases),
            Request::NetworkDisconnect { network, sandbox } => {
                self.network_disconnect(&network, &sandbox)
            }
            Request::NetworkPeerAdd { network, ip } => self.network_peer(&network, &ip, true),
            Request::NetworkPeerRm { network, ip } => self.network_peer(&network, &ip, false),
            Request::SandboxCreate { name, netns: None } => self.sandbox_create(&name, None),
            Request::SandboxCreate {
                name,
                netns: Some(path),
            } => match crate::netns::open_foreign_netns(&path) {
                Ok(ns) => self.sandbox_create(&name, Some((&path, ns))),
                Err(e) => Err(ApiError::invalid(e.to_string())),
            },
            Request::SandboxRm { name } => self.sandbox_rm(&name),
            Request::SandboxLs {} => self.sandbox_ls(),
            Request::NatShow {} => serde_json::to_value(self.firewall.list())
                .map_err(|e| ApiError::internal(format!("encoding the answer: {e}"))),
            Request::DnsStats {} => self.dns_stats(),
            Request::Trace {
                in_port,
                frame,
                flow,
            } => self.trace(&in_port, frame.as_deref(), flow.as_deref()),
            Request::ClusterStatus => self.cluster_status(),
            Request::TraceLive { .. } | Request::Capture { .. } => Err(ApiError::invalid(
                "streaming requests are served by the API server",
            )),
        };
        match result {
            Ok(v) => Response::ok(v),
            Err(e) => e.into(),
        }
    }

    /// Answers `sandbox create NAME --netns PATH` with PATH's namespace already opened and
    /// checked ([`crate::netns::open_foreign_netns`]), which the API server does before it
    /// takes the daemon's lock.
    pub fn sandbox_adopt(&mut self, name: &str, path: &str, ns: std::fs::File) -> Response {
        match self.sandbox_create(name, Some((path, ns))) {
            Ok(v) => Response::ok(v),
            Err(e) => e.into(),
        }
    }

    /// The alias of the interfaces this daemon makes: `vswitch:` and the state dir's ID.
    fn owner_alias(&self) -> String {
        format!("vswitch:{}", self.instance_id)
    }

    /// Marks a TAP we made as ours (alias) and turns its IPv6 autoconfiguration off (hundreds
    /// of TAPs soliciting routers would keep the datapath busy). Failures are only logged.
    fn mark_tap(&self, name: &str) {
        let marked = crate::netlink::Netlink::new().and_then(|mut nl| {
            nl.disable_ipv6_autoconf(name)?;
            nl.set_alias(name, &self.owner_alias())
        });
        if let Err(e) = marked {
            tracing::warn!(tap = name, error = %e, "cannot mark the TAP");
        }
    }

    /// Sends every frame's trace to `sink` (or stops tracing).
    pub fn set_trace(&self, sink: Option<TraceSink>) -> Result<(), ApiError> {
        self.call(move |ctl| ctl.dp.set_trace_sink(sink))
    }

    /// Stops the datapath thread; every port is closed (TAPs it made vanish).
    pub fn shutdown(&self) {
        // The TAP path's tc filters go first, while the TAP still exists.
        if let Some(k) = &self.vtep_keeper {
            k.stop();
        }
        let _ = self.dp.call(|ctl| ctl.stop());
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut switch::event_loop::Ctl<'_>) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        self.dp
            .call(f)
            .map_err(|_| ApiError::internal("the datapath thread has stopped"))
    }

    fn new_bridge(&self) -> Result<NetworkId, ApiError> {
        self.call(|ctl| ctl.dp.add_network(BridgeConfig::default()))
    }

    fn network(&self, name: &str) -> Result<&NetworkLive, ApiError> {
        self.networks
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("no such network: {name}")))
    }

    fn port(&self, name: &str) -> Result<&PortLive, ApiError> {
        self.ports
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("no such port: {name}")))
    }

    fn sandbox(&self, name: &str) -> Result<&SandboxRecord, ApiError> {
        self.sandboxes
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("no such sandbox: {name}")))
    }

    /// The VXLAN port of an overlay network.
    fn vxlan_port(&self, network: &str) -> Option<&PortLive> {
        self.ports
            .values()
            .find(|p| p.record.network == network && p.record.port_type == PortType::Vxlan)
    }
}

/// A list of rows as a request's JSON result.
fn rows<T: Serialize>(rows: Vec<T>) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(rows).map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))
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
    fn ids_are_random_and_long() {
        assert_eq!(random_id().len(), 64);
        assert_ne!(random_id(), random_id());
    }

    #[test]
    fn stored_form_is_unchanged() {
        // A state file as the daemon wrote it before drivers and owners became types.
        let old = r#"{
            "networks": [{"id": "0123456789abcdef", "name": "blue", "driver": "overlay",
                          "spec": {"name": "blue", "vni": 42}}],
            "ports": [{"name": "vxlan42", "network": "blue", "type": "vxlan", "vlan": null,
                       "trunks": null, "owner": "overlay"},
                      {"name": "veth1", "network": "blue", "type": "system", "vlan": 10,
                       "trunks": null}]
        }"#;
        let s: SwitchState = serde_json::from_str(old).unwrap();
        assert_eq!(s.networks[0].driver, Driver::Overlay);
        assert_eq!(s.networks[0].short_id(), "0123456789ab");
        assert_eq!(s.ports[0].owner, Some(PortOwner::Overlay));
        assert_eq!(s.ports[1].owner, None);
        let again = serde_json::to_value(&s).unwrap();
        assert_eq!(again["networks"][0]["driver"], "overlay");
        assert_eq!(again["ports"][0]["owner"], "overlay");
        assert!(again["ports"][1].get("owner").is_none());
        let short = NetworkRecord {
            id: "abc".into(),
            ..s.networks[0].clone()
        };
        assert_eq!(short.short_id(), "abc");
    }
}
