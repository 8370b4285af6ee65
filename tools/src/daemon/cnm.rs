//! The Container Networking Model: networks with drivers, sandboxes, and endpoints joining them.
//!
//! - A **network** is a bridge in the datapath plus, by driver: `bridge` an address pool and a
//!   gateway TAP in the daemon's namespace (as docker0 holds 172.17.0.1); `macvlan` the parent
//!   interface attached as an uplink port; `overlay` a pool and a VNI; `host` and `none` no bridge
//!   traffic at all.
//! - A **sandbox** is a network namespace bind-mounted at `/run/netns/NAME`.
//! - An **endpoint** joins a sandbox to a network: a veth pair made in one netlink request, the
//!   sandbox end `ethN` with a MAC derived from its address, the address from IPAM, the default
//!   route via the gateway on the sandbox's first network; the host end becomes a port.
//!
//! Every operation validates first, then acts step by step, undoing the steps already done when a
//! later one fails; the state is saved before the answer.

use super::{err, random_id, ApiError, Daemon, NetworkLive, NetworkRecord, PortRecord, DRIVERS};
use crate::api::{EndpointRow, NetworkRow, NetworkSpec, PortType, SandboxRow};
use crate::netlink::Netlink;
use crate::netns;
use ipam::{Cidr, IpamDriver, PoolId, PoolRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

/// Prefix of the host ends of endpoint veths (so orphans can be found after a crash).
const ENDPOINT_PREFIX: &str = "vse";
/// The gateway port of the default `bridge` network (the docker0 of vswitch).
const DEFAULT_GATEWAY_PORT: &str = "vswitch0";

/// A network's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIpam {
    pub pool: PoolId,
    pub subnet: Cidr,
    pub gateway: Option<Ipv4Addr>,
}

/// A sandbox as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub name: String,
    /// `/run/netns/NAME`.
    pub path: String,
    /// Made from an existing namespace (`--netns`), not created by us.
    #[serde(default)]
    pub adopted: bool,
    /// We bind-mounted the adopted namespace at `path` (it came from elsewhere, e.g.
    /// `/proc/PID/ns/net`): the name is ours to remove, the namespace is not.
    #[serde(default)]
    pub bound: bool,
    /// Joined to the `host` network: the path names the daemon's own namespace.
    #[serde(default)]
    pub host: bool,
}

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub network: String,
    pub sandbox: String,
    /// The interface inside the sandbox (`eth0`, …); empty for `host` and `none`.
    pub interface: String,
    /// The host end of the veth (a port of the network's bridge); empty for `host` and `none`.
    pub host_interface: String,
    pub mac: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub prefix_len: u8,
    /// This endpoint set the sandbox's default route.
    #[serde(default)]
    pub default_route: bool,
}

/// Gives a gateway port its `IP/PREFIX`, and a MAC derived from it, so the gateway keeps its
/// MAC across restarts (the sandboxes' ARP caches stay right).
pub(super) fn set_gateway_address(ifname: &str, addr: &str) -> Result<(), ApiError> {
    let (ip, prefix) = parse_addr(addr)?;
    let mut nl = Netlink::new().map_err(|e| ApiError(format!("netlink: {e}")))?;
    nl.set_mac(ifname, mac_for(ip))
        .map_err(|e| ApiError(format!("setting the MAC of {ifname}: {e}")))?;
    match nl.add_address(ifname, ip, prefix) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => err(format!("adding {addr} to {ifname}: {e}")),
    }
}

fn parse_addr(addr: &str) -> Result<(Ipv4Addr, u8), ApiError> {
    let bad = || ApiError(format!("invalid address {addr:?}: expected IP/PREFIX"));
    let (ip, prefix) = addr.split_once('/').ok_or_else(bad)?;
    Ok((
        ip.parse().map_err(|_| bad())?,
        prefix.parse().map_err(|_| bad())?,
    ))
}

/// Docker's MAC for an address: 02:42 followed by the four bytes of the IPv4 address.
fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

fn mac_text(mac: [u8; 6]) -> String {
    switch::MacAddr(mac).to_string()
}

/// A short stable hash (FNV-1a) for interface names.
fn short_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

fn netlink() -> Result<Netlink, ApiError> {
    Netlink::new().map_err(|e| ApiError(format!("netlink: {e}")))
}

fn ipam_err(e: ipam::IpamError) -> ApiError {
    ApiError(e.to_string())
}

impl Daemon {
    // ---- networks ----

