//! The endpoint API (`network connect`, `network disconnect`): an endpoint joins a sandbox to a
//! network. For the drivers with an address pool it is a veth pair made in one netlink request,
//! the sandbox end `ethN` with a MAC derived from its address, the address from IPAM, the
//! default route via the gateway on the sandbox's first network, and the host end a port of
//! the network's bridge. After a restart, endpoints are checked against the system.
//!
//! Docker's endpoints (the plugin's `CreateEndpoint`, `Join`, `Leave`, `DeleteEndpoint`) are
//! endpoints without a sandbox record: Docker moves the free end of the veth into the container
//! itself. Published ports of either kind go through [`Daemon::publish_ports`].

use super::commit::Order;
use super::docker::{EndpointInfo, EndpointSpec, IfAddr, JoinInfo};
use super::sandboxes::SandboxRecord;
use super::store::{StoreError, Table, Tx};
use super::undo::Undo;
use super::{random_id, ApiError, Daemon, Driver, NetworkRecord, PortOwner, PortRecord};
use crate::api::PortType;
use crate::netlink::Netlink;
use crate::netns;
use ipam::{Cidr, IpamDriver, PoolId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

/// Prefix of the host ends of endpoint veths (so orphans can be found after a crash).
const ENDPOINT_PREFIX: &str = "vse";
/// Prefix of the free end of a Docker endpoint's veth, until Docker moves it into the
/// container (and renames it `ethN`).
const DOCKER_FREE_PREFIX: &str = "vsc";

/// A network's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkIpam {
    pub pool: PoolId,
    pub subnet: Cidr,
    pub gateway: Option<Ipv4Addr>,
    /// The pool was made by Docker's `RequestPool` (`--ipam-driver vswitch`): Docker releases
    /// it, not the network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub docker_pool: bool,
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
    /// For an endpoint Docker made through the plugin: what only such endpoints have. Such an
    /// endpoint has no sandbox record (`sandbox` is `docker:` and 12 digits of its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerEndpoint>,
    /// Published ports (`--publish`, `docker run -p`), programmed by `publish.rs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<super::firewall::PortBinding>,
    /// Extra DNS names of the sandbox on this network (`network connect --alias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What an endpoint made by Docker carries besides the common fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    /// The endpoint took its address from the network's pool itself (and gives it back);
    /// false when Docker requested it from our IPAM driver (and releases it).
    pub allocated: bool,
    /// Docker's sandbox key (its netns path) while joined; None before `Join`, after `Leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_key: Option<String>,
}

impl EndpointRecord {
    /// `IP/PREFIX`, for an endpoint with an address.
    pub fn ipv4(&self) -> Option<String> {
        self.ip.map(|ip| format!("{ip}/{}", self.prefix_len))
    }
}

/// What a driver's `connect` is asked to do: join this sandbox to this network.
pub(super) struct Connect<'a> {
    /// The new endpoint's id.
    pub id: String,
    pub net: &'a NetworkRecord,
    pub sandbox: &'a SandboxRecord,
    /// The address asked for (`--ip`).
    pub requested: Option<Ipv4Addr>,
}

impl Connect<'_> {
    /// An endpoint with no interface and no address (`host`, `none`).
    pub(super) fn bare_endpoint(&self) -> EndpointRecord {
        EndpointRecord {
            id: self.id.clone(),
            network: self.net.name.clone(),
            sandbox: self.sandbox.name.clone(),
            interface: String::new(),
            host_interface: String::new(),
            mac: None,
            ip: None,
            prefix_len: 0,
            default_route: false,
            docker: None,
            publish: Vec::new(),
            aliases: Vec::new(),
        }
    }
}

impl Daemon {
    /// Connects a sandbox: check → the driver's connect → commit, undone on failure.
    pub(super) fn network_connect(
        &mut self,
        network: &str,
        sandbox: &str,
        ip: Option<&str>,
        publish: &[String],
        aliases: &[String],
    ) -> Result<serde_json::Value, ApiError> {
        let (net, sb) = self.check_connect(network, sandbox)?;
        let requested = ip.map(parse_ipv4).transpose()?;
        let aliases = self.checked_aliases(&net, aliases)?;
        let ops = net.driver.ops();
        if requested.is_some() && !ops.has_pool() {
            return Err(ApiError::invalid(format!(
                "the {} network takes no --ip",
                net.driver
            )));
        }
        // Published ports are checked before anything changes (publish.rs).
        let specs = self.check_publish(&net, publish, requested)?;
        let icc_off = super::edge::icc_off(&net.spec);
        let c = Connect {
            id: random_id(),
            net: &net,
            sandbox: &sb,
            requested,
        };
        let ep = self.transaction(|d, undo| {
            if !specs.is_empty() {
                // Runs last on failure: the table follows the state as it was.
                undo.push(|d| {
                    let _ = d.sync_edge();
                });
            }
            let mut ep = ops.connect(d, &c, undo)?;
            d.swarm_publish(&ep, undo)?;
            ep.aliases = aliases;
            d.endpoints.insert(ep.clone());
            let (n, s) = (ep.network.clone(), ep.sandbox.clone());
            undo.push(move |d| {
                d.endpoints.remove(&n, &s);
            });
            if !specs.is_empty() {
                ep.publish = d.apply_publish(&ep.id, &specs)?;
            }
            if icc_off {
                d.isolate_endpoints(&ep.network)?;
            }
            let port = d.ports.get(&ep.host_interface).map(|p| p.record.clone());
            // The driver may have changed the sandbox (the host driver's flag).
            let changed = d.sandboxes.get(sandbox).filter(|now| **now != sb).cloned();
            d.commit(Order::SystemFirst, |tx| {
                tx.put(Table::Endpoints, &ep.id, &ep)?;
                if let Some(p) = &port {
                    tx.put(Table::Ports, &p.name, p)?;
                }
                match &changed {
                    Some(s) => tx.put(Table::Sandboxes, &s.name, s),
                    None => Ok(()),
                }
            })?;
            Ok(ep)
        })?;
        self.names_connected(&ep);
        let mut out = json!({ "endpoint": ep.id, "network": network, "sandbox": sandbox });
        if !ep.publish.is_empty() {
            out["ports"] = json!(ep
                .publish
                .iter()
                .map(super::edge::docker_port)
                .collect::<Vec<_>>());
        }
        if !ep.aliases.is_empty() {
            out["aliases"] = json!(ep.aliases);
        }
        if let Some(ipv4) = ep.ipv4() {
            out["interface"] = json!(ep.interface);
            out["ipv4"] = json!(ipv4);
            out["mac"] = json!(ep.mac);
        }
        Ok(out)
    }

