//! The `network` API group: create (validate → reserve the pool → open the driver → make the
//! bridge → the driver's port → save, each step undone on failure), remove (going on past a
//! failure and reporting every problem), list, inspect, and the overlay's peers; and the same
//! for Docker's networks and address pools (the plugin's `CreateNetwork`, `DeleteNetwork`,
//! `RequestPool`, `RequestAddress` and their releases).

use super::commit::Order;
use super::docker::{
    AddressKind, Addressing, IfAddr, NetworkDriver as DockerDriver,
    NetworkSpec as DockerNetworkSpec, PoolInfo, PoolSpec, Scope,
};
use super::drivers::{parse_peer, Driver};
use super::endpoints::NetworkIpam;
use super::store::Table;
use super::undo::Undo;
use super::{random_id, ApiError, Daemon, NetworkLive, NetworkRecord, DEFAULT_NETWORKS};
use crate::api::{check_mtu, check_name, NetworkRow, NetworkSpec};
use ipam::{Cidr, IpamDriver, PoolId, PoolRequest};
use serde_json::json;
use std::net::Ipv4Addr;

impl Daemon {
    /// `network create`: a swarm-scope network goes through the cluster first
    /// ([`Daemon::swarm_create`]); any other is made here.
    pub(super) fn create_network(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<serde_json::Value, ApiError> {
        match spec.scope.as_deref() {
            None | Some("local") => self.create_network_here(spec),
            Some(super::swarm::SWARM) => self.swarm_create(spec),
            Some(other) => Err(ApiError::invalid(format!(
                "invalid scope {other:?}: local or swarm"
            ))),
        }
    }

    /// Creates a network here: validate → reserve the pool → open what the driver needs →
    /// make the bridge → attach the driver's port → save; a failed step undoes those before it.
    pub(super) fn create_network_here(
        &mut self,
        spec: NetworkSpec,
    ) -> Result<serde_json::Value, ApiError> {
        self.create_network_here_as(spec, None)
    }

    /// [`Daemon::create_network_here`], labelled with Docker's network id when given (a
    /// swarm network made through the Docker plugin).
    pub(super) fn create_network_here_as(
        &mut self,
        spec: NetworkSpec,
        docker_id: Option<String>,
    ) -> Result<serde_json::Value, ApiError> {
        let driver = self.validate_network(&spec)?;
        self.transaction(|d, undo| {
            let ipam = d.reserve_pool(driver, &spec, undo)?;
            d.build_network(driver, spec, ipam, (random_id(), docker_id), undo)
        })
    }

    /// The steps of a network create after its pool: open what the driver needs → make the
    /// bridge → attach the driver's port → save. `ids` is the network's id and Docker id.
    fn build_network(
        &mut self,
        driver: Driver,
        spec: NetworkSpec,
        ipam: Option<NetworkIpam>,
        ids: (String, Option<String>),
        undo: &mut Undo,
    ) -> Result<serde_json::Value, ApiError> {
        // Bridge networks are part of the L3 edge (NAT, isolation, published ports).
        let edge = driver == Driver::Bridge;
        if edge {
            // Runs after the network's own undo steps: the table follows the state as it was.
            undo.push(|d| {
                let _ = d.sync_edge();
            });
        }
        driver.ops().open(self)?;
        let net = self.add_network(driver, spec, ipam, ids, undo)?;
        let port = driver.ops().own_port(&net);
        if let Some(port) = port.clone() {
            self.attach_owned(port, undo)?;
        }
        if edge {
            self.sync_edge()?;
        }
        self.commit(Order::SystemFirst, |tx| {
            tx.put(Table::Networks, &net.name, &net)?;
            match &port {
                Some(p) => tx.put(Table::Ports, &p.name, p),
                None => Ok(()),
            }
        })?;
        Ok(json!({ "id": net.id, "name": net.name }))
    }

    /// Checks everything `network create` asks for before anything changes; returns the driver.
    fn validate_network(&self, spec: &NetworkSpec) -> Result<Driver, ApiError> {
        let name = &spec.name;
        check_name("network", name).map_err(ApiError::invalid)?;
        if self.networks.contains_key(name) {
            return Err(ApiError::conflict(format!("network {name} already exists")));
        }
        let driver = match spec.driver.as_deref() {
            Some(name) => name.parse()?,
            None => Driver::Bridge,
        };
        if let Some(mtu) = spec.mtu {
            check_mtu(mtu.into()).map_err(ApiError::invalid)?;
        }
        let ops = driver.ops();
        let pool_options =
            spec.subnet.is_some() || spec.gateway.is_some() || spec.ip_range.is_some();
        if !ops.has_pool() && pool_options {
            return Err(ApiError::invalid(format!(
                "the {driver} driver takes no --subnet, --gateway or --ip-range"
            )));
        }
        if ops.only_one() && self.networks.values().any(|n| n.record.driver == driver) {
            return Err(ApiError::conflict(format!(
                "only one network of driver {driver} may exist"
            )));
        }
        ops.check_options(spec, self)?;
        self.check_edge_options(spec, driver)?;
        Ok(driver)
    }

    /// Takes the network's address pool from IPAM, which checks the subnet, gateway and range
    /// and changes nothing when they are wrong.
    fn reserve_pool(
        &mut self,
        driver: Driver,
        spec: &NetworkSpec,
        undo: &mut Undo,
    ) -> Result<Option<NetworkIpam>, ApiError> {
        if !driver.ops().has_pool() {
            return Ok(None);
        }
        let req = pool_request(spec)?;
        let before = self.ipam.clone();
        let pool = self.ipam.request_pool(req).map_err(ApiError::from_ipam)?;
        undo.push(move |d| d.ipam = before);
        let p = self
            .ipam
            .pool(&pool)
            .ok_or_else(|| ApiError::internal(format!("pool {pool} vanished")))?;
        Ok(Some(NetworkIpam {
            subnet: p.subnet(),
            gateway: p.gateway(),
            pool,
            docker_pool: false,
        }))
    }

    /// Makes the network's bridge in the datapath and records the network.
    fn add_network(
        &mut self,
        driver: Driver,
        spec: NetworkSpec,
        ipam: Option<NetworkIpam>,
        (net_id, docker_id): (String, Option<String>),
        undo: &mut Undo,
    ) -> Result<NetworkRecord, ApiError> {
        let id = self.new_bridge()?;
        let record = NetworkRecord {
            id: net_id,
            name: spec.name.clone(),
            driver,
            spec,
            ipam,
            docker_id,
        };
        let name = record.name.clone();
        self.networks.insert(
            name.clone(),
            NetworkLive {
                record: record.clone(),
                id,
            },
        );
        undo.push(move |d| {
            d.networks.remove(&name);
            let _ = d.call(move |ctl| ctl.dp.remove_network(id));
        });
        Ok(record)
    }

    /// `network rm`: a swarm network leaves the cluster first ([`Daemon::swarm_remove`]).
    pub(super) fn network_rm(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        if self.is_swarm_network(name) {
            self.swarm_remove(name)?;
        }
        self.network_rm_here(name)
    }

    /// Removes a network nobody uses here: its own ports, its bridge, its pool. Past the
    /// checks it goes on past a failure, and reports every problem.
    pub(super) fn network_rm_here(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        self.check_unused(name)?;
        let record = self.network(name)?.record.clone();
        let mut problems = Vec::new();
        let own: Vec<String> = self
            .ports
            .values()
            .filter(|p| p.record.network == name)
            .map(|p| p.record.name.clone())
            .collect();
        let pool_removed: Vec<ipam::IpamChange> = record
            .ipam
            .iter()
            // A pool Docker requested is Docker's to release (it does so before DeleteNetwork).
            .filter(|i| !i.docker_pool && self.ipam.pool(&i.pool).is_some())
            .map(|i| ipam::IpamChange::PoolRemoved { id: i.pool.clone() })
            .collect();
        self.commit(Order::StoreFirst, |tx| {
            tx.delete(Table::Networks, name)?;
            for port in &own {
                tx.delete(Table::Ports, port)?;
            }
            tx.apply_ipam(&pool_removed)
        })?;
        // Committed: now memory, then the system.
        if let Some(ipam) = record.ipam.as_ref().filter(|i| !i.docker_pool) {
            if let Err(e) = self.ipam.release_pool(&ipam.pool) {
                problems.push(format!("releasing the pool {}: {e}", ipam.subnet));
            }
            let _ = self.ipam.take_changes();
        }
        for port in own {
            if let Err(e) = self.detach(&port) {
                problems.push(format!("detaching {port}: {e}"));
            }
        }
        let Some(live) = self.networks.remove(name) else {
            return Err(ApiError::not_found(format!("no such network: {name}")));
        };
        let id = live.id;
        match self.call(move |ctl| ctl.dp.remove_network(id)) {
            Ok(true) => {}
            Ok(false) => problems.push(format!("network {name} still has ports in the datapath")),
            Err(e) => problems.push(format!("removing the bridge: {e}")),
        }
        if live.record.driver == Driver::Bridge {
            if let Err(e) = self.sync_edge() {
                problems.push(format!("removing its rules from table inet vswitch: {e}"));
            }
        }
        let what = format!("network {name} removed");
        ApiError::unless_problems(&problems, &what, json!({ "removed": name }))
    }

    /// `network rm` as the API asks it: a network Docker made is Docker's to remove.
    pub(super) fn network_rm_api(&mut self, name: &str) -> Result<serde_json::Value, ApiError> {
        if let Some(id) = &self.network(name)?.record.docker_id {
            return Err(ApiError::conflict(format!(
                "network {name} was made by Docker (id {id}): remove it with docker network rm"
            )));
        }
        self.network_rm(name)
    }

    /// Refuses to remove a default network, or one with endpoints or ports of users.
    pub(super) fn check_unused(&self, name: &str) -> Result<(), ApiError> {
        self.network(name)?;
        if DEFAULT_NETWORKS.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::conflict(format!(
                "network {name} is a default network and cannot be removed"
            )));
        }
        let eps: Vec<&str> = self
            .endpoints
            .of_network(name)
            .map(|e| e.sandbox.as_str())
            .collect();
        if !eps.is_empty() {
            return Err(ApiError::conflict(format!(
                "network {name} has active endpoints ({}): disconnect them first",
                eps.join(", ")
            )));
        }
        let users: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.record.network == name && p.record.owner.is_none())
            .map(|p| p.record.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "network {name} still has ports: {} (remove them first)",
                users.join(", ")
            )));
        }
        Ok(())
    }

    pub(super) fn network_ls(&self) -> Result<serde_json::Value, ApiError> {
        let rows: Vec<NetworkRow> = self
            .networks
            .values()
            .map(|n| NetworkRow {
                id: n.record.short_id().to_string(),
                name: n.record.name.clone(),
                driver: n.record.driver.name().into(),
                scope: n
                    .record
                    .spec
                    .scope
                    .clone()
                    .unwrap_or_else(|| n.record.driver.ops().scope().into()),
                ports: self
                    .ports
                    .values()
                    .filter(|p| p.record.network == n.record.name)
                    .count(),
            })
            .collect();
        super::rows(rows)
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
        let rules = self.edge_inspect(&n.record, &mut options);
        let mut containers = serde_json::Map::new();
        for e in self.endpoints.of_network(name) {
            containers.insert(
                e.id.clone(),
                json!({
                    "Name": e.sandbox,
                    "EndpointID": e.id,
                    "MacAddress": e.mac.clone().unwrap_or_default(),
                    "IPv4Address": e.ipv4().unwrap_or_default(),
                    "IPv6Address": "",
                    "Ports": super::edge::docker_ports(&e.publish),
                    "Aliases": e.aliases,
                }),
            );
        }
        let ports: Vec<&str> = self
            .ports
            .values()
            .filter(|p| p.record.network == name)
            .map(|p| p.record.name.as_str())
            .collect();
        let scope = s
            .scope
            .clone()
            .unwrap_or_else(|| n.record.driver.ops().scope().into());
        let mut doc = json!([{
            "Name": n.record.name,
            "Id": n.record.id,
            "Driver": n.record.driver,
            "Scope": scope,
            "Internal": s.internal,
            "IPAM": {
                "Driver": "default",
                "Config": if config.is_empty() { vec![] } else { vec![config] },
            },
            "Containers": containers,
            "Options": options,
            "Peers": s.peers,
            "Ports": ports,
            "Rules": rules,
        }]);
        if let Some(cluster) = self.swarm_inspect(name)? {
            doc[0]["Cluster"] = cluster;
        }
        Ok(doc)
    }

    /// `network peer add|rm`: a remote VTEP joins or leaves an overlay network's flood list.
    pub(super) fn network_peer(
        &mut self,
        network: &str,
        ip: &str,
        add: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let net = self.network(network)?;
        if net.record.driver != Driver::Overlay {
            return Err(ApiError::invalid(format!(
                "network {network} is not an overlay network"
            )));
        }
        let addr = parse_peer(ip)?;
        let ip = addr.to_string();
        let present = net.record.spec.peers.contains(&ip);
        if add && present {
            return Err(ApiError::conflict(format!(
                "{ip} is already a peer of {network}"
            )));
        }
        if !add && !present {
            return Err(ApiError::not_found(format!(
                "{ip} is not a peer of {network}"
            )));
        }
        let vni = net
            .record
            .spec
            .vni
            .ok_or_else(|| ApiError::internal(format!("network {network} has no VNI")))?;
        let out = |d: &Daemon| json!({ "network": network, "peers": d.networks[network].record.spec.peers });
        if add {
            // The system first: the peer joins the flood list, then the record is committed.
            self.transaction(|d, undo| {
                d.set_peer(vni, addr, true, undo)?;
                d.record_peer(network, &ip, true, undo);
                let rec = d.networks[network].record.clone();
                d.commit(Order::SystemFirst, |tx| {
                    tx.put(Table::Networks, network, &rec)
                })
            })?;
            return Ok(out(self));
        }
        // The store first: once the record is committed, the peer leaves the flood list.
        self.transaction(|d, undo| {
            d.record_peer(network, &ip, false, undo);
            let rec = d.networks[network].record.clone();
            d.commit(Order::StoreFirst, |tx| {
                tx.put(Table::Networks, network, &rec)
            })
        })?;
        let mut problems = Vec::new();
        if let Err(e) = self.set_peer(vni, addr, false, &mut Undo::default()) {
            problems.push(e.message);
        }
        if let Err(e) = self.forget_behind_vxlan_port(network) {
            problems.push(e.message);
        }
        let what = format!("peer {ip} removed from {network}");
        ApiError::unless_problems(&problems, &what, out(self))
    }

    /// Adds or removes a peer on the VXLAN endpoint.
    fn set_peer(
        &mut self,
        vni: u32,
        addr: std::net::IpAddr,
        add: bool,
        undo: &mut Undo,
    ) -> Result<(), ApiError> {
        let Some(o) = &self.overlay else {
            return Ok(());
        };
        let done = if add {
            o.add_peer(vni, addr)
        } else {
            o.remove_peer(vni, addr)
        };
        done.map_err(|e| ApiError::internal(format!("peer {addr}: {e}")))?;
        undo.push(move |d| {
            if let Some(o) = &d.overlay {
                let _ = if add {
                    o.remove_peer(vni, addr)
                } else {
                    o.add_peer(vni, addr)
                };
            }
        });
        Ok(())
    }

    /// Stations behind a vanished peer must not stay on the bridge's VXLAN port.
    fn forget_behind_vxlan_port(&self, network: &str) -> Result<(), ApiError> {
        let Some(p) = self.vxlan_port(network) else {
            return Ok(());
        };
        let handle = p.handle;
        self.call(move |ctl| {
            if let Some((net, local)) = ctl.dp.port_location(handle) {
                if let Some(b) = ctl.dp.bridge_mut(net) {
                    b.fdb_mut().flush_port(local);
                }
            }
        })
    }

    /// Adds or removes the peer in the network's record.
    fn record_peer(&mut self, network: &str, ip: &str, add: bool, undo: &mut Undo) {
        let (network, ip) = (network.to_string(), ip.to_string());
        let edit = move |d: &mut Daemon, add: bool| {
            if let Some(live) = d.networks.get_mut(&network) {
                if add {
                    live.record.spec.peers.push(ip.clone());
                } else {
                    live.record.spec.peers.retain(|p| *p != ip);
                }
            }
        };
        edit(self, add);
        undo.push(move |d| edit(d, !add));
    }
}