    pub(super) fn create_network(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<serde_json::Value, ApiError> {
        let name = spec.name.clone();
        super::validate_name("network", &name)?;
        if self.networks.contains_key(&name) {
            return err(format!("network {name} already exists"));
        }
        let driver = spec.driver.clone().unwrap_or_else(|| "bridge".into());
        if !DRIVERS.contains(&driver.as_str()) {
            return err(format!(
                "unknown driver {driver:?}: expected one of {}",
                DRIVERS.join(", ")
            ));
        }
        if let Some(mtu) = spec.mtu {
            if !(68..=65535).contains(&mtu) {
                return err(format!("invalid MTU {mtu}: expected 68 to 65535"));
            }
        }
        let has_pool = matches!(driver.as_str(), "bridge" | "overlay" | "macvlan");
        if !has_pool && (spec.subnet.is_some() || spec.gateway.is_some() || spec.ip_range.is_some())
        {
            return err(format!(
                "the {driver} driver takes no --subnet, --gateway or --ip-range"
            ));
        }
        if (driver == "host" || driver == "none")
            && self.networks.values().any(|n| n.record.driver == driver)
        {
            return err(format!("only one network of driver {driver} may exist"));
        }
        match driver.as_str() {
            "overlay" => {
                let vni = spec
                    .vni
                    .ok_or_else(|| ApiError("the overlay driver needs --vni".into()))?;
                if !(1..=0xff_ffff).contains(&vni) {
                    return err(format!("invalid VNI {vni}: expected 1 to 16777215"));
                }
                if let Some(other) = self
                    .networks
                    .values()
                    .find(|n| n.record.driver == "overlay" && n.record.spec.vni == Some(vni))
                {
                    return err(format!(
                        "VNI {vni} is already used by network {}",
                        other.record.name
                    ));
                }
                for p in &spec.peers {
                    p.parse::<std::net::IpAddr>()
                        .map_err(|_| ApiError(format!("invalid peer address {p:?}")))?;
                }
            }
            "macvlan" => {
                let parent = spec
                    .parent
                    .as_deref()
                    .ok_or_else(|| ApiError("the macvlan driver needs --parent IF".into()))?;
                if !switch::port::afpacket::interface_exists(parent) {
                    return err(format!("no such interface: {parent} (the macvlan parent)"));
                }
                if self.ports.contains_key(parent) {
                    return err(format!("interface {parent} is already a port"));
                }
            }
            _ => {}
        }
        if driver != "overlay" && (spec.vni.is_some() || !spec.peers.is_empty()) {
            return err("--vni and --peer are for the overlay driver");
        }

        // IPAM first: it validates the subnet, gateway and range and changes nothing on error.
        let mut ipam_state = self.ipam.clone();
        let ipam = if has_pool {
            let parse = |what: &str, v: &Option<String>| -> Result<Option<Cidr>, ApiError> {
                v.as_deref()
                    .map(|t| {
                        t.parse()
                            .map_err(|e| ApiError(format!("invalid {what}: {e}")))
                    })
                    .transpose()
            };
            let gateway = spec
                .gateway
                .as_deref()
                .map(|g| {
                    g.parse::<Ipv4Addr>()
                        .map_err(|_| ApiError(format!("invalid gateway {g:?}")))
                })
                .transpose()?;
            let req = PoolRequest {
                subnet: parse("subnet", &spec.subnet)?,
                ip_range: parse("ip range", &spec.ip_range)?,
                gateway,
                reserved: vec![],
                host_routes: host_routes(),
            };
            let pool = ipam_state.request_pool(req).map_err(ipam_err)?;
            let p = ipam_state.pool(&pool).expect("just made");
            Some(NetworkIpam {
                subnet: p.subnet(),
                gateway: p.gateway(),
                pool,
            })
        } else {
            None
        };

        if driver == "overlay" {
            self.ensure_overlay()?;
        }
        let id = self.new_bridge()?;
        let record = NetworkRecord {
            id: random_id(),
            name: name.clone(),
            driver: driver.clone(),
            spec: spec.clone(),
            ipam: ipam.clone(),
        };
        let out = json!({ "id": record.id, "name": name });
        self.networks
            .insert(name.clone(), NetworkLive { record, id });
        let prev_ipam = std::mem::replace(&mut self.ipam, ipam_state);

        // The driver's ports: a gateway TAP for bridge networks, the parent for macvlan.
        let port = match (driver.as_str(), &ipam) {
            ("bridge", Some(ip)) => ip.gateway.map(|gw| PortRecord {
                name: if name == "bridge" {
                    DEFAULT_GATEWAY_PORT.to_string()
                } else {
                    format!("vsg{}", &self.networks[&name].record.id[..12])
                },
                network: name.clone(),
                port_type: PortType::Internal,
                vlan: None,
                trunks: None,
                address: Some(format!("{gw}/{}", ip.subnet.prefix_len())),
                owner: Some("gateway".into()),
            }),
            ("overlay", _) => Some(PortRecord {
                name: format!("vxlan{}", spec.vni.expect("checked")),
                network: name.clone(),
                port_type: PortType::Vxlan,
                vlan: None,
                trunks: None,
                address: None,
                owner: Some("overlay".into()),
            }),
            ("macvlan", _) => Some(PortRecord {
                name: spec.parent.clone().expect("checked"),
                network: name.clone(),
                port_type: PortType::System,
                vlan: None,
                trunks: None,
                address: None,
                owner: Some("uplink".into()),
            }),
            _ => None,
        };
        let result = match port {
            Some(rec) => self.attach(&rec).map(|live| {
                self.ports.insert(rec.name.clone(), live);
            }),
            None => Ok(()),
        }
        .and_then(|_| self.save());
        if let Err(e) = result {
            // Undo: ports of this network, the bridge, the pool.
            let names: Vec<String> = self
                .ports
                .values()
                .filter(|p| p.record.network == name)
                .map(|p| p.record.name.clone())
                .collect();
            for n in names {
                let _ = self.detach(&n);
            }
            let live = self.networks.remove(&name).expect("inserted above");
            let _ = self.call(move |ctl| ctl.dp.remove_network(live.id));
            self.ipam = prev_ipam;
            return Err(e);
        }
        Ok(out)
    }

    pub(super) fn network_rm(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        let net = self.network(name)?;
        if matches!(name, "bridge" | "host" | "none") {
            return err(format!(
                "network {name} is a default network and cannot be removed"
            ));
        }
        let eps: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|e| e.network == name)
            .map(|e| e.sandbox.as_str())
            .collect();
        if !eps.is_empty() {
            return err(format!(
                "network {name} has active endpoints ({}): disconnect them first",
                eps.join(", ")
            ));
        }
        let users: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.record.network == name && p.record.owner.is_none())
            .map(|p| p.record.name.as_str())
            .collect();
        if !users.is_empty() {
            return err(format!(
                "network {name} still has ports: {} (remove them first)",
                users.join(", ")
            ));
        }
        let id = net.id;
        let pool = net.record.ipam.as_ref().map(|i| i.pool.clone());
        let own: Vec<String> = self
            .ports
            .values()
            .filter(|p| p.record.network == name)
            .map(|p| p.record.name.clone())
            .collect();
        for n in own {
            self.detach(&n)?;
        }
        if !self.call(move |ctl| ctl.dp.remove_network(id))? {
            return err(format!("network {name} still has ports in the datapath"));
        }
        self.networks.remove(name);
        if let Some(pool) = pool {
            let _ = self.ipam.release_pool(&pool);
        }
        self.save()?;
        Ok(json!({ "removed": name }))
    }

    pub(super) fn network_ls(&self) -> Result<serde_json::Value, ApiError> {
        let rows: Vec<NetworkRow> = self
            .networks
            .values()
            .map(|n| NetworkRow {
                id: n.record.id[..12].to_string(),
                name: n.record.name.clone(),
                driver: n.record.driver.clone(),
                scope: scope(&n.record.driver).into(),
                ports: self
                    .ports
                    .values()
                    .filter(|p| p.record.network == n.record.name)
                    .count(),
            })
            .collect();
        Ok(serde_json::to_value(rows).expect("rows serialize"))
    }

    pub(super) fn network_inspect(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        let n = self.network(name)?;
        let s = &n.record.spec;
        let mut config = serde_json::Map::new();
        if let Some(ip) = &n.record.ipam {
            config.insert("Subnet".into(), json!(ip.subnet.to_string()));
            if let Some(gw) = ip.gateway {
                config.insert("Gateway".into(), json!(gw.to_string()));
            }
        }
        if let Some(v) = &s.ip_range {
            config.insert("IPRange".into(), json!(v));
        }
        let mut options = serde_json::Map::new();
        if let Some(mtu) = s.mtu {
            options.insert(
                "com.docker.network.driver.mtu".into(),
                json!(mtu.to_string()),
            );
        }
        if let Some(vni) = s.vni {
            options.insert("vxlan.vni".into(), json!(vni.to_string()));
        }
        if let Some(p) = &s.parent {
            options.insert("parent".into(), json!(p));
        }
        let mut containers = serde_json::Map::new();
        for e in self.endpoints.iter().filter(|e| e.network == name) {
            containers.insert(
                e.id.clone(),
                json!({
                    "Name": e.sandbox,
                    "EndpointID": e.id,
                    "MacAddress": e.mac.clone().unwrap_or_default(),
                    "IPv4Address": e.ip.map(|ip| format!("{ip}/{}", e.prefix_len)).unwrap_or_default(),
                    "IPv6Address": "",
                }),
            );
        }
        let ports: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.record.network == name)
            .map(|p| p.record.name.as_str())
            .collect();
        Ok(json!([{
            "Name": n.record.name,
            "Id": n.record.id,
            "Driver": n.record.driver,
            "Scope": scope(&n.record.driver),
            "Internal": s.internal,
            "IPAM": {
                "Driver": "default",
                "Config": if config.is_empty() { vec![] } else { vec![config] },
            },
            "Containers": containers,
            "Options": options,
            "Peers": s.peers,
            "Ports": ports,
        }]))
    }

    pub(super) fn network_peer(
        &mut self,
        network: &str,
        ip: &str,
        add: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let net = self.network(network)?;
        if net.record.driver != "overlay" {
            return err(format!("network {network} is not an overlay network"));
        }
        let addr: std::net::IpAddr = ip
            .parse()
            .map_err(|_| ApiError(format!("invalid peer address {ip:?}")))?;
        let ip = addr.to_string();
        let peers = &net.record.spec.peers;
        let present = peers.contains(&ip);
        if add && present {
            return err(format!("{ip} is already a peer of {network}"));
        }
        if !add && !present {
            return err(format!("{ip} is not a peer of {network}"));
        }
        let vni = net.record.spec.vni.expect("overlay networks have a VNI");
        if let Some(o) = &self.overlay {
            let done = if add {
                o.add_peer(vni, addr)
            } else {
                o.remove_peer(vni, addr)
            };
            done.map_err(|e| ApiError(format!("peer {ip}: {e}")))?;
        }
        if !add {
            // Stations behind the vanished peer must not stay on the bridge's VXLAN port.
            if let Some(p) = self.ports.get(&format!("vxlan{vni}")) {
                let handle = p.handle;
                self.call(move |ctl| {
                    if let Some((net, local)) = ctl.dp.port_location(handle) {
                        if let Some(b) = ctl.dp.bridge_mut(net) {
                            b.fdb_mut().flush_port(local);
                        }
                    }
                })?;
            }
        }
        let live = self.networks.get_mut(network).expect("checked");
        if add {
            live.record.spec.peers.push(ip.clone());
        } else {
            live.record.spec.peers.retain(|p| *p != ip);
        }
        if let Err(e) = self.save() {
            if let Some(o) = &self.overlay {
                let _ = if add {
                    o.remove_peer(vni, addr)
                } else {
                    o.add_peer(vni, addr)
                };
            }
            let live = self.networks.get_mut(network).expect("checked");
            if add {
                live.record.spec.peers.retain(|p| *p != ip);
            } else {
                live.record.spec.peers.push(ip);
            }
            return Err(e);
        }
        Ok(json!({ "network": network, "peers": self.networks[network].record.spec.peers }))
    }

    // ---- sandboxes ----

    /// `adopt`: the `--netns` path and its namespace, opened and checked beforehand
    /// ([`netns::open_foreign_netns`]), outside the daemon's lock.
    pub(super) fn sandbox_create(
        &mut self,
        name: &str,
        adopt: Option<(&str, std::fs::File)>,
    ) -> Result<serde_json::Value, ApiError> {
        netns::validate_netns_name(name).map_err(|e| ApiError(e.to_string()))?;
        if self.sandboxes.contains_key(name) {
            return err(format!("sandbox {name} already exists"));
        }
        let own_path = netns::netns_path(name).map_err(|e| ApiError(e.to_string()))?;
        let (path, adopted, bound) = match adopt {
            Some((src, _)) if std::path::Path::new(src) == own_path => (own_path, true, false),
            Some((_, ns)) => (
                netns::bind_named_netns_file(name, &ns).map_err(|e| ApiError(e.to_string()))?,
                true,
                true,
            ),
            None => {
                if netns::netns_exists(name) {
                    return err(format!(
                        "a namespace named {name} already exists: adopt it with --netns {}",
                        own_path.display()
                    ));
                }
                (
                    netns::create_named_netns(name).map_err(|e| ApiError(e.to_string()))?,
                    false,
                    false,
                )
            }
        };
        let rec = SandboxRecord {
            name: name.to_string(),
            path: path.display().to_string(),
            adopted,
            bound,
            host: false,
        };
        self.sandboxes.insert(name.to_string(), rec);
        if let Err(e) = self.save() {
            self.sandboxes.remove(name);
            if !adopted || bound {
                let _ = netns::delete_named_netns(name);
            }
            return Err(e);
        }
        Ok(json!({ "name": name, "netns": path.display().to_string() }))
    }

    pub(super) fn sandbox_rm(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        let sb = self
            .sandboxes
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError(format!("no such sandbox: {name}")))?;
        let nets: Vec<String> = self
            .endpoints
            .iter()
            .filter(|e| e.sandbox == name)
            .map(|e| e.network.clone())
            .collect();
        let mut problems = Vec::new();
        for n in nets {
            if let Err(e) = self.network_disconnect(&n, name) {
                problems.push(e.0);
            }
        }
        // A namespace adopted under its own name stays; a name we bound or created is removed.
        if !sb.adopted || sb.bound || sb.host {
            if let Err(e) = netns::delete_named_netns(name) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    problems.push(e.to_string());
                }
            }
        }
        self.sandboxes.remove(name);
        self.save()?;
        if problems.is_empty() {
            Ok(json!({ "removed": name }))
        } else {
            err(format!(
                "sandbox {name} removed, with problems: {}",
                problems.join("; ")
            ))
        }
    }

    pub(super) fn sandbox_ls(&self) -> Result<serde_json::Value, ApiError> {
        let rows: Vec<SandboxRow> = self
            .sandboxes
            .values()
            .map(|s| SandboxRow {
                name: s.name.clone(),
                netns: s.path.clone(),
                endpoints: self
                    .endpoints
                    .iter()
                    .filter(|e| e.sandbox == s.name)
                    .map(|e| EndpointRow {
                        network: e.network.clone(),
                        interface: e.interface.clone(),
                        ipv4: e.ip.map(|ip| format!("{ip}/{}", e.prefix_len)),
                        mac: e.mac.clone(),
                    })
                    .collect(),
            })
            .collect();
        Ok(serde_json::to_value(rows).expect("rows serialize"))
    }

    // ---- endpoints ----

    pub(super) fn network_connect(
        &mut self,
        network: &str,
        sandbox: &str,
        ip: Option<&str>,
    ) -> Result<serde_json::Value, ApiError> {
        let net = self.network(network)?.record.clone();
        let sb = self
            .sandboxes
            .get(sandbox)
            .cloned()
            .ok_or_else(|| ApiError(format!("no such sandbox: {sandbox}")))?;
        if self
            .endpoints
            .iter()
            .any(|e| e.network == network && e.sandbox == sandbox)
        {
            return err(format!(
                "sandbox {sandbox} is already connected to {network}"
            ));
        }
        let mine: Vec<&EndpointRecord> = self
            .endpoints
            .iter()
            .filter(|e| e.sandbox == sandbox)
            .collect();
        if sb.host {
            return err(format!(
                "sandbox {sandbox} uses the host network: it cannot join other networks"
            ));
        }
        let requested = ip
            .map(|t| {
                t.parse::<Ipv4Addr>()
                    .map_err(|_| ApiError(format!("invalid address {t:?}")))
            })
            .transpose()?;
        let id = random_id();
        match net.driver.as_str() {
            "none" | "host" => {
                if requested.is_some() {
                    return err(format!("the {} network takes no --ip", net.driver));
                }
                if !mine.is_empty() {
                    return err(format!(
                        "sandbox {sandbox} is connected to other networks; the {} network must be its only one",
                        net.driver
                    ));
                }
                if net.driver == "host" {
                    self.join_host_namespace(&sb)?;
                }
                self.endpoints.push(EndpointRecord {
                    id: id.clone(),
                    network: network.into(),
                    sandbox: sandbox.into(),
                    interface: String::new(),
                    host_interface: String::new(),
                    mac: None,
                    ip: None,
                    prefix_len: 0,
                    default_route: false,
                });
                if let Err(e) = self.save() {
                    self.endpoints.pop();
                    if net.driver == "host" {
                        let _ = self.leave_host_namespace(sandbox);
                    }
                    return Err(e);
                }
                return Ok(json!({ "endpoint": id, "network": network, "sandbox": sandbox }));
            }
            _ => {}
        }
        if mine.iter().any(|e| matches!(self.networks.get(&e.network), Some(n) if n.record.driver == "none" || n.record.driver == "host")) {
            return err(format!("sandbox {sandbox} is on the none or host network; disconnect it first"));
        }
        let ipam = net
            .ipam
            .clone()
            .ok_or_else(|| ApiError(format!("network {network} has no address pool")))?;
        let interface = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !mine.iter().any(|e| &e.interface == n))
            .expect("some ethN is free");
        let default_route =
            !net.spec.internal && ipam.gateway.is_some() && !mine.iter().any(|e| e.default_route);
        let host_interface = format!("{ENDPOINT_PREFIX}{}", short_hash(&[&net.id, sandbox]));
        let addr = self
            .ipam
            .request_address(&ipam.pool, sandbox, requested)
            .map_err(ipam_err)?;
        let ep = EndpointRecord {
            id: id.clone(),
            network: network.into(),
            sandbox: sandbox.into(),
            interface,
            host_interface,
            mac: Some(mac_text(mac_for(addr))),
            ip: Some(addr),
            prefix_len: ipam.subnet.prefix_len(),
            default_route,
        };
        if let Err(e) = self.plumb(&ep, &sb, &net, ipam.gateway) {
            let _ = self.ipam.release_address(&ipam.pool, addr);
            return Err(e);
        }
        self.endpoints.push(ep.clone());
        if let Err(e) = self.save() {
            self.endpoints.pop();
            let _ = self.unplumb(&ep);
            let _ = self.ipam.release_address(&ipam.pool, addr);
            return Err(e);
        }
        Ok(json!({
            "endpoint": id,
            "network": network,
            "sandbox": sandbox,
            "interface": ep.interface,
            "ipv4": format!("{addr}/{}", ep.prefix_len),
            "mac": ep.mac,
        }))
    }

    /// Makes an endpoint real: veth pair, address and routes inside, host end on the bridge.
    /// Undoes everything on failure.
    fn plumb(
        &mut self,
        ep: &EndpointRecord,
        sb: &SandboxRecord,
        net: &NetworkRecord,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), ApiError> {
        let ns = netns::open_netns(&sb.path).map_err(|e| ApiError(e.to_string()))?;
        let mut nl = netlink()?;
        let ip = ep.ip.expect("bridged endpoints have an address");
        // Overlay networks default to the underlay MTU less the VXLAN overhead.
        let mtu = net.spec.mtu.or_else(|| {
            let o = self.overlay.as_ref().filter(|_| net.driver == "overlay")?;
            Some(o.config().underlay_mtu.saturating_sub(vxlan::OVERHEAD_V4) as u32)
        });
        // On an overlay the sandbox builds TCP super-frames no bigger than one UDP_SEGMENT send
        // of the VTEP (see `vxlan::segments_per_send`). Only its end: the host end must still
        // take whatever the far VTEP rebuilt.
        let gso_max_segs = match (net.driver.as_str(), mtu) {
            ("overlay", Some(mtu)) => Some(vxlan::segments_per_send(mtu as usize) as u32),
            _ => None,
        };
        // The alias marks the veth as this state dir's: only such veths are ever removed as
        // orphans.
        let alias = self.owner_alias();
        nl.create_veth_with(&crate::netlink::VethSpec {
            host_name: &ep.host_interface,
            peer_name: &ep.interface,
            peer_netns_fd: Some(ns.as_fd()),
            mtu,
            peer_mac: Some(mac_for(ip)),
            peer_gso_max_segs: gso_max_segs,
            host_alias: Some(&alias),
        })
        .map_err(|e| ApiError(format!("creating the endpoint's veth pair: {e}")))?;
        let undo = |nl: &mut Netlink| {
            let _ = nl.delete_link(&ep.host_interface);
        };
        let inside = netns::in_netns(&ns, || -> std::io::Result<()> {
            let mut nl = Netlink::new()?;
            nl.set_up("lo")?;
            nl.add_address(&ep.interface, ip, ep.prefix_len)?;
            nl.set_up(&ep.interface)?;
            if ep.default_route {
                if let Some(gw) = gateway {
                    nl.add_default_route(gw)?;
                }
            }
            Ok(())
        });
        if let Err(e) = inside.and_then(|r| r) {
            undo(&mut nl);
            return err(format!(
                "configuring {} in sandbox {}: {e}",
                ep.interface, sb.name
            ));
        }
        if let Err(e) = nl.set_up(&ep.host_interface) {
            undo(&mut nl);
            return err(format!("bringing up {}: {e}", ep.host_interface));
        }
        let rec = PortRecord {
            name: ep.host_interface.clone(),
            network: net.name.clone(),
            port_type: PortType::System,
            vlan: None,
            trunks: None,
            address: None,
            owner: Some("endpoint".into()),
        };
        match self.attach(&rec) {
            Ok(live) => {
                self.ports.insert(rec.name, live);
                Ok(())
            }
            Err(e) => {
                undo(&mut nl);
                Err(e)
            }
        }
    }

    /// Removes an endpoint's port and veth pair (the sandbox end goes with it).
    fn unplumb(&mut self, ep: &EndpointRecord) -> Result<(), ApiError> {
        if ep.host_interface.is_empty() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if self.ports.contains_key(&ep.host_interface) {
            if let Err(e) = self.detach(&ep.host_interface) {
                problems.push(e.0);
            }
        }
        match netlink()?.delete_link(&ep.host_interface) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("deleting {}: {e}", ep.host_interface)),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            err(problems.join("; "))
        }
    }

    pub(super) fn network_disconnect(
        &mut self,
        network: &str,
        sandbox: &str,
    ) -> Result<serde_json::Value, ApiError> {
        self.network(network)?;
        let i = self
            .endpoints
            .iter()
            .position(|e| e.network == network && e.sandbox == sandbox)
            .ok_or_else(|| ApiError(format!("sandbox {sandbox} is not connected to {network}")))?;
        let ep = self.endpoints[i].clone();
        // Teardown goes on past a failure and reports all of them.
        let mut problems = Vec::new();
        if let Err(e) = self.unplumb(&ep) {
            problems.push(e.0);
        }
        if self.networks[network].record.driver == "host" {
            if let Err(e) = self.leave_host_namespace(sandbox) {
                problems.push(e.0);
            }
        }
        if let (Some(ip), Some(ipam)) = (ep.ip, self.networks[network].record.ipam.clone()) {
            if let Err(e) = self.ipam.release_address(&ipam.pool, ip) {
                problems.push(e.to_string());
            }
        }
        self.endpoints.remove(i);
        self.save()?;
        if problems.is_empty() {
            Ok(json!({ "network": network, "sandbox": sandbox }))
        } else {
            err(format!(
                "disconnected, with problems: {}",
                problems.join("; ")
            ))
        }
    }

    /// Points the sandbox's name at the daemon's own namespace (the `host` driver).
    fn join_host_namespace(&mut self, sb: &SandboxRecord) -> Result<(), ApiError> {
        if sb.adopted {
            return err(format!(
                "sandbox {} was adopted from an existing namespace; it cannot join the host network",
                sb.name
            ));
        }
        netns::delete_named_netns(&sb.name).map_err(|e| ApiError(e.to_string()))?;
        if let Err(e) = netns::bind_named_netns(&sb.name, "/proc/thread-self/ns/net") {
            let _ = netns::create_named_netns(&sb.name);
            return err(format!("joining the host namespace: {e}"));
        }
        self.sandboxes.get_mut(&sb.name).expect("exists").host = true;
        Ok(())
    }

    /// Gives a sandbox that left the host network a fresh namespace of its own.
    fn leave_host_namespace(&mut self, sandbox: &str) -> Result<(), ApiError> {
        let _ = netns::delete_named_netns(sandbox);
        netns::create_named_netns(sandbox).map_err(|e| ApiError(e.to_string()))?;
        if let Some(sb) = self.sandboxes.get_mut(sandbox) {
            sb.host = false;
        }
        Ok(())
    }

    /// Opens the VXLAN endpoint (`--vtep`) the first time an overlay network needs it, and has
    /// the datapath poll its socket.
    pub(super) fn ensure_overlay(&mut self) -> Result<(), ApiError> {
        if self.overlay.is_some() {
            return Ok(());
        }
        let addr = self.vtep_addr;
        let config = vxlan::VtepConfig {
            port: addr.port(),
            underlay_mtu: underlay_mtu(*addr.ip()),
            ..vxlan::VtepConfig::default()
        };
        let overlay = vxlan::Overlay::bind(addr, config)
            .map_err(|e| ApiError(format!("opening the VXLAN endpoint on {addr}: {e}")))?;
        let poller = overlay.clone();
        let fd = overlay.fd();
        self.call(move |ctl| ctl.add_poller(fd, Box::new(move |dp, now| poller.poll(dp, now))))?
            .map_err(|e| ApiError(format!("polling the VXLAN socket: {e}")))?;
        tracing::info!(%addr, mtu = config.underlay_mtu, "VXLAN endpoint open");
        self.overlay = Some(overlay);
        Ok(())
    }

    // ---- after a restart ----

    /// Checks stored sandboxes and endpoints against the system and repairs what it can: a
    /// sandbox whose namespace is gone loses its endpoints; an endpoint whose veth vanished is
    /// re-made. Returns what was repaired.
    pub(super) fn reconcile_endpoints(&mut self) -> Vec<String> {
        let mut repairs = Vec::new();
        let gone: Vec<String> = self
            .sandboxes
            .values()
            .filter(|s| netns::adopt_netns(&s.path).is_err())
            .map(|s| s.name.clone())
            .collect();
        for name in gone {
            let eps: Vec<EndpointRecord> = self
                .endpoints
                .iter()
                .filter(|e| e.sandbox == name)
                .cloned()
                .collect();
            for ep in eps {
                let _ = netlink().and_then(|mut nl| {
                    nl.delete_link(&ep.host_interface)
                        .map_err(|e| ApiError(e.to_string()))
                });
                self.release(&ep);
            }
            self.endpoints.retain(|e| e.sandbox != name);
            self.sandboxes.remove(&name);
            repairs.push(format!(
                "sandbox {name}: its namespace is gone; removed it and its endpoints"
            ));
        }
        let eps = self.endpoints.clone();
        for ep in eps.iter().filter(|e| !e.host_interface.is_empty()) {
            if switch::port::afpacket::interface_exists(&ep.host_interface) {
                continue;
            }
            let (Some(sb), Some(net)) = (
                self.sandboxes.get(&ep.sandbox).cloned(),
                self.networks.get(&ep.network).map(|n| n.record.clone()),
            ) else {
                continue;
            };
            let gw = net.ipam.as_ref().and_then(|i| i.gateway);
            // The sandbox end may have survived alone only if the pair was split; remove it.
            let _ = netns::open_netns(&sb.path).and_then(|ns| {
                netns::in_netns(&ns, || {
                    Netlink::new().and_then(|mut nl| nl.delete_link(&ep.interface))
                })
            });
            match self.plumb(ep, &sb, &net, gw) {
                Ok(()) => repairs.push(format!(
                    "endpoint {}/{}: its veth had vanished; re-made it",
                    ep.network, ep.sandbox
                )),
                Err(e) => {
                    self.release(ep);
                    self.endpoints.retain(|x| x.id != ep.id);
                    repairs.push(format!(
                        "endpoint {}/{}: its veth had vanished and could not be re-made ({e}); removed it",
                        ep.network, ep.sandbox
                    ));
                }
            }
        }
        repairs
    }

    fn release(&mut self, ep: &EndpointRecord) {
        if let (Some(ip), Some(net)) = (ep.ip, self.networks.get(&ep.network)) {
            if let Some(ipam) = net.record.ipam.clone() {
                let _ = self.ipam.release_address(&ipam.pool, ip);
            }
        }
    }

    /// Deletes endpoint veths that no stored endpoint owns (left by a crash mid-connect) and
    /// that carry this state dir's mark (another daemon's, or a stranger's, are not ours). A
    /// veth killed between its creation and its marking has no alias yet; it is ours when its
    /// name is the one we give a stored (network, sandbox) pair (a 48-bit hash of our random
    /// network ID and the sandbox name: no one else's veth has it).
    pub(super) fn remove_orphan_veths(&mut self) -> Vec<String> {
        let Ok(mut nl) = netlink() else {
            return vec![];
        };
        let Ok(links) = nl.list_links() else {
            return vec![];
        };
        let mine = self.owner_alias();
        let known: std::collections::HashSet<&str> = self
            .endpoints
            .iter()
            .map(|e| e.host_interface.as_str())
            .collect();
        // The names of every stored (network, sandbox) pair, made only if an unmarked
        // candidate shows up.
        let mut our_names: Option<std::collections::HashSet<String>> = None;
        let mut repairs = Vec::new();
        for l in links {
            let candidate = l.name.starts_with(ENDPOINT_PREFIX)
                && l.name.len() == 15
                && !known.contains(l.name.as_str());
            if !candidate {
                continue;
            }
            let ours = match l.alias.as_deref() {
                Some(alias) => alias == mine,
                None => our_names
                    .get_or_insert_with(|| {
                        self.networks
                            .values()
                            .flat_map(|n| {
                                self.sandboxes.keys().map(move |sb| {
                                    format!("{ENDPOINT_PREFIX}{}", short_hash(&[&n.record.id, sb]))
                                })
                            })
                            .collect()
                    })
                    .contains(&l.name),
            };
            if ours && nl.delete_link(&l.name).is_ok() {
                repairs.push(format!("removed orphan endpoint veth {}", l.name));
            }
        }
        repairs
    }
}

fn scope(driver: &str) -> &'static str {
    if driver == "overlay" {
        "swarm"
    } else {
        "local"
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

/// The daemon namespace's IPv4 routes (a default pool must overlap none).
fn host_routes() -> Vec<Cidr> {
    let Ok(mut nl) = Netlink::new() else {
        return vec![];
    };
    nl.list_routes_v4()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(ip, len)| Cidr::containing(ip, len).ok())
        .filter(|c| c.prefix_len() > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_names() {
        assert_eq!(
            mac_text(mac_for("172.17.0.2".parse().unwrap())),
            "02:42:ac:11:00:02"
        );
        let a = short_hash(&["net", "sb1"]);
        assert_eq!(a.len(), 12);
        assert_ne!(a, short_hash(&["net", "sb2"]));
        assert_ne!(short_hash(&["ne", "tsb1"]), a);
        assert_eq!(format!("{ENDPOINT_PREFIX}{a}").len(), 15);
        assert_eq!(
            parse_addr("10.0.0.1/24").unwrap(),
            ("10.0.0.1".parse().unwrap(), 24)
        );
        assert!(parse_addr("10.0.0.1").is_err());
    }
}