    /// Checks that the sandbox may join the network; returns both.
    fn check_connect(
        &self,
        network: &str,
        sandbox: &str,
    ) -> Result<(NetworkRecord, SandboxRecord), ApiError> {
        let net = self.network(network)?.record.clone();
        let sb = self.sandbox(sandbox)?.clone();
        let mine: Vec<&EndpointRecord> = self.endpoints.of_sandbox(sandbox).collect();
        if mine.iter().any(|e| e.network == network) {
            return Err(ApiError::conflict(format!(
                "sandbox {sandbox} is already connected to {network}"
            )));
        }
        if sb.host {
            return Err(ApiError::conflict(format!(
                "sandbox {sandbox} uses the host network: it cannot join other networks"
            )));
        }
        if net.driver.ops().sole_network() && !mine.is_empty() {
            return Err(ApiError::conflict(format!(
                "sandbox {sandbox} is connected to other networks; the {} network must be its only one",
                net.driver
            )));
        }
        let on_sole = mine.iter().any(|e| {
            self.networks
                .get(&e.network)
                .is_some_and(|n| n.record.driver.ops().sole_network())
        });
        if on_sole {
            return Err(ApiError::conflict(format!(
                "sandbox {sandbox} is on the none or host network; disconnect it first"
            )));
        }
        Ok((net, sb))
    }

    /// The connect of the drivers with a pool: an address, then the veth pair.
    pub(super) fn connect_veth(
        &mut self,
        c: &Connect<'_>,
        undo: &mut Undo,
    ) -> Result<EndpointRecord, ApiError> {
        let ep = self.reserve_endpoint(c, undo)?;
        self.plumb(&ep, c.sandbox, c.net)?;
        let made = ep.clone();
        undo.push(move |d| {
            let _ = d.unplumb(&made);
        });
        Ok(ep)
    }

    /// Takes the endpoint's address from the pool and names its interfaces.
    fn reserve_endpoint(
        &mut self,
        c: &Connect<'_>,
        undo: &mut Undo,
    ) -> Result<EndpointRecord, ApiError> {
        let (net, sandbox) = (c.net, &c.sandbox.name);
        let ipam = net.ipam.clone().ok_or_else(|| {
            ApiError::internal(format!("network {} has no address pool", net.name))
        })?;
        let mine: Vec<&EndpointRecord> = self.endpoints.of_sandbox(sandbox).collect();
        let interface = (0..=mine.len())
            .map(|i| format!("eth{i}"))
            .find(|n| !mine.iter().any(|e| &e.interface == n))
            .ok_or_else(|| ApiError::internal("no free interface name"))?;
        let default_route =
            !net.spec.internal && ipam.gateway.is_some() && !mine.iter().any(|e| e.default_route);
        let host_interface = format!("{ENDPOINT_PREFIX}{}", short_hash(&[&net.id, sandbox]));
        let addr = self.take_address(net, &ipam, sandbox, &c.id, c.requested, undo)?;
        Ok(EndpointRecord {
            id: c.id.clone(),
            network: net.name.clone(),
            sandbox: sandbox.clone(),
            interface,
            host_interface,
            mac: Some(mac_text(mac_for(addr))),
            ip: Some(addr),
            prefix_len: ipam.subnet.prefix_len(),
            default_route,
            docker: None,
            publish: Vec::new(),
            aliases: Vec::new(),
        })
    }

    /// Makes an endpoint real: veth pair → address and routes inside → host end up → host end
    /// on the bridge. Undoes everything on failure.
    fn plumb(
        &mut self,
        ep: &EndpointRecord,
        sb: &SandboxRecord,
        net: &NetworkRecord,
    ) -> Result<(), ApiError> {
        let ip = ep
            .ip
            .ok_or_else(|| ApiError::internal("a bridged endpoint needs an address"))?;
        let gateway = net.ipam.as_ref().and_then(|i| i.gateway);
        let ns = netns::open_netns(&sb.path).map_err(|e| ApiError::internal(e.to_string()))?;
        self.transaction(|d, undo| {
            d.make_veth(ep, net, &ns, undo)?;
            configure_inside(&ns, ep, ip, gateway).map_err(|e| {
                ApiError::internal(format!(
                    "configuring {} in sandbox {}: {e}",
                    ep.interface, sb.name
                ))
            })?;
            netlink()?.set_up(&ep.host_interface).map_err(|e| {
                ApiError::internal(format!("bringing up {}: {e}", ep.host_interface))
            })?;
            let port = PortRecord::owned(
                ep.host_interface.clone(),
                net,
                PortType::System,
                PortOwner::Endpoint,
            );
            d.attach_owned(port.clone(), undo)?;
            // The sandbox's MAC is a station we know: fixed on its port, never learned elsewhere
            // (a restart finds it through the endpoint's record).
            d.pin_endpoint(&port, ep)
        })
    }