// ---- Docker's networks and pools (the plugin's calls; see `docker/backend.rs`) ----

impl Daemon {
    /// The network Docker knows by `docker_id`.
    pub(super) fn docker_network(&self, docker_id: &str) -> Result<&NetworkLive, ApiError> {
        self.networks
            .values()
            .find(|n| n.record.docker_id.as_deref() == Some(docker_id))
            .ok_or_else(|| {
                ApiError::not_found(format!("no vswitch network with Docker id {docker_id}"))
            })
    }

    /// `CreateNetwork`: a vswitch network named `docker-<12 digits>` with Docker's id as its
    /// own. Its pool is either the one Docker requested from our IPAM driver, or one made here
    /// on the subnet Docker's IPAM chose. Creating it again with the same settings (dockerd
    /// replaying) changes nothing; with others it is a conflict.
    pub(super) fn docker_network_create(&mut self, d: &DockerNetworkSpec) -> Result<(), ApiError> {
        if d.scope == Scope::Swarm {
            return self.docker_swarm_create(d);
        }
        let spec = docker_api_spec(d)?;
        if let Ok(existing) = self.docker_network(&d.docker_id) {
            return if existing.record.spec == spec {
                Ok(())
            } else {
                Err(ApiError::conflict(format!(
                    "network {} (Docker id {}) already exists with other settings",
                    spec.name, d.docker_id
                )))
            };
        }
        let driver = self.validate_network(&spec)?;
        let subnet = d.subnet.ok_or_else(|| {
            ApiError::invalid(
                "a vswitch network needs an IPv4 subnet (use --ipam-driver vswitch, or --subnet)",
            )
        })?;
        let ids = (d.docker_id.clone(), Some(d.docker_id.clone()));
        self.transaction(|dm, undo| {
            let ipam = match d.addressing {
                Addressing::Vswitch => {
                    let pool = PoolId::from_subnet(subnet);
                    if let Some(net) = dm.swarm_network_of_pool(pool.as_str()) {
                        return Err(ApiError::conflict(format!(
                            "subnet {subnet} is the cluster network {net}'s: join it with -o vswitch.scope=swarm -o vswitch.network={net}"
                        )));
                    }
                    let p = dm.ipam.pool(&pool).ok_or_else(|| {
                        ApiError::not_found(format!(
                            "no vswitch address pool {subnet}: request it through the vswitch IPAM driver"
                        ))
                    })?;
                    NetworkIpam {
                        gateway: d.gateway.or(p.gateway()),
                        subnet,
                        pool,
                        docker_pool: true,
                    }
                }
                Addressing::Docker => {
                    let req = PoolRequest {
                        subnet: Some(subnet),
                        gateway: d.gateway,
                        reserved: d.reserved.clone(),
                        ..PoolRequest::default()
                    };
                    let before = dm.ipam.clone();
                    let pool = dm.ipam.request_pool(req).map_err(|e| {
                        let mut e = ApiError::from_ipam(e);
                        e.message.push_str(
                            " (Docker's own IPAM chose this subnet; give --subnet, or use --ipam-driver vswitch)",
                        );
                        e
                    })?;
                    undo.push(move |dm| dm.ipam = before);
                    let gateway = dm.ipam.pool(&pool).and_then(|p| p.gateway());
                    NetworkIpam {
                        gateway,
                        subnet,
                        pool,
                        docker_pool: false,
                    }
                }
            };
            dm.build_network(driver, spec, Some(ipam), ids, undo)
        })?;
        Ok(())
    }