    /// Fixes the endpoint's MAC on its port as a static entry (the connect path, before the
    /// endpoint is stored for [`Daemon::attach`] to find).
    fn pin_endpoint(&self, port: &PortRecord, ep: &EndpointRecord) -> Result<(), ApiError> {
        let Some(mac) = ep.mac.as_deref() else {
            return Ok(());
        };
        let mac = mac
            .parse()
            .map_err(|e| ApiError::internal(format!("the MAC {mac} of endpoint {}: {e}", ep.id)))?;
        let handle = self.port(&port.name)?.handle;
        self.pin_stations(port, handle, &[mac])
    }

    /// The veth pair, its sandbox end already in the sandbox, with the driver's MTU and
    /// super-frame limit.
    fn make_veth(
        &self,
        ep: &EndpointRecord,
        net: &NetworkRecord,
        ns: &File,
        undo: &mut Undo,
    ) -> Result<(), ApiError> {
        let ops = net.driver.ops();
        let mtu = net.spec.mtu.or_else(|| ops.default_mtu(self));
        // The alias marks the veth as this state dir's: only such veths are ever removed as
        // orphans.
        let alias = self.owner_alias();
        netlink()?
            .create_veth_with(&crate::netlink::VethSpec {
                host_name: &ep.host_interface,
                peer_name: &ep.interface,
                peer_netns_fd: Some(ns.as_fd()),
                mtu,
                peer_mac: ep.ip.map(mac_for),
                peer_gso_max_segs: ops.sandbox_gso_max_segs(mtu),
                host_alias: Some(&alias),
            })
            .map_err(|e| ApiError::internal(format!("creating the endpoint's veth pair: {e}")))?;
        let host = ep.host_interface.clone();
        undo.push(move |_| {
            let _ = netlink().map(|mut nl| nl.delete_link(&host));
        });
        Ok(())
    }

    /// Removes an endpoint's port and veth pair (the sandbox end goes with it).
    fn unplumb(&mut self, ep: &EndpointRecord) -> Result<(), ApiError> {
        if ep.host_interface.is_empty() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if self.ports.contains_key(&ep.host_interface) {
            if let Err(e) = self.detach(&ep.host_interface) {
                problems.push(e.message);
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
            Err(ApiError::internal(problems.join("; ")))
        }
    }

    /// Disconnects a sandbox: the store forgets the endpoint and its address first (nothing
    /// changes when that fails); then, going on past a failure, the veth goes and the driver
    /// undoes what it did, and every problem is reported.
    pub(super) fn network_disconnect(
        &mut self,
        network: &str,
        sandbox: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let driver = self.network(network)?.record.driver;
        let ep = self
            .endpoints
            .get(network, sandbox)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!("sandbox {sandbox} is not connected to {network}"))
            })?;
        if ep.docker.is_some() {
            return Err(ApiError::conflict(format!(
                "{sandbox} is a Docker container's endpoint: use docker network disconnect"
            )));
        }
        // Leaving the host network gives the sandbox a namespace of its own again.
        let left_host = self
            .sandboxes
            .get(sandbox)
            .filter(|_| driver == Driver::Host)
            .map(|s| SandboxRecord {
                host: false,
                ..s.clone()
            });
        let mut problems = Vec::new();
        let eps = [ep];
        self.forget_endpoints(&eps, &mut problems, |tx| match &left_host {
            Some(s) => tx.put(Table::Sandboxes, &s.name, s),
            None => Ok(()),
        })?;
        self.tear_down_endpoints(&eps, &mut problems);
        let done = json!({ "network": network, "sandbox": sandbox });
        ApiError::unless_problems(&problems, "disconnected", done)
    }

    /// Commits that `eps`, their ports, their addresses and whatever `also` writes are gone, in
    /// one transaction; only then gives the addresses back in memory. When the commit fails
    /// nothing has changed, in memory or in the store. A release that fails is a problem, not
    /// a refusal.
    pub(super) fn forget_endpoints(
        &mut self,
        eps: &[EndpointRecord],
        problems: &mut Vec<String>,
        also: impl FnOnce(&mut Tx<'_>) -> Result<(), StoreError>,
    ) -> Result<(), ApiError> {
        // A swarm endpoint leaves the cluster first: with etcd away, nothing changes.
        for ep in eps {
            self.swarm_withdraw(ep)?;
        }
        let released: Vec<ipam::IpamChange> = eps
            .iter()
            .filter_map(|e| {
                Some(ipam::IpamChange::Released {
                    pool: self.pool_of(&e.network)?,
                    address: e.ip?,
                })
            })
            .collect();
        let ports: Vec<&str> = eps
            .iter()
            .map(|e| e.host_interface.as_str())
            .filter(|p| !p.is_empty() && self.ports.contains_key(*p))
            .collect();
        self.commit(Order::StoreFirst, |tx| {
            for ep in eps {
                tx.delete(Table::Endpoints, &ep.id)?;
            }
            for port in &ports {
                tx.delete(Table::Ports, port)?;
            }
            tx.apply_ipam(&released)?;
            also(tx)
        })?;
        for ep in eps {
            if let Err(e) = self.release(ep) {
                problems.push(e.message);
            }
        }
        // Those changes are in the store already.
        let _ = self.ipam.take_changes();
        Ok(())
    }

    /// Once their removal is committed: takes `eps` out of memory and off the system (the
    /// veth, then what the driver did), going on past a failure.
    pub(super) fn tear_down_endpoints(
        &mut self,
        eps: &[EndpointRecord],
        problems: &mut Vec<String>,
    ) {
        for ep in eps {
            self.endpoints.remove(&ep.network, &ep.sandbox);
            if let Err(e) = self.unplumb(ep) {
                problems.push(e.message);
            }
            if let Some(driver) = self.networks.get(&ep.network).map(|n| n.record.driver) {
                if let Err(e) = driver.ops().disconnect(self, &ep.sandbox) {
                    problems.push(e.message);
                }
            }
            self.names_disconnected(&ep.network, &ep.sandbox);
        }
        // Their published ports leave table inet vswitch with them.
        if eps.iter().any(|e| !e.publish.is_empty()) {
            if let Err(e) = self.sync_edge() {
                problems.push(format!("removing published ports: {}", e.message));
            }
        }
    }

    /// Gives the endpoint's address back to its network's pool.
    fn release(&mut self, ep: &EndpointRecord) -> Result<(), ApiError> {
        if self.swarm_release(ep)? {
            return Ok(());
        }
        let pool = self
            .networks
            .get(&ep.network)
            .and_then(|n| n.record.ipam.as_ref())
            .map(|i| i.pool.clone());
        if let (Some(ip), Some(pool)) = (ep.ip, pool) {
            self.ipam
                .release_address(&pool, ip)
                .map_err(ApiError::from_ipam)?;
        }
        Ok(())
    }

    // ---- after a restart ----

    /// Checks stored sandboxes and endpoints against the system and repairs what it can: a
    /// sandbox whose namespace is gone loses its endpoints; an endpoint whose veth vanished is
    /// re-made. Returns what was repaired.
    pub(super) fn reconcile_endpoints(&mut self) -> Vec<String> {
        let mut repairs = self.forget_vanished_sandboxes();
        let eps: Vec<EndpointRecord> = self.endpoints.iter().cloned().collect();
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
            // The sandbox end may have survived alone only if the pair was split; remove it.
            let _ = netns::open_netns(&sb.path).and_then(|ns| {
                netns::in_netns(&ns, || {
                    Netlink::new().and_then(|mut nl| nl.delete_link(&ep.interface))
                })
            });
            match self.plumb(ep, &sb, &net) {
                Ok(()) => repairs.push(format!(
                    "endpoint {}/{}: its veth had vanished; re-made it",
                    ep.network, ep.sandbox
                )),
                Err(e) => {
                    let _ = self.release(ep);
                    self.endpoints.remove(&ep.network, &ep.sandbox);
                    repairs.push(format!(
                        "endpoint {}/{}: its veth had vanished and could not be re-made ({e}); removed it",
                        ep.network, ep.sandbox
                    ));
                }
            }
        }
        repairs
    }

    /// Cross-checks the stored endpoints against IPAM and the addresses they really have, and
    /// fixes what disagrees, deterministically, saying what it did:
    /// - two endpoints with one address (a hand-edited state): the one IPAM allocates it to is
    ///   kept, else the first by id; the others are removed with their veths (connect them
    ///   again for a new address);
    /// - an endpoint whose address IPAM does not allocate to it: allocated to it (taken from
    ///   a stale owner that holds no endpoint with it), or the endpoint is removed when the
    ///   pool cannot give it (outside the pool, the gateway);
    /// - an allocation no endpoint holds: released;
    /// - an endpoint whose interface lacks its address, or holds others: its address is put
    ///   back and the others removed.
    pub(super) fn cross_check_addresses(&mut self) -> Vec<String> {
        let mut repairs = Vec::new();
        let mut holders: BTreeMap<(PoolId, Ipv4Addr), Vec<EndpointRecord>> = BTreeMap::new();
        for ep in self.endpoints.iter() {
            if let (Some(ip), Some(pool)) = (ep.ip, self.pool_of(&ep.network)) {
                holders.entry((pool, ip)).or_default().push(ep.clone());
            }
        }
        for ((pool, ip), mut eps) in holders {
            eps.sort_by(|a, b| a.id.cmp(&b.id));
            let owner = self
                .ipam
                .pool(&pool)
                .and_then(|p| p.owner(ip))
                .map(str::to_string);
            let owns = |e: &EndpointRecord| owner.as_deref().is_some_and(|o| ipam_owner_is(e, o));
            let keep = eps.iter().position(owns).unwrap_or(0);
            let kept = eps.remove(keep);
            for other in eps {
                self.drop_endpoint_at_start(&other);
                repairs.push(format!(
                    "endpoint {}/{}: its address {ip} is also held by the endpoint of {} (kept: \
                     {}); removed this endpoint and its veth, connect it again for a new address",
                    other.network,
                    other.sandbox,
                    kept.sandbox,
                    if owns(&kept) {
                        "IPAM allocates the address to it"
                    } else {
                        "the first by id"
                    }
                ));
            }
            if owns(&kept) {
                continue;
            }
            if owner.is_some() {
                let _ = self.ipam.release_address(&pool, ip);
            }
            match self.ipam.request_address(&pool, &kept.sandbox, Some(ip)) {
                Ok(_) => repairs.push(format!(
                    "endpoint {}/{}: its address {ip} was {} in IPAM; allocated it to the endpoint",
                    kept.network,
                    kept.sandbox,
                    match &owner {
                        Some(o) => format!("allocated to {o}, which holds no endpoint with it,"),
                        None => "not allocated".into(),
                    }
                )),
                Err(e) => {
                    self.drop_endpoint_at_start(&kept);
                    repairs.push(format!(
                        "endpoint {}/{}: its address {ip} cannot be allocated in IPAM ({e}); \
                         removed the endpoint and its veth",
                        kept.network, kept.sandbox
                    ));
                }
            }
        }
        repairs.extend(self.release_unheld_addresses());
        repairs.extend(self.check_real_addresses());
        repairs
    }

    /// The pool of `network`, if it has one.
    fn pool_of(&self, network: &str) -> Option<PoolId> {
        self.networks
            .get(network)
            .and_then(|n| n.record.ipam.as_ref())
            .map(|i| i.pool.clone())
    }

    /// Removes an endpoint at start, with its veth (its port is not attached yet).
    fn drop_endpoint_at_start(&mut self, ep: &EndpointRecord) {
        if !ep.host_interface.is_empty() {
            let _ = netlink().map(|mut nl| nl.delete_link(&ep.host_interface));
        }
        self.endpoints.remove(&ep.network, &ep.sandbox);
    }

    /// Releases the allocations no endpoint holds (the daemon's IPAM serves its endpoints only).
    fn release_unheld_addresses(&mut self) -> Vec<String> {
        let held: HashSet<(PoolId, Ipv4Addr)> = self
            .endpoints
            .iter()
            .filter_map(|e| Some((self.pool_of(&e.network)?, e.ip?)))
            .collect();
        let unheld: Vec<(PoolId, Ipv4Addr, String)> = self
            .ipam
            .pools()
            .flat_map(|(id, p)| {
                p.allocated()
                    .map(move |(ip, owner)| (id.clone(), ip, owner.to_string()))
            })
            .filter(|(id, ip, _)| !held.contains(&(id.clone(), *ip)))
            // Addresses Docker requested through our IPAM driver are Docker's to release.
            .filter(|(_, _, owner)| owner != DOCKER_IPAM_OWNER)
            .collect();
        let mut repairs = Vec::new();
        for (pool, ip, owner) in unheld {
            if self.ipam.release_address(&pool, ip).is_ok() {
                repairs.push(format!(
                    "address {ip} of pool {pool} was allocated to {owner} in IPAM, but no \
                     endpoint holds it; released it"
                ));
            }
        }
        repairs
    }

    /// Puts each endpoint's address back on its interface when it is missing there, and
    /// removes the other IPv4 addresses the interface holds: one namespace visit per sandbox.
    fn check_real_addresses(&mut self) -> Vec<String> {
        type Expected = (EndpointRecord, Option<Ipv4Addr>);
        let mut by_sandbox: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
        for ep in self.endpoints.iter().filter(|e| e.ip.is_some()) {
            let gateway = self
                .networks
                .get(&ep.network)
                .and_then(|n| n.record.ipam.as_ref())
                .and_then(|i| i.gateway);
            by_sandbox
                .entry(ep.sandbox.clone())
                .or_default()
                .push((ep.clone(), gateway));
        }
        let mut repairs = Vec::new();
        for (sandbox, eps) in by_sandbox {
            let Some(path) = self.sandboxes.get(&sandbox).map(|s| s.path.clone()) else {
                continue;
            };
            let Ok(ns) = netns::open_netns(&path) else {
                continue;
            };
            let fixed = netns::in_netns(&ns, || {
                let mut out = Vec::new();
                let Ok(mut nl) = Netlink::new() else {
                    return out;
                };
                for (ep, gateway) in &eps {
                    let Some(ip) = ep.ip else { continue };
                    // A missing interface is the veth check's business (reconcile_endpoints).
                    let Ok(have) = nl.list_addresses(&ep.interface) else {
                        continue;
                    };
                    for (other, len) in have.iter().filter(|a| **a != (ip, ep.prefix_len)) {
                        if nl.del_address(&ep.interface, *other, *len).is_ok() {
                            out.push(format!(
                                "endpoint {}/{}: {} held {other}/{len}, not its address; removed it",
                                ep.network, ep.sandbox, ep.interface
                            ));
                        }
                    }
                    if !have.contains(&(ip, ep.prefix_len))
                        && nl.add_address(&ep.interface, ip, ep.prefix_len).is_ok()
                    {
                        out.push(format!(
                            "endpoint {}/{}: {} had lost its address {ip}/{}; put it back",
                            ep.network, ep.sandbox, ep.interface, ep.prefix_len
                        ));
                        // The default route went with the address.
                        if let (true, Some(gw)) = (ep.default_route, gateway) {
                            let _ = nl.add_default_route(*gw);
                        }
                    }
                }
                out
            });
            repairs.extend(fixed.unwrap_or_default());
        }
        repairs
    }

    /// Removes the sandboxes whose namespace is gone, and their endpoints.
    fn forget_vanished_sandboxes(&mut self) -> Vec<String> {
        let gone: Vec<String> = self
            .sandboxes
            .values()
            .filter(|s| netns::adopt_netns(&s.path).is_err())
            .map(|s| s.name.clone())
            .collect();
        let mut repairs = Vec::new();
        for name in gone {
            let eps: Vec<EndpointRecord> = self.endpoints.of_sandbox(&name).cloned().collect();
            for ep in eps {
                let _ = netlink().map(|mut nl| nl.delete_link(&ep.host_interface));
                let _ = self.release(&ep);
                self.endpoints.remove(&ep.network, &ep.sandbox);
            }
            self.sandboxes.remove(&name);
            repairs.push(format!(
                "sandbox {name}: its namespace is gone; removed it and its endpoints"
            ));
        }
        repairs
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

// ---- Docker's endpoints (the plugin's calls; see `docker/backend.rs`) ----
//
// A Docker endpoint is an endpoint without a sandbox record: Docker owns the container's
// namespace and moves the free end of the veth into it itself. Its life: created (address and
// MAC reserved) → joined (the veth pair made here, the host end a port of the network, the other
// end handed to Docker) → left (the pair removed) → deleted (the address given back).

impl Daemon {
    /// The index of Docker's endpoint `endpoint` on the network Docker knows by `network`.
    fn docker_endpoint_index(&self, network: &str, endpoint: &str) -> Result<usize, ApiError> {
        let net = &self.docker_network(network)?.record.name;
        self.endpoints
            .iter()
            .position(|e| e.docker.is_some() && e.network == *net && e.id == endpoint)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "no endpoint {endpoint} on the vswitch network {net} (Docker id {network})"
                ))
            })
    }

    /// `EndpointOperInfo`: the endpoint as it is.
    pub(super) fn docker_endpoint_info(
        &self,
        network: &str,
        endpoint: &str,
    ) -> Result<EndpointInfo, ApiError> {
        let i = self.docker_endpoint_index(network, endpoint)?;
        docker_info(&self.endpoints[i])
    }

    /// `CreateEndpoint`: reserves the address (the one Docker gives, or the next free one) and
    /// the MAC (Docker's, or 02:42 and the address), and stores the endpoint. The same request
    /// again returns what the endpoint has.
    pub(super) fn docker_endpoint_create(
        &mut self,
        spec: &EndpointSpec,
    ) -> Result<EndpointInfo, ApiError> {
        let net = self.docker_network(&spec.network)?.record.clone();
        if let Ok(i) = self.docker_endpoint_index(&spec.network, &spec.endpoint) {
            let info = docker_info(&self.endpoints[i])?;
            let same = spec.address.is_none_or(|a| info.address == Some(a))
                && spec.mac.is_none_or(|m| info.mac == m);
            return if same {
                Ok(info)
            } else {
                Err(ApiError::conflict(format!(
                    "endpoint {} exists with another address or MAC",
                    spec.endpoint
                )))
            };
        }
        if self.endpoints.iter().any(|e| e.id == spec.endpoint) {
            return Err(ApiError::conflict(format!(
                "endpoint {} exists on another network",
                spec.endpoint
            )));
        }
        let ipam = net.ipam.clone().ok_or_else(|| {
            ApiError::invalid(format!("network {} has no address pool", net.name))
        })?;
        if let Some(a) = spec.address.filter(|a| !ipam.subnet.contains(a.ip())) {
            return Err(ApiError::invalid(format!(
                "address {} is outside the network's subnet {}",
                a.ip(),
                ipam.subnet
            )));
        }
        self.forget_vanished_docker_endpoints();
        self.transaction(|d, undo| {
            let given = spec.address.map(|a| a.ip());
            let taken_by_docker = given.is_some_and(|ip| {
                ipam.docker_pool && d.ipam.pool(&ipam.pool).is_some_and(|p| p.is_allocated(ip))
            });
            let (ip, allocated) = match given {
                Some(ip) if taken_by_docker => (ip, false),
                _ => {
                    let ip = d
                        .ipam
                        .request_address(&ipam.pool, &spec.endpoint, given)
                        .map_err(ApiError::from_ipam)?;
                    let pool = ipam.pool.clone();
                    undo.push(move |d| {
                        let _ = d.ipam.release_address(&pool, ip);
                    });
                    (ip, true)
                }
            };
            let mac = spec.mac.map_or_else(|| mac_for(ip), |m| m.0);
            let ep = EndpointRecord {
                id: spec.endpoint.clone(),
                network: net.name.clone(),
                sandbox: format!("docker:{}", short_id(&spec.endpoint)),
                interface: String::new(),
                host_interface: String::new(),
                mac: Some(mac_text(mac)),
                ip: Some(ip),
                prefix_len: ipam.subnet.prefix_len(),
                default_route: false,
                docker: Some(DockerEndpoint {
                    allocated,
                    sandbox_key: None,
                }),
                publish: Vec::new(),
                aliases: Vec::new(),
            };
            d.endpoints.insert(ep.clone());
            let (n, sb) = (ep.network.clone(), ep.sandbox.clone());
            undo.push(move |d| {
                d.endpoints.remove(&n, &sb);
            });
            d.save()?;
            docker_info(&ep)
        })
    }

    /// `Join`: makes the endpoint's veth pair in the daemon's namespace (the free end with the
    /// endpoint's MAC), attaches the host end as a port of the network, and returns the free
    /// end's name, which Docker moves into the container, with the gateway (none on an
    /// `--internal` network).
    pub(super) fn docker_endpoint_join(
        &mut self,
        network: &str,
        endpoint: &str,
        sandbox_key: &str,
    ) -> Result<JoinInfo, ApiError> {
        let i = self.docker_endpoint_index(network, endpoint)?;
        let ep = self.endpoints[i].clone();
        if !ep.host_interface.is_empty() {
            return Err(ApiError::conflict(format!(
                "endpoint {endpoint} is already joined (port {})",
                ep.host_interface
            )));
        }
        let net = self.network(&ep.network)?.record.clone();
        let hash = short_hash(&[&net.id, &ep.id]);
        let host = format!("{ENDPOINT_PREFIX}{hash}");
        let free = format!("{DOCKER_FREE_PREFIX}{hash}");
        let ops = net.driver.ops();
        let mtu = net.spec.mtu.or_else(|| ops.default_mtu(self));
        let mac = ep
            .mac
            .as_deref()
            .and_then(|m| m.parse::<switch::MacAddr>().ok())
            .map(|m| m.0);
        // What a crash left of an earlier pair with these names goes first.
        for stale in [&host, &free] {
            if !self.ports.contains_key(stale.as_str())
                && switch::port::afpacket::interface_exists(stale)
            {
                let _ = netlink()?.delete_link(stale);
            }
        }
        let key = sandbox_key.to_string();
        self.transaction(|d, undo| {
            netlink()?
                .create_veth(&host, &free, None, mtu, mac, ops.sandbox_gso_max_segs(mtu))
                .map_err(|e| {
                    ApiError::internal(format!("creating the endpoint's veth pair: {e}"))
                })?;
            let made = host.clone();
            undo.push(move |_| {
                let _ = netlink().map(|mut nl| nl.delete_link(&made));
            });
            netlink()?
                .set_up(&host)
                .map_err(|e| ApiError::internal(format!("bringing up {host}: {e}")))?;
            // The record names its port first: attaching pins the endpoint's MAC on it.
            // Re-inserted, not changed in place: the host interface is indexed.
            let before = d.endpoints[i].clone();
            let mut e = before.clone();
            e.host_interface = host.clone();
            e.interface = free.clone();
            if let Some(docker) = e.docker.as_mut() {
                docker.sandbox_key = Some(key);
            }
            d.endpoints.insert(e);
            undo.push(move |d| {
                d.endpoints.insert(before);
            });
            let port = PortRecord::owned(host.clone(), &net, PortType::System, PortOwner::Endpoint);
            d.attach_owned(port, undo)?;
            d.save()
        })?;
        let gateway = net
            .ipam
            .as_ref()
            .and_then(|i| i.gateway)
            .filter(|_| !net.spec.internal);
        Ok(JoinInfo {
            ifname: free,
            gateway,
            static_routes: Vec::new(),
        })
    }

    /// `Leave`: detaches the endpoint's port and removes its veth pair (the end in the
    /// container goes with it). Problems past that point are logged, not returned: the
    /// endpoint has left either way.
    pub(super) fn docker_endpoint_leave(
        &mut self,
        network: &str,
        endpoint: &str,
    ) -> Result<(), ApiError> {
        let i = self.docker_endpoint_index(network, endpoint)?;
        let ep = self.endpoints[i].clone();
        if ep.host_interface.is_empty() {
            return Err(ApiError::conflict(format!(
                "endpoint {endpoint} is not joined"
            )));
        }
        if let Err(e) = self.unplumb(&ep) {
            tracing::warn!(endpoint, error = %e, "docker: leaving, the veth was not removed cleanly");
        }
        // Re-inserted, not changed in place: the host interface is indexed.
        let mut e = ep;
        e.host_interface.clear();
        e.interface.clear();
        if let Some(docker) = e.docker.as_mut() {
            docker.sandbox_key = None;
        }
        self.endpoints.insert(e);
        self.save()
    }

    /// `DeleteEndpoint`: leaves if still joined, gives the address back if the endpoint took
    /// it, and forgets the endpoint.
    pub(super) fn docker_endpoint_delete(
        &mut self,
        network: &str,
        endpoint: &str,
    ) -> Result<(), ApiError> {
        let i = self.docker_endpoint_index(network, endpoint)?;
        let ep = self.endpoints[i].clone();
        if !ep.host_interface.is_empty() {
            if let Err(e) = self.unplumb(&ep) {
                tracing::warn!(endpoint, error = %e, "docker: deleting, the veth was not removed cleanly");
            }
        }
        if ep.docker.as_ref().is_some_and(|d| d.allocated) {
            if let Err(e) = self.release(&ep) {
                tracing::warn!(endpoint, error = %e, "docker: deleting, the address was not released");
            }
        }
        self.endpoints.remove_at(i);
        self.save()
    }

    /// `ProgramExternalConnectivity` / `RevokeExternalConnectivity` (an empty list): through
    /// the same [`Daemon::publish_ports`] as `network connect --publish`.
    pub(super) fn docker_endpoint_publish(
        &mut self,
        network: &str,
        endpoint: &str,
        specs: &[super::firewall::PublishSpec],
    ) -> Result<(), ApiError> {
        self.docker_endpoint_index(network, endpoint)?;
        if specs.is_empty() {
            self.unpublish_ports(endpoint)
        } else {
            self.publish_ports(endpoint, specs).map(|_| ())
        }
    }

    /// After a restart: forgets the Docker endpoints that cannot be in use, each logged: one
    /// Docker never joined (it asks for a new endpoint when it starts a container again), one
    /// whose veth vanished (its container is gone), one whose network is gone. A joined
    /// endpoint whose veth is there is kept: its port is attached again with the others.
    pub(super) fn reconcile_docker_endpoints(&mut self) -> Vec<String> {
        let mut repairs = Vec::new();
        for ep in self.endpoints.iter().cloned().collect::<Vec<_>>() {
            if ep.docker.is_none() {
                continue;
            }
            let why = if !self.networks.contains_key(&ep.network) {
                "its network is gone"
            } else if ep.host_interface.is_empty() {
                "Docker never joined it"
            } else if !switch::port::afpacket::interface_exists(&ep.host_interface) {
                "its container is gone (the veth vanished)"
            } else {
                continue;
            };
            repairs.push(self.forget_docker_endpoint(&ep, why));
        }
        repairs
    }

    /// While running: forgets the joined Docker endpoints whose veth vanished (the container's
    /// namespace went away without a `Leave`), each logged.
    fn forget_vanished_docker_endpoints(&mut self) {
        let gone: Vec<EndpointRecord> = self
            .endpoints
            .iter()
            .filter(|e| e.docker.is_some() && !e.host_interface.is_empty())
            .filter(|e| !switch::port::afpacket::interface_exists(&e.host_interface))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for ep in gone {
            if self.ports.contains_key(&ep.host_interface) {
                let _ = self.detach(&ep.host_interface);
            }
            let line =
                self.forget_docker_endpoint(&ep, "its container is gone (the veth vanished)");
            tracing::warn!("repaired: {line}");
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving after forgetting vanished docker endpoints");
        }
    }

    /// Drops a Docker endpoint (its address given back if it took it); returns the log line.
    fn forget_docker_endpoint(&mut self, ep: &EndpointRecord, why: &str) -> String {
        if ep.docker.as_ref().is_some_and(|d| d.allocated) {
            let _ = self.release(ep);
        }
        self.endpoints.retain(|e| e.id != ep.id);
        format!(
            "docker endpoint {} on {}: {why}; removed it",
            short_id(&ep.id),
            ep.network
        )
    }
}