    /// `DeleteNetwork`: as `network rm` (refused while endpoints are left).
    pub(super) fn docker_network_delete(&mut self, docker_id: &str) -> Result<(), ApiError> {
        let name = self.docker_network(docker_id)?.record.name.clone();
        if self.is_swarm_network(&name) {
            return self.docker_swarm_leave(&name);
        }
        self.network_rm(&name).map(drop)
    }

    /// `RequestPool`: a pool of the daemon's IPAM (no overlap; the next default subnet in
    /// Docker's order when none is given), saved before the answer.
    pub(super) fn docker_pool_request(&mut self, spec: &PoolSpec) -> Result<PoolInfo, ApiError> {
        if let Some(info) = spec.subnet.and_then(|s| self.swarm_pool_info(s)) {
            return Ok(info);
        }
        let req = PoolRequest {
            subnet: spec.subnet,
            ip_range: spec.ip_range,
            host_routes: if spec.subnet.is_none() {
                host_routes()
            } else {
                vec![]
            },
            ..PoolRequest::default()
        };
        self.ipam_step(|ipam| {
            let id = ipam.request_pool(req).map_err(ApiError::from_ipam)?;
            let p = ipam
                .pool(&id)
                .ok_or_else(|| ApiError::internal(format!("pool {id} vanished")))?;
            Ok(PoolInfo {
                id: id.to_string(),
                subnet: p.subnet(),
                gateway: p.gateway(),
            })
        })
    }

    /// `ReleasePool`.
    pub(super) fn docker_pool_release(&mut self, pool: &str) -> Result<(), ApiError> {
        if self.swarm_network_of_pool(pool).is_some() {
            // The cluster network's pool: it stays with the network, which outlives Docker's.
            return Ok(());
        }
        self.ipam_step(|ipam| {
            ipam.release_pool(&PoolId::new(pool))
                .map_err(ApiError::from_ipam)
        })
    }

    /// `RequestAddress`: `address` if given and free, else the next free one; for the gateway,
    /// the pool's gateway (moved to `address` while the pool hands out nothing else).
    pub(super) fn docker_address_request(
        &mut self,
        pool: &str,
        address: Option<Ipv4Addr>,
        kind: AddressKind,
    ) -> Result<IfAddr, ApiError> {
        if let Some(net) = self.swarm_network_of_pool(pool) {
            return self.docker_swarm_address(&net, address, kind);
        }
        let id = PoolId::new(pool);
        self.ipam_step(|ipam| {
            let p = ipam
                .pool(&id)
                .ok_or_else(|| ApiError::not_found(format!("no address pool {pool}")))?
                .clone();
            let subnet = p.subnet();
            let ip = match (kind, address, p.gateway()) {
                (AddressKind::Gateway, None, Some(gw)) => gw,
                (AddressKind::Gateway, Some(want), Some(gw)) if want == gw => gw,
                (AddressKind::Gateway, want, _) => {
                    if p.allocated().next().is_some() {
                        return Err(ApiError::conflict(format!(
                            "cannot move the gateway of pool {subnet}: it has addresses in use"
                        )));
                    }
                    ipam.release_pool(&id).map_err(ApiError::from_ipam)?;
                    ipam.request_pool(PoolRequest {
                        subnet: Some(subnet),
                        ip_range: p.ip_range(),
                        gateway: want,
                        reserved: p.reserved().collect(),
                        ..PoolRequest::default()
                    })
                    .map_err(ApiError::from_ipam)?;
                    ipam.pool(&id)
                        .and_then(|p| p.gateway())
                        .ok_or_else(|| ApiError::internal("the new pool has no gateway"))?
                }
                (AddressKind::Endpoint, want, _) => ipam
                    .request_address(&id, super::endpoints::DOCKER_IPAM_OWNER, want)
                    .map_err(ApiError::from_ipam)?,
            };
            Ok(IfAddr::on(ip, subnet))
        })
    }