/// An endpoint as the Docker plugin reports it.
fn docker_info(ep: &EndpointRecord) -> Result<EndpointInfo, ApiError> {
    let mac = ep
        .mac
        .as_deref()
        .unwrap_or_default()
        .parse::<switch::MacAddr>()
        .map_err(|e| ApiError::internal(format!("endpoint {}: bad MAC: {e}", ep.id)))?;
    let address = ep
        .ip
        .map(|ip| IfAddr::new(ip, ep.prefix_len).map_err(ApiError::internal))
        .transpose()?;
    Ok(EndpointInfo {
        address,
        mac,
        port: (!ep.host_interface.is_empty()).then(|| ep.host_interface.clone()),
    })
}

/// The first 12 characters of an id, as Docker prints it.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Inside the sandbox: loopback up, IPv6 address generation off on the sandbox end (the
/// networks are IPv4 only, and Docker too turns IPv6 off on a container's interface then:
/// otherwise each new endpoint's router solicitations and MLD reports are flooded to every
/// port of the bridge, and a connect costs more the more endpoints there are), the address on
/// it, that end up, and the default route via the gateway when the endpoint sets it.
fn configure_inside(
    ns: &File,
    ep: &EndpointRecord,
    ip: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> std::io::Result<()> {
    netns::in_netns(ns, || -> std::io::Result<()> {
        let mut nl = Netlink::new()?;
        nl.set_up("lo")?;
        nl.disable_ipv6_autoconf(&ep.interface)?;
        nl.add_address(&ep.interface, ip, ep.prefix_len)?;
        nl.set_up(&ep.interface)?;
        if ep.default_route {
            if let Some(gw) = gateway {
                nl.add_default_route(gw)?;
            }
        }
        Ok(())
    })?
}

/// Gives a gateway port its `IP/PREFIX`, and a MAC derived from it, so the gateway keeps its
/// MAC across restarts (the sandboxes' ARP caches stay right).
pub(super) fn set_gateway_address(ifname: &str, addr: &str) -> Result<(), ApiError> {
    let (ip, prefix) = parse_addr(addr)?;
    let mut nl = netlink()?;
    nl.set_mac(ifname, mac_for(ip))
        .map_err(|e| ApiError::internal(format!("setting the MAC of {ifname}: {e}")))?;
    match nl.add_address(ifname, ip, prefix) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ApiError::internal(format!(
            "adding {addr} to {ifname}: {e}"
        ))),
    }
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(format!("invalid address {text:?}")))
}