    /// `ReleaseAddress` (releasing the gateway is accepted and keeps it).
    pub(super) fn docker_address_release(
        &mut self,
        pool: &str,
        address: Ipv4Addr,
    ) -> Result<(), ApiError> {
        if let Some(net) = self.swarm_network_of_pool(pool) {
            return self.docker_swarm_release(&net, address);
        }
        let id = PoolId::new(pool);
        self.ipam_step(|ipam| {
            if ipam.pool(&id).and_then(|p| p.gateway()) == Some(address) {
                return Ok(());
            }
            ipam.release_address(&id, address)
                .map_err(ApiError::from_ipam)
        })
    }

    /// Changes the IPAM state with `f` and commits the IPAM rows it changed (nothing else);
    /// when either fails, the IPAM state is as before.
    fn ipam_step<T>(
        &mut self,
        f: impl FnOnce(&mut ipam::DefaultIpam) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let before = self.ipam.clone();
        let result =
            f(&mut self.ipam).and_then(|v| self.commit(Order::SystemFirst, |_| Ok(())).map(|()| v));
        if result.is_err() {
            self.ipam = before;
        }
        result
    }
}

/// The vswitch network a Docker network is: its driver (`-o parent` alone means macvlan),
/// subnet, gateway, overlay and macvlan settings. Refuses what vswitch does not do yet.
fn docker_api_spec(d: &DockerNetworkSpec) -> Result<NetworkSpec, ApiError> {
    let driver = match (d.driver, &d.parent) {
        (DockerDriver::Bridge, Some(_)) => DockerDriver::Macvlan,
        (DockerDriver::Overlay, Some(_)) => {
            return Err(ApiError::invalid(
                "-o parent is for macvlan networks, not overlays",
            ))
        }
        (other, _) => other,
    };
    if driver == DockerDriver::Overlay && d.vni.is_none() {
        return Err(ApiError::invalid(
            "an overlay network needs -o vswitch.vni=N (and -o vswitch.peer=IP[,IP…])",
        ));
    }
    Ok(NetworkSpec {
        name: d.name.clone(),
        driver: Some(driver.as_str().into()),
        subnet: d.subnet.map(|s| s.to_string()),
        gateway: d.gateway.map(|g| g.to_string()),
        ip_range: None,
        vni: d.vni,
        peers: d.peers.iter().map(Ipv4Addr::to_string).collect(),
        parent: d.parent.clone(),
        mtu: d.mtu,
        internal: d.internal,
        enable_icc: d.enable_icc,
        enable_ip_masquerade: d.enable_ip_masquerade,
        host_binding_ipv4: d.host_binding_ipv4.map(|ip| ip.to_string()),
        scope: None,
    })
}

/// The subnet, IP range and gateway a `network create` names.
pub(super) type SpecAddresses = (Option<Cidr>, Option<Cidr>, Option<Ipv4Addr>);

/// The subnet, IP range and gateway a `network create` names, parsed.
pub(super) fn spec_addresses(spec: &NetworkSpec) -> Result<SpecAddresses, ApiError> {
    let cidr = |what: &str, v: &Option<String>| -> Result<Option<Cidr>, ApiError> {
        v.as_deref()
            .map(|t| {
                t.parse()
                    .map_err(|e| ApiError::invalid(format!("invalid {what}: {e}")))
            })
            .transpose()
    };
    let gateway = spec
        .gateway
        .as_deref()
        .map(|g| {
            g.parse::<Ipv4Addr>()
                .map_err(|_| ApiError::invalid(format!("invalid gateway {g:?}")))
        })
        .transpose()?;
    Ok((
        cidr("subnet", &spec.subnet)?,
        cidr("ip range", &spec.ip_range)?,
        gateway,
    ))
}

/// The pool `network create` asks IPAM for.
fn pool_request(spec: &NetworkSpec) -> Result<PoolRequest, ApiError> {
    let (subnet, ip_range, gateway) = spec_addresses(spec)?;
    Ok(PoolRequest {
        subnet,
        ip_range,
        gateway,
        reserved: vec![],
        host_routes: host_routes(),
    })
}