fn parse_addr(addr: &str) -> Result<(Ipv4Addr, u8), ApiError> {
    let bad = || ApiError::invalid(format!("invalid address {addr:?}: expected IP/PREFIX"));
    let (ip, prefix) = addr.split_once('/').ok_or_else(bad)?;
    Ok((
        ip.parse().map_err(|_| bad())?,
        prefix.parse().map_err(|_| bad())?,
    ))
}

/// Docker's MAC for an address: 02:42 followed by the four bytes of the IPv4 address.
pub(super) fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
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

/// The owner IPAM records for the addresses Docker requests through our IPAM driver.
pub(super) const DOCKER_IPAM_OWNER: &str = "docker";

/// True when IPAM's `owner` of an address is `ep`: a sandbox's endpoint is recorded under the
/// sandbox's name; a Docker endpoint under its id, or as Docker's when Docker requested it.
fn ipam_owner_is(ep: &EndpointRecord, owner: &str) -> bool {
    owner == ep.sandbox || (ep.docker.is_some() && (owner == ep.id || owner == DOCKER_IPAM_OWNER))
}

fn netlink() -> Result<Netlink, ApiError> {
    Netlink::new().map_err(|e| ApiError::internal(format!("netlink: {e}")))
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
        assert_eq!(
            parse_ipv4("x").unwrap_err().kind,
            crate::api::ErrorKind::Invalid
        );
    }
}