/// The daemon namespace's IPv4 routes (a default pool must overlap none).
fn host_routes() -> Vec<Cidr> {
    let Ok(mut nl) = crate::netlink::Netlink::new() else {
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

    fn docker_spec() -> DockerNetworkSpec {
        DockerNetworkSpec {
            docker_id: "0123456789abcdef".repeat(4),
            name: "docker-0123456789ab".into(),
            driver: DockerDriver::Bridge,
            addressing: Addressing::Vswitch,
            subnet: Some("10.30.0.0/24".parse().unwrap()),
            gateway: Some(Ipv4Addr::new(10, 30, 0, 1)),
            reserved: vec![],
            vni: None,
            peers: vec![],
            parent: None,
            mtu: Some(1400),
            internal: true,
            enable_icc: None,
            enable_ip_masquerade: None,
            host_binding_ipv4: None,
            scope: Scope::Local,
        }
    }

    #[test]
    fn a_docker_network_is_a_vswitch_network() {
        let spec = docker_api_spec(&docker_spec()).unwrap();
        assert_eq!(spec.name, "docker-0123456789ab");
        assert_eq!(spec.driver.as_deref(), Some("bridge"));
        assert_eq!(spec.subnet.as_deref(), Some("10.30.0.0/24"));
        assert_eq!(spec.gateway.as_deref(), Some("10.30.0.1"));
        assert_eq!(spec.mtu, Some(1400));
        assert!(spec.internal);
        // `-o parent` alone means macvlan.
        let macvlan = DockerNetworkSpec {
            parent: Some("eth1".into()),
            ..docker_spec()
        };
        let spec = docker_api_spec(&macvlan).unwrap();
        assert_eq!(spec.driver.as_deref(), Some("macvlan"));
        assert_eq!(spec.parent.as_deref(), Some("eth1"));
        let overlay = DockerNetworkSpec {
            driver: DockerDriver::Overlay,
            vni: Some(42),
            peers: vec![Ipv4Addr::new(192, 0, 2, 2)],
            ..docker_spec()
        };
        let spec = docker_api_spec(&overlay).unwrap();
        assert_eq!(spec.driver.as_deref(), Some("overlay"));
        assert_eq!(spec.vni, Some(42));
        assert_eq!(spec.peers, ["192.0.2.2"]);
    }

    #[test]
    fn what_vswitch_cannot_do_is_refused_clearly() {
        let cases = [
            (
                DockerNetworkSpec {
                    driver: DockerDriver::Overlay,
                    ..docker_spec()
                },
                "vswitch.vni",
            ),
            (
                DockerNetworkSpec {
                    driver: DockerDriver::Overlay,
                    vni: Some(1),
                    parent: Some("eth1".into()),
                    ..docker_spec()
                },
                "-o parent is for macvlan",
            ),
        ];
        for (spec, want) in cases {
            let e = docker_api_spec(&spec).unwrap_err();
            assert_eq!(e.kind, crate::api::ErrorKind::Invalid);
            assert!(e.message.contains(want), "{e} lacks {want:?}");
        }
    }
}
